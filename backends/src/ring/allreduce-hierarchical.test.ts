import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadKernels, MemoryNetwork, MemoryStore, shmTransport } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import { allreduceHierarchical, connectHierarchical, type HierarchicalGroup } from './allreduce-hierarchical.js';

const kernels = loadKernels();
const prefix = `hier${process.pid}`;

/** All ranks in this process: shm inside a simulated host, the memory transport between host leaders. */
async function groups(hostIds: string[], sameHost: 'shm-collective' | 'transport' = 'shm-collective'): Promise<HierarchicalGroup[]> {
  const store = new MemoryStore().prefixed('hier');
  const net = new MemoryNetwork();
  const shm = shmTransport({ prefix, ringBytes: 1 << 16 });
  const cross = net.transport();
  return Promise.all(
    hostIds.map((hostId, rank) =>
      connectHierarchical({
        rank,
        size: hostIds.length,
        store,
        hostId,
        local: { transport: shm, listenUrl: 'shm://auto' },
        cross: { transport: cross, listenUrl: 'mem://' },
        timeoutMs: 10_000,
        sameHost,
        prefix,
      }),
    ),
  );
}

/** Unique per rank and element, so a missing, doubled or misplaced contribution changes the sum. */
const value = (rank: number, i: number) => ((rank + 1) * 1_000_003 + i * 7) % 1_000_000_007 | 0;

for (const [hosts, sameHost] of [
  [['a', 'a', 'b', 'b'], 'shm-collective'],
  [['a', 'a', 'b', 'b'], 'transport'],
  [['a', 'b', 'a', 'b'], 'shm-collective'],
  [['a', 'a', 'a', 'b', 'c'], 'shm-collective'],
  [['a', 'a', 'a', 'b', 'c'], 'transport'],
  [['x'], 'shm-collective'],
  [['a', 'b', 'c'], 'shm-collective'],
] as const) {
  test(`hierarchical allreduce sums exactly with placement [${hosts.join(',')}], within hosts: ${sameHost}`, async () => {
    const gs = await groups([...hosts], sameHost);
    try {
      assert.is(gs[0]!.hosts, new Set(hosts).size);
      // the collective is used exactly where a host has several ranks and it was asked for
      for (const g of gs) assert.is(g.collective !== undefined, sameHost === 'shm-collective' && g.localRanks.length > 1);
      for (const n of [0, 1, 7, 1000, 300_001]) {
        const data = gs.map((_, r) => Int32Array.from({ length: n }, (_, i) => value(r, i)));
        await Promise.all(gs.map((g, r) => allreduceHierarchical(g, data[r]!, { kernels, op: 'sum', segmentBytes: 1 << 15 })));
        for (let r = 0; r < gs.length; r++) {
          for (let i = 0; i < n; i += Math.max(1, Math.floor(n / 997))) {
            let want = 0;
            for (let q = 0; q < gs.length; q++) want = (want + value(q, i)) | 0;
            if (data[r]![i] !== want) assert.unreachable(`rank ${r} element ${i} of ${n}: ${data[r]![i]} != ${want}`);
          }
        }
      }
    } finally {
      await Promise.all(gs.map((g) => g.close()));
    }
    assert.equal(listSegments(prefix), [], 'no shared-memory segment left behind');
  });
}

test('hierarchical mean on float32 matches the flat mean', async () => {
  const gs = await groups(['a', 'a', 'b', 'b']);
  try {
    const data = gs.map((_, r) => Float32Array.from({ length: 4099 }, (_, i) => Math.sin(i + r)));
    const want = Float32Array.from({ length: 4099 }, (_, i) => [0, 1, 2, 3].reduce((s, r) => s + Math.sin(i + r), 0) / 4);
    await Promise.all(gs.map((g, r) => allreduceHierarchical(g, data[r]!, { kernels, op: 'mean' })));
    for (const d of data) for (let i = 0; i < d.length; i++) assert.ok(Math.abs(d[i]! - want[i]!) < 1e-6, `element ${i}`);
    // every rank holds bit-identical results
    for (const d of data) assert.equal(Buffer.compare(Buffer.from(d.buffer), Buffer.from(data[0]!.buffer)), 0);
  } finally {
    await Promise.all(gs.map((g) => g.close()));
  }
});

test.run();
