import type { DenseTensor, GradientSync, RowSparseTensor } from '@shoal/backends';
import { Errors } from '@shoal/core';

/**
 * The one-process GradientSync (world size 1): means over one rank are the values themselves; sparse gradients
 * are merged (duplicate row ids summed, ids sorted). Used by single-process runs and tests; multi-worker runs get a
 * real engine from @shoal/backends.
 */
export class LocalSync implements GradientSync {
  readonly kind = 'ring' as const;
  readonly rank = 0;
  readonly size = 1;
  private closed = false;
  async broadcastParameters(_params: readonly DenseTensor[]): Promise<void> { this.check(); }
  async allreduceMean(_grads: readonly DenseTensor[]): Promise<void> { this.check(); }
  async sparseAllreduceMean(g: RowSparseTensor): Promise<RowSparseTensor> {
    this.check();
    const order = Array.from(g.rowIds.keys()).sort((a, b) => g.rowIds[a]! - g.rowIds[b]!);
    const ids: number[] = [];
    const rows: number[] = [];
    for (const i of order) {
      const id = g.rowIds[i]!;
      if (id < 0 || id >= g.numRows) throw Errors.data(g.name, `row id ${id} outside [0, ${g.numRows})`);
      if (ids.length === 0 || ids[ids.length - 1] !== id) { ids.push(id); for (let k = 0; k < g.rowSize; k++) rows.push(0); }
      const o = (ids.length - 1) * g.rowSize;
      for (let k = 0; k < g.rowSize; k++) rows[o + k]! += g.rows[i * g.rowSize + k]!;
    }
    return { name: g.name, numRows: g.numRows, rowSize: g.rowSize, rowIds: Int32Array.from(ids), rows: Float32Array.from(rows) };
  }
  async allreduceScalars(values: Float64Array): Promise<Float64Array> { this.check(); return Float64Array.from(values); }
  async barrier(): Promise<void> { this.check(); }
  stats(): { bytesSent: number; bytesReceived: number; ops: number } { return { bytesSent: 0, bytesReceived: 0, ops: 0 }; }
  async close(): Promise<void> { this.closed = true; }
  private check(): void { if (this.closed) throw Errors.closed('LocalSync'); }
}
