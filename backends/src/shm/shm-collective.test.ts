import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Worker } from 'node:worker_threads';
import { MemoryStore } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import { ShmCollective, type ShmCollectiveOptions } from './shm-collective.js';
import { JobAuth } from '@shoal/core';

/** This test job's identity: every store connection authenticates with it. */
const auth = JobAuth.generate('test-job');

const prefix = `sct${process.pid}`;

/** `n` ranks in this process (one collective each; the native threads do the waiting). */
async function group(n: number, opts: Partial<ShmCollectiveOptions> = {}): Promise<ShmCollective[]> {
  const store = new MemoryStore().prefixed('g');
  return Promise.all(Array.from({ length: n }, (_, rank) => ShmCollective.connect({ rank, size: n, store, prefix, timeoutMs: 10_000, ...opts })));
}
const closeAll = (cs: ShmCollective[]) => Promise.all(cs.map((c) => c.close()));
const codes = async (ps: Promise<unknown>[]) => (await Promise.allSettled(ps)).map((x) => (x.status === 'fulfilled' ? 'ok' : String((x.reason as { code?: string }).code)));

/**
 * Source of a worker thread that joins a ShmCollective of `size` ranks as rank `workerData.rank` (store at
 * `workerData.url`, group `group`) and runs `body` with `c` (the collective), `store`, `core`, `workerData` and
 * `parentPort` in scope; an error is posted as its stack.
 */
function threadRankSource(size: number, group: string, body: string): string {
  return `
      const { workerData, parentPort } = require('node:worker_threads');
      (async () => {
        const core = await import(${JSON.stringify(import.meta.resolve('@shoal/core'))});
        const { ShmCollective } = await import(${JSON.stringify(new URL('./shm-collective.js', import.meta.url).href)});
        const store = await core.TcpStore.connect(workerData.url, { auth: core.JobAuth.fromEnv('test-job', process.env), timeoutMs: 10000 });
        const c = await ShmCollective.connect({ rank: workerData.rank, size: ${size}, store: store.prefixed('${group}'), prefix: workerData.prefix, timeoutMs: 10000 });
${body}
      })().catch((e) => parentPort.postMessage(String(e && e.stack)));
    `;
}

const LENS = [0, 1, 7, 1000, 1 << 18, (16 << 20) + 1];

for (const n of [2, 3, 4]) {
  test(`int32 sums are exact on ${n} ranks for lengths ${LENS.join(', ')}`, async () => {
    const cs = await group(n, { chunkBytes: 64 << 10 });
    try {
      for (const len of LENS) {
        const data = cs.map((_, r) => Int32Array.from({ length: len }, (_, i) => (r + 1) * 1_000_003 + i * (r + 7)));
        await Promise.all(cs.map((c, r) => c.allreduce(data[r]!, 'sum')));
        for (let r = 0; r < n; r++)
          for (let i = 0; i < len; i++) {
            let want = 0;
            for (let q = 0; q < n; q++) want = (want + (q + 1) * 1_000_003 + i * (q + 7)) | 0;
            if (data[r]![i] !== want) assert.unreachable(`len ${len} rank ${r} [${i}] = ${data[r]![i]}, want ${want}`);
          }
      }
    } finally {
      await closeAll(cs);
    }
  });
}

test('64 MiB + 4 bytes int32 sum on 2 ranks (default chunking)', async () => {
  const cs = await group(2);
  try {
    const len = (64 << 20) / 4 + 1;
    const data = cs.map((_, r) => Int32Array.from({ length: len }, (_, i) => (i & 0xffff) * (r + 1)));
    await Promise.all(cs.map((c, r) => c.allreduce(data[r]!)));
    for (const d of data) for (let i = 0; i < len; i++) if (d[i] !== (i & 0xffff) * 3) assert.unreachable(`[${i}] = ${d[i]}`);
  } finally {
    await closeAll(cs);
  }
});

test('float32 sum, mean, min, max on 3 ranks; results bitwise identical on every rank', async () => {
  const cs = await group(3, { chunkBytes: 8192, buffers: 2 });
  try {
    const len = 10_007;
    for (const op of ['sum', 'mean', 'min', 'max'] as const) {
      // non-integer values: the float sum depends on the order, which is rank order on every rank
      const data = cs.map((_, r) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 0.37 + r) * 1e3 + r * 1e-3));
      const src = data.map((d) => d.slice());
      await Promise.all(cs.map((c, r) => c.allreduce(data[r]!, op)));
      for (let i = 0; i < len; i++) {
        const v = src.map((d) => d[i]!);
        let want: number;
        if (op === 'min') want = Math.min(...v);
        else if (op === 'max') want = Math.max(...v);
        else {
          const f = new Float32Array(1);
          f[0] = v[0]! + v[1]!;
          f[0] = f[0] + v[2]!;
          if (op === 'mean') f[0] = f[0] * Math.fround(1 / 3);
          want = f[0];
        }
        for (let r = 0; r < 3; r++) if (data[r]![i] !== want) assert.unreachable(`${op} rank ${r} [${i}] = ${data[r]![i]}, want ${want}`);
      }
    }
    const f64 = cs.map((_, r) => Float64Array.from({ length: 999 }, (_, i) => i * (r + 1)));
    await Promise.all(cs.map((c, r) => c.allreduce(f64[r]!, 'mean')));
    for (const d of f64) for (let i = 0; i < 999; i++) assert.is(d[i], (i * 6) / 3);
    const i32 = cs.map((_, r) => Int32Array.from([7 + r, -7 - r, 1]));
    await Promise.all(cs.map((c, r) => c.allreduce(i32[r]!, 'mean')));
    for (const d of i32) assert.equal([...d], [8, -8, 1]); // 24/3, -24/3, 3/3
  } finally {
    await closeAll(cs);
  }
});

test('broadcast from each root and barrier; calls queue in order', async () => {
  const cs = await group(3, { chunkBytes: 4096 });
  try {
    for (const root of [0, 1, 2]) {
      const data = cs.map((_, r) => Float64Array.from({ length: 3000 }, (_, i) => (r === root ? i * 3 + root : -1)));
      await Promise.all(cs.map((c, r) => c.broadcast(data[r]!, root)));
      for (const d of data) for (let i = 0; i < 3000; i++) if (d[i] !== i * 3 + root) assert.unreachable(`root ${root} [${i}] = ${d[i]}`);
    }
    // several calls issued without awaiting run one at a time, in call order, on every rank
    const a = cs.map((_, r) => Int32Array.from({ length: 50_000 }, () => r));
    const b = cs.map((_, r) => Int32Array.from({ length: 10 }, () => 10 * r));
    await Promise.all(cs.flatMap((c, r) => [c.allreduce(a[r]!), c.barrier(), c.allreduce(b[r]!, 'max')]));
    for (let r = 0; r < 3; r++) {
      assert.is(a[r]![49_999], 3);
      assert.is(b[r]![9], 20);
    }
  } finally {
    await closeAll(cs);
  }
});

test('mismatched lengths, dtypes and ops raise ERR_MISMATCH on every rank; the group stays usable', async () => {
  const cs = await group(3);
  try {
    let r = await codes(cs.map((c, i) => c.allreduce(new Float32Array(i === 1 ? 11 : 10))));
    assert.equal(r, ['ERR_MISMATCH', 'ERR_MISMATCH', 'ERR_MISMATCH']);
    r = await codes(cs.map((c, i) => c.allreduce(i === 2 ? new Int32Array(10) : new Float32Array(10))));
    assert.equal(r, ['ERR_MISMATCH', 'ERR_MISMATCH', 'ERR_MISMATCH']);
    r = await codes(cs.map((c, i) => c.allreduce(new Float32Array(3 << 20), i === 0 ? 'max' : 'sum')));
    assert.equal(r, ['ERR_MISMATCH', 'ERR_MISMATCH', 'ERR_MISMATCH']);
    const [err] = await Promise.all([
      cs[0]!.allreduce(new Float32Array(5)).catch((e: Error) => e),
      cs[1]!.allreduce(new Float32Array(6)).catch(() => {}),
      cs[2]!.allreduce(new Float32Array(5)).catch(() => {}),
    ]);
    assert.match(String((err as Error).message), /rank 1 calls allreduce\(6 x float32/, String((err as Error).message));
    const d = cs.map(() => Int32Array.from([1, 2, 3]));
    await Promise.all(cs.map((c, i) => c.allreduce(d[i]!)));
    assert.equal([...d[2]!], [3, 6, 9]);
  } finally {
    await closeAll(cs);
  }
});

test('a rank that never arrives: ERR_TIMEOUT naming the missing rank; the group is broken after', async () => {
  const cs = await group(3, { timeoutMs: 300 });
  try {
    const rs = await Promise.allSettled([cs[0]!.allreduce(new Float32Array(100)), cs[1]!.allreduce(new Float32Array(100_000))]);
    for (const x of rs) {
      assert.is(x.status, 'rejected');
      const e = (x as PromiseRejectedResult).reason as { code: string; message: string };
      // the first rank to time out names rank 2; the other may instead see its abort
      assert.ok(e.code === 'ERR_TIMEOUT' || e.code === 'ERR_PEER_CLOSED', e.message);
      if (e.code === 'ERR_TIMEOUT') assert.match(e.message, /waiting for rank\(s\) 2\b/);
    }
    assert.ok(rs.some((x) => ((x as PromiseRejectedResult).reason as { code: string }).code === 'ERR_TIMEOUT'));
    const late = await cs[2]!.allreduce(new Float32Array(100)).catch((e: { code: string }) => e.code);
    assert.is(late, 'ERR_PEER_CLOSED');
  } finally {
    await closeAll(cs);
  }
});

test('a closed rank fails the others at once; close during a wait rejects with ERR_CLOSED', async () => {
  const cs = await group(2, { timeoutMs: 20_000 });
  const t0 = Date.now();
  const p = cs[0]!.allreduce(new Float32Array(10)).catch((e: { code: string }) => e.code);
  await new Promise((r) => setTimeout(r, 20));
  await cs[1]!.close();
  assert.is(await p, 'ERR_PEER_CLOSED');
  const q = cs[0]!.allreduce(new Float32Array(10)).catch((e: { code: string }) => e.code);
  assert.is(await q, 'ERR_PEER_CLOSED');
  await cs[0]!.close();
  assert.ok(Date.now() - t0 < 10_000);
  const ds = await group(2, { timeoutMs: 20_000 });
  const w = ds[0]!.allreduce(new Float32Array(1 << 20)).catch((e: { code: string }) => e.code);
  await new Promise((r) => setTimeout(r, 20));
  await ds[0]!.close();
  assert.is(await w, 'ERR_CLOSED');
  await ds[1]!.close();
});

test('waiting does not block the event loop; no segment left in /dev/shm', async () => {
  const cs = await group(2, { timeoutMs: 10_000 });
  try {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const p = cs[0]!.allreduce(new Float32Array(8));
    await new Promise((r) => setTimeout(r, 200));
    const q = cs[1]!.allreduce(new Float32Array(8));
    await Promise.all([p, q]);
    clearInterval(timer);
    assert.ok(ticks >= 10, `only ${ticks} timer ticks while rank 0 waited 200 ms`);
    assert.equal(listSegments(prefix), []);
  } finally {
    await closeAll(cs);
  }
});

test('arrays over a SharedArrayBuffer reduce like any other (small and large: JS-thread and native-thread paths)', async () => {
  const cs = await group(2, { chunkBytes: 64 << 10 });
  try {
    for (const len of [16, 300_000]) {
      const data = cs.map((_, r) => {
        const a = new Float32Array(new SharedArrayBuffer(len * 4));
        for (let i = 0; i < len; i++) a[i] = r + 1 + (i % 5);
        return a;
      });
      await Promise.all(cs.map((c, r) => c.allreduce(data[r]!, 'sum')));
      for (const d of data) for (let i = 0; i < len; i++) if (d[i] !== 3 + 2 * (i % 5)) assert.unreachable(`len ${len} [${i}] = ${d[i]}`);
    }
  } finally {
    await closeAll(cs);
  }
});

test('a call made while a queued call is in flight runs after every earlier call (call order on every rank)', async () => {
  const cs = await group(2);
  try {
    const big = (3 << 20) / 4; // past the JS-thread limit: these calls go to the native thread (async)
    const lens = [big, big, 64, 64, 64];
    const mk = (k: number, r: number) => Int32Array.from({ length: lens[k]! }, () => (k + 1) * 10 + r);
    const mine = lens.map((_, k) => mk(k, 1));
    const theirs = lens.map((_, k) => mk(k, 0));
    // Rank 1: call 0 starts, calls 1 and 2 queue behind it.
    const p = [0, 1, 2].map((k) => cs[1]!.allreduce(mine[k]!, 'sum'));
    // Rank 0 completes call 0, so rank 1's queued call 1 starts and waits for rank 0 ...
    await cs[0]!.allreduce(theirs[0]!, 'sum');
    await p[0];
    await new Promise((res) => setTimeout(res, 20));
    // ... and while it is in flight rank 1 makes calls 3 and 4: they must run after call 2.
    p.push(cs[1]!.allreduce(mine[3]!, 'sum'), cs[1]!.allreduce(mine[4]!, 'sum'));
    for (const k of [1, 2, 3, 4]) await cs[0]!.allreduce(theirs[k]!, 'sum');
    await Promise.all(p);
    for (let k = 0; k < lens.length; k++)
      for (const d of [mine[k]!, theirs[k]!]) if (d[0] !== 2 * (k + 1) * 10 + 1) assert.unreachable(`call ${k}: ${d[0]}, want ${2 * (k + 1) * 10 + 1}`);
  } finally {
    await closeAll(cs);
  }
});

test('timeoutMs Infinity means no practical deadline (not an immediate timeout)', async () => {
  const store = new MemoryStore().prefixed('inf');
  const a = ShmCollective.connect({ rank: 0, size: 2, store, prefix, timeoutMs: Infinity });
  const b = ShmCollective.connect({ rank: 1, size: 2, store, prefix, timeoutMs: Infinity });
  const cs = await Promise.all([a, b]);
  try {
    const x = Int32Array.of(1, 2, 3);
    const y = Int32Array.of(10, 20, 30);
    const first = cs[0]!.allreduce(x, 'sum');
    await new Promise((res) => setTimeout(res, 50)); // rank 0 waits for rank 1
    await Promise.all([first, cs[1]!.allreduce(y, 'sum')]);
    assert.equal(Array.from(x), [11, 22, 33]);
  } finally {
    await closeAll(cs);
  }
});

test('ranks as worker threads of one process: exact sums on 3 ranks', async () => {
  const { TcpStoreServer } = await import('@shoal/core');
  const server = await TcpStoreServer.start({ auth });
  try {
    const src = threadRankSource(3, 'wt', `
        const out = [];
        for (const len of [0, 1, 7, 1000, 1 << 18, (1 << 20) + 1]) {
          const d = Int32Array.from({ length: len }, (_, i) => (workerData.rank + 1) * (i % 1000));
          await c.allreduce(d);
          let ok = true;
          for (let i = 0; i < len; i++) if (d[i] !== 6 * (i % 1000)) ok = false;
          out.push(ok);
        }
        await c.close();
        await store.close();
        parentPort.postMessage(out);
    `);
    const results = await Promise.all(
      [0, 1, 2].map(
        (rank) =>
          new Promise((resolve, reject) => {
            const w = new Worker(src, { eval: true, workerData: { rank, url: server.url, prefix }, env: { ...process.env, ...auth.childEnv() } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    for (const r of results) assert.equal(r, [true, true, true, true, true, true]);
  } finally {
    await server.close();
  }
});

test('a worker-thread rank terminated in the middle of an op: the other rank fails with ERR_PEER_CLOSED, nothing crashes', async () => {
  const { TcpStoreServer } = await import('@shoal/core');
  const server = await TcpStoreServer.start({ auth });
  try {
    // Rank 1 (a thread) starts an 8 MiB allreduce that rank 0 never joins, and is terminated while it waits on
    // its native thread; rank 0 (this thread) then calls the op and must see the group closed.
    const src = threadRankSource(2, 'term', `
        c.allreduce(new Float32Array(2 << 20)).catch(() => {});
        parentPort.postMessage('in-op');
    `);
    const { TcpStore } = await import('@shoal/core');
    const store = await TcpStore.connect(server.url, { auth, timeoutMs: 10_000 });
    const w = new Worker(src, { eval: true, workerData: { rank: 1, url: server.url, prefix }, env: { ...process.env, ...auth.childEnv() } });
    const [c, msg] = await Promise.all([
      ShmCollective.connect({ rank: 0, size: 2, store: store.prefixed('term'), prefix, timeoutMs: 10_000 }),
      new Promise((resolve) => w.once('message', resolve)),
    ]);
    assert.is(msg, 'in-op');
    await new Promise((res) => setTimeout(res, 50));
    await w.terminate();
    const t0 = Date.now();
    const err = await c.allreduce(new Float32Array(2 << 20)).then(
      () => null,
      (e: { code?: string }) => e,
    );
    assert.is(err?.code, 'ERR_PEER_CLOSED', String(err));
    assert.ok(Date.now() - t0 < 5_000, 'noticed well within the timeout');
    await c.close();
    await store.close();
  } finally {
    await server.close();
  }
});

test.run();
