import { Errors, type FloatArray, type ReduceKernels } from '@shoal/core';
import type { Slot } from './slot.js';
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

/**
 * Global row ids of a push or pull on server `serverIndex` -> local row numbers of `slot`, checking the range
 * (and, with `strict`, for pushes, that they are sorted and unique).
 */
export function localRows(slot: Slot, rowIds: Int32Array, rank: number, serverIndex: number, strict = true): Int32Array {
  if (!slot.spec.rows) throw Errors.invalidArg(`key ${slot.spec.key}`, 'is dense: use push/pull');
  const r0 = slot.slice.rowStart!;
  const r1 = slot.slice.rowEnd!;
  const out = new Int32Array(rowIds.length);
  for (let i = 0; i < rowIds.length; i++) {
    const r = rowIds[i]!;
    if (r < r0 || r >= r1) throw Errors.invalidArg(`row id ${r} of key ${slot.spec.key}`, `from worker ${rank} is outside server ${serverIndex}'s rows [${r0}, ${r1})`);
    if (strict && i > 0 && r <= rowIds[i - 1]!) throw Errors.invalidArg(`row ids of key ${slot.spec.key}`, `from worker ${rank} must be sorted and unique (${rowIds[i - 1]} then ${r})`);
    out[i] = r - r0;
  }
  return out;
}
