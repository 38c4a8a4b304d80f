import { attachElastic, attachJobTelemetry, LocalSync, type GradientSync, type JobTelemetry } from '@shoal/backends';
import { Errors, parseWorkerOptions, type Store, type WorkerOptions } from '@shoal/core';
import { estimateClockOffset, mergeTimeline, Timeline, timelinePartPath } from '@shoal/core/telemetry';
import { checkEngineOptions, connectEngine, type ConnectedEngine, type EngineOptions } from './engine-factory.js';
import type { TrainingData } from '@shoal/datasets';
import { ElasticSync } from './elastic-sync.js';
import { openCommitStore, StageElastic } from '../elastic/commit-store.js';
import { joinJob, threadWorkerOptions, type JobContext } from './join-job.js';
import { openWorkerData, reportResult, type WorkerDataOptions } from './worker-data.js';

/** What the worker environment asks every rank to record. */
export interface TelemetryOptions {
  /** `SHOAL_LOGDIR` (`shoal run --logdir DIR`): TensorBoard runs. */
  readonly logdir?: string;
  /**
   * `SHOAL_TIMELINE` (`shoal run --timeline FILE`): the merged timeline; this rank writes its part
   * `FILE.rank-<r>.jsonl` (`timelinePartPath`), which `shoal run` merges into FILE when the job ends.
   */
  readonly timeline?: string;
}

/** The job's telemetry settings from the worker environment: `SHOAL_LOGDIR` and `SHOAL_TIMELINE`. */
export function parseJobTelemetry(env: Record<string, string | undefined>): TelemetryOptions | undefined {
  const o: { logdir?: string; timeline?: string } = {};
  for (const [key, name] of [['logdir', 'SHOAL_LOGDIR'], ['timeline', 'SHOAL_TIMELINE']] as const) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    if (v.includes('\0')) throw Errors.config(name, 'contains a NUL byte');
    o[key] = v;
  }
  return o.logdir === undefined && o.timeline === undefined ? undefined : o;
}

/**
 * This rank's timeline recorder for `SHOAL_TIMELINE`, and how to finish it: close it and, for a worker alone (no
 * launcher to merge the parts: no store and no SHOAL_LAUNCHER, which Spark's task sets as its driver merges),
 * merge its own part into the file.
 */
function openTimeline(t: TelemetryOptions | undefined, options: WorkerOptions, launcher: string | undefined): { timeline?: Timeline; finish(): Promise<void> } {
  if (t?.timeline === undefined) return { finish: async () => {} };
  const part = timelinePartPath(t.timeline, options.rank);
  const timeline = new Timeline({ path: part, pid: options.rank });
  const alone = options.worldSize === 1 && options.storeUrl === '' && (launcher ?? '') === '';
  return {
    timeline,
    async finish() {
      await timeline.close();
      if (alone) await mergeTimeline(t.timeline!, [part], { remove: true });
    },
  };
}

/** A store reached over loopback runs on this host: it reads the same clock. */
function onThisHost(storeUrl: string): boolean {
  const host = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):/.exec(storeUrl)?.[1] ?? '';
  return /^127\./.test(host) || host === '[::1]' || host === 'localhost';
}

/**
 * Record how far this rank's clock is from the store host's (a few round trips, the shortest kept): the merge
 * shifts the rank's spans by it, so ranks on hosts whose clocks disagree line up. Nothing without a timeline, nor
 * where the store shares this process's clock (in-process, or over loopback: an estimate would only add its error).
 */
async function alignTimeline(timeline: Timeline | undefined, store: Store, storeUrl: string): Promise<void> {
  if (timeline === undefined || store.clock === undefined || onThisHost(storeUrl)) return;
  timeline.clockOffset(await estimateClockOffset(store.clock, `store ${storeUrl}`));
}

/** How long the second offset, taken as the rank closes, may take before the timeline keeps only the first. */
const REALIGN_MS = 2_000;

/**
 * The offset again as the rank leaves: with the one taken at join, the merge interpolates between the two, which
 * takes out the clocks' drift over the job (NTP's frequency correction, two points of it). Best effort: a store
 * that is already gone or slow leaves the join offset alone, and closing goes on.
 */
async function realignTimeline(timeline: Timeline | undefined, store: Store, storeUrl: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, REALIGN_MS)));
  await Promise.race([alignTimeline(timeline, store, storeUrl).catch(() => {}), late]).finally(() => clearTimeout(timer));
}

/** The telemetry handed down to the engine and the Trainer (undefined when nothing is recorded). */
function jobTelemetry(t: TelemetryOptions | undefined, timeline: Timeline | undefined): JobTelemetry | undefined {
  if (t?.logdir === undefined && timeline === undefined) return undefined;
  return { ...(t?.logdir === undefined ? {} : { logdir: t.logdir }), ...(timeline ? { timeline } : {}) };
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
  /**
   * `SHOAL_LOGDIR` (`shoal run --logdir`): a Trainer given `sync` writes TensorBoard logs there; `SHOAL_TIMELINE`
   * (`shoal run --timeline`): this rank's timeline, written by the engine and the Trainer, closed with the handle.
   */
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
  const topts = parseJobTelemetry(env);
  checkEngineOptions(init);
  const tl = openTimeline(topts, options, env.SHOAL_LAUNCHER);
  const telemetry = jobTelemetry(topts, tl.timeline);
  // A stage of an elastic Spark job: commits go to the driver (or a folder) and a restarted stage starts from them.
  const commits = openCommitStore(options);
  const stage = (sync: GradientSync) => {
    if (commits !== undefined) attachElastic(sync, new StageElastic(options.elasticStage!.stage, commits, options.elasticStage!.lost));
  };
  if (options.worldSize === 1 && options.storeUrl === '') {
    const sync = new LocalSync();
    attachJobTelemetry(sync, telemetry);
    stage(sync);
    const job = await joinJob({ options, env });
    const { closeData, ...dm } = dataMethods(options, sync);
    return { options, sync, store: job.store, job, ...dm, ...(telemetry ? { telemetry } : {}), close: async () => (await closeData(), await sync.close(), await commits?.close(), await job.close(), await tl.finish()) };
  }
  let job: JobContext;
  let engine: ConnectedEngine;
  try {
    job = await joinJob({ options, env });
    try {
      await alignTimeline(tl.timeline, job.store, options.storeUrl);
      if (options.elastic !== undefined) {
        // `shoal run --elastic`: the engine of the current membership generation, rebuilt on the next one.
        const elastic = await ElasticSync.connect(options, job, init, tl.timeline);
        engine = { sync: elastic, close: () => elastic.close() };
      } else engine = await connectEngine(options, job, init, tl.timeline);
    } catch (e) {
      await job.close();
      throw e;
    }
  } catch (e) {
    await tl.finish().catch(() => {});
    throw e;
  }
  const sync = engine.sync;
  attachJobTelemetry(sync, telemetry);
  stage(sync);
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
        await realignTimeline(tl.timeline, job.store, options.storeUrl);
        await commits?.close().catch(() => {});
        await job.close();
        await tl.finish();
      }
    },
  };
}
