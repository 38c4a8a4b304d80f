import {
  connectHierarchical,
  connectHierarchicalIfHelpful,
  discoverHosts,
  HybridSync,
  PsSync,
  RingSync,
  ShmCollective,
  shmCollectiveAvailable,
  startPsServers,
  type GradientSync,
  type HierarchicalGroup,
  type RingSyncOptions,
} from '@shoal/backends';
import { connectGroup, createNetTransport, Errors, shmTransport, type ActorSupervisor, type Connection, type IoOptions, type Listener, type Transport, type WorkerOptions } from '@shoal/core';
import type { Timeline } from '@shoal/core/telemetry';
import type { JobContext } from './join-job.js';

/** How `connectEngine` builds the engines (the engine part of `InitWorkerOptions`). */
export interface EngineOptions {
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

/** Check `init`'s engine options (throws ERR_INVALID_ARG naming the bad one); returns the same-host choice. */
export function checkEngineOptions(init: EngineOptions): 'shm-collective' | 'transport' {
  const sameHost = init.ring?.sameHost ?? 'shm-collective';
  if (sameHost !== 'shm-collective' && sameHost !== 'transport') throw Errors.invalidArg('options.ring.sameHost', `must be shm-collective|transport, got ${String(sameHost)}`);
  const psShared = init.ps?.sharedMemory;
  if (psShared !== undefined && typeof psShared !== 'boolean') throw Errors.invalidArg('options.ps.sharedMemory', `must be true or false, got ${JSON.stringify(psShared)}`);
  return sameHost;
}

/** Where the launcher put things the engine connects to, when not where a plain job has them. */
export interface EnginePlacement {
  /** The ps server actors' names (default `ps-server-<i>`; an elastic job's generations have their own). */
  psServerName?: (i: number) => string;
  /**
   * Give the connect up (an elastic worker abandoning an older generation's): the rejection (ERR_ABORTED) comes at
   * once, the ring's group closes with its pairs still opening, and any part that connects later is closed then.
   */
  signal?: AbortSignal;
}

/** An engine with the transports it made for itself (closed with it). */
export interface ConnectedEngine {
  readonly sync: GradientSync;
  /** Close the engine, then the transports it made (the job's own transport and store stay open). */
  close(): Promise<void>;
}

/**
 * The engine factory: connect the gradient engine `options.backend` names over the joined `job`: `ring`
 * (RingSync over a process group, on the same-host collective or the hierarchy when they apply), `ps` (PsSync
 * to the server actors the launcher started, `ps-server-0..S-1` in the job's raw store), `hybrid` (HybridSync of
 * the two). Collective: every rank calls it with the same options. On failure what it made is closed; `job` is
 * the caller's. `timeline` (the caller's, not owned): the engine records its sync ops on it.
 */
export async function connectEngine(options: WorkerOptions, job: JobContext, init: EngineOptions = {}, timeline?: Timeline, placement: EnginePlacement = {}): Promise<ConnectedEngine> {
  const sameHost = checkEngineOptions(init);
  const signal = placement.signal;
  /** `p`, given up on abort; what it yields after that is closed. */
  const step = <T>(what: string, p: Promise<T>, dispose?: (v: T) => Promise<unknown>): Promise<T> => (signal === undefined ? p : abortable(what, p, signal, dispose));
  let sync: GradientSync;
  let psShm: Transport | undefined;
  let ringShm: Transport | undefined;
  try {
    // The hierarchy (when wanted and useful) for the dense gradients of RingSync; collective, after the flat group.
    const hierarchy = async (): Promise<HierarchicalGroup | undefined> => {
      const topology = init.ring?.topology ?? 'auto';
      const multiHost = options.transport === 'net' || options.transport === 'nng';
      if (topology === 'flat' || (topology === 'auto' && !multiHost)) return undefined;
      ringShm = options.transport === 'shm' ? undefined : shmTransport({ prefix: options.jobId, auth: options.auth });
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
      const g = await step('connecting the hierarchical group', topology === 'hierarchical' ? connectHierarchical(h) : connectHierarchicalIfHelpful(h), (x) => x?.close() ?? Promise.resolve());
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
      const { hostOf } = await step('discovering the hosts', discoverHosts({ rank: options.rank, size: options.worldSize, store: hostsStore, ...(init.hostId === undefined ? {} : { hostId: init.hostId }) }, options.timeoutMs));
      if (!hostOf.every((x) => x === hostOf[0])) return undefined;
      return step('connecting the same-host collective', ShmCollective.connect({ rank: options.rank, size: options.worldSize, store: job.store.prefixed('ring-coll'), prefix: options.jobId, timeoutMs: options.timeoutMs }), (c) => c.close());
    };
    const ring = async () => {
      const group = await connectGroup({ rank: options.rank, size: options.worldSize, store: job.store.prefixed('ring'), transport: job.transport, listenUrl: job.listenUrl, timeoutMs: options.timeoutMs, ...(signal ? { signal } : {}) });
      let h: HierarchicalGroup | undefined;
      let coll: ShmCollective | undefined;
      try {
        coll = await sameHostCollective();
        if (coll === undefined) h = await hierarchy();
        const { sameHost: _, ...ringOpts } = init.ring ?? {};
        return new RingSync(group, { ...ringOpts, ...(h === undefined ? {} : { hierarchical: h }), ...(coll === undefined ? {} : { collective: coll }), ...(timeline ? { timeline } : {}) });
      } catch (e) {
        await Promise.all([group.close(), h?.close(), coll?.close()]);
        throw e;
      }
    };
    // The launcher's server actors listen on tcp://, ipc:// (net transport) or shm:// (`shoal run --ps-link`):
    // dial each with the transport its scheme names, whatever SHOAL_TRANSPORT is.
    const ps = async () => {
      const net = options.transport === 'net' ? job.transport : createNetTransport({ auth: options.auth }); // holds nothing beyond its connections
      const shm = () => {
        if (options.transport === 'shm') return job.transport;
        // Created on first shm:// dial; closed with the handle.
        psShm ??= shmTransport({ prefix: options.jobId, auth: options.auth });
        return psShm;
      };
      const transport = new SchemeRouter(net, shm);
      // `--ps-placement worker`: rank 0 hosts the servers (actors on this process's event loop, over shm); every
      // rank meets the others at close, so they outlive each rank's last request.
      const inWorker = options.psPlacement === 'worker';
      const hosted: ActorSupervisor[] =
        inWorker && options.rank === 0
          ? await startPsServers({ placement: 'local', store: job.rawStore, transport: shm(), listenUrl: 'shm://auto', numServers: options.servers, numWorkers: options.worldSize, mode: 'sync', timeoutMs: options.timeoutMs })
          : [];
      const stopHosted = async () => void (await Promise.all(hosted.map((s) => s.stop())));
      try {
        return await step('connecting the parameter servers', PsSync.connect({
          ...(placement.psServerName ? { serverName: placement.psServerName } : {}),
          rank: options.rank,
          numWorkers: options.worldSize,
          numServers: options.servers,
          store: job.rawStore,
          transport,
          timeoutMs: options.timeoutMs,
          sharedMemory: init.ps?.sharedMemory,
          regionPrefix: options.jobId,
          resendAfterRestart: options.psResend === true,
          ...(timeline ? { timeline } : {}),
          ...(inWorker ? { closeTogether: true, onClose: stopHosted } : {}),
        }), (x) => x.close());
      } catch (e) {
        await stopHosted();
        throw e;
      }
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
    throw e;
  }
  const engine = sync;
  if (signal?.aborted) {
    // given up while the last part connected
    await engine.close().catch(() => {});
    await psShm?.close?.().catch(() => {});
    await ringShm?.close?.().catch(() => {});
    throw Errors.aborted('connecting the engine', signal.reason);
  }
  return {
    sync: engine,
    async close() {
      try {
        await engine.close();
      } finally {
        await psShm?.close?.().catch(() => {});
        await ringShm?.close?.().catch(() => {});
      }
    },
  };
}

/** `p`, or ERR_ABORTED as soon as `signal` aborts; a value `p` yields after that goes to `dispose`. */
function abortable<T>(what: string, p: Promise<T>, signal: AbortSignal, dispose?: (v: T) => Promise<unknown>): Promise<T> {
  const late = () => void p.then((v) => dispose?.(v).catch(() => {}), () => {});
  if (signal.aborted) {
    late();
    return Promise.reject(Errors.aborted(what, signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      late();
      reject(Errors.aborted(what, signal.reason));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) return; // given up already: `late` disposes of it
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
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
