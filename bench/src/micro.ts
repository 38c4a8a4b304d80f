/**
 * `npm run bench -- micro [--time-ms 300]`: tinybench micro-benchmarks of the hot inner pieces, each verified
 * before it is timed:
 * - the reduction kernels (float32 sum of 1 MiB into 1 MiB; fp32 -> fp16 wire conversion of 1 MiB), native addon
 *   against the JS fallback;
 * - an in-process round trip of a 1 KiB message over the memory and shm transports (the per-message cost a
 *   collective pays on top of the bytes).
 *
 * Writes `bench/results/micro.json`: `{ suite: 'micro', version: 1, started, host: { cpus, node, loadavg1 },
 * rows: [{ name, impl, bytes, mean_us, p50_us, p99_us, ops_per_s, gbps, samples, rme_pct }] }` (`gbps` for
 * byte-processing rows: bytes / mean latency).
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { Bench } from 'tinybench';
import { loadKernels, MemoryNetwork, shmTransport, type Connection, type ReduceKernels } from '@shoal/core';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';

interface Row {
  name: string;
  impl: string;
  bytes: number;
  mean_us: number;
  p50_us: number;
  p99_us: number;
  ops_per_s: number;
  gbps: number | null;
  samples: number;
  rme_pct: number;
}

function verifyKernels(k: ReduceKernels): void {
  const a = Float32Array.from({ length: 1027 }, (_, i) => i);
  const b = Float32Array.from({ length: 1027 }, (_, i) => 2 * i);
  k.reduce('sum', a, b);
  for (let i = 0; i < a.length; i++) if (a[i] !== 3 * i) throw new Error(`${k.impl} sum wrong at ${i}: ${a[i]}`);
  const h = new Uint16Array(a.length);
  k.f32ToF16(h, a);
  const back = new Float32Array(a.length);
  k.f16ToF32(back, h);
  // integers are exact in fp16 up to 2048 (a[i] = 3i after the sum)
  for (let i = 0; 3 * i <= 2048; i++) if (back[i] !== a[i]) throw new Error(`${k.impl} fp16 round trip wrong at ${i}`);
}

async function pair(kind: 'memory' | 'shm'): Promise<[Connection, Connection, () => Promise<void>]> {
  const t = kind === 'memory' ? new MemoryNetwork().transport() : shmTransport({ prefix: `micro${process.pid}` });
  const l = await t.listen(kind === 'memory' ? 'mem://' : 'shm://auto');
  const [a, b] = await Promise.all([t.dial(l.url), l.accept()]);
  return [a, b, async () => { await a.close(); await b.close(); await l.close(); }];
}

/** `npm run bench -- micro`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench micro',
  synopsis: '[options]',
  description: 'micro benchmarks: kernels and a transport round trip',
  options: {
    'time-ms': { type: 'string', arg: 'MS', help: 'time per case (default 300)' },
    'out': { type: 'string', arg: 'FILE', help: 'result file (default bench/results/micro.json)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const timeMs = Number(v['time-ms'] ?? 300);
  const bench = new Bench({ time: timeMs, warmupTime: 50 });
  const MiB = 1 << 20;
  const meta: Record<string, { impl: string; bytes: number }> = {};
  const add = (name: string, impl: string, bytes: number, fn: () => unknown) => {
    const key = `${name} [${impl}]`;
    meta[key] = { impl, bytes };
    bench.add(key, fn);
  };

  const impls = [loadKernels({ prefer: 'js' })];
  try {
    impls.unshift(loadKernels({ prefer: 'native' }));
  } catch (e) {
    console.warn(`micro: native kernels not built (${(e as Error).message}); JS only`);
  }
  const dst = new Float32Array(MiB / 4).fill(1);
  const src = new Float32Array(MiB / 4).fill(0.5);
  const half = new Uint16Array(MiB / 4);
  for (const k of impls) {
    verifyKernels(k);
    add('sum f32 1 MiB', k.impl, MiB, () => k.reduce('sum', dst, src));
    add('f32->f16 1 MiB', k.impl, MiB, () => k.f32ToF16(half, src));
  }

  const closers: (() => Promise<void>)[] = [];
  const msg = new Uint8Array(1024).fill(7);
  for (const kind of ['memory', 'shm'] as const) {
    let conns: [Connection, Connection, () => Promise<void>];
    try {
      conns = await pair(kind);
    } catch (e) {
      console.warn(`micro: ${kind} transport unavailable (${(e as Error).message})`);
      continue;
    }
    const [a, b, close] = conns;
    closers.push(close);
    await a.send(msg);
    const first = await b.recv();
    if (first.byteLength !== 1024 || first[1023] !== 7) throw new Error(`${kind}: round trip corrupted the message`);
    add('1 KiB send+recv', kind, 1024, async () => {
      await a.send(msg);
      await b.recv();
    });
  }

  await bench.run();
  for (const c of closers) await c();

  const rows: Row[] = [];
  for (const task of bench.tasks) {
    const r = task.result;
    if (r.state !== 'completed') {
      console.error(`micro: ${task.name} ${r.state}${r.state === 'errored' ? `: ${r.error.message}` : ''}`);
      continue;
    }
    const m = meta[task.name]!;
    const meanUs = r.latency.mean * 1000;
    rows.push({
      name: task.name.replace(/ \[.*\]$/, ''),
      impl: m.impl,
      bytes: m.bytes,
      mean_us: +meanUs.toFixed(2),
      p50_us: +(r.latency.p50 * 1000).toFixed(2),
      p99_us: +(r.latency.p99 * 1000).toFixed(2),
      ops_per_s: +(1e6 / meanUs).toFixed(0),
      gbps: task.name.startsWith('1 KiB') ? null : +(m.bytes / (meanUs * 1e3)).toFixed(2),
      samples: r.latency.samples?.length ?? 0,
      rme_pct: +r.latency.rme.toFixed(2),
    });
  }
  for (const row of rows) {
    const rate = row.name.startsWith('1 KiB') ? `${row.ops_per_s} round trips/s` : `${row.gbps} GB/s`;
    console.log(`${row.name.padEnd(18)} ${row.impl.padEnd(20)} mean ${String(row.mean_us).padStart(9)} us  p50 ${String(row.p50_us).padStart(9)} us  ${rate}`);
  }
  const root = new URL('../../', import.meta.url).pathname;
  mkdirSync(`${root}bench/results`, { recursive: true });
  const file = v['out'] ?? `${root}bench/results/micro.json`;
  writeFileSync(file, JSON.stringify({ suite: 'micro', version: 1, started: new Date().toISOString(), host: { cpus: availableParallelism(), node: process.version, loadavg1: loadavg()[0] }, rows }, null, 2) + '\n');
  console.log(`wrote ${file} (${rows.length} rows)`);
}
