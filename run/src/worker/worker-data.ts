import type { GradientSync } from '@shoal/backends';
import { Errors, type WorkerOptions } from '@shoal/core';
import { openArrowStream, openData, shard, trainingData, type Dataset, type TrainingData, type TrainingDataOptions } from '@shoal/datasets';
import { sparkInput } from './spark-input.js';

/** Options of `worker.data()`: which columns, how to batch, and (rarely) where the data is. */
export interface WorkerDataOptions extends Partial<Pick<TrainingDataOptions, 'features' | 'label'>>, Omit<TrainingDataOptions, 'features' | 'label'> {
  /**
   * Where the data is, overriding the launcher: `'stdin'` (an Arrow IPC stream) or a Parquet, Arrow or CSV file or
   * folder. Default: what the launcher said (Spark: stdin; `shoal run --data PATH`: PATH).
   */
  source?: string;
}

/**
 * This rank's training data, wherever the launcher put it. Spark (`SHOAL_INPUT=stdin`): the rank's partition,
 * streamed once as Arrow on stdin and kept in memory for every epoch. `shoal run --data PATH` (`SHOAL_DATA`): the
 * files under PATH, every rank reading its shard (`shard(ds, rank, size)`: with one part file per rank, part r).
 * `features` and `label` default to the columns the launcher named (`shoal_spark.fit(feature_cols, label_cols)`).
 * Collective: every rank calls it once (the steps per epoch and list widths are agreed with one allreduce).
 */
export async function openWorkerData(options: WorkerOptions, sync: GradientSync, opts: WorkerDataOptions = {}): Promise<TrainingData> {
  const features = opts.features ?? options.columns?.features;
  const label = opts.label ?? options.columns?.label;
  if (features === undefined || label === undefined) {
    throw Errors.invalidArg('worker.data options', `need features and label (e.g. { features: ['x0', 'x1'], label: 'y' }), or a launcher that names them (shoal_spark.fit); got ${JSON.stringify({ features, label })}`);
  }
  const from = opts.source !== undefined ? (opts.source === 'stdin' ? { from: 'stdin' as const } : { from: 'path' as const, path: opts.source }) : options.data;
  if (from === undefined) {
    throw Errors.config('SHOAL_DATA', 'is not set and this worker was not started by Spark (SHOAL_INPUT=stdin): give the data with `shoal run --data PATH`, or worker.data({ source: PATH })');
  }
  const { rank, worldSize } = options;
  let ds: Dataset;
  let mine;
  if (from.from === 'stdin') {
    ds = await openArrowStream(sparkInput(), { name: `rank ${rank} stdin`, retain: true, idleTimeoutMs: options.timeoutMs });
    mine = ds; // the launcher already split the data: this stream is all of this rank's
  } else {
    ds = await openData(from.path, [...features, label]);
    mine = shard(ds, rank, worldSize);
  }
  try {
    return await trainingData(mine, ds, { ...opts, features, label }, (v) => exchange(sync, v));
  } catch (e) {
    await ds.close();
    throw e;
  }
}

/** Every rank's vector by one mean allreduce of a block per rank (the others' blocks zero); exact for integers. */
async function exchange(sync: GradientSync, local: readonly number[]): Promise<number[][]> {
  const k = local.length;
  const v = new Float64Array(sync.size * k);
  v.set(local, sync.rank * k);
  const mean = await sync.allreduceScalars(v);
  return Array.from({ length: sync.size }, (_, r) => Array.from(mean.subarray(r * k, (r + 1) * k), (m) => Math.round(m * sync.size)));
}

/**
 * Print this job's result for the launcher: rank 0 writes one line `SHOAL_RESULT {json}` to stdout (what
 * `shoal_spark.run`/`fit` return); other ranks print nothing. A `history` given as the Trainer's `History` is
 * stored as its list of per-epoch logs.
 */
export function reportResult(options: WorkerOptions, result: { history?: unknown; model?: string | null; [k: string]: unknown }, out: NodeJS.WritableStream = process.stdout): void {
  if (options.rank !== 0) return;
  const h = result.history as { epochs?: unknown } | unknown[] | undefined;
  const history = h === undefined || Array.isArray(h) ? h : (h as { epochs?: unknown }).epochs;
  out.write(`SHOAL_RESULT ${JSON.stringify({ ...result, ...(history === undefined ? {} : { history }) })}\n`);
}
