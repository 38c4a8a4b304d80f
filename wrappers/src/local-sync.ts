import type { DenseTensor, GradientSync, RowSparseTensor } from '@shoal/backends';
import { Errors } from '@shoal/core';

/**
 * The one-worker engine: a `GradientSync` of size 1 with no communication. The mean over one rank is the
 * gradient itself, so dense calls return at once; sparse calls merge duplicate rows (summing them) and sort
 * the row ids, like the real engines. Still checks for non-finite values, so a one-worker run fails the same
 * way a distributed one does.
 */
export class LocalSync implements GradientSync {
  readonly kind = 'ring' as const;
  readonly rank = 0;
  readonly size = 1;
  private ops = 0;
  private closed = false;
  constructor(private readonly options: { allowNonFinite?: boolean } = {}) {}

  private check(what: string) {
    if (this.closed) throw Errors.closed(`LocalSync (${what})`);
    this.ops += 1;
  }
  async broadcastParameters(_params: readonly DenseTensor[]): Promise<void> {
    this.check('broadcastParameters');
  }
  async allreduceMean(grads: readonly DenseTensor[]): Promise<void> {
    this.check('allreduceMean');
    if (this.options.allowNonFinite) return;
    for (const g of grads) {
      const d = g.data;
      for (let i = 0; i < d.length; i++) {
        if (!Number.isFinite(d[i]!)) throw Errors.nan(`gradient ${g.name}`, { name: g.name, index: i, rank: 0 });
      }
    }
  }
  async sparseAllreduceMean(grad: RowSparseTensor): Promise<RowSparseTensor> {
    this.check('sparseAllreduceMean');
    return mergeRows(grad);
  }
  async allreduceScalars(values: Float64Array): Promise<Float64Array> {
    this.check('allreduceScalars');
    return values.slice();
  }
  async barrier(): Promise<void> {
    this.check('barrier');
  }
  stats() {
    return { bytesSent: 0, bytesReceived: 0, ops: this.ops };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Sum rows with the same id and sort by id. Returns a new tensor; `grad` is not modified. */
export function mergeRows(grad: RowSparseTensor): RowSparseTensor {
  const { rowIds, rows, rowSize } = grad;
  const order = Array.from(rowIds.keys()).sort((a, b) => rowIds[a]! - rowIds[b]!);
  const ids: number[] = [];
  for (const i of order) if (ids.length === 0 || ids[ids.length - 1] !== rowIds[i]) ids.push(rowIds[i]!);
  const out = new Float32Array(ids.length * rowSize);
  let k = -1;
  let last = -1;
  for (const i of order) {
    if (rowIds[i] !== last) {
      k += 1;
      last = rowIds[i]!;
    }
    const src = i * rowSize;
    const dst = k * rowSize;
    for (let j = 0; j < rowSize; j++) out[dst + j]! += rows[src + j]!;
  }
  return { name: grad.name, numRows: grad.numRows, rowSize, rowIds: Int32Array.from(ids), rows: out };
}
