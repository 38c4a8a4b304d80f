import type { DenseTensor, EngineCapabilities, GradientSync, RowSparseTensor } from '../api.js';
import { Errors } from '@shoal/core';
import { settleAll } from '@shoal/core/util';

/**
 * The hybrid engine: dense gradients (and parameters, scalars, barriers) go over the ring allreduce, row-sparse
 * gradients of embedding tables go to the parameter servers, where only the touched rows cross the wire. Both
 * engines must span the same ranks. Owns both (close() closes them).
 */
export class HybridSync implements GradientSync {
  readonly kind = 'hybrid' as const;
  /** Dense and sparse collectives go to different engines, so they may be in flight together. */
  readonly capabilities: EngineCapabilities;
  readonly rank: number;
  readonly size: number;
  constructor(
    readonly dense: GradientSync,
    readonly sparse: GradientSync,
  ) {
    if (dense.rank !== sparse.rank || dense.size !== sparse.size) {
      throw Errors.config('hybrid', `dense engine is rank ${dense.rank}/${dense.size}, sparse engine rank ${sparse.rank}/${sparse.size}`);
    }
    if (typeof sparse.sparseAllreduceMean !== 'function') throw Errors.config('hybrid', `the sparse engine (${sparse.kind}) has no sparseAllreduceMean`);
    this.rank = dense.rank;
    this.size = dense.size;
    this.capabilities = { rowSparse: sparse.capabilities.rowSparse, concurrentCollectives: true };
  }
  broadcastParameters(params: readonly DenseTensor[]): Promise<void> {
    return this.dense.broadcastParameters(params);
  }
  allreduceMean(grads: readonly DenseTensor[]): Promise<void> {
    return this.dense.allreduceMean(grads);
  }
  sparseAllreduceMean(grad: RowSparseTensor): Promise<RowSparseTensor> {
    return this.sparse.sparseAllreduceMean!(grad);
  }
  allreduceScalars(values: Float64Array): Promise<Float64Array> {
    return this.dense.allreduceScalars(values);
  }
  barrier(): Promise<void> {
    return this.dense.barrier();
  }
  stats() {
    const a = this.dense.stats();
    const b = this.sparse.stats();
    return { bytesSent: a.bytesSent + b.bytesSent, bytesReceived: a.bytesReceived + b.bytesReceived, ops: a.ops + b.ops };
  }
  async close(): Promise<void> {
    await settleAll([this.dense.close(), this.sparse.close()]);
  }
}
