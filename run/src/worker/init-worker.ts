import {
  attachJobTelemetry,
  connectHierarchical,
  connectHierarchicalIfHelpful,
  discoverHosts,
  HybridSync,
  LocalSync,
  PsSync,
  RingSync,
  ShmCollective,
  shmCollectiveAvailable,
  type GradientSync,
  type HierarchicalGroup,
  type JobTelemetry,
  type RingSyncOptions,
} from '@shoal/backends';
import {
  connectGroup,
  createNetTransport,
  Errors,
  parseWorkerOptions,
  shmTransport,
  type Connection,
  type IoOptions,
  type Listener,
  type Store,
  type Transport,
  type WorkerOptions,
} from '@shoal/core';
import type { TrainingData } from '@shoal/datasets';
import { joinJob, threadWorkerOptions, type JobContext } from './join-job.js';
import { openWorkerData, reportResult, type WorkerDataOptions } from './worker-data.js';

/** The job's telemetry settings from the worker environment: `SHOAL_LOGDIR` (`shoal run --logdir DIR`). */
export function parseJobTelemetry(env: Record<string, string | undefined>): JobTelemetry | undefined {
  const logdir = env.SHOAL_LOGDIR;
  if (logdir === undefined || logdir === '') return undefined;
  if (logdir.includes('\0')) throw Errors.config('SHOAL_LOGDIR', 'contains a NUL byte');
  return { logdir };
}

export interface InitWorkerOptions {
  /** Environment to parse (default `process.env`, read once here and nowhere below). */
  env?: Record<string, string | undefined>;
  /**
   * Already-parsed options (overrides `env`). Default: in a worker thread of `shoal run --threads` the options
   * the launcher passed in `workerData`, else parsed from `env`.
   */
  options?: WorkerOptions;
  /**
   * RingSync options (ring and hybrid backends). `topology` (default 'auto'): on a multi-host capable transport
   * (net, nng) the ranks publish their host ids in the store and, when the job spans several hosts with several
   * ranks on one, dense gradients go through the hierarchical allreduce (shm inside a host, this transport across
   * host leaders); 'flat' keeps the flat ring; 'hierarchical' builds the hierarchy on any transport. Single-host
   * shm jobs stay on the flat ring. `hierarchical` and `collective` are built here and must not be passed.
   *
   * `sameHost` (default 'shm-collective'): when every rank is on one host (host ids read through the store,
   * hostname + boot id) the dense, control and scalar allreduces, the broadcast and the barrier run on one shared
   * segment (`ShmCollective`), and the hierarchy's within-host stages likewise; 'transport' keeps them on the
   * job's transport (and the hierarchy's shm ring). Falls back to the transport when the addon is not built.
   */
  ring?: Omit<RingSyncOptions, 'hierarchical' | 'collective'> & { sameHost?: 'shm-collective' | 'transport' };
  /**
   * Parameter-server options (ps and hybrid backends). `sharedMemory` (default true): dense values to and from
   * servers on this rank's host go through shared staging buffers, requests carry only control messages (see
   * `KVWorkerOptions.sharedMemory`); false sends them in messages.
   */
  ps?: { sharedMemory?: boolean };
  /** Tests only: this rank's host id for the hierarchical topology (default: `localHostId()`, hostname + boot id). */
  hostId?: string;
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
  const sameHost = init.ring?.sameHost ?? 'shm-collective';
  if (sameHost !== 'shm-collective' && sameHost !== 'transport') throw Errors.invalidArg('options.ring.sameHost', `must be shm-collective|transport, got ${String(sameHost)}`);
  const psShared = init.ps?.sharedMemory;
  if (psShared !== undefined && typeof psShared !== 'boolean') throw Errors.invalidArg('options.ps.sharedMemory', `must be true or false, got ${JSON.stringify(psShared)}`);
  if (options.worldSize === 1 && options.storeUrl === '') {
    const sync = new LocalSync();
    attachJobTelemetry(sync, telemetry);
    const job = await joinJob({ options, env });
    const { closeData, ...dm } = dataMethods(options, sync);
    return { options, sync, store: job.store, job, ...dm, ...(telemetry ? { telemetry } : {}), close: async () => (await closeData(), await sync.close(), await job.close()) };
  }
  const job = await joinJob({ options, env });
  let sync: GradientSync;
  let psShm: Transport | undefined;
  let ringShm: Transport | undefined;
  try {
    // The hierarchy (when wanted and useful) for the dense gradients of RingSync; collective, after the flat group.
    const hierarchy = async (): Promise<HierarchicalGroup | undefined> => {
      const topology = init.ring?.topology ?? 'auto';
      const multiHost = options.transport === 'net' || options.transport === 'nng';
      if (topology === 'flat' || (topology === 'auto' && !multiHost)) return undefined;
      ringShm = options.transport === 'shm' ? undefined : shmTransport({ prefix: options.jobId });
      const h = {
        rank: options.rank,
        size: options.worldSize,
        store: job.store.prefixed('ring-hier'),
        local: ringShm === undefined ? { transport: job.transport, listenUrl: job.listenUrl } : { transport: ringShm, listenUrl: 'shm://auto' },
        cross: { transport: job.transport, listenUrl: job.listenUrl },
        timeoutMs: options.timeoutMs,
        sameHost,
        prefix: options.jobId,
        ...(init.hostId === undefined ? {} : { hostId: init.hostId }),
      };
      const g = topology === 'hierarchical' ? await connectHierarchical(h) : await connectHierarchicalIfHelpful(h);
      if (g === undefined) {
        await ringShm?.close?.();
        ringShm = undefined;
      }
      return g;
    };
    // Same-host collective: when every rank is on this host (collective; all ranks read the same host list and
    // the same addon, so they all decide alike).
    const sameHostCollective = async (): Promise<ShmCollective | undefined> => {
      if (sameHost !== 'shm-collective' || options.worldSize === 1 || (init.ring?.topology ?? 'auto') === 'hierarchical' || !shmCollectiveAvailable()) return undefined;
      const hostsStore = job.store.prefixed('ring-hosts');
      const { hostOf } = await discoverHosts({ rank: options.rank, size: options.worldSize, store: hostsStore, ...(init.hostId === undefined ? {} : { hostId: init.hostId }) }, options.timeoutMs);
      if (!hostOf.every((x) => x === hostOf[0])) return undefined;
      return ShmCollective.connect({ rank: options.rank, size: options.worldSize, store: job.store.prefixed('ring-coll'), prefix: options.jobId, timeoutMs: options.timeoutMs });
    };
    const ring = async () => {
      const group = await connectGroup({ rank: options.rank, size: options.worldSize, store: job.store.prefixed('ring'), transport: job.transport, listenUrl: job.listenUrl, timeoutMs: options.timeoutMs });
      let h: HierarchicalGroup | undefined;
      let coll: ShmCollective | undefined;
      try {
        coll = await sameHostCollective();
        if (coll === undefined) h = await hierarchy();
        const { sameHost: _, ...ringOpts } = init.ring ?? {};
        return new RingSync(group, { ...ringOpts, ...(h === undefined ? {} : { hierarchical: h }), ...(coll === undefined ? {} : { collective: coll }) });
      } catch (e) {
        await Promise.all([group.close(), h?.close(), coll?.close()]);
        throw e;
      }
    };
    // The launcher's server actors listen on tcp://, ipc:// (net transport) or shm:// (`shoal run --ps-link`):
    // dial each with the transport its scheme names, whatever SHOAL_TRANSPORT is.
    const ps = () => {
      const net = options.transport === 'net' ? job.transport : createNetTransport(); // holds nothing beyond its connections
      const shm = () => {
        if (options.transport === 'shm') return job.transport;
        // Created on first shm:// dial; closed with the handle.
        psShm ??= shmTransport({ prefix: options.jobId });
        return psShm;
      };
      const transport = new SchemeRouter(net, shm);
      return PsSync.connect({ rank: options.rank, numWorkers: options.worldSize, numServers: options.servers, store: job.rawStore, transport, timeoutMs: options.timeoutMs, sharedMemory: init.ps?.sharedMemory, regionPrefix: options.jobId, resendAfterRestart: options.psResend === true });
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
    await psShm?.close?.();
    await ringShm?.close?.();
    await job.close();
    throw e;
  }
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
        await sync.close();
      } finally {
        await psShm?.close?.().catch(() => {});
        await ringShm?.close?.().catch(() => {});
        await job.close();
      }
    },
  };
}

/**
 * Dials `shm://` URLs with the shm transport (made on first use by `shm`) and everything else with `net`. Only
 * for dialing the ps servers: it does not listen, and it owns neither transport (`close` is a no-op).
 */
class SchemeRouter implements Transport {
  readonly name = 'ps-link';
  readonly schemes = ['tcp', 'ipc', 'shm'] as const;
  constructor(
    private readonly net: Transport,
    private readonly shm: () => Transport,
  ) {}
  listen(url: string, _opts?: IoOptions): Promise<Listener> {
    return Promise.reject(Errors.invalidArg('url', `the ps-link transport only dials, cannot listen on ${url}`));
  }
  dial(url: string, opts?: IoOptions): Promise<Connection> {
    return url.startsWith('shm://') ? this.shm().dial(url, opts) : this.net.dial(url, opts);
  }
}
