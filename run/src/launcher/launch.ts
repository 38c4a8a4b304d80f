import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { constants, hostname, tmpdir } from 'node:os';
import { Worker as ThreadWorker } from 'node:worker_threads';

const osSignals = constants.signals as Record<string, number>;
import { Errors, TcpStore, TcpStoreServer, type ActorSupervisor, type WorkerOptions } from '@shoal/core';
import { removeStaleSegments } from '@shoal/core/transport';
import { JOB_SECRET_ENV, JOB_TLS_ENV, JobAuth, JobTls } from '@shoal/core';
import { sweepLeftovers } from '@shoal/core/security';
import { launchTelemetry, mergeJobTimeline, serverTelemetry } from './launch-telemetry.js';
import { removeServerSockets, startPsServerActors } from './ps-servers.js';
import { isLocalHost, placeRanks, remoteCommand, type Placement } from './hosts.js';
import { THREAD_OPTIONS_KEY } from '../worker/join-job.js';
import { isTypeScript, TS_THREAD_KEY, tsxFor } from './typescript.js';
import { checkElasticLaunch, ElasticSupervisor } from './elastic-supervisor.js';
import { elasticServerName } from '../elastic/generations.js';
import { GenerationServers } from '../elastic/generation-servers.js';
import { howItEnded, pickRootCause, pickStalledRank, summarizeFailure } from './failure-report.js';
import type { LaunchOptions, LaunchResult } from './launch-options.js';

export type { ElasticLaunchOptions } from './elastic-supervisor.js';

const TAIL_LINES = 40;
/** Restarts of each server under `psDurable` before its death fails the job, and the pause before each. */
export const PS_MAX_RESTARTS = 3;
const PS_RESTART_BACKOFF_MS = 100;

/** `node` arguments that run `script`: `.ts` needs `--import tsx`. Throws ERR_CONFIG when it cannot run. */
export function nodeArgsFor(script: string): string[] {
  const path = resolve(script);
  if (!existsSync(path)) throw Errors.config('script', `${script} does not exist`);
  return isTypeScript(path) ? ['--import', tsxFor(path).loader, path] : [path];
}

interface Worker {
  rank: number;
  /** A child process (process mode) or a worker thread (thread mode). */
  child?: ChildProcess;
  thread?: ThreadWorker;
  tail: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  done: boolean;
  terminating?: boolean;
}

/**
 * What a worker thread runs for `script`: the script itself (JavaScript), or the ts-thread entry that loads it
 * through tsx (TypeScript), with the `workerData` entry that entry reads.
 */
function threadScriptFor(script: string): { entry: string; data: Record<string, unknown> } {
  const path = resolve(script);
  if (!existsSync(path)) throw Errors.config('script', `${script} does not exist`);
  if (!isTypeScript(path)) return { entry: path, data: {} };
  const entry = new URL('./ts-thread.js', import.meta.url);
  return { entry: entry.pathname, data: { [TS_THREAD_KEY]: { api: tsxFor(path).api, script: pathToFileURL(path).href } } };
}

/**
 * Run one job to completion: start the rendezvous store, spawn the workers with the SHOAL_* environment
 * (`core/src/config.ts`), stream their output prefixed `[rank r]`, and wait. The first worker to fail (non-zero
 * exit or signal) fails the job: after `settleMs` every other worker is stopped (SIGTERM to its process group,
 * SIGKILL after `graceMs`), and the result names the root-cause rank (`pickRootCause`) and its error. Workers
 * get SHOAL_PARENT_PID and exit on their own if this process dies (see `joinJob`). Never throws for worker
 * failures; throws ERR_CONFIG / RangeError for bad options and ERR_ABORTED if `signal` is already aborted.
 */
export async function launch(options: LaunchOptions): Promise<LaunchResult> {
  const n = options.numWorkers;
  if (!Number.isInteger(n) || n < 1) throw Errors.invalidArg('numWorkers', `must be a positive integer, got ${n}`);
  const servers = options.servers ?? 1;
  if (!Number.isInteger(servers) || servers < 1) throw Errors.invalidArg('servers', `must be a positive integer, got ${servers}`);
  const backend = options.backend ?? 'ring';
  const threads = options.threads ?? false;
  if (options.psDurable !== undefined && backend === 'ring') throw Errors.config('psDurable', 'keeps parameter servers alive: it needs --backend ps or hybrid');
  if (options.elastic !== undefined) checkElasticLaunch(options.elastic, { numWorkers: n, threads, durable: options.psDurable !== undefined, hosts: options.hosts !== undefined });
  if (options.psMode !== undefined && options.psMode !== 'sync' && options.psMode !== 'async') throw Errors.invalidArg('psMode', `must be sync|async, got ${JSON.stringify(options.psMode)}`);
  if (options.psMode === 'async' && backend !== 'ps') throw Errors.config('psMode', `async needs --backend ps (the ${backend} backend averages gradients in sync rounds)`);
  if (options.staleness !== undefined && (!Number.isInteger(options.staleness) || options.staleness < 0)) throw Errors.invalidArg('staleness', `must be an integer >= 0, got ${options.staleness}`);
  if (options.staleness !== undefined && options.psMode !== 'async') throw Errors.config('staleness', 'bounds how far async workers run ahead: it needs --ps-mode async');
  if (options.elastic !== undefined && options.psMode === 'async') throw Errors.config('elastic', 'runs sync rounds: drop --ps-mode async');
  if (options.data !== undefined && !existsSync(options.data)) throw Errors.config('data', `${options.data} does not exist`);
  const data = options.data === undefined ? undefined : resolve(options.data);
  const placement: Placement[] | undefined = options.hosts ? placeRanks(options.hosts, n) : undefined;
  const multiHost = placement !== undefined && (new Set(placement.map((p) => p.host)).size > 1 || !isLocalHost(placement[0]!.host));
  if (multiHost && threads) throw Errors.config('threads', 'worker threads run on this host only: drop --threads or --hosts');
  const localHost = options.hosts?.find((h) => isLocalHost(h.host))?.host;
  if (multiHost && localHost !== undefined && ['localhost', '127.0.0.1', '::1'].includes(localHost)) {
    throw Errors.config('hosts', `name this host by a name or address the other hosts can reach, not ${localHost}`);
  }
  const rsh = options.rsh ?? ['ssh', '-o', 'BatchMode=yes'];
  if (rsh.length === 0) throw Errors.config('rsh', 'is empty');
  // Every worker of a local `shoal run` is on this host: shared memory is the default for both links, chosen by
  // the figures in bench/README.md (8 B allreduce p50 ~22 us vs ~35 us over TCP; 64 MiB 2-3x net's busbw; small
  // ps rounds 2.5x faster than unix sockets). Across hosts nng (the cluster bench: level with net on a full
  // 1 Gbit/s link, 2-3x net at 16-64 MiB when the CPU is the limit) and tcp to the servers.
  const transport = options.transport ?? (multiHost ? (options.tls ? 'net' : 'nng') : 'shm');
  if (options.tls && transport === 'nng') throw Errors.config('tls', 'the nng transport has no TLS in shoal: use --transport net with --tls');
  const psLink = options.psLink ?? (multiHost ? 'tcp' : 'shm');
  if (multiHost && (transport === 'shm' || psLink !== 'tcp')) throw Errors.config('transport', `ranks on several hosts need --transport net|nng and --ps-link tcp (got ${transport}, ${psLink})`);
  const psInWorker = options.psPlacement === 'worker' && backend !== 'ring';
  if (options.psPlacement !== undefined && options.psPlacement !== 'process' && options.psPlacement !== 'worker') throw Errors.config('psPlacement', `must be process or worker, got ${JSON.stringify(options.psPlacement)}`);
  if (psInWorker && (multiHost || options.psDurable !== undefined || options.psMode === 'async' || options.elastic !== undefined)) {
    throw Errors.config('psPlacement', 'worker (servers in rank 0) is for same-host sync jobs without --ps-durable or --elastic');
  }
  // The store (and the ps servers) listen here: with several hosts, on this machine's entry of the list (or its
  // hostname, when the launcher's host runs no rank), which every host can reach.
  const host = options.host ?? (multiHost ? (localHost ?? hostname()) : '127.0.0.1');
  const graceMs = options.graceMs ?? 3000;
  const out = options.stdout ?? process.stdout;
  const errOut = options.stderr ?? process.stderr;
  const argv = threads ? [] : [...(options.nodeArgs ?? []), ...nodeArgsFor(options.script), ...(options.args ?? [])];
  const threadScript = threads ? threadScriptFor(options.script) : { entry: '', data: {} };
  if (options.signal?.aborted) throw Errors.aborted('shoal run', options.signal.reason);
  const telemetry = launchTelemetry(options);
  // The workers' environment on top of this process's: the caller's `env`, the log folder and the timeline file.
  const workerEnv: Record<string, string> = { ...(options.env ?? {}), ...telemetry.env };
  const t0 = Date.now();
  const jobId = options.jobId ?? `job-${process.pid}-${t0.toString(36)}`;
  // Names left in /dev/shm and the temporary directory by jobs whose launcher was killed.
  sweepLeftovers();
  // The job secret: in the workers' and servers' environment only (never argv, the store or a log).
  const auth = options.tls ? JobAuth.generate(jobId).withTls(await JobTls.generate(jobId)) : JobAuth.generate(jobId);
  const store = await TcpStoreServer.start({ host, auth });
  const workers: Worker[] = [];
  let psClient: TcpStore | undefined;
  let psServers: ActorSupervisor[] = [];
  /** Workers that failed on their own (not stopped by us), in exit order. */
  const failed: Array<{ rank: number; code: number; tail: string[]; spawnError?: Error; signal?: NodeJS.Signals }> = [];
  let launcherError: { code: number; error: string } | undefined;
  /** A server lost for good (dead with no restart left): fails the job at once, ahead of the workers' errors. */
  let serverLost: { name: string; code: number; error: string } | undefined;
  const durableDir = options.psDurable === undefined ? undefined : join(resolve(options.psDurable), jobId);
  let stopping = false;
  let aborted = false;
  let jobTimer: NodeJS.Timeout | undefined;
  let timelineResult: LaunchResult | undefined;
  let settleTimer: NodeJS.Timeout | undefined;
  // Elastic: the membership generations (started once the helpers below exist).
  const timeoutMs = options.timeoutMs ?? 60_000;
  let elastic: ElasticSupervisor<Worker> | undefined;

  const killGroup = (w: Worker, sig: NodeJS.Signals) => {
    if (w.thread) {
      if (!w.done && !w.terminating) {
        w.terminating = true;
        void w.thread.terminate().catch(() => {});
      }
      return;
    }
    if (w.done || !w.child || w.child.pid === undefined) return;
    try {
      process.kill(-w.child.pid, sig); // the worker's own process group: also its children (ps servers)
    } catch {
      try {
        w.child.kill(sig);
      } catch {
        /* already gone */
      }
    }
  };
  const stopAll = () => {
    if (stopping) return;
    stopping = true;
    if (settleTimer) clearTimeout(settleTimer);
    for (const w of workers) killGroup(w, 'SIGTERM');
    const t = setTimeout(() => {
      for (const w of workers) killGroup(w, 'SIGKILL');
    }, graceMs);
    t.unref();
  };
  const onWorkerFailed = () => {
    if (settleTimer || stopping) return;
    settleTimer = setTimeout(stopAll, options.settleMs ?? 500);
  };
  const onAbort = () => {
    if (stopping) return;
    aborted = true;
    stopAll();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  const pipeLines = (w: Worker, stream: NodeJS.ReadableStream | null, sink: NodeJS.WritableStream, keepTail: boolean) => {
    if (!stream) return Promise.resolve();
    const rl = createInterface({ input: stream, crlfDelay: Infinity });
    rl.on('line', (line) => {
      sink.write(line.startsWith('[rank ') ? `${line}\n` : `[rank ${w.rank}] ${line}\n`);
      if (keepTail) {
        w.tail.push(line);
        if (w.tail.length > TAIL_LINES) w.tail.shift();
      }
    });
    return new Promise<void>((r) => rl.once('close', () => r()));
  };

  /** Start `servers` ps shards for `numWorkers` workers (named by `serverName`), watched like every process. */
  const startServers = async (numWorkers: number, serverName?: (i: number) => string): Promise<ActorSupervisor[]> => {
    const started = await startPsServerActors({
      ...(durableDir === undefined ? {} : { durable: { checkpointDir: durableDir, restart: { maxRestarts: PS_MAX_RESTARTS, backoffMs: PS_RESTART_BACKOFF_MS } } }),
      storeUrl: store.url,
      store: psClient!,
      numServers: servers,
      numWorkers,
      ...(options.psMode === 'async' ? { mode: 'async' as const, ...(options.staleness === undefined ? {} : { staleness: options.staleness }) } : {}),
      timeoutMs: options.timeoutMs ?? 60_000,
      host,
      link: psLink,
      socketDir: tmpdir(),
      jobId,
      auth,
      ...serverTelemetry(telemetry),
      ...(serverName ? { serverName } : {}),
    });
    for (const s of started) {
      // Called before the supervisor decides on a restart: it restarts while `restarts < PS_MAX_RESTARTS`.
      s.onExit((e) => {
        if (e.expected || stopping || serverLost) return;
        const how = e.error ?? howItEnded(e.code, e.signal);
        if (durableDir !== undefined && s.restarts < PS_MAX_RESTARTS) {
          errOut.write(`shoal run: ${s.name} died (${how}); restarting it from its checkpoint (restart ${s.restarts + 1} of ${PS_MAX_RESTARTS})\n`);
          return;
        }
        const code = e.signal ? 128 + (osSignals[e.signal] ?? 0) : e.code && e.code > 0 ? e.code : 1;
        const why = durableDir !== undefined ? `; restarted ${s.restarts} time(s) already, no restart left` : '';
        serverLost = { name: s.name, code, error: `${s.name} died (${how})${why}` };
        stopAll();
      });
    }
    return started;
  };
  /** Elastic ps/hybrid: each generation's servers, stopped once no live worker uses them (generation-servers.ts). */
  let generationServers: GenerationServers | undefined;

  try {
    if ((backend === 'ps' || backend === 'hybrid') && !psInWorker) {
      psClient = await TcpStore.connect(store.url, { auth, timeoutMs: options.timeoutMs ?? 60_000 });
      if (durableDir !== undefined) mkdirSync(durableDir, { recursive: true });
      psServers = options.elastic === undefined ? await startServers(n) : [];
      if (options.elastic !== undefined) {
        generationServers = new GenerationServers({
          start: async (r) => {
            const started = await startServers(r.members.length, elasticServerName(r.generation));
            psServers.push(...started);
            return started;
          },
          stop: async (ss) => void (await Promise.all(ss.map((x) => x.stop(graceMs).catch(() => {})))),
          store: psClient.prefixed(jobId),
          alive: (id) => workers.some((w) => w.rank === id && !w.done),
          log: (l) => errOut.write(`shoal run: ${l}\n`),
        });
      }
    }
    for (let rank = 0; rank < n && threads; rank++) {
      const wo: WorkerOptions = {
        rank,
        worldSize: n,
        localRank: rank,
        storeUrl: store.url,
        jobId,
        transport,
        backend,
        servers,
        timeoutMs: options.timeoutMs ?? 60_000,
        host,
        auth,
        ...(data === undefined ? {} : { data: { from: 'path' as const, path: data } }),
        ...(durableDir === undefined ? {} : { psResend: true }),
        ...(psInWorker ? { psPlacement: 'worker' as const } : {}),
      };
      const thread = new ThreadWorker(threadScript.entry, {
        // The secret travels in the thread's environment (below), not in workerData: `auth` stays out of it.
        workerData: { [THREAD_OPTIONS_KEY]: { ...wo, auth: undefined }, ...threadScript.data },
        argv: [...(options.args ?? [])],
        env: { ...(process.env as Record<string, string>), ...workerEnv, ...auth.childEnv() },
        stdout: true,
        stderr: true,
        name: `shoal rank ${rank}`,
      });
      const w: Worker = { rank, thread, tail: [], done: false, exited: undefined as never };
      const streams = Promise.all([pipeLines(w, thread.stdout, out, false), pipeLines(w, thread.stderr, errOut, true)]);
      w.exited = new Promise((res) => {
        let counted = false;
        const fail = (code: number) => {
          if (counted || stopping || w.terminating) return;
          counted = true;
          failed.push({ rank, code, tail: w.tail });
          onWorkerFailed();
        };
        // An uncaught exception / rejected top-level await: 'error' comes before 'exit' (code 1).
        thread.once('error', (e) => {
          const err = e as Error & { code?: string };
          const text = `${err?.stack ?? String(e)}${err?.code && !String(err.stack).includes(err.code) ? ` (${err.code})` : ''}`;
          errOut.write(text.split('\n').map((l) => `[rank ${rank}] ${l}\n`).join(''));
          w.tail.push(...text.split('\n'));
          while (w.tail.length > TAIL_LINES) w.tail.shift();
          fail(1);
        });
        thread.once('exit', async (code) => {
          if (code !== 0) fail(code > 0 ? code : 1);
          await streams;
          w.done = true;
          res({ code, signal: null });
        });
      });
      workers.push(w);
    }
    const spawnProcess = (rank: number, size: number, workerId: number, join: boolean): Worker => {
      const at = placement?.[rank];
      const shoalEnv: Record<string, string> = {
        SHOAL_RANK: String(rank),
        SHOAL_WORLD_SIZE: String(size),
        SHOAL_LOCAL_RANK: String(at?.localRank ?? rank),
        SHOAL_STORE: store.url,
        SHOAL_JOB_ID: jobId,
        SHOAL_TRANSPORT: transport,
        SHOAL_BACKEND: backend,
        SHOAL_SERVERS: String(servers),
        SHOAL_TIMEOUT_MS: String(options.timeoutMs ?? 60_000),
        SHOAL_HOST: at !== undefined && multiHost ? at.host : host,
        ...(data === undefined ? {} : { SHOAL_DATA: data }),
        ...(durableDir === undefined ? {} : { SHOAL_PS_RESEND: '1' }),
        ...(psInWorker ? { SHOAL_PS_PLACEMENT: 'worker' } : {}),
        ...(elastic === undefined ? {} : elastic.env(workerId, join)),
      };
      const child =
        at !== undefined && !isLocalHost(at.host)
          ? // another host: through the remote shell, with only the job's environment (ssh forwards none)
            // The job secret is not on that command line (visible in ps on both hosts): the remote shell reads it
            // from its stdin, which this process writes right after the spawn.
            spawn(rsh[0]!, [...rsh.slice(1), at.host, `${remoteSecretReads(auth)}${remoteCommand(process.cwd(), { ...workerEnv, ...shoalEnv }, [process.execPath, ...argv])}`], {
              stdio: ['pipe', 'pipe', 'pipe'],
              detached: true,
            })
          : spawn(process.execPath, argv, {
              env: { ...(process.env as Record<string, string>), ...workerEnv, ...shoalEnv, SHOAL_PARENT_PID: String(process.pid), ...auth.childEnv() },
              stdio: ['pipe', 'pipe', 'pipe'],
              detached: true,
            });
      if (at !== undefined && !isLocalHost(at.host)) {
        child.stdin?.on('error', () => {});
        const secretEnv = auth.childEnv();
        child.stdin?.write(`${secretEnv[JOB_SECRET_ENV]}\n${auth.tls ? `${secretEnv[JOB_TLS_ENV]}\n` : ''}`);
      }
      // Elastic workers are named by their stable id (ranks change with the generations).
      const w: Worker = { rank: elastic === undefined ? rank : workerId, child, tail: [], done: false, exited: undefined as never };
      const streams = Promise.all([pipeLines(w, child.stdout, out, false), pipeLines(w, child.stderr, errOut, true)]);
      w.exited = new Promise((res) => {
        let spawnError: Error | undefined;
        let counted = false;
        const fail = (code: number, signal?: NodeJS.Signals) => {
          if (counted || stopping) return;
          counted = true;
          if (elastic !== undefined) {
            elastic.onWorkerFailed(workerId, signal ? `killed by ${signal}` : spawnError ? `could not start: ${spawnError.message}` : `exit code ${code}`, summarizeFailure(w.tail).split('\n')[0]);
            return;
          }
          failed.push({ rank, code, tail: w.tail, ...(spawnError ? { spawnError } : {}), ...(signal ? { signal } : {}) });
          onWorkerFailed();
        };
        child.once('error', (e) => {
          spawnError = e;
          fail(127);
        });
        // Count on 'exit' (not 'close', which waits for the pipes) so exit order is kept.
        child.once('exit', (code, signal) => {
          if (code !== 0 || signal !== null) fail(code && code > 0 ? code : signal ? 128 + (osSignals[signal] ?? 0) : 1, signal ?? undefined);
        });
        child.once('close', async (code, signal) => {
          await streams;
          w.done = true;
          res({ code, signal });
        });
      });
      workers.push(w);
      return w;
    };
    if (options.elastic !== undefined) {
      elastic = await ElasticSupervisor.start<Worker>({
        storeUrl: store.url,
        auth,
        jobId,
        elastic: options.elastic,
        numWorkers: n,
        timeoutMs,
        hooks: {
          spawn: spawnProcess,
          workerOf: (id) => workers.find((w) => w.rank === id && !w.done),
          kill: killGroup,
          stopAll,
          stopping: () => stopping,
          log: (l) => errOut.write(`shoal run: ${l}\n`),
          ...(generationServers === undefined ? {} : { generations: generationServers }),
        },
      });
    }
    for (let rank = 0; rank < n && !threads; rank++) spawnProcess(rank, n, rank, false);
    if (options.jobTimeoutMs !== undefined) {
      jobTimer = setTimeout(() => {
        if (stopping || failed.length) return;
        launcherError = { code: 124, error: `job timed out after ${options.jobTimeoutMs} ms` };
        stopAll();
      }, options.jobTimeoutMs);
    }
    // Replacements may start while we wait: wait until every worker started so far has exited.
    let waited = 0;
    while (waited < workers.length) {
      waited = workers.length;
      await Promise.all(workers.map((w) => w.exited));
      await elastic?.settled();
    }
    const exits = await Promise.all(workers.map(async (w) => ({ rank: w.rank, ...(await w.exited) })));
    const root = pickRootCause(failed);
    const result: LaunchResult = { code: 0, aborted: aborted && !root && !serverLost, durationMs: Date.now() - t0, exits };
    timelineResult = result; // the merged timeline is added once the servers have stopped (finally)
    const elasticFailure = elastic?.failure;
    if (elastic !== undefined) result.elastic = elastic.summary();
    if (elasticFailure) {
      result.code = 1;
      result.failedRank = elasticFailure.rank;
      result.error = elasticFailure.error;
      result.aborted = false;
    } else if (serverLost) {
      result.code = serverLost.code;
      result.failedProcess = serverLost.name;
      result.error = serverLost.error;
    } else if (root) {
      result.code = root.code;
      result.failedRank = root.rank;
      const tail = summarizeFailure(root.tail);
      // A hang: blame the rank the others waited for, not the healthy one whose wait ran out first.
      const stalled = root.spawnError || root.signal ? undefined : pickStalledRank(failed);
      if (stalled) {
        result.failedRank = stalled.rank;
        result.error = `rank ${stalled.rank} stopped making progress: rank(s) ${stalled.waiters.join(', ')} timed out waiting for it; rank ${root.rank}'s error:\n${tail}`;
      } else result.error = root.spawnError
        ? `could not start: ${root.spawnError.message}`
        : root.signal
          ? `killed by ${root.signal}${tail ? `; its last output:\n${tail}` : ''}`
          : tail || `exited with code ${root.code}`;
    } else if (launcherError) {
      result.code = launcherError.code;
      result.error = launcherError.error;
    } else if (aborted) {
      result.code = 130;
      result.error = 'aborted';
    }
    return result;
  } finally {
    if (jobTimer) clearTimeout(jobTimer);
    if (settleTimer) clearTimeout(settleTimer);
    options.signal?.removeEventListener('abort', onAbort);
    for (const w of workers) killGroup(w, 'SIGKILL');
    generationServers?.close();
    await Promise.all(psServers.map((s) => s.stop(graceMs).catch(() => {})));
    const merged = timelineResult && (await mergeJobTimeline(telemetry, workers.length, psServers.length, errOut));
    if (merged) timelineResult!.timeline = merged;
    if (psServers.length && psLink === 'ipc') removeServerSockets({ socketDir: tmpdir(), jobId });
    if (durableDir !== undefined) rmSync(durableDir, { recursive: true, force: true });
    await psClient?.close();
    await elastic?.close();
    await store.close();
    // A segment is unlinked once both ends map it; this clears the one window a kill can leave (a listener
    // killed before its peer attached).
    removeStaleSegments(jobId);
  }
}

/** The remote shell's reads of the job secret (and TLS certificate) from its stdin, one line each. */
function remoteSecretReads(auth: JobAuth): string {
  const vars = [JOB_SECRET_ENV, ...(auth.tls ? [JOB_TLS_ENV] : [])];
  return vars.map((v) => `IFS= read -r ${v} && export ${v} && `).join('');
}
