/**
 * The one interface every gradient-sync engine (ring, ps, the hybrid of the two, and the one-worker local engine) implements, so a single
 * compliance suite (`compliance.ts`) and the wrappers run against any of them.
 *
 * Contract (all ranks): calls are collective and made in the same order with the same names, shapes and dtypes
 * on every rank; a mismatch raises ERR_MISMATCH on every rank (never a hang); a dead peer raises within the
 * configured timeout; non-finite gradients raise ERR_NAN naming the tensor (unless `allowNonFinite`).
 */
export interface DenseTensor {
  /** Stable name, identical on every rank (e.g. the tfjs variable name). */
  readonly name: string;
  readonly shape: readonly number[];
  /** Row-major values; the engine writes results into this array in place. */
  readonly data: Float32Array;
}

/** A row-sparse gradient of an embedding table `[numRows, rowSize]`: only the touched rows. */
export interface RowSparseTensor {
  readonly name: string;
  readonly numRows: number;
  readonly rowSize: number;
  /** Row ids touched by this batch (may repeat; the engine merges duplicates by summing). */
  readonly rowIds: Int32Array;
  /** `rowIds.length * rowSize` values. */
  readonly rows: Float32Array;
}

/**
 * What an engine can do. Callers (the gradient bridge, server-held tables, reports) branch on these, never on
 * `kind`, which only names the engine.
 */
export interface EngineCapabilities {
  /**
   * How `sparseAllreduceMean` moves rows: `servers` (parameter servers hold the tables; only the touched rows
   * cross the wire, so the gradient bridge sends embedding gradients row-sparse by default), `allgather` (the
   * ranks exchange their touched rows; worth it only when batches touch a small part of big tables), `local`
   * (one rank: duplicates merged in place), `none` (no `sparseAllreduceMean`).
   */
  readonly rowSparse: 'servers' | 'allgather' | 'local' | 'none';
  /**
   * True when collectives may be in flight together (`allreduceMean` beside `sparseAllreduceMean`): each call
   * fixes its place in the order on every rank when it is made. False: await each before issuing the next.
   */
  readonly concurrentCollectives: boolean;
  /**
   * Embedding tables whose whole gradient is at most this many bytes are cheaper through `allreduceMean` than
   * row-sparse (Horovod's `sparse_as_dense`), so the gradient bridge sends them whole by default: the ps engine
   * when every worker reaches every server through shared memory, where the servers sum and apply whole keys in
   * one native pass and write the result straight into each worker's staging buffer, while touched rows cost
   * finding, merging, encoding and scattering them in JS on both sides. The same on every rank. Default 0.
   */
  readonly sparseAsDenseBytes?: number;
}

export interface GradientSync {
  /** The engine's name, for logs and reports (`local` is the one-worker engine). Branch on `capabilities`. */
  readonly kind: 'ring' | 'ps' | 'hybrid' | 'local';
  readonly capabilities: EngineCapabilities;
  readonly rank: number;
  readonly size: number;
  /**
   * Make every rank hold rank 0's initial values of `params` (written in place). For the ps backend this is
   * KVStore `init`: the servers store the values and every worker pulls them.
   */
  broadcastParameters(params: readonly DenseTensor[]): Promise<void>;
  /** Replace each gradient by its mean over all ranks, in place. */
  allreduceMean(grads: readonly DenseTensor[]): Promise<void>;
  /**
   * Mean of row-sparse gradients over all ranks, returned as merged unique rows (sorted row ids). Only the
   * rows some rank touched cross the wire.
   */
  sparseAllreduceMean?(grad: RowSparseTensor): Promise<RowSparseTensor>;
  /** Average scalar metrics (loss, accuracy) across ranks. */
  allreduceScalars(values: Float64Array): Promise<Float64Array>;
  barrier(): Promise<void>;
  /** Bytes this rank sent and received so far, for reports. */
  stats(): { bytesSent: number; bytesReceived: number; ops: number };
  close(): Promise<void>;
}
