import type { GradientSync } from '@shoal/backends';
import { PsSync, RingSync, type RingSyncOptions } from '@shoal/backends';
import { HybridSync } from '../hybrid-sync.js';
import { createNetTransport, joinJob, parseWorkerOptions, threadWorkerOptions, type JobContext, type Store, type WorkerOptions } from '@shoal/core';
import { LocalSync } from '../local-sync.js';

export interface InitWorkerOptions {
  /** Environment to parse (default `process.env`, read once here and nowhere below). */
  env?: Record<string, string | undefined>;
  /**
   * Already-parsed options (overrides `env`). Default: in a worker thread of `shoal run --threads` the options
   * the launcher passed in `workerData`, else parsed from `env`.
   */
  options?: WorkerOptions;
  ring?: RingSyncOptions;
}

/** A worker's membership in a job. */
export interface WorkerHandle {
  readonly options: WorkerOptions;
  /** The engine SHOAL_BACKEND names, connected to every other rank. Owned by the handle. */
  readonly sync: GradientSync;
  /** The job's rendezvous store (namespaced by job id). */
  readonly store: Store;
  readonly job: JobContext;
  /** Close the engine, the transport and the store. Idempotent. */
  close(): Promise<void>;
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
  if (options.worldSize === 1 && options.storeUrl === '') {
    const sync = new LocalSync();
    const job = await joinJob({ options, env });
    return { options, sync, store: job.store, job, close: async () => (await sync.close(), await job.close()) };
  }
  const job = await joinJob({ options, env });
  let sync: GradientSync;
  try {
    const ring = () =>
      RingSync.connect(
        { rank: options.rank, size: options.worldSize, store: job.store.prefixed('ring'), transport: job.transport, listenUrl: job.listenUrl, timeoutMs: options.timeoutMs },
        init.ring,
      );
    // The launcher's server actors listen with the net transport; reach them over net whatever SHOAL_TRANSPORT is.
    const ps = () => {
      let transport = job.transport;
      if (options.transport !== 'net') transport = createNetTransport(); // holds no resources beyond its connections
      return PsSync.connect({ rank: options.rank, numWorkers: options.worldSize, numServers: options.servers, store: job.rawStore, transport, timeoutMs: options.timeoutMs });
    };
    switch (options.backend) {
      case 'ring':
        sync = await ring();
        break;
      case 'ps':
        sync = await ps();
        break;
      case 'hybrid': {
        const r = await ring();
        try {
          sync = new HybridSync(r, await ps());
        } catch (e) {
          await r.close();
          throw e;
        }
        break;
      }
    }
  } catch (e) {
    await job.close();
    throw e;
  }
  let closed = false;
  return {
    options,
    sync,
    store: job.store,
    job,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await sync.close();
      } finally {
            await job.close();
      }
    },
  };
}
