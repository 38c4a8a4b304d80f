/**
 * `npm run bench -- allreduce [--max-bytes N] [--full] [--ns 2,3,4] [--transports net,nng,shm,shm-coll] [--wire native|float16]
 *                             [--algorithms ring,direct] [--sizes B,B] [--repeat N]
 *                             [--segment-bytes N] [--window N] [--min-time-ms 300] [--no-anchor] [--no-kernel] [--tls] [--out file.json]`
 *
 * Ring allreduce, nccl-tests method: float32 SUM, sizes 8 B .. max (x2 steps; default max 64 MiB, `--full` =
 * 256 MiB) plus 64 MiB + 4 B when in range; n = 2, 3, 4 separate processes (`allreduce-worker.js`) over the
 * chosen transports (default net, shm and shm-coll), rendezvous through a TcpStoreServer here. `shm-coll` is not a
 * ring transport but the same-host shared-segment collective (`ShmCollective`, impl 'shoal-shm-collective';
 * `--segment-bytes` sets its chunk size, `--wire`/`--algorithms` do not apply). Per size: the first iteration is
 * verified exactly; then >= 5 warm-up and >= 20 timed iterations (more until `--min-time-ms`, at most 1000), each
 * preceded by a barrier (a 1-element allreduce carrying rank 0's go/stop decision); the time of an iteration is
 * the slowest rank's. algbw = bytes / avg time; busbw = algbw * 2(n-1)/n (nccl-tests' allreduce factor).
 * Anchor: torch.distributed gloo (`bench/anchors/gloo_allreduce.py`, same method, same sizes and n), run in the
 * same invocation; the printed ratios are shoal / gloo (busbw: higher is better; p50: lower is better). With
 * `--repeat N` the anchor and the shoal variants run in turn N times per n and every row is the round with the
 * median average time (`rounds` says how many it is the median of): load that comes and goes hits all alike.
 * Also measures the reduction kernel (float32 sum of 1 MiB, native and JS) in this process. `--tls` also runs every
 * `net` variant under TLS 1.3 (the job certificate pinned, as `shoal run --tls`; the store too), rows with transport
 * `net-tls` and `busbw_vs_plain` / `p50_vs_plain` / `cpu_vs_plain` against the plain `net` row of the same run.
 *
 * Output `bench/results/allreduce.json`:
 *   { suite: 'allreduce', version: 1, started, host: { cpus, node, loadavg1 }, args,
 *     kernel: [{ impl, bytes, gbps }],
 *     rows: [{ impl: 'shoal-ring'|'shoal-direct'|'shoal-shm-collective'|'torch-gloo', transport: 'net'|'nng'|'shm'|'shm-coll'|'gloo-tcp', n, bytes, iters,
 *              p50_us, avg_us, p99_us, algbw_gbps, busbw_gbps, verified, cpu_us_per_call?, waits_per_call?, main_thread_cpu_us_per_call?, oversubscribed,
 *              busbw_vs_gloo?, p50_vs_gloo?, busbw_vs_plain?, p50_vs_plain?, cpu_vs_plain? }],
 *     errors: [{ impl, transport, n, error }] }
 * `oversubscribed` is true when n exceeds the machine's cores (n > 2 here): those figures measure scheduling too.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadKernels, TcpStoreServer } from '@shoal/core';
import { settleAll } from '@shoal/core/util';
import type { WorkerArgs } from './allreduce-worker.js';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { benchAuth, benchTls } from './bench-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = benchAuth();

export interface AllreduceRow {
  impl: 'shoal-ring' | 'shoal-direct' | 'shoal-shm-collective' | 'torch-gloo';
  transport: string;
  n: number;
  bytes: number;
  iters: number;
  p50_us: number;
  avg_us: number;
  p99_us: number;
  algbw_gbps: number;
  busbw_gbps: number;
  verified: boolean;
  oversubscribed: boolean;
  busbw_vs_gloo?: number;
  p50_vs_gloo?: number;
  /** `net-tls` rows: plain net avg time / this row's (the busbw ratio), and this p50 / plain net p50. */
  busbw_vs_plain?: number;
  p50_vs_plain?: number;
  /** `net-tls` rows: this row's CPU time per call / the plain net row's (robust under load: what TLS costs). */
  cpu_vs_plain?: number;
}

type RowFields = Pick<AllreduceRow, 'bytes' | 'iters' | 'p50_us' | 'avg_us' | 'p99_us' | 'algbw_gbps' | 'busbw_gbps' | 'verified'>;

const root = fileURLToPath(new URL('../../', import.meta.url));
const workerJs = fileURLToPath(new URL('./allreduce-worker.js', import.meta.url));

/** Sizes 8 B, 16 B, ... `max` (x2), plus 64 MiB + 4 B when `max` >= 64 MiB. */
export function sweepSizes(max: number): number[] {
  const out: number[] = [];
  for (let b = 8; b <= max; b *= 2) out.push(b);
  if (max >= 64 << 20) out.splice(out.indexOf(64 << 20) + 1, 0, (64 << 20) + 4);
  return out;
}

/** Spawn a command, collect its JSON lines; rejects on a non-zero exit or after `timeoutMs`. */
function collect(cmd: string, argv: string[], timeoutMs: number, env?: Record<string, string>): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    const out: Record<string, unknown>[] = [];
    let buf = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line.startsWith('{')) out.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      const e = out.find((o) => o.error);
      if (code !== 0 || e) reject(new Error(String(e?.error ?? `exit ${code}: ${err.slice(-500)}`)));
      else resolve(out);
    });
  });
}

/** A variant's transport: a worker transport, or `net-tls` (net under the job's TLS, `tls` given). */
type BenchTransport = WorkerArgs['transport'] | 'net-tls';

async function runShoal(
  t: BenchTransport,
  n: number,
  base: Omit<WorkerArgs, 'rank' | 'size' | 'store' | 'transport'>,
  timeoutMs: number,
  tls: Awaited<ReturnType<typeof benchTls>> | undefined,
) {
  const encrypted = t === 'net-tls';
  if (encrypted && !tls) throw new Error('net-tls rows need --tls');
  const transport: WorkerArgs['transport'] = encrypted ? 'net' : t;
  const server = await TcpStoreServer.start({ auth: encrypted ? tls!.auth : auth });
  try {
    const runs = Array.from({ length: n }, (_, rank) =>
      collect(process.execPath, [workerJs, JSON.stringify({ ...base, rank, size: n, store: server.url, transport } satisfies WorkerArgs)], timeoutMs, encrypted ? { ...(process.env as Record<string, string>), ...tls!.env } : undefined),
    );
    const [first] = await settleAll(runs);
    return first!.filter((o) => o.row).map((o) => o.row as Record<string, number>);
  } finally {
    await server.close();
  }
}

function kernelBench(): { impl: string; bytes: number; gbps: number }[] {
  const out: { impl: string; bytes: number; gbps: number }[] = [];
  for (const prefer of ['native', 'js'] as const) {
    let k;
    try {
      k = loadKernels({ prefer });
    } catch {
      continue;
    }
    const n = (1 << 20) / 4;
    const a = new Float32Array(n).fill(1);
    const b = new Float32Array(n).fill(2);
    for (let i = 0; i < 50; i++) k.reduce('sum', a, b);
    const iters = prefer === 'js' ? 200 : 2000;
    const best: number[] = [];
    for (let rep = 0; rep < 5; rep++) {
      const t0 = performance.now();
      for (let i = 0; i < iters; i++) k.reduce('sum', a, b);
      best.push((iters * n * 4) / ((performance.now() - t0) / 1000) / 1e9);
    }
    out.push({ impl: k.impl, bytes: n * 4, gbps: +Math.max(...best).toFixed(2) });
  }
  return out;
}

/** Per size, the row of the median `avg_us` (its other fields come with it) over the rounds that have that size. */
export function medianRows(rounds: Record<string, number>[][]): Record<string, number>[] {
  const first = rounds.find((r) => r.length > 0) ?? [];
  return first.map((r0) => {
    const same = rounds.map((r) => r.find((x) => x.bytes === r0.bytes)).filter((x): x is Record<string, number> => x !== undefined);
    same.sort((a, b) => a.avg_us! - b.avg_us!);
    return { ...same[(same.length - 1) >> 1]!, ...(rounds.length > 1 ? { rounds: same.length } : {}) };
  });
}

/** `npm run bench -- allreduce`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench allreduce',
  synopsis: '[options]',
  description: 'allreduce latency and bus bandwidth: shoal over net, shm and the shm collective, gloo as the anchor',
  options: {
    'max-bytes': { type: 'string', arg: 'BYTES', help: 'largest message (default 64 MiB, 256 MiB with --full)' },
    'full': { type: 'boolean', help: 'sizes up to 256 MiB' },
    'ns': { type: 'string', arg: 'N,N', help: 'rank counts (default 2,3,4)' },
    'transports': { type: 'string', arg: 'LIST', help: 'net,shm,shm-coll,nng,net-tls (default net,shm,shm-coll)' },
    'min-time-ms': { type: 'string', arg: 'MS', help: 'time per size (default 300)' },
    'segment-bytes': { type: 'string', arg: 'BYTES', help: "ring segment size (default: the engine's)" },
    'wire': { type: 'string', arg: 'native|float16', help: 'wire format (default native)' },
    'algorithms': { type: 'string', arg: 'LIST', help: 'ring,direct (default ring)' },
    'window': { type: 'string', arg: 'N', help: 'segments in flight' },
    'sizes': { type: 'string', arg: 'BYTES,..', help: 'these message sizes instead of the sweep' },
    'repeat': { type: 'string', arg: 'N', help: 'N interleaved rounds (anchor and shoal alternate), per-row medians (default 1)' },
    'no-anchor': { type: 'boolean', help: 'skip the gloo anchor' },
    'no-kernel': { type: 'boolean', help: 'skip the kernel rows' },
    'tls': { type: 'boolean', help: "also run the net variants under TLS 1.3 (rows 'net-tls', ratios vs plain net)" },
    'out': { type: 'string', arg: 'FILE', help: 'result file (default bench/results/allreduce.json)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const maxBytes = Number(v['max-bytes'] ?? (v['full'] === true ? 256 << 20 : 64 << 20));
  const ns = (v['ns'] ?? '2,3,4').split(',').map(Number);
  const transports = (v['transports'] ?? 'net,shm,shm-coll').split(',') as BenchTransport[];
  const tls = v['tls'] === true || transports.includes('net-tls') ? await benchTls() : undefined;
  if (tls && transports.includes('net') && !transports.includes('net-tls')) transports.splice(transports.indexOf('net') + 1, 0, 'net-tls');
  const minTimeMs = Number(v['min-time-ms'] ?? 300);
  const segmentBytes = v['segment-bytes'] ? Number(v['segment-bytes']) : undefined;
  const wire = (v['wire'] ?? 'native') as 'native' | 'float16';
  const algorithms = (v['algorithms'] ?? 'ring').split(',') as ('ring' | 'direct')[];
  const sizes = v['sizes'] ? v['sizes'].split(',').map(Number) : sweepSizes(maxBytes);
  if (sizes.some((b) => !(Number.isInteger(b) && b >= 4 && b % 4 === 0))) throw new Error(`--sizes must be multiples of 4 bytes, got ${v['sizes']}`);
  const repeats = Number(v['repeat'] ?? 1);
  if (!(Number.isInteger(repeats) && repeats >= 1)) throw new Error(`--repeat must be a positive integer, got ${v['repeat']}`);
  const window = v['window'] ? Number(v['window']) : undefined;
  const base = { window, sizes, warmup: 5, minIters: 20, minTimeMs, maxIters: 1000, segmentBytes, wire, timeoutMs: 120_000 };
  const started = new Date().toISOString();
  const cores = cpus().length;
  const rows: AllreduceRow[] = [];
  const errors: { impl: string; transport: string; n: number; error: string }[] = [];
  const kernel = v['no-kernel'] === true ? [] : kernelBench();
  for (const k of kernel) console.log(`kernel ${k.impl}: float32 sum of ${k.bytes} B at ${k.gbps} GB/s`);
  const runTimeout = 30 * 60_000;
  // 'shm-coll' is not a transport of the ring but the shared-segment collective: one row set, no algorithm choice.
  type Run = readonly [BenchTransport, 'ring' | 'direct'];
  const variants = (n: number): Run[] =>
    transports.flatMap((t): Run[] => (t === 'shm-coll' ? [[t, 'ring']] : algorithms.filter((a) => a === 'ring' || n > 2).map((a): Run => [t, a])));
  const implOf = (t: string, algorithm: string): AllreduceRow['impl'] => (t === 'shm-coll' ? 'shoal-shm-collective' : algorithm === 'direct' ? 'shoal-direct' : 'shoal-ring');

  for (const n of ns) {
    const over = n > cores;
    // with --repeat, the anchor and every shoal variant run in turn, `repeats` times, and each row is the median
    const rounds: { gloo: Record<string, number>[]; mine: Map<string, Record<string, number>[]> }[] = [];
    for (let round = 0; round < repeats; round++) {
      if (repeats > 1) console.log(`\n-- n=${n}, round ${round + 1} of ${repeats} (load ${loadavg()[0]!.toFixed(1)})`);
      const got = { gloo: [] as Record<string, number>[], mine: new Map<string, Record<string, number>[]>() };
      rounds.push(got);
      if (!v['no-anchor'] === true) {
        try {
          const py = process.env.SHOAL_TORCH_PYTHON ?? '/usr/bin/python3';
          const out = await collect(py, ['bench/anchors/gloo_allreduce.py', '--n', String(n), '--sizes', sizes.join(','), '--min-time-ms', String(minTimeMs)], runTimeout);
          got.gloo = out.filter((o) => o.row).map((o) => o.row as Record<string, number>);
        } catch (e) {
          errors.push({ impl: 'torch-gloo', transport: 'gloo-tcp', n, error: (e as Error).message });
          console.log(`gloo anchor n=${n} failed: ${(e as Error).message}`);
        }
      }
      for (const [t, algorithm] of variants(n)) {
        try {
          got.mine.set(`${t} ${algorithm}`, await runShoal(t, n, { ...base, algorithm }, runTimeout, tls));
        } catch (e) {
          errors.push({ impl: implOf(t, algorithm), transport: t, n, error: (e as Error).message });
          console.log(`${implOf(t, algorithm)} ${t} n=${n} failed: ${(e as Error).message}`);
        }
      }
    }
    const gloo = medianRows(rounds.map((x) => x.gloo));
    for (const r of gloo) rows.push({ impl: 'torch-gloo', transport: 'gloo-tcp', n, ...(r as unknown as RowFields), oversubscribed: over });
    for (const [t, algorithm] of variants(n)) {
      const impl = implOf(t, algorithm);
      const all = rounds.map((x) => x.mine.get(`${t} ${algorithm}`)).filter((x): x is Record<string, number>[] => x !== undefined);
      if (all.length === 0) continue;
      const mine = medianRows(all);
      console.log(`\n${impl} over ${t}, n=${n}${over ? ' (OVERSUBSCRIBED: n > cores)' : ''}`);
      console.log('       bytes    p50_us    avg_us    p99_us  busbw_GB/s  gloo_busbw  busbw_x  p50_x');
      for (const r of mine) {
        const g = gloo.find((x) => x.bytes === r.bytes);
        const row: AllreduceRow = { impl, transport: t, n, ...(r as unknown as RowFields), oversubscribed: over };
        if (g) {
          // same bytes and n, so the busbw ratio is the inverse ratio of average times (exact even where the
          // rounded busbw of tiny sizes is 0)
          row.busbw_vs_gloo = +(g.avg_us! / r.avg_us!).toFixed(3);
          row.p50_vs_gloo = +(r.p50_us! / g.p50_us!).toFixed(3);
        }
        const plain = t === 'net-tls' ? rows.find((x) => x.impl === impl && x.transport === 'net' && x.n === n && x.bytes === r.bytes) : undefined;
        if (plain) {
          row.busbw_vs_plain = +(plain.avg_us / r.avg_us!).toFixed(3);
          row.p50_vs_plain = +(r.p50_us! / plain.p50_us).toFixed(3);
          const cpu = (x: object) => (x as { cpu_us_per_call?: number }).cpu_us_per_call;
          if (cpu(r) && cpu(plain)) row.cpu_vs_plain = +(cpu(r)! / cpu(plain)!).toFixed(3);
        }
        rows.push(row);
        console.log(
          `${String(r.bytes).padStart(12)} ${r.p50_us!.toFixed(1).padStart(9)} ${r.avg_us!.toFixed(1).padStart(9)} ${r.p99_us!.toFixed(1).padStart(9)} ${r.busbw_gbps!.toFixed(3).padStart(11)} ${g ? g.busbw_gbps!.toFixed(3).padStart(11) : '        n/a'} ${row.busbw_vs_gloo?.toFixed(2).padStart(8) ?? '     n/a'} ${row.p50_vs_gloo?.toFixed(2).padStart(6) ?? '   n/a'}${row.busbw_vs_plain !== undefined ? `  busbw vs plain net ${row.busbw_vs_plain.toFixed(2)}, p50 ${row.p50_vs_plain!.toFixed(2)}${row.cpu_vs_plain !== undefined ? `, cpu ${row.cpu_vs_plain.toFixed(2)}` : ''}` : ''}`,
        );
      }
    }
  }
  mkdirSync(`${root}bench/results`, { recursive: true });
  const out = { suite: 'allreduce', version: 1, started, host: { cpus: cores, node: process.version, loadavg1: loadavg()[0] }, args, repeats, kernel, rows, errors };
  const file = v['out'] ?? `${root}bench/results/allreduce.json`;
  writeFileSync(file, JSON.stringify(out, null, 1) + '\n');
  console.log(`\nwrote ${file} (${rows.length} rows${errors.length ? `, ${errors.length} errors` : ''})`);
}
