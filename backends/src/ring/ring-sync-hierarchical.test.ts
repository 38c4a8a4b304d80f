import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryNetwork, MemoryStore, shmTransport, type Transport } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import type { DenseTensor } from '../api.js';
import { gradientSyncCompliance } from '../testing/compliance.js';
import { connectHierarchical, connectHierarchicalIfHelpful, hierarchyHelps } from './allreduce-hierarchical.js';
import { memoryGroups, onAllRanks } from './memory-groups.js';
import { RingSync, type RingSyncOptions } from './ring-sync.js';

const prefix = `hrs${process.pid}`;
/** One shm transport for the whole file (segments are uniquely named); closed at the end. */
const shm: Transport = shmTransport({ prefix, ringBytes: 1 << 16 });

/**
 * One RingSync per rank in this process: the flat group over the memory transport, and a hierarchical group
 * with shm inside each simulated host (`hosts[r]` = host of rank r) and the memory transport across leaders.
 */
async function syncs(hosts: string[], opts: RingSyncOptions = {}): Promise<RingSync[]> {
  const n = hosts.length;
  const flat = await memoryGroups(n, { timeoutMs: 10_000 });
  const store = new MemoryStore().prefixed('hier');
  const cross = new MemoryNetwork().transport();
  const hs = await Promise.all(
    hosts.map((hostId, rank) =>
      connectHierarchical({ rank, size: n, store, hostId, local: { transport: shm, listenUrl: 'shm://auto' }, cross: { transport: cross, listenUrl: 'mem://' }, timeoutMs: 10_000 }),
    ),
  );
  return flat.map((g, r) => new RingSync(g, { topology: 'hierarchical', ...opts, hierarchical: hs[r]! }));
}

/** Integer-valued floats, unique per rank, tensor and element: sums and means by 4 are exact in float32. */
const grads = (rank: number, lens: number[]): DenseTensor[] =>
  lens.map((n, t) => ({ name: `g${t}`, shape: [n], data: Float32Array.from({ length: n }, (_, i) => 4 * (((rank + 1) * 7919 + i * 13 + t * 101) % 65_521)) }));

const codesOf = async (ss: RingSync[], fn: (s: RingSync, r: number) => Promise<unknown>) =>
  (await Promise.allSettled(ss.map((s, r) => fn(s, r)))).map((x) => (x.status === 'fulfilled' ? 'ok' : String((x.reason as { code?: string }).code)));

test('hierarchical RingSync over hosts [a,a,b,b] gives the flat RingSync results bit for bit', async () => {
  const lens = [0, 1, 5, 1000, 70_001, ...Array.from({ length: 30 }, (_, i) => 2 + i)];
  // a small fusion buffer so some tensors go unfused and several fused buffers are reduced
  const opts: RingSyncOptions = { fusionThresholdBytes: 64 * 1024, segmentBytes: 8192 };
  const hier = await syncs(['a', 'a', 'b', 'b'], opts);
  const flat = (await memoryGroups(4, { timeoutMs: 10_000 })).map((g) => new RingSync(g, opts));
  try {
    assert.equal(hier.map((s) => s.topology), ['hierarchical', 'hierarchical', 'hierarchical', 'hierarchical']);
    assert.equal(flat.map((s) => s.topology), ['flat', 'flat', 'flat', 'flat']);
    const gh = hier.map((s) => grads(s.rank, lens));
    const gf = flat.map((s) => grads(s.rank, lens));
    await Promise.all([onAllRanks(hier.map((s) => s.group), (_, r) => hier[r]!.allreduceMean(gh[r]!)), onAllRanks(flat.map((s) => s.group), (_, r) => flat[r]!.allreduceMean(gf[r]!))]);
    for (let r = 0; r < 4; r++)
      lens.forEach((n, t) => {
        const h = gh[r]![t]!.data;
        const f = gf[r]![t]!.data;
        for (let i = 0; i < n; i++) {
          let want = 0;
          for (let q = 0; q < 4; q++) want += 4 * (((q + 1) * 7919 + i * 13 + t * 101) % 65_521);
          if (h[i] !== want / 4 || f[i] !== h[i]) assert.unreachable(`rank ${r} g${t}[${i}]: hierarchical ${h[i]}, flat ${f[i]}, want ${want / 4}`);
        }
      });
    // the dense bytes went through the hierarchical groups, not the flat ring (which only carried the 48-byte control)
    const local = hier[1]!.stats().bytesSent - hier[1]!.group.stats().bytesSent;
    assert.ok(local > 70_000 * 4, `local stage sent ${local} bytes`);
    assert.ok(hier[1]!.group.stats().bytesSent < 1024, `flat group sent ${hier[1]!.group.stats().bytesSent} bytes`);
  } finally {
    await Promise.all([...hier, ...flat].map((s) => s.close()));
  }
});

test('a NaN or a mismatch on one rank raises on every rank, and the hierarchical RingSync still works after', async () => {
  const ss = await syncs(['a', 'a', 'b', 'b']);
  try {
    const nan = ss.map((s) => grads(s.rank, [10, 20]));
    nan[3]![1]!.data[7] = NaN;
    assert.equal(await codesOf(ss, (s, r) => s.allreduceMean(nan[r]!)), ['ERR_NAN', 'ERR_NAN', 'ERR_NAN', 'ERR_NAN']);
    const bad = ss.map((s) => grads(s.rank, s.rank === 2 ? [10, 21] : [10, 20]));
    assert.equal(await codesOf(ss, (s, r) => s.allreduceMean(bad[r]!)), ['ERR_MISMATCH', 'ERR_MISMATCH', 'ERR_MISMATCH', 'ERR_MISMATCH']);
    const ok = ss.map((s) => grads(s.rank, [10, 20]));
    await onAllRanks(ss.map((s) => s.group), (_, r) => ss[r]!.allreduceMean(ok[r]!));
    assert.equal(ok[0]!.map((t) => Array.from(t.data)), ok[3]!.map((t) => Array.from(t.data)));
  } finally {
    await Promise.all(ss.map((s) => s.close()));
  }
});

test("'auto' picks hierarchical only for several hosts with several ranks on one; bad options are refused", async () => {
  assert.ok(hierarchyHelps(['a', 'a', 'b', 'b']));
  assert.ok(hierarchyHelps(['a', 'b', 'b']));
  assert.not.ok(hierarchyHelps(['a', 'a', 'a']));
  assert.not.ok(hierarchyHelps(['a', 'b', 'c']));
  assert.not.ok(hierarchyHelps([]));
  for (const [hosts, want] of [
    [['a', 'a', 'b', 'b'], 'hierarchical'],
    [['a', 'a', 'a'], 'flat'],
    [['a', 'b', 'c'], 'flat'],
  ] as const) {
    const ss = await syncs([...hosts], { topology: 'auto' });
    try {
      assert.is(ss[0]!.topology, want, hosts.join(','));
      const g = ss.map((s) => grads(s.rank, [33]));
      await onAllRanks(ss.map((s) => s.group), (_, r) => ss[r]!.allreduceMean(g[r]!));
      for (const x of g) assert.equal(Array.from(x[0]!.data), Array.from(g[0]![0]!.data));
    } finally {
      await Promise.all(ss.map((s) => s.close()));
    }
  }
  // connectHierarchicalIfHelpful connects nothing where the flat ring is as good
  const store = new MemoryStore();
  const cross = new MemoryNetwork().transport();
  const none = await Promise.all(
    ['a', 'b', 'c'].map((hostId, rank) =>
      connectHierarchicalIfHelpful({ rank, size: 3, store, hostId, local: { transport: shm, listenUrl: 'shm://auto' }, cross: { transport: cross, listenUrl: 'mem://' }, timeoutMs: 5000 }),
    ),
  );
  assert.equal(none, [undefined, undefined, undefined]);
  const [g] = await memoryGroups(1);
  try {
    assert.throws(() => new RingSync(g!, { topology: 'hierarchical' }), /hierarchical/);
    assert.throws(() => new RingSync(g!, { topology: 'ring' as never }), /topology/);
  } finally {
    await g!.close();
  }
});

gradientSyncCompliance(
  'ring, hierarchical over simulated hosts',
  (n) => syncs(Array.from({ length: n }, (_, r) => (r < Math.ceil(n / 2) ? 'a' : 'b'))),
  { sizes: [1, 3, 4], collectiveOrder: true },
).run();

test('no shared-memory segment left behind', async () => {
  await shm.close?.();
  assert.equal(listSegments(prefix), []);
});

test.run();
