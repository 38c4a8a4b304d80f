import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync } from 'node:fs';
import { isShoalError, loadKernels } from '@shoal/core';
import { KVServer } from './kv-server.js';
import { createUpdater, type UpdaterSpec } from './updaters.js';
import { memoryPsCluster } from './testing/memory-cluster.js';

// The same-host data plane: workers' staging buffers in shared regions that the servers map. The in-process
// memory cluster counts as one host, so the plane is on unless `sharedMemory: false`.

const ones = (n: number, v = 1) => new Float32Array(n).fill(v);
const allEqual = (a: ArrayLike<number>, v: number, what: string) => {
  for (let i = 0; i < a.length; i++) if (a[i] !== v) assert.unreachable(`${what}[${i}] = ${a[i]}, want ${v}`);
};
const regionsOf = (pid: number) => readdirSync('/dev/shm').filter((f) => f.startsWith('shoal-ps-w') && f.includes(`-${pid}-`));

test('staging buffers as gradients and outputs: exact rounds, no values in messages, nothing left in /dev/shm', async () => {
  const n = 2;
  const c = await memoryPsCluster({ numServers: 2, numWorkers: n, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000, bigKeyBound: 40_000 });
  try {
    const size = { big: 100_000, mid: 20_000, tiny: 3 };
    const keys = Object.keys(size) as (keyof typeof size)[];
    await Promise.all(
      c.workers.map((w) =>
        w.init(
          [...keys.map((key) => ({ key, size: size[key] })), { key: 'emb', size: 40, rows: { numRows: 10, rowSize: 4 } }],
          [...keys.map((k) => ones(size[k], 0)), ones(40, 0)],
        ),
      ),
    );
    assert.equal(regionsOf(process.pid), [], 'region names are removed once the servers mapped them');
    assert.is(c.workers[0]!.buffers('emb'), undefined, 'row-sparse keys have no staging buffers');
    const bufs = c.workers.map((w) => keys.map((k) => w.buffers(k)!));
    bufs.forEach((b, r) => b.forEach((x) => x.grad.fill(r + 1)));
    const before = c.workers.map((w) => w.stats());
    for (let round = 1; round <= 4; round++) {
      await Promise.all(c.workers.map((w, r) => w.pushPull(keys, bufs[r]!.map((b) => b.grad), bufs[r]!.map((b) => b.out))));
      bufs.forEach((b, r) => b.forEach((x, i) => allEqual(x.out, 3 * round, `round ${round} rank ${r} ${keys[i]}`)));
    }
    bufs.forEach((b, r) => b.forEach((x, i) => allEqual(x.grad, r + 1, `rank ${r} gradient ${keys[i]} (servers only read it)`)));
    c.workers.forEach((w, r) => {
      const st = w.stats();
      const moved = st.bytesSent + st.bytesReceived - before[r]!.bytesSent - before[r]!.bytesReceived;
      assert.ok(moved < 8 * 1024, `rank ${r}: ${moved} bytes in messages for 4 rounds of 120k floats`);
      assert.ok(st.sharedCalls - before[r]!.sharedCalls >= 4, 'requests went over the data plane');
    });
    // plain pull into the worker's own arrays and a float64 key go the same way
    const [mid] = await c.workers[1]!.pull(['mid']);
    allEqual(mid!, 12, 'pull into a fresh array');
  } finally {
    await c.close();
  }
});

test('float64 keys through the data plane are exact', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000, bigKeyBound: 1000 });
  try {
    const size = 2500;
    await Promise.all(c.workers.map((w) => w.init([{ key: 'd', size, dtype: 'float64' }], [new Float64Array(size).fill(0.5)])));
    const st = c.workers[0]!.buffers('d')!;
    assert.ok(st.grad instanceof Float64Array && st.grad.length === size);
    for (let round = 1; round <= 3; round++) {
      const got = await Promise.all(c.workers.map((w) => w.pushPull(['d'], [new Float64Array(size).fill(1 / 3 + w.rank)])));
      for (const [v] of got) allEqual(v!, 0.5 + round * (1 / 3 + (1 / 3 + 1)), `round ${round}`);
    }
  } finally {
    await c.close();
  }
});

/**
 * Element-wise updaters run chunk by chunk (KVServer.CHUNK elements) with views of their state: after a few rounds
 * the weights must equal, bit for bit, the updater applied to whole arrays, and be the same whichever way the
 * values travelled.
 */
for (const updater of [
  { type: 'adam', lr: 0.01, wd: 0.001 },
  { type: 'sgd', lr: 0.1, momentum: 0.9, wd: 0.01 },
  { type: 'sgd', lr: 0.05 },
  { type: 'adagrad', lr: 0.1 },
] as UpdaterSpec[]) {
  test(`chunked ${JSON.stringify(updater)} on a split key equals the whole-array update, both planes`, async () => {
    const size = 2 * KVServer.CHUNK + 12_345; // split over 2 servers: each slice is one full chunk plus a part
    const grad = (rank: number, round: number) => Float32Array.from({ length: size }, (_, i) => Math.sin(i * 0.37 + rank * 1.3 + round));
    const init = Float32Array.from({ length: size }, (_, i) => Math.cos(i * 0.11));
    // reference: the updater on whole arrays, the gradient summed in rank order
    const ref = init.slice();
    const state = {};
    const u = await createUpdater(updater);
    for (let round = 0; round < 3; round++) {
      const g0 = grad(0, round);
      const g1 = grad(1, round);
      const m = Float32Array.from(g0, (v, i) => v + g1[i]!);
      u({ key: 'w', weights: ref, grad: m, state, step: round, kernels: loadKernels() });
    }
    const results: Float32Array[] = [];
    for (const sharedMemory of [true, false]) {
      const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', updater, timeoutMs: 10_000, bigKeyBound: size / 2, sharedMemory });
      try {
        await Promise.all(c.workers.map((w) => w.init([{ key: 'w', size }], [init])));
        assert.is(c.workers[0]!.layout.slicesOf('w').length, 2);
        let last: Float32Array | undefined;
        for (let round = 0; round < 3; round++) {
          const got = await Promise.all(c.workers.map((w) => w.pushPull(['w'], [grad(w.rank, round)])));
          last = got[0]![0] as Float32Array;
          assert.equal(Array.from(got[1]![0]!), Array.from(last), 'both workers pull the same values');
        }
        results.push(last!);
      } finally {
        await c.close();
      }
    }
    for (const [i, got] of results.entries()) {
      for (let j = 0; j < size; j++) {
        if (!Object.is(got[j], ref[j])) assert.unreachable(`${i === 0 ? 'data plane' : 'messages'}: w[${j}] = ${got[j]}, whole-array update gives ${ref[j]}`);
      }
    }
  });
}

test('attachShared: an unmappable region is ERR_TRANSPORT (the worker then uses messages); bad offsets are refused', async () => {
  const s = new KVServer({ serverIndex: 0, numServers: 1, numWorkers: 1, mode: 'sync' });
  await s.init(0, [{ key: 'k', size: 4 }], [{ server: 0, start: 0, end: 4 }], [ones(4)]);
  try {
    s.attachShared(0, '/shoal-ps-w0-nonexistent', 64, [{ key: 'k', grad: 0, out: 16 }]);
    assert.unreachable('mapped a region that does not exist');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_TRANSPORT'), String(e));
  }
  assert.throws(() => s.attachShared(0, '/shoal-ps-w0-x', 64, [{ key: 'k', grad: 2, out: 16 }]), /offset 2/);
  assert.throws(() => s.attachShared(0, '/shoal-ps-w0-x', 64, [{ key: 'k', grad: 0, out: 56 }]), /offset 56/);
  assert.throws(() => s.attachShared(0, '/shoal-ps-w0-x', 64, [{ key: 'nope', grad: 0, out: 16 }]), /not initialised/);
  // a push that leaves its gradient in staging buffers never attached is refused, naming the key
  assert.throws(() => s.push(0, ['k'], [0], [null]), /no shared buffers for key k/);
});

test.run();
