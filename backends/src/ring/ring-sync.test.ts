import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryStore } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import { ShmCollective } from '../shm/shm-collective.js';
import { gradientSyncCompliance } from '../testing/compliance.js';
import { memoryGroups } from './memory-groups.js';
import { RingSync, type RingSyncOptions } from './ring-sync.js';

gradientSyncCompliance('ring over memory', async (n) => (await memoryGroups(n, { timeoutMs: 5000 })).map((g) => new RingSync(g)), { collectiveOrder: true }).run();
gradientSyncCompliance('ring over memory, 256-byte fusion buffer, fp16 off', async (n) =>
  (await memoryGroups(n, { timeoutMs: 5000 })).map((g) => new RingSync(g, { fusionThresholdBytes: 256, segmentBytes: 64 })),
  { sizes: [3] },
).run();

let seq = 0;
/** RingSyncs whose dense allreduce, control allreduce, broadcast and barrier run on a shared segment. */
async function withCollective(n: number, opts: RingSyncOptions = {}): Promise<RingSync[]> {
  const groups = await memoryGroups(n, { timeoutMs: 5000 });
  const store = new MemoryStore().prefixed(`coll-${++seq}`);
  const colls = await Promise.all(groups.map((g) => ShmCollective.connect({ rank: g.rank, size: n, store, prefix: `rst${process.pid}`, timeoutMs: 5000 })));
  return groups.map((g, r) => new RingSync(g, { ...opts, collective: colls[r]! }));
}
gradientSyncCompliance('ring with the same-host shm collective', (n) => withCollective(n), { collectiveOrder: true }).run();
gradientSyncCompliance('ring with the same-host shm collective, 256-byte fusion buffer', (n) => withCollective(n, { fusionThresholdBytes: 256 }), { sizes: [3] }).run();

test('RingSync with a collective uses it for dense gradients and gives every rank bitwise the same mean', async () => {
  const ss = await withCollective(3);
  try {
    assert.is(ss[0]!.sameHost, 'shm-collective');
    const grads = ss.map((_, r) => [{ name: 'w', shape: [100_003], data: Float32Array.from({ length: 100_003 }, (_, i) => Math.cos(i + r * 0.1)) }]);
    const before = ss[0]!.stats();
    await Promise.all(ss.map((s, r) => s.allreduceMean(grads[r]!)));
    const after = ss[0]!.stats();
    assert.ok(after.bytesSent - before.bytesSent >= 100_003 * 4);
    for (let r = 1; r < 3; r++) assert.equal(new Uint8Array(grads[r]![0]!.data.buffer), new Uint8Array(grads[0]![0]!.data.buffer));
    assert.equal(listSegments(`rst${process.pid}`), []);
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

/** Each rank's outcome: 'ok' or the error code and message. */
async function outcomes(ss: RingSync[], fn: (s: RingSync, r: number) => Promise<unknown>): Promise<{ code: string; message: string }[]> {
  return (await Promise.allSettled(ss.map((s, r) => fn(s, r)))).map((x) =>
    x.status === 'fulfilled' ? { code: 'ok', message: '' } : { code: String((x.reason as { code?: string }).code), message: String((x.reason as Error).message) },
  );
}

test('on the shared segment the agreement rides on the first allreduce: one op per call, no control round', async () => {
  const ss = await withCollective(3, { fusionThresholdBytes: 4096 });
  try {
    // a packed bucket of two tensors and a tensor of its own (reduced in place): two data ops, nothing else
    const grads = ss.map((_, r) => [
      { name: 'a', shape: [10], data: new Float32Array(10).fill(3 * r) },
      { name: 'b', shape: [20], data: new Float32Array(20).fill(3 * r + 3) },
      { name: 'big', shape: [2000], data: new Float32Array(2000).fill(6 * r) },
    ]);
    const before = ss.map((s) => s.stats());
    await Promise.all(ss.map((s, r) => s.allreduceMean(grads[r]!)));
    ss.forEach((s, r) => {
      assert.is(s.stats().ops - before[r]!.ops, 2, `rank ${r}: two shared-segment ops (no control allreduce)`);
      assert.is(s.group.stats().ops, 0, `rank ${r}: nothing on the transport`);
      assert.equal([grads[r]![0]!.data[9], grads[r]![1]!.data[0], grads[r]![2]!.data[1999]], [3, 6, 6]);
    });
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

test('on the shared segment a NaN on one rank is ERR_NAN on every rank and no gradient is touched', async () => {
  const ss = await withCollective(3, { fusionThresholdBytes: 4096 });
  try {
    // the NaN sits in the tensor reduced in place: the guards differ, so nothing is reduced on any rank
    const mk = (r: number) => [
      { name: 'a', shape: [10], data: new Float32Array(10).fill(r + 1) },
      { name: 'big', shape: [2000], data: new Float32Array(2000).fill(r + 1) },
    ];
    const grads = ss.map((_, r) => mk(r));
    grads[1]![1]!.data[7] = NaN;
    const res = await outcomes(ss, (s, r) => s.allreduceMean(grads[r]!));
    res.forEach((c, r) => {
      assert.is(c.code, 'ERR_NAN', `rank ${r}: ${c.code} ${c.message}`);
      assert.match(c.message, /"big"/);
    });
    grads.forEach((g, r) => {
      assert.ok(g[0]!.data.every((v) => v === r + 1), `rank ${r}: "a" untouched`);
      assert.ok(g[1]!.data.every((v, i) => (r === 1 && i === 7 ? Number.isNaN(v) : v === r + 1)), `rank ${r}: "big" untouched`);
    });
    // the engine still works
    const ok = ss.map((_, r) => mk(r));
    await Promise.all(ss.map((s, r) => s.allreduceMean(ok[r]!)));
    ok.forEach((g) => assert.is(g[1]!.data[0], 2));
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

test('on the shared segment NaNs on every rank name the same tensor everywhere, as the control round does', async () => {
  const ss = await withCollective(3);
  try {
    // every rank inverts its guard, so the guards agree; the control round then names the last of the ranks'
    // first non-finite tensors: "t2" (rank 2's), on every rank
    const grads = ss.map((_, r) => ['t0', 't1', 't2', 't3'].map((name, i) => ({ name, shape: [5], data: new Float32Array(5).fill(i === r ? Infinity : 1) })));
    const res = await outcomes(ss, (s, r) => s.allreduceMean(grads[r]!));
    res.forEach((c, r) => {
      assert.is(c.code, 'ERR_NAN', `rank ${r}: ${c.code} ${c.message}`);
      assert.match(c.message, /"t2" \(tensor #2/, `rank ${r}: ${c.message}`);
    });
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

test('on the shared segment a list that differs with the same element count is ERR_MISMATCH naming the tensor', async () => {
  const ss = await withCollective(2);
  try {
    // same count and dtype, different shapes: only the guard tells them apart
    const grads = ss.map((_, r) => [{ name: 'w', shape: r === 0 ? [4, 6] : [6, 4], data: new Float32Array(24).fill(r) }]);
    const res = await outcomes(ss, (s, r) => s.allreduceMean(grads[r]!));
    res.forEach((c, r) => {
      assert.is(c.code, 'ERR_MISMATCH', `rank ${r}: ${c.code} ${c.message}`);
      assert.match(c.message, /"w".*shape=\[4,6\].*shape=\[6,4\]/, `rank ${r}: ${c.message}`);
    });
    grads.forEach((g, r) => assert.ok(g[0]!.data.every((v) => v === r), `rank ${r}: untouched`));
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

test('on 2 ranks over a transport the agreement rides on the exchange: one op per call, no control round', async () => {
  const groups = await memoryGroups(2, { timeoutMs: 5000 });
  const ss = groups.map((g) => new RingSync(g, { segmentBytes: 256 }));
  try {
    const grads = ss.map((_, r) => [{ name: 'w', shape: [1000], data: new Float32Array(1000).fill(2 * r) }]);
    const before = ss.map((s) => s.group.stats());
    await Promise.all(ss.map((s, r) => s.allreduceMean(grads[r]!)));
    ss.forEach((s, r) => {
      const st = s.group.stats();
      assert.is(st.ops - before[r]!.ops, 1, `rank ${r}: one collective (the control allreduce is gone)`);
      // the lead, then 16 segments of 64 floats (1000 / 64 rounded up)
      assert.is(st.messagesSent - before[r]!.messagesSent, 1 + 16, `rank ${r}: messages`);
      assert.ok(grads[r]![0]!.data.every((v) => v === 1), `rank ${r}: mean`);
    });
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

test('on 2 ranks a count mismatch drains the segments sent ahead: ERR_MISMATCH on both, data untouched, next call exact', async () => {
  for (const [segmentBytes, mk] of [
    // many small segments ahead (window 16) on both sides, the lists differ in length
    [64, (r: number) => [{ name: 'w', shape: [r ? 1200 : 1000], data: new Float32Array(r ? 1200 : 1000).fill(r + 1) }]],
    // one side has no tensor at all (an empty exchange against one with segments)
    [64, (r: number) => (r ? [] : [{ name: 'w', shape: [500], data: new Float32Array(500).fill(1) }])],
    // a NaN on one rank only: the guards differ, nothing is reduced
    [64, (r: number) => [{ name: 'w', shape: [300], data: new Float32Array(300).fill(r ? NaN : 1) }]],
  ] as const) {
    const groups = await memoryGroups(2, { timeoutMs: 5000 });
    const ss = groups.map((g) => new RingSync(g, { segmentBytes }));
    try {
      const grads = ss.map((_, r) => mk(r));
      const res = await outcomes(ss, (s, r) => s.allreduceMean(grads[r]!));
      const nan = grads[1]!.length > 0 && Number.isNaN(grads[1]![0]!.data[0]);
      res.forEach((c, r) => assert.is(c.code, nan ? 'ERR_NAN' : 'ERR_MISMATCH', `rank ${r}: ${c.code} ${c.message}`));
      grads.forEach((g, r) => g.forEach((t) => assert.ok(t.data.every((v) => (nan && r === 1 ? Number.isNaN(v) : v === (nan ? 1 : r + 1))), `rank ${r}: untouched`)));
      const ok = ss.map((_, r) => [{ name: 'v', shape: [777], data: new Float32Array(777).fill(4 * r) }]);
      await Promise.all(ss.map((s, r) => s.allreduceMean(ok[r]!)));
      ok.forEach((g) => assert.ok(g[0]!.data.every((v) => v === 2)));
    } finally {
      await Promise.all(ss.map((s) => s.close()));
    }
  }
});

test.run();
