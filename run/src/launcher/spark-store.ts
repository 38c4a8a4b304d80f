#!/usr/bin/env node
/**
 * The rendezvous store of a shoal job launched from Spark (python/shoal_spark): rank 0's barrier task starts
 *
 *   node run/dist/launcher/spark-store.js --host <address peers dial> [--bind <interface>] [--port <n>]
 *        [--ps-servers K --workers N [--timeout-ms MS] [--ps-durable DIR] [--logdir DIR] [--timeline FILE]] [--max-mb MB]
 *
 * which serves a `TcpStoreServer` and prints one line `SHOAL_STORE tcp://host:port` on stdout once it is bound.
 * The task passes that URL to every rank through `BarrierTaskContext.allGather`. For the ps and hybrid backends
 * it also starts the K parameter-server shards (`ps-server-0..K-1`, KVServer actor processes, sync mode for N
 * workers) before printing the line, so the servers are co-located with rank 0's task, as `shoal run` co-locates
 * them with its store. With `--ps-durable DIR` the servers checkpoint every update under `DIR/<job id>/` (removed
 * at shutdown) and a server that dies is restarted from it (up to PS_MAX_RESTARTS times), as `shoal run
 * --ps-durable` does; the workers resend what it had not acknowledged (shoal_spark sets SHOAL_PS_RESEND=1).
 * The driver of an elastic Spark job (`shoal_spark.run(elastic=True)`) also starts one, on its own host with a
 * bigger `--max-mb`, to hold the job's commits across its barrier stages (run/src/elastic/commit-store.ts).
 *
 * Lifetime: the store belongs to its parent. It exits when its stdin reaches EOF (the parent closed it, exited or
 * was killed), on SIGTERM/SIGINT, and when its parent pid changes (re-parented: the parent died without closing
 * the pipe); the parent also kills its process group (which holds the server actors too). It never outlives the task.
 */
import { join, resolve } from 'node:path';
import { TcpStore, TcpStoreServer, type ActorSupervisor } from '@shoal/core';
import { exitCodeOf, formatCommandError, helpText, intOption, parseCommand, UsageError, type CommandSpec } from '../cli/command.js';
import { startPsServerActors } from './ps-servers.js';
import { PS_MAX_RESTARTS } from './launch.js';
import { mkdirSync, rmSync } from 'node:fs';
import { JobAuth } from '@shoal/core';

const STORE_COMMAND = {
  name: 'spark-store',
  synopsis: '--host ADDR [--bind IFACE] [--port N] [--ps-servers K --workers N [--ps-durable DIR] [--logdir DIR] [--timeline FILE]] [--timeout-ms MS] [--max-mb MB]',
  description:
    "The rendezvous store of a shoal job launched from Spark (started by python/shoal_spark on rank 0's task).\n" +
    'Prints `SHOAL_STORE tcp://host:port` once bound; exits when stdin closes or its parent goes away.',
  options: {
    host: { type: 'string', arg: 'ADDR', help: 'address peers dial (default 127.0.0.1)' },
    bind: { type: 'string', arg: 'IFACE', help: 'interface to bind (default: --host)' },
    port: { type: 'string', arg: 'N', help: 'port (default 0: any free port)' },
    'ps-servers': { type: 'string', arg: 'K', help: 'also start K parameter-server actors (ps and hybrid backends)' },
    workers: { type: 'string', arg: 'N', help: 'the job size (needed with --ps-servers)' },
    'timeout-ms': { type: 'string', arg: 'MS', help: 'network waits of the store client and the servers (default 60000)' },
    'ps-durable': { type: 'string', arg: 'DIR', help: 'the servers checkpoint every update under DIR/<job id>/ and restart from it when they die' },
    logdir: { type: 'string', arg: 'DIR', help: 'each parameter server writes its load as TensorBoard curves to DIR/server-<i>' },
    timeline: { type: 'string', arg: 'FILE', help: 'each parameter server records its updates in the timeline part FILE.server-<i>.jsonl' },
    'max-mb': { type: 'string', arg: 'MB', help: "the store's quota of keys and values (default 64; the driver's commit store of an elastic job gets more)" },
  },
} as const satisfies CommandSpec;

interface StoreArgs {
  host: string;
  bind: string;
  port: number;
  psServers: number;
  workers: number;
  timeoutMs: number;
  psDurable: string;
  logdir?: string;
  timeline?: string;
  maxMb: number;
}

/** Parse the store entry's arguments; undefined for `--help` (printed). Throws `UsageError` naming the flag. */
function parseStoreArgs(argv: readonly string[]): StoreArgs | undefined {
  const { values: v, help } = parseCommand(STORE_COMMAND, argv);
  if (help) {
    process.stdout.write(`${helpText(STORE_COMMAND)}\n`);
    return undefined;
  }
  const name = STORE_COMMAND.name;
  const out: StoreArgs = {
    host: v.host ?? '127.0.0.1',
    bind: v.bind ?? '',
    port: v.port === undefined ? 0 : intOption(name, '--port', v.port, 0, 65535),
    psServers: v['ps-servers'] === undefined ? 0 : intOption(name, '--ps-servers', v['ps-servers'], 0, 1024),
    workers: v.workers === undefined ? 0 : intOption(name, '--workers', v.workers, 1, 1024),
    timeoutMs: v['timeout-ms'] === undefined ? 60_000 : intOption(name, '--timeout-ms', v['timeout-ms'], 1),
    psDurable: v['ps-durable'] ?? '',
    maxMb: v['max-mb'] === undefined ? 64 : intOption(name, '--max-mb', v['max-mb'], 1, 1 << 20),
  };
  if (out.psDurable !== '' && out.psServers < 1) throw new UsageError(`${name}: --ps-durable needs --ps-servers K`);
  if (out.psServers > 0 && out.workers < 1) throw new UsageError(`${name}: --ps-servers needs --workers N (the job size)`);
  if (v.logdir !== undefined) {
    if (v.logdir === '') throw new UsageError(`${name}: --logdir needs a folder`);
    out.logdir = resolve(v.logdir);
  }
  if (v.timeline !== undefined) {
    if (v.timeline === '') throw new UsageError(`${name}: --timeline needs a file`);
    out.timeline = resolve(v.timeline);
  }
  return out;
}

async function main(): Promise<number | undefined> {
  const args = parseStoreArgs(process.argv.slice(2));
  if (args === undefined) return 0;
  // Bind where peers dial (the executor's address) unless told otherwise; loopback hosts stay loopback.
  // The job secret comes from the Spark driver through this process's environment (SHOAL_JOB_SECRET).
  const auth = JobAuth.fromEnv(process.env.SHOAL_JOB_ID || 'shoal', process.env);
  const server = await TcpStoreServer.start({ host: args.bind || args.host, port: args.port, advertiseHost: args.host, auth, maxBytes: args.maxMb * 1024 * 1024 });
  let client: TcpStore | undefined;
  let servers: ActorSupervisor[] = [];
  const durableDir = args.psDurable === '' ? undefined : join(resolve(args.psDurable), auth.jobId);
  if (args.psServers > 0) {
    try {
      client = await TcpStore.connect(server.url, { auth, timeoutMs: args.timeoutMs });
      if (durableDir !== undefined) mkdirSync(durableDir, { recursive: true });
      servers = await startPsServerActors({
        ...(durableDir === undefined ? {} : { durable: { checkpointDir: durableDir, restart: { maxRestarts: PS_MAX_RESTARTS, backoffMs: 100 } } }),
        storeUrl: server.url,
        store: client,
        numServers: args.psServers,
        numWorkers: args.workers,
        timeoutMs: args.timeoutMs,
        host: args.bind || args.host,
        jobId: auth.jobId,
        auth,
        ...(args.logdir === undefined ? {} : { metrics: { logdir: args.logdir } }),
        ...(args.timeline === undefined ? {} : { timeline: args.timeline }),
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
      .then(() => durableDir !== undefined && rmSync(durableDir, { recursive: true, force: true }))
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
  return undefined; // serves until shutdown() exits the process
}

main().then(
  (code) => {
    if (code !== undefined) process.exit(code);
  },
  (e: unknown) => {
    process.stderr.write(formatCommandError(STORE_COMMAND.name, e));
    process.exit(exitCodeOf(e));
  },
);
