import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync } from 'node:fs';
import { isShoalError, loadKernels } from '@shoal/core';
import { createSharedRegion, openSharedRegion } from '@shoal/core/transport';
import { KVServer } from './kv-server.js';
import { KVWorker } from './kv-worker.js';
import { createUpdater, type UpdaterSpec } from './updaters.js';
import { memoryPsCluster } from './testing/memory-cluster.js';
import { allEqual, ones } from './testing/values.js';

// The same-host data plane: workers' staging buffers in shared regions that the servers map. The in-process
// memory cluster counts as one host, so the plane is on unless `sharedMemory: false`.

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

test('a worker on another host (host ids differ) sends values in messages; one on the servers\' host uses the data plane', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000, hostId: (r) => (r === 1 ? 'another-host' : undefined) });
  try {
    await Promise.all(c.workers.map((w) => w.init([{ key: 'k', size: 5000 }], [ones(5000, 0)])));
    assert.ok(c.workers[0]!.buffers('k'), 'same host: staging buffers');
    assert.is(c.workers[1]!.buffers('k'), undefined, 'another host: none');
    for (let round = 1; round <= 3; round++) {
      const got = await Promise.all(c.workers.map((w) => w.pushPull(['k'], [ones(5000, w.rank + 1)])));
      for (const [v] of got) allEqual(v!, 3 * round, `round ${round}`);
    }
    assert.ok(c.workers[0]!.stats().sharedCalls >= 3);
    assert.is(c.workers[1]!.stats().sharedCalls, 0);
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

test('a second KVWorker of a rank takes its keys over: the first one is refused, values never mix', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000 });
  try {
    const n = 16;
    await Promise.all(c.workers.map((w) => w.init([{ key: 'k', size: n }], [ones(n, 0)])));
    const other = await KVWorker.connect({ rank: 0, numWorkers: 2, numServers: 1, store: c.store, transport: c.network.transport(), timeoutMs: 10_000 });
    try {
      await other.init([{ key: 'k', size: n }], [ones(n, 0)]);
      other.buffers('k')!.grad.fill(1000); // what the first worker must never read
      const err = await c.workers[0]!.push(['k'], [ones(n, 1)]).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(isShoalError(err, 'ERR_STATE') && /another connection/.test(String(err)), String(err));
      // the newer worker and rank 1 complete the round with their own values
      const [a, b] = await Promise.all([other.pushPull(['k'], [ones(n, 1)]), c.workers[1]!.pushPull(['k'], [ones(n, 2)])]);
      allEqual(a![0]!, 3, 'rank 0 (newer worker)');
      allEqual(b![0]!, 3, 'rank 1');
    } finally {
      await other.close();
    }
  } finally {
    await c.close();
  }
});

test('a push that timed out leaves the data plane for its keys: the late round sums what was pushed', async () => {
  // Worker 0's push times out (worker 1 is late) while the server still holds its staging gradient for the
  // round; its next push must not go through (and overwrite) that buffer.
  const n = 8;
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000 });
  // rank 0 with a short request timeout (a KVWorker of its own, which takes the rank's keys over)
  const w0 = await KVWorker.connect({ rank: 0, numWorkers: 2, numServers: 1, store: c.store, transport: c.network.transport(), timeoutMs: 300 });
  try {
    await Promise.all([...c.workers, w0].map((w) => w.init([{ key: 'k', size: n }], [ones(n, 0)])));
    const w1 = c.workers[1]!;
    const first = await w0.push(['k'], [ones(n, 1)]).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(isShoalError(first, 'ERR_TIMEOUT'), String(first));
    const second = w0.push(['k'], [ones(n, 100)]).catch(() => undefined); // round 1, pipelined
    await w1.push(['k'], [ones(n, 2)]);
    const [v] = await w1.pull(['k']);
    allEqual(v!, 3, 'after round 0');
    await second;
  } finally {
    await w0.close();
    await c.close();
  }
});

test('a key twice in one request is summed as in messages; a shared pull always reads the server, not a scribbled output', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 1, mode: 'async', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000 });
  try {
    const w = c.workers[0]!;
    await w.init([{ key: 'k', size: 4 }], [ones(4, 7)]);
    await w.push(['k', 'k'], [ones(4, 1), ones(4, 10)]);
    const b = w.buffers('k')!;
    await w.pull(['k'], [b.out]);
    allEqual(b.out, 18, 'after two pushes of one request');
    b.out[0] = -1; // the caller edits its output
    const [x] = await w.pull(['k']);
    allEqual(x!, 18, 'a fresh pull');
  } finally {
    await c.close();
  }
});

test('a region whose worker went away before removing its name is removed by the servers that mapped it', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 1, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 10_000 });
  try {
    const w = c.workers[0]!;
    await w.init([{ key: 'k', size: 16 }], [ones(16, 0)]);
    // what a worker killed between creating its region and removing the name leaves: a mapped, named region
    const region = createSharedRegion('psleft-w0', 128);
    const name = region.name.slice(1);
    await w.server(0).call('attachShared', [0, region.name, 128, [{ key: 'k', grad: 0, out: 64 }]]);
    assert.ok(readdirSync('/dev/shm').includes(name), 'the name exists while its worker is connected');
    await w.close(); // the connection goes away as with a killed worker
    for (let i = 0; i < 50 && readdirSync('/dev/shm').includes(name); i++) await new Promise((r) => setTimeout(r, 20));
    assert.not.ok(readdirSync('/dev/shm').includes(name), 'the server removed the name');
  } finally {
    await c.close();
  }
});

test('attachShared refuses a size that is not a number and a name that is not a string (no crash)', async () => {
  const s = new KVServer({ serverIndex: 0, numServers: 1, numWorkers: 1, mode: 'sync' });
  await s.init(0, [{ key: 'k', size: 4 }], [{ server: 0, start: 0, end: 4 }], [ones(4)]);
  assert.throws(() => s.attachShared(0, '/shoal-ps-w0-x', '4096' as unknown as number, [{ key: 'k', grad: 0, out: 16 }]), /bytes must be a positive integer/);
  assert.throws(() => s.attachShared(0, 42 as unknown as string, 64, [{ key: 'k', grad: 0, out: 16 }]), /name must be a string/);
  assert.throws(() => openSharedRegion('/shoal-x', Number.NaN), /bytes must be a positive integer/);
});

test.run();
