import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryNetwork, MemoryStore } from '@shoal/core';
import { gradientSyncCompliance } from '../testing/compliance.js';
import { keyHash, sliceKey } from './key-layout.js';
import { KVServer } from './kv-server.js';
import { startPsServers } from './launch-servers.js';
import { PsSync } from './ps-sync.js';
import { memoryPsCluster } from './testing/memory-cluster.js';
import { allEqual, ones } from './testing/values.js';


test('key slicer: small keys hashed, big keys split evenly, row-sparse keys by row range', () => {
  assert.equal(sliceKey({ key: 'w', size: 10 }, 3), [{ server: keyHash('w') % 3, start: 0, end: 10 }]);
  const big = sliceKey({ key: 'big', size: 1_440_000 }, 3);
  assert.equal(big.map((s) => [s.server, s.start, s.end]), [[0, 0, 480000], [1, 480000, 960000], [2, 960000, 1440000]]);
  const rows = sliceKey({ key: 'e', size: 10 * 4, rows: { numRows: 10, rowSize: 4 } }, 3);
  assert.equal(rows.map((s) => [s.rowStart, s.rowEnd, s.start, s.end]), [[0, 3, 0, 12], [3, 6, 12, 24], [6, 10, 24, 40]]);
  const servers = new Set(Array.from({ length: 40 }, (_, i) => sliceKey({ key: `k${i}`, size: 5 }, 4)[0]!.server));
  assert.is(servers.size, 4, 'small keys spread over all servers');
});

for (const sharedMemory of [true, false]) {
  test(`dist_sync (MXNet, values ${sharedMemory ? 'through the same-host data plane' : 'in messages'}): n workers push ones*(rank+1) into w += lr*g; pulls equal the closed form exactly`, async () => {
    const n = 3;
    const rate = 2;
    const c = await memoryPsCluster({ numServers: 2, numWorkers: n, mode: 'sync', updater: { type: 'add', lr: rate }, timeoutMs: 20_000, sharedMemory });
    const shapes = { small: 3 * 4, big: 1200 * 1200 };
    await Promise.all(c.workers.map((w) => w.init([{ key: 'small', size: shapes.small }, { key: 'big', size: shapes.big }], [ones(shapes.small), ones(shapes.big)])));
    assert.is(c.workers[0]!.layout.slicesOf('big').length, 2, '1200x1200 key is split across both servers');
    for (let round = 1; round <= 3; round++) {
      await Promise.all(c.workers.map((w) => w.push(['small', 'big'], [ones(shapes.small, w.rank + 1), ones(shapes.big, w.rank + 1)])));
      const want = 1 + ((rate * n * (n + 1)) / 2) * round;
      const got = await Promise.all(c.workers.map((w) => w.pull(['small', 'big'])));
      got.forEach(([s, b], r) => {
        allEqual(s!, want, `round ${round} rank ${r} small`);
        allEqual(b!, want, `round ${round} rank ${r} big`);
      });
    }
    const st = c.workers[0]!.stats();
    assert.ok(sharedMemory ? st.sharedCalls >= 6 : st.sharedCalls === 0, `requests over the data plane: ${st.sharedCalls}`);
    await c.close();
  });
}

test('sync pull issued right after an unawaited push waits for the round', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', updater: { type: 'assign' }, timeoutMs: 5000 });
  await Promise.all(c.workers.map((w) => w.init([{ key: 'a', size: 5 }], [ones(5, 0)])));
  const res = await Promise.all(
    c.workers.map(async (w) => {
      if (w.rank === 1) await new Promise((r) => setTimeout(r, 30));
      const outs = [new Float32Array(5)];
      const p = w.push(['a'], [ones(5, w.rank + 1)]);
      const q = w.pull(['a'], outs);
      await Promise.all([p, q]);
      return outs[0]!;
    }),
  );
  for (const r of res) allEqual(r, 3, 'sum');
  await c.close();
});

test('row-sparse: worker r writes row r, random row-id pulls are exact; rows split across servers', async () => {
  const n = 4;
  const numRows = 50;
  const rowSize = 8;
  const c = await memoryPsCluster({ numServers: 3, numWorkers: n, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 5000 });
  const spec = { key: 'emb', size: numRows * rowSize, rows: { numRows, rowSize } };
  await Promise.all(c.workers.map((w) => w.init([spec], [new Float32Array(numRows * rowSize)])));
  await Promise.all(c.workers.map((w) => w.rowSparsePush('emb', Int32Array.of(w.rank * 13), Float32Array.from({ length: rowSize }, (_, j) => w.rank + 1 + j / 8))));
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % numRows;
  for (const w of c.workers) {
    const ids = Int32Array.from({ length: 40 }, rnd);
    ids[0] = 13; // a written row, and a repeat
    ids[1] = 13;
    const rows = await w.rowSparsePull('emb', ids);
    ids.forEach((id, i) => {
      const writer = id % 13 === 0 && id / 13 < n ? id / 13 : -1;
      for (let j = 0; j < rowSize; j++) {
        const want = writer >= 0 ? writer + 1 + j / 8 : 0;
        if (rows[i * rowSize + j] !== want) assert.unreachable(`rank ${w.rank} row ${id}[${j}] = ${rows[i * rowSize + j]}, want ${want}`);
      }
    });
    const last = await w.rowSparsePullLast('emb');
    assert.equal([...last.rowIds], [0, 13, 26, 39]);
  }
  const sent = c.workers[1]!.stats().bytesSent;
  assert.ok(sent < 4 * 4096, `row-sparse push/pull moved only touched rows (${sent} bytes sent)`);
  await c.close();
});

test('async: 50 pushes with at most 10 outstanding, then pull equals the sum (with and without bounded staleness)', async () => {
  for (const staleness of [undefined, 2]) {
    const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'async', staleness, updater: { type: 'add', lr: 1 }, timeoutMs: 10_000, bigKeyBound: 100 });
    await Promise.all(c.workers.map((w) => w.init([{ key: 'x', size: 300 }, { key: 'y', size: 7 }], [ones(300, 0), ones(7, 0)])));
    await Promise.all(
      c.workers.map(async (w) => {
        const inflight = new Set<Promise<void>>();
        for (let i = 0; i < 50; i++) {
          while (inflight.size >= 10) await Promise.race(inflight);
          const p: Promise<void> = w.push(['x', 'y'], [ones(300, i + 1), ones(7, w.rank + 1)]).then(() => void inflight.delete(p));
          inflight.add(p);
        }
        await Promise.all(inflight);
      }),
    );
    const want = 2 * ((50 * 51) / 2);
    // each worker's own pushes are visible; after both finished, everything is
    const [x, y] = await c.workers[0]!.pull(['x', 'y']);
    allEqual(x!, want, `staleness ${staleness} x`);
    allEqual(y!, 50 * 1 + 50 * 2, `staleness ${staleness} y`);
    await c.close();
  }
});

test('async bounded staleness: a worker more than s pushes ahead of the slowest waits for it, to push and to read', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'async', staleness: 1, updater: { type: 'add' }, timeoutMs: 5000 });
  await Promise.all(c.workers.map((w) => w.init([{ key: 'x', size: 1 }], [ones(1, 0)])));
  const [fast, slow] = c.workers as [NonNullable<(typeof c.workers)[0]>, NonNullable<(typeof c.workers)[0]>];
  await fast.push(['x'], [ones(1)]);
  let third = false;
  const p2 = fast.push(['x'], [ones(1)]); // push #1: 1 - min(1, 0) = 1 <= 1, applied
  const p3 = fast.push(['x'], [ones(1)]).then(() => (third = true)); // push #2: 2 - 0 > 1, waits
  await p2;
  await new Promise((r) => setTimeout(r, 50));
  assert.is(third, false, 'push #2 of the fast worker waits for the slow one');
  assert.equal([...(await slow.pull(['x']))[0]!], [2]);
  await slow.push(['x'], [ones(1, 10)]);
  await p3;
  // SSP's read rule: after 3 pushes the fast worker reads once every worker has had 3 - s = 2 applied.
  let read = false;
  const pf = fast.pull(['x']).then((v) => ((read = true), v));
  await new Promise((r) => setTimeout(r, 50));
  assert.is(read, false, 'the fast worker reads only when the slow one is within s pushes of it');
  await slow.push(['x'], [ones(1, 100)]);
  assert.equal([...(await pf)[0]!], [113]);
  await c.close();
});

test('server optimizers: SGD with momentum and Adagrad on sparse rows match a local reference', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', updater: { type: 'sgd', lr: 0.5, momentum: 0.5 }, timeoutMs: 5000 });
  await Promise.all(c.workers.map((w) => w.init([{ key: 'w', size: 2 }], [Float32Array.of(1, 2)])));
  let w = [1, 2];
  let m = [0, 0];
  for (let s = 0; s < 3; s++) {
    await Promise.all(c.workers.map((k) => k.push(['w'], [Float32Array.of(0.25, -0.5)])));
    const g = [0.5, -1];
    m = m.map((mi, i) => Math.fround(Math.fround(0.5 * mi) - Math.fround(0.5 * g[i]!)));
    w = w.map((wi, i) => Math.fround(wi + m[i]!));
  }
  const [got] = await c.workers[1]!.pull(['w']);
  assert.equal([...got!], w);
  await c.close();

  const a = await memoryPsCluster({ numServers: 2, numWorkers: 1, mode: 'sync', updater: { type: 'adagrad', lr: 0.1 }, timeoutMs: 5000 });
  const kv = a.workers[0]!;
  await kv.init([{ key: 'e', size: 40, rows: { numRows: 10, rowSize: 4 } }], [ones(40)]);
  await kv.rowSparsePush('e', Int32Array.of(8, 1), Float32Array.from([2, 2, 2, 2, 1, 1, 1, 1]));
  const rows = await kv.rowSparsePull('e', Int32Array.of(1, 8, 5));
  const step = (g: number) => Math.fround(1 - Math.fround((0.1 * g) / (Math.sqrt(g * g) + 1e-7)));
  assert.equal([...rows], [...Array(4).fill(step(1)), ...Array(4).fill(step(2)), 1, 1, 1, 1]);
  await a.close();
});

test('init mismatch and bad input name the key', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 3000 });
  const res = await Promise.allSettled(c.workers.map((w) => w.init([{ key: 'k', size: w.rank === 0 ? 4 : 5 }], [ones(4)])));
  const r1 = res[1] as PromiseRejectedResult;
  assert.is(r1.status, 'rejected');
  assert.is((r1.reason as { code: string }).code, 'ERR_MISMATCH');
  assert.match(String(r1.reason), /key k/);
  try {
    await c.workers[0]!.push(['nope'], [ones(1)]);
    assert.unreachable();
  } catch (e) {
    assert.match(String(e), /key "nope" was not initialised/);
  }
  await c.close();
});

test('durable checkpoint: a killed server restarts from its shard; resent pushes apply once, nothing acknowledged is lost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ps-'));
  const n = 2;
  const c = await memoryPsCluster({
    numServers: 2,
    numWorkers: n,
    mode: 'sync',
    updater: { type: 'add', lr: 1 },
    checkpointDir: dir,
    durable: true,
    restart: { maxRestarts: 2, backoffMs: 20 },
    resendAfterRestart: true,
    timeoutMs: 10_000,
    bigKeyBound: 10,
  });
  try {
    await Promise.all(c.workers.map((w) => w.init([{ key: 'big', size: 30 }, { key: 's', size: 3 }], [ones(30, 0), ones(3, 0)])));
    const rounds = 12;
    const acked = [0, 0];
    await Promise.all(
      c.workers.map(async (w) => {
        for (let i = 0; i < rounds; i++) {
          if (w.rank === 0 && i === 5) void c.servers[1]!.kill();
          await w.push(['big', 's'], [ones(30, w.rank + 1), ones(3, 1)]);
          acked[w.rank] = i + 1;
        }
      }),
    );
    assert.equal(acked, [rounds, rounds]);
    assert.is(c.servers[1]!.restarts, 1);
    // every round's request to each server went over the data plane, the restarted server's too (it mapped the
    // worker's region again; a request in flight at the kill was resent in a message)
    const shared = c.workers[0]!.stats().sharedCalls;
    assert.ok(shared >= 2 * rounds, `requests over the data plane: ${shared} of ${2 * rounds}`);
    const [big, s] = await c.workers[1]!.pull(['big', 's']);
    allEqual(big!, rounds * 3, 'big after restart');
    allEqual(s!, rounds * 2, 's after restart');
  } finally {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a server restarted from an older (non-durable) checkpoint is reported as having lost updates', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ps-'));
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', updater: { type: 'add' }, checkpointDir: dir, restart: { maxRestarts: 1, backoffMs: 10 }, resendAfterRestart: true, timeoutMs: 5000 });
  await Promise.all(c.workers.map((w) => w.init([{ key: 'a', size: 2 }], [ones(2, 0)])));
  const round = () => Promise.all(c.workers.map((w) => w.push(['a'], [ones(2)])));
  await round();
  await c.workers[0]!.checkpoint();
  await round();
  await round();
  await c.servers[0]!.kill();
  const res = await Promise.allSettled(c.workers.map((w) => w.push(['a'], [ones(2)])));
  for (const r of res) {
    assert.is(r.status, 'rejected');
    assert.is(((r as PromiseRejectedResult).reason as { code: string }).code, 'ERR_STATE');
    assert.match(String((r as PromiseRejectedResult).reason), /lost updates/);
  }
  await c.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a corrupt checkpoint file is refused naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ps-'));
  const path = join(dir, 'ps-server-0.ckpt');
  writeFileSync(path, 'not a checkpoint');
  assert.throws(() => new KVServer({ serverIndex: 0, numServers: 1, numWorkers: 1, mode: 'sync', checkpointPath: path }), /ps-server-0\.ckpt.*not a readable parameter-server checkpoint/);
  rmSync(dir, { recursive: true, force: true });
});

test('without restart, a killed server is reported on every worker naming it', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 3, mode: 'sync', timeoutMs: 3000, bigKeyBound: 10 });
  await Promise.all(c.workers.map((w) => w.init([{ key: 'big', size: 30 }], [ones(30)])));
  const t0 = Date.now();
  const res = await Promise.allSettled(
    c.workers.map(async (w) => {
      if (w.rank === 2) await c.servers[0]!.kill();
      else await new Promise((r) => setTimeout(r, 20));
      await w.push(['big'], [ones(30)]);
    }),
  );
  for (const r of res) {
    assert.is(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as { code: string; message: string };
    assert.is(e.code, 'ERR_PEER_CLOSED');
    assert.match(e.message, /ps-server-0/);
  }
  assert.ok(Date.now() - t0 < 3000);
  await c.close();
});

test('a worker blocked on a healthy server fails fast when another server dies', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 20_000 });
  const names = Array.from({ length: 20 }, (_, i) => `k${i}`);
  const on = (s: number) => names.find((k) => keyHash(k) % 2 === s)!;
  await Promise.all(c.workers.map((w) => w.init([{ key: on(0), size: 3 }, { key: on(1), size: 3 }], [ones(3), ones(3)])));
  const t0 = Date.now();
  // worker 1 waits on server 0 for worker 0's push, which never comes: server 1 dies first
  const blocked = c.workers[1]!.push([on(0)], [ones(3)]);
  await new Promise((r) => setTimeout(r, 20));
  await c.servers[1]!.kill();
  const [r] = await Promise.allSettled([blocked]);
  assert.is(r.status, 'rejected');
  const e = (r as PromiseRejectedResult).reason as { code: string; message: string };
  assert.is(e.code, 'ERR_PEER_CLOSED');
  assert.match(e.message, /ps-server-1/);
  assert.ok(Date.now() - t0 < 2000, `failed after ${Date.now() - t0} ms`);
  await c.close();
});

test('a worker that disconnects fails the rounds the others wait in, naming it, at once', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 3, mode: 'sync', timeoutMs: 20_000, bigKeyBound: 10 });
  await Promise.all(c.workers.map((w) => w.init([{ key: 'big', size: 30 }], [ones(30)])));
  const t0 = Date.now();
  const waiting = [c.workers[0]!.push(['big'], [ones(30)]), c.workers[1]!.pushPull(['big'], [ones(30)])];
  await new Promise((r) => setTimeout(r, 20));
  await c.workers[2]!.close(); // worker 2 "dies" before pushing
  for (const r of await Promise.allSettled(waiting)) {
    assert.is(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as { code: string; message: string };
    assert.is(e.code, 'ERR_PEER_CLOSED');
    assert.match(e.message, /worker 2 disconnected/);
  }
  assert.ok(Date.now() - t0 < 2000, `failed after ${Date.now() - t0} ms`);
  // later collective calls fail the same way instead of timing out
  const late = await Promise.allSettled([c.workers[0]!.gather('x', 1)]);
  assert.match(String((late[0] as PromiseRejectedResult).reason), /worker 2 disconnected/);
  await c.close();
});

test('PsSync server-optimizer path: push gradients, pull Adam-updated weights', async () => {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const servers = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: 2, numWorkers: 2, mode: 'sync', updater: { type: 'adam', lr: 0.1 }, timeoutMs: 5000, bigKeyBound: 4 });
  const syncs = await Promise.all([0, 1].map((rank) => PsSync.connect({ rank, numWorkers: 2, numServers: 2, store, transport: network.transport(), timeoutMs: 5000 })));
  const params = syncs.map((x) => [{ name: 'w', shape: [6], data: Float32Array.from([1, 2, 3, 4, 5, 6].map((v) => v * (x.rank === 0 ? 1 : 9))) }]);
  await Promise.all(syncs.map((x, r) => x.initWeights(params[r]!)));
  assert.equal([...params[1]![0]!.data], [1, 2, 3, 4, 5, 6], 'rank 0 initial weights everywhere');
  // reference Adam on the summed gradient, in float32
  const w = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const m = new Float32Array(6);
  const v = new Float32Array(6);
  for (let t = 1; t <= 3; t++) {
    const grads = syncs.map((x) => [{ name: 'w', shape: [6], data: Float32Array.from({ length: 6 }, (_, i) => (i - 2) * (x.rank + 1) * t) }]);
    await Promise.all(syncs.map((x, r) => x.pushGradsPullWeights(grads[r]!, params[r]!)));
    const lrT = (0.1 * Math.sqrt(1 - 0.999 ** t)) / (1 - 0.9 ** t);
    for (let i = 0; i < 6; i++) {
      const g = Math.fround((i - 2) * t + (i - 2) * 2 * t);
      m[i] = 0.9 * m[i]! + 0.1 * g;
      v[i] = 0.999 * v[i]! + 0.001 * g * g;
      w[i] = w[i]! - (lrT * m[i]!) / (Math.sqrt(v[i]!) + 1e-8);
    }
    for (const p of params) assert.equal([...p[0]!.data], [...w], `step ${t}`);
  }
  await Promise.all(syncs.map((x) => x.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

gradientSyncCompliance('ps (memory transport, 2 servers)', async (size) => {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const servers = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: 2, numWorkers: size, mode: 'sync', timeoutMs: 10_000 });
  let open = size;
  return Promise.all(
    Array.from({ length: size }, (_, rank) =>
      PsSync.connect({
        rank,
        numWorkers: size,
        numServers: 2,
        store,
        transport: network.transport(),
        timeoutMs: 10_000,
        onClose: async () => {
          if (--open === 0) await Promise.all(servers.map((s) => s.stop()));
        },
      }),
    ),
  );
}, { collectiveOrder: true }).run();

test.run();
