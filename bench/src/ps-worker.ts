/**
 * A worker process of the ps bench (ps.ts forks it with its `WorkerJob` in `SHOAL_PS_BENCH`): connects one
 * KVWorker per data plane, runs the dense, small and rowsparse phases, verifies their results exactly and prints
 * one JSON row per phase (rank 0's rows are the results).
 */
import { fileURLToPath } from 'node:url';
import { NetTransport, shmTransport, TcpStore, type Transport } from '@shoal/core';
import { KVWorker } from '@shoal/backends';
import { benchAuth } from './bench-auth.js';
import { KEYS, LR, SMALL_WARMUP, type Plane, type WorkerJob } from './ps-job.js';
import { pct } from './ps-rows.js';

/** The job's identity, inherited from the driver. */
const auth = benchAuth();
const self = fileURLToPath(import.meta.url);

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
    kvs.push(await KVWorker.connect({ rank: job.rank, numWorkers: job.numWorkers, numServers: job.numServers, store, transport, timeoutMs: 120_000, sharedMemory: plane !== 'messages', ...(job.requestBytes === undefined ? {} : { requestBytes: job.requestBytes }) }));
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
