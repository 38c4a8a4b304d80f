#!/usr/bin/env node
/**
 * The rendezvous store of a shoal job launched from Spark (python/shoal_spark): rank 0's barrier task starts
 *
 *   node core/dist/launcher/spark-store.js --host <address peers dial> [--bind <interface>] [--port <n>]
 *
 * which serves a `TcpStoreServer` and prints one line `SHOAL_STORE tcp://host:port` on stdout once it is bound.
 * The task passes that URL to every rank through `BarrierTaskContext.allGather`.
 *
 * Lifetime: the store belongs to its parent. It exits when its stdin reaches EOF (the parent closed it, exited or
 * was killed), on SIGTERM/SIGINT, and when its parent pid changes (re-parented: the parent died without closing
 * the pipe); the parent also kills its process group. It never outlives the task.
 */
import { TcpStoreServer } from '../store/tcp.js';

interface StoreArgs {
  host: string;
  bind: string;
  port: number;
}

function parseArgs(argv: readonly string[]): StoreArgs {
  const out: StoreArgs = { host: '127.0.0.1', bind: '', port: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i];
    const val = argv[i + 1];
    if (val === undefined) throw new RangeError(`spark-store: ${key} needs a value`);
    if (key === '--host') out.host = val;
    else if (key === '--bind') out.bind = val;
    else if (key === '--port') {
      const p = Number(val);
      if (!Number.isInteger(p) || p < 0 || p > 65535) throw new RangeError(`spark-store: --port must be 0..65535, got ${val}`);
      out.port = p;
    } else throw new RangeError(`spark-store: unknown option ${key} (expected --host, --bind, --port)`);
  }
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  // Bind where peers dial (the executor's address) unless told otherwise; loopback hosts stay loopback.
  const server = await TcpStoreServer.start({ host: args.bind || args.host, port: args.port, advertiseHost: args.host });
  const parent = process.ppid;
  let closing = false;
  const shutdown = (why: string, code: number) => {
    if (closing) return;
    closing = true;
    clearInterval(watch);
    process.stderr.write(`spark-store: closing (${why})\n`);
    const force = setTimeout(() => process.exit(code), 2_000);
    force.unref();
    server.close().then(
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
