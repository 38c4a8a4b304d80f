/**
 * `npm run bench -- ps [--quick] [--repeat N] [--sizes 1048576,16777216,67108864] [--transports net,shm] [--no-anchor]
 *                     [--servers 2] [--workers 2] [--phases dense,small,rowsparse]
 *                     [--rounds N] [--warmup 20] [--shm-ring-bytes N] [--out file.json]`
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
 *     rows: [{ impl: 'shoal-ps'|'ray', transport: 'net'|'ipc'|'shm'|'ray-object-store', plane?: 'staging'|'shared'|'messages', kind: 'dense'|'small'|'rowsparse', bytes, rounds, p50_us, p99_us?, avg_us,
 *              rounds_per_s, verified, oversubscribed, runs, vs_ray?, vs_ray_p50?,
 *              rows_per_s?, touched_rows?, row_bytes?, push_wire_bytes?, pull_wire_bytes?, push_wire_ratio?,
 *              pull_wire_ratio?, worker_cpu_ms_per_round?, server_cpu_ms_per_round? }],
 *     errors: [{ impl, error }] }
 * `vs_ray` = shoal rounds/s / Ray rounds/s, `vs_ray_p50` = Ray p50 / shoal p50 (higher is better for both).
 * `*_cpu_ms_per_round`: CPU time per round (workers: mean of one worker; servers: all together), which the
 * machine's other load disturbs much less than wall time. `oversubscribed` is true when servers + workers
 * exceed the cores (always on the 2-core machine: 4 processes).
 */
import { fork, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ActorSupervisor, netRemote, NetTransport, shmRemote, shmTransport, TcpStore, TcpStoreServer, type Transport } from '@shoal/core';
import { KVWorker, startPsServers } from '@shoal/backends';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { benchAuth } from './bench-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = benchAuth();

const self = fileURLToPath(import.meta.url);
const root = fileURLToPath(new URL('../../', import.meta.url));
const LR = 1 / 1024;
const KEYS = 4;
/** Warm-up round trips of the small-key phase, the same for the Ray anchor (JIT and first-use costs; with 300 the
 * first plane run still paid for them). */
const SMALL_WARMUP = 2000;

/** net: TCP loopback; ipc: the net transport over unix sockets; shm: shared-memory rings. */
type BenchTransport = 'net' | 'ipc' | 'shm';

interface WorkerJob {
  storeUrl: string;
  transport: BenchTransport;
  rank: number;
  numWorkers: number;
  numServers: number;
  sizes: number[];
  rounds: number[];
  warmup: number;
  smallIters: number;
  phases: string[];
  planes: Plane[];
  sparse: { numRows: number; rowSize: number; touched: number; steps: number };
}

/**
 * How dense values travel (`--planes`): `staging`: the same-host data plane with the worker's staging buffers as
 * the gradient and output arrays (`kv.buffers(key)`: the worker copies nothing); `shared`: the data plane with the
 * caller's own arrays (the worker copies them into and out of its staging buffers); `messages`: values in the
 * transport's messages (`sharedMemory: false`).
 */
type Plane = 'staging' | 'shared' | 'messages';
const PLANES: readonly Plane[] = ['staging', 'shared', 'messages'];

export interface PsRow {
  impl: 'shoal-ps' | 'ray';
  /** shoal: the transport between workers and servers; ray: its object store. */
  transport: string;
  /** shoal: how dense values travel (see `Plane`); small and rowsparse rows: the plane of the run they came from. */
  plane?: Plane;
  kind: 'dense' | 'small' | 'rowsparse';
  bytes: number;
  rounds: number;
  p50_us: number;
  p99_us?: number;
  avg_us: number;
  rounds_per_s: number;
  verified: boolean;
  oversubscribed: boolean;
  vs_ray?: number;
  /** Ray's p50 round time / shoal's (median-based: less sensitive to load spikes than the mean). */
  vs_ray_p50?: number;
  rows_per_s?: number;
  touched_rows?: number;
  row_bytes?: number;
  push_wire_bytes?: number;
  pull_wire_bytes?: number;
  push_wire_ratio?: number;
  pull_wire_ratio?: number;
  /** Mean CPU time of one worker per round, ms (Ray: its DataWorker actors). */
  worker_cpu_ms_per_round?: number;
  /** CPU time of all servers together per round, ms (Ray: its ParameterServer actors; the raylet is not counted). */
  server_cpu_ms_per_round?: number;
  /** Repeats this row is the median of (`--repeat`). */
  runs?: number;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;

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
    'transports': { type: 'string', arg: 'LIST', help: 'net,ipc,shm (default all)' },
    'shm-ring-bytes': { type: 'string', arg: 'BYTES', help: "ring size of the servers' shm listeners" },
    'warmup': { type: 'string', arg: 'N', help: 'warm-up rounds per size (default 20)' },
    'rounds': { type: 'string', arg: 'N', help: 'rounds per size (default: by size)' },
    'phases': { type: 'string', arg: 'LIST', help: 'dense,small,rowsparse (default all)' },
    'planes': { type: 'string', arg: 'LIST', help: 'data planes (default all)' },
    'no-anchor': { type: 'boolean', help: 'skip the Ray anchor' },
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
  for (const t of transports) if (!['net', 'ipc', 'shm'].includes(t)) throw new RangeError(`--transports must list net|ipc|shm, got ${t}`);
  const roundsFor = (b: number) => Math.max(4, Math.round((quick ? 8 : 24) * Math.min(8, (16 << 20) / b) ** 0.5 / 2));
  // --shm-ring-bytes: ring size per direction of the servers' shm listeners (the transport's default otherwise).
  const shmRingBytes = v['shm-ring-bytes'] ? Number(v['shm-ring-bytes']) : undefined;
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
      const storeServer = await TcpStoreServer.start({ auth });
      const store = await TcpStore.connect(storeServer.url, { auth });
      let servers: ActorSupervisor[] = [];
      const prefix = `psbench${process.pid}`;
      const sockDir = transport === 'ipc' ? mkdtempSync(join(tmpdir(), 'shoal-psbench-')) : '';
      const listenUrl = transport === 'shm' ? 'shm://auto' : transport === 'ipc' ? `ipc://${sockDir}/{actor}-{door}.sock` : 'tcp://127.0.0.1:0';
      try {
        servers = await startPsServers({
          auth,
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
        });
        const outs = await Promise.all(
          Array.from({ length: numWorkers }, (_, r) =>
            runChild(process.execPath, [...(prof ?? ['--enable-source-maps']), self], { SHOAL_PS_BENCH: JSON.stringify(job(r)), SHOAL_PS_BENCH_PREFIX: prefix }, 600_000),
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
        const py = process.env.SHOAL_RAY_PYTHON ?? 'python3';
        const out = await runChild(
          py,
          [`${root}bench/anchors/ray_ps.py`, '--sizes', sizes.join(','), '--rounds', rounds.join(','), '--workers', String(numWorkers), '--servers', String(numServers), '--warmup', String(warmup), '--small-iters', quick ? '100' : '300', '--small-warmup', String(SMALL_WARMUP)],
          {},
          900_000,
        );
        for (const r of out) raw.push({ ...(r as unknown as PsRow), transport: 'ray-object-store', oversubscribed });
      } catch (e) {
        errors.push({ impl: 'ray', error: (e as Error).message });
      }
    }
  }
  rows.push(...medianRows(raw, repeat));
  for (const ray of rows.filter((x) => x.impl === 'ray')) {
    for (const mine of rows.filter((x) => x.impl === 'shoal-ps' && x.kind === ray.kind && x.bytes === ray.bytes)) {
      mine.vs_ray = mine.rounds_per_s / ray.rounds_per_s;
      mine.vs_ray_p50 = ray.p50_us / mine.p50_us;
    }
  }

  const result = { suite: 'ps', version: 1, started, host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, args, repeats: repeat, servers: numServers, workers: numWorkers, rows, errors };
  const outPath = v['out'] ?? `${root}bench/results/ps.json`;
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`ps bench: ${numWorkers} workers x ${numServers} servers (processes), load ${loadavg()[0]!.toFixed(1)}`);
  for (const r of rows) {
    const extra =
      r.kind === 'rowsparse'
        ? ` rows/s ${r.rows_per_s!.toFixed(0)} push wire ${r.push_wire_ratio!.toFixed(3)}x pull wire ${r.pull_wire_ratio!.toFixed(3)}x`
        : r.vs_ray !== undefined
          ? ` vs ray ${r.vs_ray.toFixed(2)}x (p50 ${r.vs_ray_p50!.toFixed(2)}x)`
          : '';
    console.log(`${r.impl.padEnd(8)} ${r.transport.padEnd(16)} ${(r.plane ?? '').padEnd(8)} ${r.kind.padEnd(9)} ${String(r.bytes).padStart(9)} B  p50 ${(r.p50_us / 1000).toFixed(2)} ms  ${r.rounds_per_s.toFixed(1)} rounds/s${extra}${r.verified ? '' : ' UNVERIFIED'}`);
  }
  for (const e of errors) console.log(`error ${e.impl}: ${e.error}`);
  console.log(`wrote ${outPath}`);
}

/** One row per (impl, transport, kind, bytes): the median of every numeric field over the repeats. */
function medianRows(raw: PsRow[], repeat: number): PsRow[] {
  const groups = new Map<string, PsRow[]>();
  for (const r of raw) {
    const k = `${r.impl}|${r.transport}|${r.plane}|${r.kind}|${r.bytes}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  return [...groups.values()].map((g) => {
    const out: Record<string, unknown> = { ...g[0]!, runs: g.length, verified: g.every((r) => r.verified) };
    for (const [k, v] of Object.entries(g[0]!)) {
      if (typeof v !== 'number' || k === 'bytes' || k === 'rounds') continue;
      const xs = g.map((r) => (r as unknown as Record<string, number>)[k]!).sort((a, b) => a - b);
      out[k] = xs.length % 2 ? xs[(xs.length - 1) / 2] : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2;
    }
    if (g.length < repeat) out.partial = true;
    return out as unknown as PsRow;
  });
}

/** Run a child, collect its JSON lines; rejects on a non-zero exit or timeout (with its stderr). */
function runChild(cmd: string, argv: string[], env: Record<string, string>, timeoutMs: number): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const child = cmd === process.execPath ? fork(argv[argv.length - 1]!, [], { env: { ...process.env, ...env }, execArgv: argv.slice(0, -1), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }) : spawn(cmd, argv, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Record<string, unknown>[] = [];
    let buf = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line.startsWith('{')) out.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited ${code ?? signal}: ${err.trim().split('\n').slice(-6).join(' | ')}`));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Worker process

/**
 * CPU time per round, a figure the machine's other load disturbs far less than wall time: this worker's CPU and
 * (from rank 0) the servers' CPU between `cpuMeter` and `stop`. `stop` gathers every worker's CPU (the gather is
 * also the end-of-phase barrier) and returns the mean worker CPU and the summed server CPU per round, in ms.
 */
async function cpuMeter(kv: KVWorker) {
  const servers = async () => {
    let t = 0;
    for (let s = 0; s < kv.numServers; s++) t += (await kv.server(s).api.stats()).cpuUs;
    return t;
  };
  const s0 = kv.rank === 0 ? await servers() : 0;
  const c0 = process.cpuUsage();
  return {
    async stop(tag: string, rounds: number) {
      const c1 = process.cpuUsage(c0);
      const mine = (c1.user + c1.system) / 1000;
      const all = await kv.gather(tag, mine);
      const s1 = kv.rank === 0 ? await servers() : 0;
      return {
        worker_cpu_ms_per_round: all.reduce((a, b) => a + b, 0) / all.length / rounds,
        server_cpu_ms_per_round: (s1 - s0) / 1000 / rounds,
      };
    },
  };
}

async function workerMain(job: WorkerJob): Promise<void> {
  const store = await TcpStore.connect(job.storeUrl, { auth, timeoutMs: 120_000 });
  const transport: Transport = job.transport === 'shm' ? shmTransport({ auth, prefix: process.env.SHOAL_PS_BENCH_PREFIX }) : new NetTransport({ auth });
  // One KVWorker per plane, all connected before the first plane runs and closed after the last: a rank whose
  // only connection closes counts as lost on the servers until it says hello again, which would fail the other
  // worker's requests in between.
  const kvs: KVWorker[] = [];
  for (const plane of job.planes) {
    kvs.push(await KVWorker.connect({ rank: job.rank, numWorkers: job.numWorkers, numServers: job.numServers, store, transport, timeoutMs: 120_000, sharedMemory: plane !== 'messages' }));
  }
  // the sparse phase does not depend on the plane: run it once
  for (const [i, plane] of job.planes.entries()) await planeMain(job, kvs[i]!, plane, i === 0);
  for (const kv of kvs) await kv.close();
  await store.close();
}

async function planeMain(job: WorkerJob, kv: KVWorker, plane: Plane, sparse: boolean): Promise<void> {
  const emit = (o: object) => process.stdout.write(`${JSON.stringify({ ...o, plane })}\n`);
  const gsum = (job.numWorkers * (job.numWorkers + 1)) / 2;

  for (let s = 0; s < (job.phases.includes('dense') ? job.sizes.length : 0); s++) {
    const bytes = job.sizes[s]!;
    const per = Math.floor(bytes / 4 / KEYS);
    const keys = Array.from({ length: KEYS }, (_, i) => `${plane}/m${s}/layer${i}`);
    await kv.init(
      keys.map((key) => ({ key, size: per })),
      job.rank === 0 ? keys.map(() => new Float32Array(per)) : undefined,
    );
    const staged = plane === 'staging' ? keys.map((k) => kv.buffers(k)) : [];
    if (staged.some((b) => !b)) throw new Error(`plane staging: key ${keys[staged.findIndex((b) => !b)]} has no staging buffers (servers not on this host?)`);
    const grads = plane === 'staging' ? staged.map((b) => b!.grad.fill(job.rank + 1)) : keys.map(() => new Float32Array(per).fill(job.rank + 1));
    const weights = plane === 'staging' ? staged.map((b) => b!.out) : keys.map(() => new Float32Array(per));
    for (let i = 0; i < job.warmup; i++) await kv.pushPull(keys, grads, weights);
    await kv.gather(`${plane}-dense-start-${s}`, null);
    const cpu = await cpuMeter(kv);
    const times: number[] = [];
    for (let i = 0; i < job.rounds[s]!; i++) {
      const t0 = performance.now();
      await kv.pushPull(keys, grads, weights);
      times.push(performance.now() - t0);
    }
    const used = await cpu.stop(`${plane}-dense-end-${s}`, times.length);
    const want = Math.fround(-LR * gsum * (job.warmup + job.rounds[s]!));
    const verified = weights.every((w) => w.every((v) => v === want));
    times.sort((a, b) => a - b);
    const avg = times.reduce((a, b) => a + b, 0) / times.length;
    emit({ impl: 'shoal-ps', kind: 'dense', bytes: per * 4 * KEYS, rounds: times.length, p50_us: pct(times, 0.5) * 1000, p99_us: pct(times, 0.99) * 1000, avg_us: avg * 1000, rounds_per_s: 1000 / avg, verified, ...used });
  }

  if (job.phases.includes('small')) {
    const key = `${plane}/small`;
    await kv.init([{ key, size: 1 }], job.rank === 0 ? [new Float32Array(1)] : undefined);
    const g = [Float32Array.of(job.rank + 1)];
    const w = [new Float32Array(1)];
    for (let i = 0; i < SMALL_WARMUP; i++) await kv.pushPull([key], g, w);
    await kv.gather(`${plane}-small-start`, null);
    const cpu = await cpuMeter(kv);
    const times: number[] = [];
    for (let i = 0; i < job.smallIters; i++) {
      const t0 = performance.now();
      await kv.pushPull([key], g, w);
      times.push(performance.now() - t0);
    }
    const used = await cpu.stop(`${plane}-small-end`, times.length);
    const verified = w[0]![0] === Math.fround(-LR * gsum * (SMALL_WARMUP + job.smallIters));
    times.sort((a, b) => a - b);
    const avg = times.reduce((a, b) => a + b, 0) / times.length;
    emit({ impl: 'shoal-ps', kind: 'small', bytes: 4, rounds: times.length, p50_us: pct(times, 0.5) * 1000, p99_us: pct(times, 0.99) * 1000, avg_us: avg * 1000, rounds_per_s: 1000 / avg, verified, ...used });
  }

  if (sparse && job.phases.includes('rowsparse')) {
    const { numRows, rowSize, touched, steps } = job.sparse;
    const key = 'emb';
    const spec = { key, size: numRows * rowSize, rows: { numRows, rowSize } };
    await kv.init([spec], job.rank === 0 ? [new Float32Array(numRows * rowSize)] : undefined);
    // Worker r's rows come from a generator seeded with r, so rank 0 can replay every worker's picks to check
    // the final table exactly.
    const picker = (rank: number) => {
      let seed = 12345 + rank;
      const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % numRows;
      return () => {
        const set = new Set<number>();
        while (set.size < touched) set.add(rnd());
        return Int32Array.from(set);
      };
    };
    const pickRows = picker(job.rank);
    const warm = 3;
    const grad = new Float32Array(touched * rowSize).fill(1);
    const rowOut = new Float32Array(touched * rowSize);
    const step = async () => {
      const ids = pickRows();
      await kv.rowSparsePull(key, ids, rowOut);
      const a = kv.stats();
      await kv.rowSparsePush(key, ids, grad);
      return a;
    };
    for (let i = 0; i < warm; i++) await step();
    await kv.gather('sparse-start', null);
    const times: number[] = [];
    let pushSent = 0;
    let pullRecv = 0;
    // Adagrad from 0 with a constant gradient of 1 moves a row by -lr*g/sqrt(h) per update: check one row's
    // update count-independent sign and finiteness below; exactness is checked by the ps tests.
    for (let i = 0; i < steps; i++) {
      const s0 = kv.stats();
      const t0 = performance.now();
      const mid = await step();
      times.push(performance.now() - t0);
      const s1 = kv.stats();
      pullRecv += mid.bytesReceived - s0.bytesReceived;
      pushSent += s1.bytesSent - mid.bytesSent;
    }
    // SGD on the servers: a row ends at -lr * (times any worker touched it), exactly.
    await kv.gather('sparse-end', null);
    let verified = true;
    if (job.rank === 0) {
      const touches = new Float64Array(numRows);
      for (let r = 0; r < job.numWorkers; r++) {
        const pick = picker(r);
        for (let i = 0; i < warm + steps; i++) for (const id of pick()) touches[id]! += 1;
      }
      const all = await kv.rowSparsePull(key, Int32Array.from({ length: numRows }, (_, i) => i));
      for (let row = 0; row < numRows && verified; row++) {
        const want = Math.fround(-LR * touches[row]!);
        for (let j = 0; j < rowSize; j++) if (all[row * rowSize + j] !== want) verified = false;
      }
    }
    times.sort((a, b) => a - b);
    const avg = times.reduce((a, b) => a + b, 0) / times.length;
    const rowBytes = rowSize * 4;
    emit({
      impl: 'shoal-ps',
      kind: 'rowsparse',
      bytes: numRows * rowBytes,
      rounds: steps,
      p50_us: pct(times, 0.5) * 1000,
      p99_us: pct(times, 0.99) * 1000,
      avg_us: avg * 1000,
      rounds_per_s: 1000 / avg,
      verified,
      rows_per_s: (touched * job.numWorkers * 1000) / avg,
      touched_rows: touched,
      row_bytes: rowBytes,
      push_wire_bytes: pushSent / steps,
      pull_wire_bytes: pullRecv / steps,
      push_wire_ratio: pushSent / steps / (touched * rowBytes),
      pull_wire_ratio: pullRecv / steps / (touched * rowBytes),
    });
  }
  await kv.gather(`${plane}-done`, null);
}

if (process.argv[1] === self && process.env.SHOAL_PS_BENCH) {
  workerMain(JSON.parse(process.env.SHOAL_PS_BENCH) as WorkerJob).then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e instanceof Error ? e.stack : String(e));
      process.exit(1);
    },
  );
}
