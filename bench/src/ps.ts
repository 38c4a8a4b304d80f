/**
 * `npm run bench -- ps [--quick] [--repeat N] [--sizes 1048576,16777216,67108864] [--transports net,shm] [--no-anchor]
 *                     [--servers 2] [--workers 2] [--phases dense,small,rowsparse]
 *                     [--rounds N] [--warmup 20] [--shm-ring-bytes N] [--tls] [--request-bytes N] [--out file.json]`
 *
 * Parameter-server benchmark: `--servers` KVServer processes (sync mode, server-side SGD `w -= lr * sum g`) and
 * `--workers` worker processes (this file, run as a child), over each of `--transports` (net: TCP loopback; ipc:
 * the net transport over unix sockets; shm: shared-memory rings), rendezvous through a TcpStoreServer here. Phases, each verified exactly:
 * - **dense**: a model of `bytes` float32 in 4 equal keys (small keys hashed over the servers, keys >= 1e6 elements
 *   split over all of them). A round = every worker's `pushPull` of all keys (push the gradients ones*(rank+1),
 *   pull the updated weights). After warm-up and timed rounds every weight must equal -lr * rounds * sum(rank+1).
 *   Timed per round on rank 0; rounds/s = 1 / mean round time.
 * - **small**: one 1-element key, pushPull round p50/p99 latency (the sync round includes waiting for the other
 *   worker's push).
 * - **rowsparse**: a 100k x 64 float32 table split by row range, the same server-side SGD; a step = every worker
 *   `rowSparsePull`s its 1024 distinct random rows then `rowSparsePush`es their gradients (ones). At the end
 *   rank 0 replays every worker's row picks and checks the whole table exactly (-lr * touches per row). rows/s = touched
 *   rows of all workers per second. Wire bytes per step per worker (request + reply frames, from the RPC layer's
 *   counters) are compared with `touched rows x row bytes` for the push (sent) and the pull (received).
 * `--planes staging,shared,messages` (default all): how dense values travel; every phase runs once per plane (rowsparse
 *   only in the first), each plane with its own KVWorker and keys. `staging`: the same-host data plane, the workers
 *   use their staging buffers (`kv.buffers(key)`) as gradients and outputs, so they copy nothing (as Ray's workers
 *   read the object store without a copy); `shared`: the data plane with the workers' own arrays (one copy each way
 *   on the worker); `messages`: values inside the transport's messages (`sharedMemory: false`).
 * `--repeat N` runs shoal and the anchor N times, interleaved, and reports per-row medians (`runs`).
 * Anchor: `bench/anchors/ray_ps.py` (Ray's parameter-server pattern: sharded ParameterServer actors, DataWorker
 * actors returning gradient shards) on the same sizes, worker and server counts, run in the same invocation.
 *
 * Output `bench/results/ps.json` (or `--out file.json`):
 *   { suite: 'ps', version: 1, started, host: { cpus, node, loadavg1 }, args, repeats, servers, workers,
 *     rows: [{ impl: 'shoal-ps'|'ray', transport: 'net'|'net-tls'|'ipc'|'shm'|'ray-object-store', plane?: 'staging'|'shared'|'messages', kind: 'dense'|'small'|'rowsparse', bytes, rounds, p50_us, p99_us?, avg_us,
 *              rounds_per_s, verified, oversubscribed, runs, vs_ray?, vs_ray_p50?, vs_plain?, vs_plain_p50?,
 *              rows_per_s?, touched_rows?, row_bytes?, push_wire_bytes?, pull_wire_bytes?, push_wire_ratio?,
 *              pull_wire_ratio?, worker_cpu_ms_per_round?, server_cpu_ms_per_round? }],
 *     errors: [{ impl, error }] }
 * `vs_ray` = shoal rounds/s / Ray rounds/s, `vs_ray_p50` = Ray p50 / shoal p50 (higher is better for both).
 * `--tls` (or `net-tls` in `--transports`) runs net a second time with the store, servers and workers under TLS 1.3
 * (the job certificate pinned, as `shoal run --tls`): rows `net-tls` with `vs_plain` = TLS rounds/s / plain net
 * rounds/s and `vs_plain_p50` = plain p50 / TLS p50 (same plane, kind and size, same run).
 * `*_cpu_ms_per_round`: CPU time per round (workers: mean of one worker; servers: all together), which the
 * machine's other load disturbs much less than wall time. `oversubscribed` is true when servers + workers
 * exceed the cores (always on the 2-core machine: 4 processes).
 *
 * Files: this one (the options, shoal's runs per transport, the result file); ps-worker.ts (a worker process: the
 * phases and their checks); ps-anchor.ts (the Ray anchor); ps-rows.ts (the rows, their medians over repeats, the
 * table); ps-job.ts (what the driver and the workers share).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ActorSupervisor, netRemote, shmRemote, TcpStore, TcpStoreServer } from '@shoal/core';
import { startPsServers } from '@shoal/backends';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { benchAuth, benchTls } from './bench-auth.js';
import { runRayAnchor } from './ps-anchor.js';
import { LR, PLANES, root, runChild, type BenchTransport, type Plane, type WorkerJob } from './ps-job.js';
import { compareWithPlain, compareWithRay, medianRows, printRows, type PsRow } from './ps-rows.js';

export type { PsRow } from './ps-rows.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = benchAuth();
/** The worker process (ps-worker.ts, compiled beside this file). */
const workerScript = fileURLToPath(new URL('./ps-worker.js', import.meta.url));

/** `npm run bench -- ps`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench ps',
  synopsis: '[options]',
  description: 'parameter-server rounds: push+pull latency and rate, Ray as the anchor',
  options: {
    'quick': { type: 'boolean', help: 'fewer rounds' },
    'repeat': { type: 'string', arg: 'N', help: 'median of N runs (default 1)' },
    'sizes': { type: 'string', arg: 'BYTES,...', help: 'dense sizes (default 1 MiB, 16 MiB, 64 MiB)' },
    'servers': { type: 'string', arg: 'K', help: 'servers (default 2)' },
    'workers': { type: 'string', arg: 'N', help: 'workers (default 2)' },
    'transports': { type: 'string', arg: 'LIST', help: 'net,ipc,shm (default all), net-tls' },
    'shm-ring-bytes': { type: 'string', arg: 'BYTES', help: "ring size of the servers' shm listeners" },
    'request-bytes': { type: 'string', arg: 'BYTES', help: "the messages plane's KVWorker requestBytes (0: one request per server; default the KVWorker's)" },
    'warmup': { type: 'string', arg: 'N', help: 'warm-up rounds per size (default 20)' },
    'rounds': { type: 'string', arg: 'N', help: 'rounds per size (default: by size)' },
    'phases': { type: 'string', arg: 'LIST', help: 'dense,small,rowsparse (default all)' },
    'planes': { type: 'string', arg: 'LIST', help: 'data planes (default all)' },
    'no-anchor': { type: 'boolean', help: 'skip the Ray anchor' },
    'tls': { type: 'boolean', help: "also run net under TLS 1.3 (transport 'net-tls', ratios vs plain net)" },
    'out': { type: 'string', arg: 'FILE', help: 'result file (default bench/results/ps.json)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const quick = v['quick'] === true;
  const repeat = Number(v['repeat'] ?? 1);
  if (!Number.isInteger(repeat) || repeat < 1) throw new RangeError(`--repeat must be a positive integer, got ${v['repeat']}`);
  const sizes = (v['sizes'] ?? '1048576,16777216,67108864').split(',').map(Number);
  const numServers = Number(v['servers'] ?? 2);
  const numWorkers = Number(v['workers'] ?? 2);
  const transports = (v['transports'] ?? 'net,ipc,shm').split(',') as BenchTransport[];
  for (const t of transports) if (!['net', 'net-tls', 'ipc', 'shm'].includes(t)) throw new RangeError(`--transports must list net|net-tls|ipc|shm, got ${t}`);
  if (v['tls'] === true && transports.includes('net') && !transports.includes('net-tls')) transports.splice(transports.indexOf('net') + 1, 0, 'net-tls');
  // net-tls: the store, the servers and the workers all hold the job certificate (as under `shoal run --tls`)
  const tls = transports.includes('net-tls') ? await benchTls() : undefined;
  const roundsFor = (b: number) => Math.max(4, Math.round((quick ? 8 : 24) * Math.min(8, (16 << 20) / b) ** 0.5 / 2));
  // --shm-ring-bytes: ring size per direction of the servers' shm listeners (the transport's default otherwise).
  const shmRingBytes = v['shm-ring-bytes'] ? Number(v['shm-ring-bytes']) : undefined;
  const requestBytes = v['request-bytes'] === undefined ? undefined : Number(v['request-bytes']);
  if (requestBytes !== undefined && !(Number.isInteger(requestBytes) && requestBytes >= 0)) throw new RangeError(`--request-bytes must be a non-negative integer, got ${v['request-bytes']}`);
  // Warm-up rounds per size, the same for shoal and the Ray anchor (V8's and Ray's first rounds are slow).
  const warmup = Number(v['warmup'] ?? 20);
  if (!Number.isInteger(warmup) || warmup < 1) throw new RangeError(`--warmup must be a positive integer, got ${v['warmup']}`);
  const fixedRounds = v['rounds'];
  const rounds = sizes.map((b) => (fixedRounds ? Number(fixedRounds) : roundsFor(b)));
  const phases = (v['phases'] ?? 'dense,small,rowsparse').split(',');
  const planes = (v['planes'] ?? PLANES.join(',')).split(',') as Plane[];
  for (const p of planes) if (!PLANES.includes(p)) throw new RangeError(`--planes must list ${PLANES.join('|')}, got ${p}`);
  for (const p of phases) if (!['dense', 'small', 'rowsparse'].includes(p)) throw new RangeError(`--phases must list dense|small|rowsparse, got ${p}`);
  const oversubscribed = numServers + numWorkers > cpus().length;
  const started = new Date().toISOString();
  const rows: PsRow[] = [];
  // SHOAL_PS_BENCH_PROF=<dir>: CPU profiles of the servers and workers (for finding hot spots).
  const profDir = process.env.SHOAL_PS_BENCH_PROF;
  const prof = profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : undefined;
  const errors: { impl: string; error: string }[] = [];

  // Repeats interleave shoal and Ray, so load that comes and goes hits both alike; each figure is the median.
  const raw: PsRow[] = [];
  for (let rep = 0; rep < repeat; rep++) {
    // --- shoal, per transport ---
    for (const transport of transports) {
      const jobAuth = transport === 'net-tls' ? tls!.auth : auth;
      const storeServer = await TcpStoreServer.start({ auth: jobAuth });
      const store = await TcpStore.connect(storeServer.url, { auth: jobAuth });
      let servers: ActorSupervisor[] = [];
      const prefix = `psbench${process.pid}`;
      const sockDir = transport === 'ipc' ? mkdtempSync(join(tmpdir(), 'shoal-psbench-')) : '';
      const listenUrl = transport === 'shm' ? 'shm://auto' : transport === 'ipc' ? `ipc://${sockDir}/{actor}-{door}.sock` : 'tcp://127.0.0.1:0';
      try {
        servers = await startPsServers({
          auth: jobAuth,
          placement: 'process',
          store,
          remote: transport === 'shm' ? shmRemote(storeServer.url, { prefix, ringBytes: shmRingBytes }) : netRemote(storeServer.url),
          listenUrl,
          numServers,
          numWorkers,
          mode: 'sync',
          updater: { type: 'sgd', lr: LR },
          timeoutMs: 120_000,
          execArgv: prof,
        });
        const job = (rank: number): WorkerJob => ({
          storeUrl: storeServer.url,
          transport,
          rank,
          numWorkers,
          numServers,
          sizes,
          rounds,
          warmup,
          smallIters: quick ? 200 : 1000,
          phases,
          planes,
          sparse: { numRows: 100_000, rowSize: 64, touched: 1024, steps: quick ? 20 : 60 },
          ...(requestBytes === undefined ? {} : { requestBytes }),
        });
        const outs = await Promise.all(
          Array.from({ length: numWorkers }, (_, r) =>
            runChild(process.execPath, [...(prof ?? ['--enable-source-maps']), workerScript], { SHOAL_PS_BENCH: JSON.stringify(job(r)), SHOAL_PS_BENCH_PREFIX: prefix, ...(transport === 'net-tls' ? tls!.env : {}) }, 600_000),
          ),
        );
        for (const r of outs[0]!) raw.push({ ...(r as unknown as PsRow), transport, oversubscribed });
        for (const o of outs) for (const r of o) if (r.verified === false) errors.push({ impl: 'shoal-ps', error: `unverified ${JSON.stringify(r)}` });
      } catch (e) {
        errors.push({ impl: `shoal-ps/${transport}`, error: (e as Error).message });
      } finally {
        await Promise.all(servers.map((s) => s.stop()));
        await store.close();
        await storeServer.close();
        if (sockDir) rmSync(sockDir, { recursive: true, force: true });
      }
    }

    // --- Ray anchor ---
    if (!v['no-anchor'] === true) {
      try {
        raw.push(...(await runRayAnchor({ sizes, rounds, numWorkers, numServers, warmup, quick, oversubscribed })));
      } catch (e) {
        errors.push({ impl: 'ray', error: (e as Error).message });
      }
    }
  }
  rows.push(...medianRows(raw, repeat));
  compareWithRay(rows);
  compareWithPlain(rows);

  const result = { suite: 'ps', version: 1, started, host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, args, repeats: repeat, servers: numServers, workers: numWorkers, rows, errors };
  const outPath = v['out'] ?? `${root}bench/results/ps.json`;
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`ps bench: ${numWorkers} workers x ${numServers} servers (processes), load ${loadavg()[0]!.toFixed(1)}`);
  printRows(rows);
  for (const e of errors) console.log(`error ${e.impl}: ${e.error}`);
  console.log(`wrote ${outPath}`);
}
