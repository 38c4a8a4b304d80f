/**
 * One process of a job on the namespace cluster (cluster-collectives.test.ts, cluster.ts), started on a host
 * with `NetnsCluster.spawn`: `node cluster-rank.js '<json RankJob>'`. Prints JSON lines; errors print
 * `{"error", "code"}` and exit 1.
 *
 * - `store`: a TcpStoreServer bound to the host's address; prints `{"url"}` and serves until killed.
 * - `ring`: a flat ring group or a hierarchical group (shared-segment collective inside a host, the transport
 *   between host leaders) over `transport`, listening on the host's address. Checks exact int32 sums (sizes 0,
 *   1, 7, 1000, 65 537, 1 MiB) and a float64 mean, prints `{"ok", "hosts", "localRanks", "leader"}`; with
 *   `linkBytes` set it then prints `{"ready":"link"}`, waits for a line on stdin (the driver reads the link
 *   counters), allreduces `linkBytes` once (verified) and prints `{"done":"link"}`.
 * - `ps-server`: `numServers` KVServer shards in this process (sync, SGD with lr 2^-10, or `updater: 'assign'` as
 *   `shoal run` starts them for PsSync), listening on the host's address; prints `{"ready":true}` and serves
 *   until killed.
 * - `ps-worker`: a KVWorker (values in messages: the servers are on another host) pushing `warmup` + `rounds`
 *   rounds of a dense key of `bytes` (8 layers) and a 1-element key, checking the weights exactly after every
 *   round (outside the timed push-pull); prints `{"ok", "sharedCalls", "bytesSent", "bytesReceived", "rounds",
 *   "p50_us", "avg_us", "rounds_per_s"}` (times of the timed rounds' push-pulls).
 */
import { createInterface } from 'node:readline';
import { connectGroup, createNetTransport, createNngTransport, loadKernels, ShoalError, TcpStore, TcpStoreServer, type NumericArray, type Transport } from '@shoal/core';
import { connectHierarchical, KVWorker, startPsServers } from '@shoal/backends';
import { allreduceHierarchical, allreduceRing } from '@shoal/backends/ring';
import { benchAuth } from './bench-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = benchAuth();

export type RankJob =
  | { role: 'store'; address: string }
  | { role: 'ring'; rank: number; size: number; store: string; address: string; transport: 'net' | 'nng'; topology: 'flat' | 'hierarchical'; timeoutMs: number; linkBytes?: number }
  | { role: 'ps-server'; store: string; address: string; numServers: number; numWorkers: number; timeoutMs: number; updater?: 'sgd' | 'assign' }
  | { role: 'ps-worker'; rank: number; numWorkers: number; numServers: number; store: string; bytes: number; rounds: number; warmup?: number; timeoutMs: number; requestBytes?: number };

export const PS_LR = 2 ** -10;
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const forever = () => new Promise<never>(() => setInterval(() => {}, 1 << 30));
const makeTransport = (t: 'net' | 'nng'): Transport => (t === 'nng' ? createNngTransport({ auth }) : createNetTransport({ auth }));

async function stdinLine(): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  await new Promise<void>((res, rej) => {
    rl.once('line', () => res());
    rl.once('close', () => rej(new Error('stdin closed before the go line')));
  });
  rl.close();
}

async function ring(j: Extract<RankJob, { role: 'ring' }>): Promise<void> {
  const store = await TcpStore.connect(j.store, { auth, timeoutMs: j.timeoutMs });
  const transport = makeTransport(j.transport);
  const kernels = loadKernels();
  const listenUrl = `tcp://${j.address}:0`;
  let reduce: (d: NumericArray, op: 'sum' | 'mean') => Promise<void>;
  let close: () => Promise<void>;
  let info: object;
  if (j.topology === 'hierarchical') {
    const h = await connectHierarchical({
      rank: j.rank,
      size: j.size,
      store: store.prefixed('hier'),
      local: { transport, listenUrl },
      cross: { transport, listenUrl },
      timeoutMs: j.timeoutMs,
      prefix: `cr${j.store.replace(/\W/g, '')}`,
    });
    reduce = (d, op) => allreduceHierarchical(h, d, { kernels, op, segmentBytes: 256 << 10 });
    close = () => h.close();
    info = { hosts: h.hosts, localRanks: h.localRanks, leader: h.cross !== undefined, collective: h.collective !== undefined };
  } else {
    const g = await connectGroup({ rank: j.rank, size: j.size, store: store.prefixed('flat'), transport, listenUrl, timeoutMs: j.timeoutMs });
    reduce = (d, op) => allreduceRing(g, d, { kernels, op, segmentBytes: 256 << 10 });
    close = () => g.close();
    info = {};
  }
  try {
    for (const n of [0, 1, 7, 1000, 65_537, (1 << 20) / 4]) {
      const a = Int32Array.from({ length: n }, (_, i) => j.rank * n + i);
      await reduce(a, 'sum');
      const want = (i: number) => n * ((j.size * (j.size - 1)) / 2) + j.size * i;
      for (let i = 0; i < n; i++) if (a[i] !== want(i)) throw new Error(`rank ${j.rank}: ${n} elements, [${i}] = ${a[i]}, want ${want(i)}`);
    }
    const f = Float64Array.from({ length: 5001 }, (_, i) => j.rank + i / 8);
    await reduce(f, 'mean');
    f.forEach((v, i) => {
      if (v !== (j.size - 1) / 2 + i / 8) throw new Error(`rank ${j.rank}: mean [${i}] = ${v}, want ${(j.size - 1) / 2 + i / 8}`);
    });
    say({ ok: true, rank: j.rank, ...info });
    if (j.linkBytes) {
      const n = Math.floor(j.linkBytes / 4);
      const a = new Float32Array(n).fill(j.rank + 1);
      await reduce(new Float32Array(1), 'sum'); // everyone connected and idle before the counters are read
      say({ ready: 'link', rank: j.rank });
      await stdinLine();
      await reduce(a, 'sum');
      const want = (j.size * (j.size + 1)) / 2;
      if (a.some((v) => v !== want)) throw new Error(`rank ${j.rank}: link allreduce is not ${want}`);
      await reduce(new Float32Array(1), 'sum'); // nobody closes while a peer still reads
      say({ done: 'link', rank: j.rank });
    }
  } finally {
    await close();
    await transport.close?.();
    await store.close();
  }
}

async function psServer(j: Extract<RankJob, { role: 'ps-server' }>): Promise<void> {
  const store = await TcpStore.connect(j.store, { auth, timeoutMs: j.timeoutMs });
  const transport = createNetTransport({ auth });
  await startPsServers({
    placement: 'local',
    store,
    transport,
    listenUrl: `tcp://${j.address}:0`,
    numServers: j.numServers,
    numWorkers: j.numWorkers,
    mode: 'sync',
    // 'assign': the servers sum and the workers' optimizer applies (what `shoal run --backend ps` starts)
    updater: j.updater === 'assign' ? { type: 'assign' } : { type: 'sgd', lr: PS_LR },
    timeoutMs: j.timeoutMs,
  });
  say({ ready: true });
  await forever();
}

async function psWorker(j: Extract<RankJob, { role: 'ps-worker' }>): Promise<void> {
  const store = await TcpStore.connect(j.store, { auth, timeoutMs: j.timeoutMs });
  const transport: Transport = createNetTransport({ auth });
  const kv = await KVWorker.connect({ rank: j.rank, numWorkers: j.numWorkers, numServers: j.numServers, store, transport, timeoutMs: j.timeoutMs, ...(j.requestBytes === undefined ? {} : { requestBytes: j.requestBytes }) });
  try {
    const layers = 8;
    const per = Math.floor(j.bytes / 4 / layers);
    const keys = [...Array.from({ length: layers }, (_, i) => `layer${i}`), 'scalar'];
    const sizes = keys.map((k) => (k === 'scalar' ? 1 : per));
    await kv.init(keys.map((key, i) => ({ key, size: sizes[i]! })), j.rank === 0 ? sizes.map((n) => new Float32Array(n)) : undefined);
    const grads = sizes.map((n) => new Float32Array(n).fill(j.rank + 1));
    const outs = sizes.map((n) => new Float32Array(n));
    const gsum = (j.numWorkers * (j.numWorkers + 1)) / 2;
    const warmup = j.warmup ?? 0;
    const times: number[] = [];
    for (let r = 1; r <= warmup + j.rounds; r++) {
      const t0 = performance.now();
      await kv.pushPull(keys, grads, outs);
      if (r > warmup) times.push((performance.now() - t0) * 1000);
      const want = Math.fround(-PS_LR * gsum * r);
      outs.forEach((o, k) => {
        for (let i = 0; i < o.length; i++) if (o[i] !== want) throw new Error(`rank ${j.rank}: round ${r} ${keys[k]}[${i}] = ${o[i]}, want ${want}`);
      });
    }
    times.sort((a, b) => a - b);
    const avg = times.reduce((a, b) => a + b, 0) / times.length;
    say({ ok: true, rank: j.rank, ...kv.stats(), rounds: times.length, p50_us: times[Math.ceil(times.length / 2) - 1], avg_us: avg, rounds_per_s: 1e6 / avg });
  } finally {
    await kv.close();
    await transport.close?.();
    await store.close();
  }
}

async function main(j: RankJob): Promise<void> {
  switch (j.role) {
    case 'store': {
      const s = await TcpStoreServer.start({ auth, host: j.address });
      say({ url: s.url });
      return forever();
    }
    case 'ring':
      return ring(j);
    case 'ps-server':
      return psServer(j);
    case 'ps-worker':
      return psWorker(j);
  }
}

main(JSON.parse(process.argv[2]!) as RankJob).then(
  () => process.exit(0),
  (e: unknown) => {
    say({ error: (e as Error).message, code: e instanceof ShoalError ? e.code : undefined });
    process.exit(1);
  },
);
