/**
 * Dense pulls and pushPulls over messages cut into concurrent requests per server (`KVWorkerOptions.requestBytes`):
 * where the cuts fall, that the request count follows the option, and that sync and async rounds stay exact.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { perServer, splitPart } from './worker/requests.js';
import { KVWorker } from './kv-worker.js';
import { memoryPsCluster } from './testing/memory-cluster.js';
import { allEqual, ones } from './testing/values.js';

function part(sizes: number[]) {
  const p = perServer(1)[0]!;
  sizes.forEach((n, i) => {
    p.keys.push(`k${i}`);
    p.counters.push(i);
    p.arrays.push(ones(n, i));
    p.targets.push(new Float32Array(n));
  });
  return p;
}

test('splitPart cuts at key boundaries once a part holds requestBytes; 0 or one key keeps the part whole', () => {
  const p = part([4, 4, 8, 2, 2, 2]); // bytes 16, 16, 32, 8, 8, 8
  const cut = splitPart(p, 32);
  assert.equal(cut.map((q) => q.keys), [['k0', 'k1'], ['k2'], ['k3', 'k4', 'k5']]);
  assert.equal(cut.map((q) => q.counters), [[0, 1], [2], [3, 4, 5]]);
  assert.ok(cut[1]!.arrays[0] === p.arrays[2] && cut[1]!.targets[0] === p.targets[2], 'the same arrays, not copies');
  assert.equal(splitPart(p, 1).map((q) => q.keys.length), [1, 1, 1, 1, 1, 1]);
  assert.equal(splitPart(p, 1000).length, 1, 'the last part may be smaller: here the only one');
  assert.ok(splitPart(p, 0)[0] === p);
  assert.ok(splitPart(part([1 << 20]), 8)[0]!.keys.length === 1);
});

for (const mode of ['sync', 'async'] as const) {
  test(`${mode}: split requests (one per key) and whole ones give the same exact values; calls follow requestBytes`, async () => {
    const n = 8192; // 32 KiB per key; 8 keys over 2 servers
    const keys = Array.from({ length: 8 }, (_, i) => `w${i}`);
    const calls: number[] = [];
    for (const requestBytes of [0, 32 << 10]) {
      const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode, updater: { type: 'add', lr: 1 }, timeoutMs: 10_000, sharedMemory: false, requestBytes });
      try {
        await c.workers[0]!.init(keys.map((key) => ({ key, size: n })), keys.map(() => ones(n, 0)));
        await c.workers[1]!.init(keys.map((key) => ({ key, size: n })));
        const before = c.workers.map((w) => w.stats().calls);
        for (let r = 1; r <= 3; r++) {
          const outs = await Promise.all(c.workers.map((w, rank) => w.pushPull(keys, keys.map(() => ones(n, rank + 1)))));
          // add: sync rounds sum both workers' pushes (1 + 2) per round; async values at least hold this worker's
          if (mode === 'sync') outs.forEach((o, rank) => o.forEach((a, k) => allEqual(a, 3 * r, `round ${r} worker ${rank} ${keys[k]}`)));
          else outs.forEach((o, rank) => o.forEach((a, k) => assert.ok(a[0]! >= (rank + 1) * r && a.every((x) => x === a[0]), `round ${r} worker ${rank} ${keys[k]}: ${a[0]}`)));
        }
        const pulled = await Promise.all(c.workers.map((w) => w.pull(keys)));
        pulled.forEach((o, rank) => o.forEach((a, k) => allEqual(a, 9, `final pull worker ${rank} ${keys[k]}`)));
        calls.push(c.workers[0]!.stats().calls - before[0]!);
      } finally {
        await c.close();
      }
    }
    // 4 operations (3 pushPulls, 1 pull) x 2 servers: one request each whole; one per key (4 per server) split
    assert.equal(calls, [8, 32]);
  });
}

test('requestBytes must be a non-negative integer', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 1, mode: 'sync', timeoutMs: 5000 });
  try {
    for (const bad of [-1, 1.5, Number.NaN]) {
      assert.throws(() => new KVWorker({ rank: 0, numWorkers: 1, servers: [c.workers[0]!.server(0)], requestBytes: bad }), (e: Error) => /requestBytes/.test(e.message));
    }
  } finally {
    await c.close();
  }
});

test.run();
