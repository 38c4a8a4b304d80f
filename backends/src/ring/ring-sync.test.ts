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

test.run();
