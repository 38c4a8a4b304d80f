import { isMainThread, workerData } from 'node:worker_threads';
import { parseWorkerOptions, type WorkerOptions, Errors, MemoryStore, type Store, TcpStore, createNetTransport, createNngTransport, shmTransport, type Transport } from '@shoal/core';
import { sweepLeftovers } from '@shoal/core/security';

/** What a worker holds once it has joined a job: its options, the rendezvous store and a transport. */
export interface JobContext {
  readonly options: WorkerOptions;
  /** The job's store, namespaced by job id. Owned by the context (closed by `close`). */
  readonly store: Store;
  /**
   * The store without the job-id prefix: where launcher-started actors (the ps servers `ps-server-<i>`) are
   * registered. A launcher serves one job per store, so nothing else lives there.
   */
  readonly rawStore: Store;
  /** The transport named by SHOAL_TRANSPORT. Owned by the context. */
  readonly transport: Transport;
  /** URL this rank listens on for its peers (`tcp://<SHOAL_HOST>:0`, `shm://auto`). */
  readonly listenUrl: string;
  /** Close the transport and the store connection, stop watching the parent. Idempotent. */
  close(): Promise<void>;
}

export interface JoinJobOptions {
  /**
   * Parsed options, or an environment to parse. Default: in a worker thread started by `launch({ threads })`
   * the options it passed in `workerData` (`threadWorkerOptions`), else `process.env`, read once here.
   */
  options?: WorkerOptions;
  env?: Record<string, string | undefined>;
  /**
   * Exit this process when the launcher that started it goes away (its pid in SHOAL_PARENT_PID stops being
   * our parent), so no worker outlives `shoal run`. Default true when SHOAL_PARENT_PID is set.
   */
  watchParent?: boolean;
}

/** The `workerData` key under which `launch({ threads: true })` hands each worker thread its WorkerOptions. */
export const THREAD_OPTIONS_KEY = 'shoalWorkerOptions';

/**
 * The WorkerOptions `launch({ threads: true })` passed to this worker thread (in `workerData`), or undefined
 * on the main thread or in a thread not started by the launcher. The thread-mode counterpart of parsing SHOAL_*
 * from the environment; the object is validated like the environment is (throws ERR_CONFIG on bad input).
 */
export function threadWorkerOptions(): WorkerOptions | undefined {
  if (isMainThread) return undefined;
  const o = (workerData as Record<string, unknown> | null | undefined)?.[THREAD_OPTIONS_KEY] as WorkerOptions | undefined;
  if (o === undefined) return undefined;
  // Re-validate through the one parser so a thread's options obey the same rules as a process's environment.
  return parseWorkerOptions({
    SHOAL_RANK: String(o.rank),
    SHOAL_WORLD_SIZE: String(o.worldSize),
    SHOAL_LOCAL_RANK: String(o.localRank),
    SHOAL_STORE: o.storeUrl,
    SHOAL_JOB_ID: o.jobId,
    SHOAL_TRANSPORT: o.transport,
    SHOAL_BACKEND: o.backend,
    SHOAL_SERVERS: String(o.servers),
    SHOAL_TIMEOUT_MS: String(o.timeoutMs),
    SHOAL_HOST: o.host,
    // The secret is not in workerData (JobAuth keeps it in a private field, which is not cloned): the launcher
    // put it in this thread's environment.
    SHOAL_JOB_SECRET: process.env.SHOAL_JOB_SECRET,
    SHOAL_JOB_TLS: process.env.SHOAL_JOB_TLS,
    ...(o.data?.from === 'stdin' ? { SHOAL_INPUT: 'stdin' } : o.data?.from === 'path' ? { SHOAL_DATA: o.data.path } : {}),
    ...(o.columns ? { SHOAL_FEATURES: o.columns.features.join(','), SHOAL_LABEL: o.columns.label } : {}),
  });
}

/** Build the transport SHOAL_TRANSPORT names. */
export function transportFor(options: WorkerOptions): { transport: Transport; listenUrl: string } {
  switch (options.transport) {
    case 'net':
      return { transport: createNetTransport({ auth: options.auth }), listenUrl: `tcp://${options.host}:0` };
    case 'nng':
      return { transport: createNngTransport({ auth: options.auth }), listenUrl: `tcp://${options.host}:0` };
    case 'shm':
      return { transport: shmTransport({ prefix: options.jobId, auth: options.auth }), listenUrl: 'shm://auto' };
    case 'memory':
      throw Errors.config('SHOAL_TRANSPORT', 'memory is for in-process tests; a worker process needs net, nng or shm');
  }
}

/** The launcher died (even by SIGKILL): remove its job's names from /dev/shm and /tmp, then exit 129. */
function exitAfterLauncher(launcherPid: number): never {
  sweepLeftovers({ ownerPid: launcherPid });
  process.exit(129);
}

/**
 * Start watching the launcher: when our parent pid is no longer `parentPid` (the launcher died, even by
 * SIGKILL, and we were re-parented) or our stdin pipe from it closes, exit with code 129. Returns a stop
 * function. The timer is unref'd so it never keeps the process alive.
 */
export function watchParent(parentPid: number, onLost: () => void = () => exitAfterLauncher(parentPid), everyMs = 500): () => void {
  const timer = setInterval(() => {
    if (process.ppid !== parentPid) onLost();
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * Join the job described by SHOAL_* (see `config.ts`): connect to the launcher's TCP store (a private
 * in-memory store for a one-worker run without a launcher), create the transport, and watch the parent.
 * The engine (ring/ps/hybrid) is built on top by `initWorker` (./init-worker.ts).
 */
export async function joinJob(opts: JoinJobOptions = {}): Promise<JobContext> {
  const env = opts.env ?? process.env;
  const fromThread = opts.options === undefined && opts.env === undefined ? threadWorkerOptions() : undefined;
  const options = opts.options ?? fromThread ?? parseWorkerOptions(env);
  // A launcher's worker thread dies with its process: nothing to watch (and process.ppid is not the launcher).
  const parentPid = isMainThread ? Number(env.SHOAL_PARENT_PID ?? '') : NaN;
  const stopWatch = (opts.watchParent ?? Number.isInteger(parentPid)) && parentPid > 0 ? watchParent(parentPid) : () => {};
  let rawStore: Store;
  if (options.storeUrl === '') {
    if (options.worldSize > 1) throw Errors.config('SHOAL_STORE', 'is required when SHOAL_WORLD_SIZE > 1');
    rawStore = new MemoryStore();
  } else {
    rawStore = await TcpStore.connect(options.storeUrl, { auth: options.auth, connectTimeoutMs: options.timeoutMs, timeoutMs: options.timeoutMs });
  }
  let transport: Transport;
  let listenUrl: string;
  try {
    ({ transport, listenUrl } = transportFor(options));
  } catch (e) {
    stopWatch();
    await rawStore.close?.();
    throw e;
  }
  let closed = false;
  return {
    options,
    store: rawStore.prefixed(options.jobId),
    rawStore,
    transport,
    listenUrl,
    async close() {
      if (closed) return;
      closed = true;
      stopWatch();
      await transport.close?.();
      await rawStore.close?.();
    },
  };
}
