import { attachJobTelemetry, LocalSync, type GradientSync, type JobTelemetry } from '@shoal/backends';
import { Errors, parseWorkerOptions, type Store, type WorkerOptions } from '@shoal/core';
import { checkEngineOptions, connectEngine, type ConnectedEngine, type EngineOptions } from './engine-factory.js';
import type { TrainingData } from '@shoal/datasets';
import { ElasticSync } from './elastic-sync.js';
import { joinJob, threadWorkerOptions, type JobContext } from './join-job.js';
import { openWorkerData, reportResult, type WorkerDataOptions } from './worker-data.js';

/** The job's telemetry settings from the worker environment: `SHOAL_LOGDIR` (`shoal run --logdir DIR`). */
export function parseJobTelemetry(env: Record<string, string | undefined>): JobTelemetry | undefined {
  const logdir = env.SHOAL_LOGDIR;
  if (logdir === undefined || logdir === '') return undefined;
  if (logdir.includes('\0')) throw Errors.config('SHOAL_LOGDIR', 'contains a NUL byte');
  return { logdir };
}

export interface InitWorkerOptions extends EngineOptions {
  /** Environment to parse (default `process.env`, read once here and nowhere below). */
  env?: Record<string, string | undefined>;
  /**
   * Already-parsed options (overrides `env`). Default: in a worker thread of `shoal run --threads` the options
   * the launcher passed in `workerData`, else parsed from `env`.
   */
  options?: WorkerOptions;
}

/** A worker's membership in a job. */
export interface WorkerHandle {
  readonly options: WorkerOptions;
  /** The engine SHOAL_BACKEND names, connected to every other rank. Owned by the handle. */
  readonly sync: GradientSync;
  /** The job's rendezvous store (namespaced by job id). */
  readonly store: Store;
  readonly job: JobContext;
  /**
   * This rank's training data, from wherever the launcher put it (Spark's stdin stream, `shoal run --data PATH`),
   * with the steps per epoch agreed across ranks; hand it to `Trainer.fit`. Collective. See `openWorkerData`.
   * Closed with the handle.
   */
  data(opts?: WorkerDataOptions): Promise<TrainingData>;
  /** Rank 0 prints `SHOAL_RESULT {json}` for the launcher (`shoal_spark.fit` returns it). */
  result(result: { history?: unknown; model?: string | null; [k: string]: unknown }): void;
  /** `SHOAL_LOGDIR` (`shoal run --logdir`): a Trainer given `sync` writes TensorBoard logs there. */
  readonly telemetry?: JobTelemetry;
  /** Close the engine, the transport and the store. Idempotent. */
  close(): Promise<void>;
}

/** The handle's `data`/`result` methods, and the data sets it opened (closed with it). */
function dataMethods(options: WorkerOptions, sync: GradientSync): Pick<WorkerHandle, 'data' | 'result'> & { closeData(): Promise<void> } {
  const opened: TrainingData[] = [];
  return {
    async data(opts) {
      const d = await openWorkerData(options, sync, opts);
      opened.push(d);
      return d;
    },
    result: (r) => reportResult(options, r),
    closeData: async () => void (await Promise.all(opened.map((d) => d.close().catch(() => {})))),
  };
}

/**
 * Join the job `shoal run` (or Spark) launched this process into: parse SHOAL_* once, connect to the store,
 * build the transport, and connect the gradient engine named by SHOAL_BACKEND: `ring` (RingSync over a process
 * group), `ps` (PsSync to the SHOAL_SERVERS server actors the launcher started), `hybrid` (HybridSync: dense on
 * the ring, row-sparse on the servers). A one-worker run (no launcher: `node train.js`) gets a `LocalSync` and
 * needs no store.
 *
 * Every rank must call this within SHOAL_TIMEOUT_MS of the others, or all fail with ERR_TIMEOUT naming the
 * missing rank's store key.
 */
export async function initWorker(init: InitWorkerOptions = {}): Promise<WorkerHandle> {
  const env = init.env ?? process.env;
  const options =
    init.options ??
    (init.env === undefined ? threadWorkerOptions() : undefined) ??
    (env.SHOAL_WORLD_SIZE === undefined ? parseWorkerOptions({ ...env, SHOAL_WORLD_SIZE: '1', SHOAL_RANK: '0' }) : parseWorkerOptions(env));
  const telemetry = parseJobTelemetry(env);
  checkEngineOptions(init);
  if (options.worldSize === 1 && options.storeUrl === '') {
    const sync = new LocalSync();
    attachJobTelemetry(sync, telemetry);
    const job = await joinJob({ options, env });
    const { closeData, ...dm } = dataMethods(options, sync);
    return { options, sync, store: job.store, job, ...dm, ...(telemetry ? { telemetry } : {}), close: async () => (await closeData(), await sync.close(), await job.close()) };
  }
  const job = await joinJob({ options, env });
  let engine: ConnectedEngine;
  try {
    if (options.elastic !== undefined) {
      // `shoal run --elastic`: the engine of the current membership generation, rebuilt on the next one.
      const elastic = await ElasticSync.connect(options, job, init);
      engine = { sync: elastic, close: () => elastic.close() };
    } else engine = await connectEngine(options, job, init);
  } catch (e) {
    await job.close();
    throw e;
  }
  const sync = engine.sync;
  attachJobTelemetry(sync, telemetry);
  let closed = false;
  const { closeData, ...dm } = dataMethods(options, sync);
  return {
    options,
    sync,
    store: job.store,
    job,
    ...dm,
    ...(telemetry ? { telemetry } : {}),
    async close() {
      if (closed) return;
      closed = true;
      await closeData();
      try {
        await engine.close();
      } finally {
        await job.close();
      }
    },
  };
}
