#!/usr/bin/env node
/**
 * The rendezvous store of a shoal job launched from Spark (python/shoal_spark): rank 0's barrier task starts
 *
 *   node core/dist/launcher/spark-store.js --host <address peers dial> [--bind <interface>] [--port <n>]
 *        [--ps-servers K --workers N [--timeout-ms MS]]
 *
 * which serves a `TcpStoreServer` and prints one line `SHOAL_STORE tcp://host:port` on stdout once it is bound.
 * The task passes that URL to every rank through `BarrierTaskContext.allGather`. For the ps and hybrid backends
 * it also starts the K parameter-server shards (`ps-server-0..K-1`, KVServer actor processes, sync mode for N
 * workers) before printing the line, so the servers are co-located with rank 0's task, as `shoal run` co-locates
 * them with its store.
 *
 * Lifetime: the store belongs to its parent. It exits when its stdin reaches EOF (the parent closed it, exited or
 * was killed), on SIGTERM/SIGINT, and when its parent pid changes (re-parented: the parent died without closing
 * the pipe); the parent also kills its process group (which holds the server actors too). It never outlives the task.
 */
import type { ActorSupervisor } from '../actor/spawn.js';
import { TcpStore, TcpStoreServer } from '../store/tcp.js';
import { startPsServerActors } from './ps-servers.js';
import { JobAuth } from '../security/job-auth.js';

interface StoreArgs {
  host: string;
  bind: string;
  port: number;
  psServers: number;
  workers: number;
  timeoutMs: number;
}

function intArg(key: string, val: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = Number(val);
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`spark-store: ${key} must be an integer in ${min}..${max}, got ${val}`);
  return v;
}

function parseArgs(argv: readonly string[]): StoreArgs {
  const out: StoreArgs = { host: '127.0.0.1', bind: '', port: 0, psServers: 0, workers: 0, timeoutMs: 60_000 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    const val = argv[i + 1];
    if (val === undefined) throw new RangeError(`spark-store: ${key} needs a value`);
    if (key === '--host') out.host = val;
    else if (key === '--bind') out.bind = val;
    else if (key === '--port') out.port = intArg(key, val, 0, 65535);
    else if (key === '--ps-servers') out.psServers = intArg(key, val, 0);
    else if (key === '--workers') out.workers = intArg(key, val, 1);
    else if (key === '--timeout-ms') out.timeoutMs = intArg(key, val, 1);
    else throw new RangeError(`spark-store: unknown option ${key} (expected --host, --bind, --port, --ps-servers, --workers, --timeout-ms)`);
  }
  if (out.psServers > 0 && out.workers < 1) throw new RangeError('spark-store: --ps-servers needs --workers N (the job size)');
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  // Bind where peers dial (the executor's address) unless told otherwise; loopback hosts stay loopback.
  // The job secret comes from the Spark driver through this process's environment (SHOAL_JOB_SECRET).
  const auth = JobAuth.fromEnv(process.env.SHOAL_JOB_ID || 'shoal', process.env);
  const server = await TcpStoreServer.start({ host: args.bind || args.host, port: args.port, advertiseHost: args.host, auth });
  let client: TcpStore | undefined;
  let servers: ActorSupervisor[] = [];
  if (args.psServers > 0) {
    try {
      client = await TcpStore.connect(server.url, { auth, timeoutMs: args.timeoutMs });
      servers = await startPsServerActors({
        storeUrl: server.url,
        store: client,
        numServers: args.psServers,
        numWorkers: args.workers,
        timeoutMs: args.timeoutMs,
        host: args.bind || args.host,
        jobId: auth.jobId,
        auth,
      });
    } catch (e) {
      await client?.close().catch(() => {});
      await server.close().catch(() => {});
      throw e;
    }
  }
  const parent = process.ppid;
  let closing = false;
  const shutdown = (why: string, code: number) => {
    if (closing) return;
    closing = true;
    clearInterval(watch);
    process.stderr.write(`spark-store: closing (${why})\n`);
    const force = setTimeout(() => process.exit(code), 2_000);
    force.unref();
    Promise.allSettled(servers.map((x) => x.stop(1000)))
      .then(() => client?.close())
      .then(() => server.close())
      .then(
        () => process.exit(code),
        () => process.exit(code),
      );
  };
  const watch = setInterval(() => {
    if (process.ppid !== parent) shutdown(`parent ${parent} went away`, 1);
  }, 500);
  process.stdin.on('end', () => shutdown('stdin closed', 0));
  process.stdin.on('error', () => shutdown('stdin error', 0));
  process.stdin.resume();
  process.on('SIGTERM', () => shutdown('SIGTERM', 0));
  process.on('SIGINT', () => shutdown('SIGINT', 0));
  process.stdout.write(`SHOAL_STORE ${server.url}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`spark-store: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
