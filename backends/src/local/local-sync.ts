import type { DenseTensor, GradientSync, RowSparseTensor } from '../api.js';
import { mergeRows } from '../row-sparse.js';
import { Errors } from '@shoal/core';

/**
 * The one-worker engine: a `GradientSync` of size 1 with no communication. The mean over one rank is the
 * gradient itself, so dense calls return at once; sparse calls merge duplicate rows (summing them) and sort
 * the row ids, like the real engines. Still checks for non-finite values, so a one-worker run fails the same
 * way a distributed one does.
 */
export class LocalSync implements GradientSync {
  readonly kind = 'local' as const;
  readonly capabilities = { rowSparse: 'local', concurrentCollectives: false } as const;
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
    return mergeRowSparse(grad);
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
export function mergeRowSparse(grad: RowSparseTensor): RowSparseTensor {
  const { ids, rows } = mergeRows(grad.rowIds, grad.rows, grad.rowSize, grad.numRows, `row-sparse gradient "${grad.name}"`);
  return { name: grad.name, numRows: grad.numRows, rowSize: grad.rowSize, rowIds: ids, rows };
}
