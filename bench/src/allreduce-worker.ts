/**
 * One rank of `npm run bench -- allreduce` (spawned by allreduce.ts, compiled JS):
 *   node allreduce-worker.js '<json WorkerArgs>'
 * Every rank runs the same sweep; rank 0 prints one JSON row per size on stdout (`{"row":{...}}`), then
 * `{"done":true}`. Errors print `{"error":...}` and exit 1.
 */
import { connectGroup, createNetTransport, createNngTransport, loadKernels, shmTransport, TcpStore, type NumericArray, type Transport } from '@shoal/core';
import { connectHierarchical, ShmCollective } from '@shoal/backends';
import { allreduceHierarchical, allreduceRing } from '@shoal/backends/ring';
import { openSync, readSync } from 'node:fs';
import { benchAuth } from './bench-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = benchAuth();

export interface WorkerArgs {
  rank: number;
  size: number;
  store: string;
  /** 'shm-coll': the same-host shared-segment collective (ShmCollective), no transport; everything else the ring. */
  transport: 'net' | 'nng' | 'shm' | 'shm-coll';
  sizes: number[];
  warmup: number;
  minIters: number;
  minTimeMs: number;
  maxIters: number;
  segmentBytes?: number;
  wire?: 'native' | 'float16';
  algorithm?: 'ring' | 'direct';
  /** Small-buffer variant of the ring (`AllreduceOptions.smallAlgorithm`); default the engine's. */
  smallAlgorithm?: 'ring' | 'direct' | 'doubling';
  window?: number;
  timeoutMs: number;
  /** Address to listen on (net/nng). Default 127.0.0.1; the cluster suite gives each host's address. */
  listenHost?: string;
  /**
   * 'hierarchical' (net/nng only): `allreduceHierarchical`, the shared-segment collective inside each host and
   * the ring over the transport between host leaders (hosts as `localHostId()` tells them apart). Default 'flat'.
   */
  topology?: 'flat' | 'hierarchical';
}

const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');

/**
 * CPU time of this process's main (JS) thread in microseconds, from /proc/self/schedstat (Linux: the scheduler's
 * nanosecond run time of the thread group leader); undefined elsewhere. Beside `process.cpuUsage()` (every thread)
 * it tells the event loop's share from native I/O threads' (nng's).
 */
function mainThreadCpuUs(): number | undefined {
  try {
    schedstat.fd ??= openSync('/proc/self/schedstat', 'r');
    const n = readSync(schedstat.fd, schedstat.buf, 0, schedstat.buf.length, 0);
    return Number(schedstat.buf.toString('latin1', 0, n).split(' ')[0]) / 1000;
  } catch {
    return undefined;
  }
}
/** One open descriptor, read with pread: a /proc read per call costs a syscall, not three. */
const schedstat: { fd?: number; buf: Buffer } = { buf: Buffer.alloc(128) };

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

async function main(a: WorkerArgs): Promise<void> {
  const store = await TcpStore.connect(a.store, { auth, timeoutMs: a.timeoutMs });
  const kernels = loadKernels();
  const opts = { kernels, segmentBytes: a.segmentBytes, wire: a.wire, algorithm: a.algorithm, window: a.window, smallAlgorithm: a.smallAlgorithm };
  // The collective under test (`reduce`) and the one that carries the go/stop barrier and the times (`ctlReduce`).
  let reduce: (d: NumericArray) => Promise<void>;
  let ctlReduce: (d: NumericArray) => Promise<void>;
  let finish: () => Promise<void>;
  let stats: () => unknown;
  if (a.transport === 'shm-coll') {
    const c = await ShmCollective.connect({ rank: a.rank, size: a.size, store: store.prefixed('bench-coll'), prefix: `bar${process.ppid}`, timeoutMs: a.timeoutMs, ...(a.segmentBytes ? { chunkBytes: a.segmentBytes } : {}) });
    reduce = (d) => c.allreduce(d, 'sum');
    ctlReduce = (d) => c.allreduce(d, 'max');
    finish = () => c.close();
    stats = () => ({ ...c.stats(), ...c.info() });
  } else {
    const transport: Transport =
      a.transport === 'nng' ? createNngTransport({ auth }) : a.transport === 'shm' ? shmTransport({ auth, prefix: `bar${process.ppid}` }) : createNetTransport({ auth });
    const listenUrl = a.transport === 'shm' ? 'shm://auto' : `tcp://${a.listenHost ?? '127.0.0.1'}:0`;
    if (a.topology === 'hierarchical') {
      if (a.transport === 'shm') throw new Error('topology hierarchical needs transport net or nng');
      const h = await connectHierarchical({ rank: a.rank, size: a.size, store: store.prefixed('bench-hier'), local: { transport, listenUrl }, cross: { transport, listenUrl }, timeoutMs: a.timeoutMs, prefix: `bah${process.ppid}` });
      reduce = (d) => allreduceHierarchical(h, d, { kernels, segmentBytes: a.segmentBytes, wire: a.wire });
      ctlReduce = (d) => allreduceHierarchical(h, d, { kernels, op: 'max' });
      finish = async () => {
        await h.close();
        await transport.close?.();
      };
      stats = () => ({ hosts: h.hosts, localRanks: h.localRanks.length, cross: h.cross?.stats() });
    } else {
      const g = await connectGroup({ rank: a.rank, size: a.size, store: store.prefixed('bench'), transport, listenUrl, timeoutMs: a.timeoutMs });
      reduce = (d) => allreduceRing(g, d, opts);
      ctlReduce = (d) => allreduceRing(g, d, { kernels, op: 'max' });
      finish = async () => {
        await g.close();
        await transport.close?.();
      };
      stats = () => g.stats();
    }
  }
  const ctl = new Float64Array(1);
  try {
    // global warm-up before the first size, so the JIT and the connections are warm for the 8 B row
    const warm = new Float32Array(2);
    const warmBig = new Float32Array(16384);
    for (let i = 0; i < 3000; i++) await reduce(i % 10 ? warm : warmBig);
    for (const bytes of a.sizes) {
      const n = Math.floor(bytes / 4);
      const data = new Float32Array(n);
      // verify the first iteration: unique small integers per rank and element, exact in float32
      for (let i = 0; i < n; i++) data[i] = (a.rank + 1) * (i % 4096);
      await reduce(data);
      const f = (a.size * (a.size + 1)) / 2;
      for (let i = 0; i < n; i++)
        if (data[i] !== f * (i % 4096)) throw new Error(`verification failed at ${bytes} B: [${i}] = ${data[i]}, want ${f * (i % 4096)}`);
      const times: number[] = [];
      const t0 = performance.now();
      for (let it = 0; ; it++) {
        data.fill(1);
        // the barrier before each iteration carries rank 0's decision to go on (1) or stop (0)
        ctl[0] = a.rank === 0 ? (it < a.warmup + a.minIters || (performance.now() - t0 < a.minTimeMs && it < a.maxIters) ? 1 : 0) : 0;
        await ctlReduce(ctl);
        if (ctl[0] === 0) break;
        const s = performance.now();
        await reduce(data);
        const e = performance.now() - s;
        if (it >= a.warmup) times.push(e * 1000);
      }
      // Robust counters beside the wall clock, in a block of their own after the timed calls (read around each
      // timed call, the three reads cost 5-20 us, a visible share of an 8 B call): this process's CPU (every
      // thread, nng's I/O threads included), its voluntary context switches (waits) and its main thread's CPU,
      // per call over up to 50 back-to-back calls. Every rank ran the same number of timed calls (rank 0 decides).
      const k = Math.min(times.length, 50);
      data.fill(0); // sums of zeros stay exact whatever k; the kernels' speed does not depend on the values
      const c0 = process.cpuUsage();
      const v0 = process.resourceUsage().voluntaryContextSwitches;
      const m0 = mainThreadCpuUs();
      for (let i = 0; i < k; i++) await reduce(data);
      const m1 = mainThreadCpuUs();
      const c = process.cpuUsage(c0);
      const waits = process.resourceUsage().voluntaryContextSwitches - v0;
      const mainUs = m0 !== undefined && m1 !== undefined ? m1 - m0 : 0;
      // per iteration, the slowest rank's time
      const t = Float64Array.from(times);
      await ctlReduce(t);
      // the busiest rank's CPU and waits per call
      const counters = Float64Array.of((c.user + c.system) / k, waits / k, mainUs / k);
      await ctlReduce(counters);
      if (a.rank === 0) {
        const us = [...t].sort((x, y) => x - y);
        const avg = us.reduce((x, y) => x + y, 0) / us.length;
        const algbw = bytes / (avg / 1e6) / 1e9;
        say({
          row: {
            bytes: n * 4,
            iters: us.length,
            p50_us: +pct(us, 50).toFixed(2),
            avg_us: +avg.toFixed(2),
            p99_us: +pct(us, 99).toFixed(2),
            algbw_gbps: +algbw.toFixed(4),
            busbw_gbps: +((algbw * 2 * (a.size - 1)) / a.size).toFixed(4),
            cpu_us_per_call: +counters[0]!.toFixed(1),
            waits_per_call: +counters[1]!.toFixed(2),
            main_thread_cpu_us_per_call: +counters[2]!.toFixed(1),
            verified: true,
          },
        });
      }
    }
    if (a.rank === 0) say({ done: true, kernels: kernels.impl, stats: stats() });
  } finally {
    await finish();
    await store.close();
  }
}

main(JSON.parse(process.argv[2]!) as WorkerArgs).then(
  () => process.exit(0),
  (e: unknown) => {
    say({ error: (e as Error).message });
    process.exit(1);
  },
);
