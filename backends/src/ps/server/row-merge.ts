import type { FloatArray, ReduceKernels } from '@shoal/core';
import { allocFloat, type KeySlice, type KeySpec } from '../key-layout.js';

/**
 * Row-sparse keys in sync mode: the round's merged rows (a full local table, `touched` marks the rows in it, and
 * their list), and the merged rows of the last completed round (`rowSparsePull` with no row ids).
 */
export class RowMerge {
  constructor(
    private readonly spec: KeySpec,
    private readonly slice: KeySlice,
  ) {}

  private merge: FloatArray | null = null;
  private touched: Uint8Array | null = null;
  private touchedList: number[] = [];
  last: { rowIds: Int32Array; rows: FloatArray } | null = null;

  /** Add a push's rows (`local` row numbers, sorted and unique) to the round's sum. */
  add(local: Int32Array, rows: FloatArray, kernels: ReduceKernels): void {
    const rs = this.spec.rows!.rowSize;
    const nLocal = this.slice.rowEnd! - this.slice.rowStart!;
    this.merge ??= allocFloat(this.spec.dtype, nLocal * rs);
    this.touched ??= new Uint8Array(nLocal);
    const fresh = new Int32Array(local.length);
    const n = kernels.rows('merge', this.merge, rows, local, rs, this.touched, fresh);
    for (let i = 0; i < n; i++) this.touchedList.push(fresh[i]!);
  }

  /** The round's merged rows, packed (sorted local row numbers and their sums); the table is left zeroed. */
  take(kernels: ReduceKernels): { local: Int32Array; packed: FloatArray } {
    const rs = this.spec.rows!.rowSize;
    const local = Int32Array.from(this.touchedList).sort();
    const packed = allocFloat(this.spec.dtype, local.length * rs);
    if (local.length) kernels.rows('take', packed, this.merge!, local, rs); // packed rows, merge rows zeroed
    for (let i = 0; i < local.length; i++) this.touched![local[i]!] = 0;
    this.touchedList = [];
    return { local, packed };
  }

  /** Forget the round in progress (a worker of it is lost). */
  reset(): void {
    this.merge = null;
    this.touchedList = [];
    this.touched?.fill(0);
  }
}
