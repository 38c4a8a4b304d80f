import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { allgatherBytes, allgatherRing } from './allgather.js';
import { barrierRing } from './barrier.js';
import { broadcastRing } from './broadcast.js';
import { memoryGroups, onAllRanks } from './memory-groups.js';

const code = (r: PromiseSettledResult<unknown>) => (r.status === 'fulfilled' ? 'ok' : String((r.reason as { code?: string }).code));

test('broadcast from every root, segmented, on 1..5 ranks', async () => {
  for (let size = 1; size <= 5; size++) {
    const groups = await memoryGroups(size);
    for (let root = 0; root < size; root++) {
      const arrays = groups.map((_, r) => Float64Array.from({ length: 3001 }, (_, i) => r * 10_000 + i));
      await onAllRanks(groups, (g, r) => broadcastRing(g, arrays[r]!, { root, segmentBytes: 1024 }));
      for (const a of arrays) for (let i = 0; i < a.length; i++) if (a[i] !== root * 10_000 + i) assert.unreachable(`size ${size} root ${root} [${i}] = ${a[i]}`);
    }
    await Promise.all(groups.map((g) => g.close()));
  }
});

test('allgather of blocks and of variable-length bytes on 1..5 ranks', async () => {
  for (let size = 1; size <= 5; size++) {
    const groups = await memoryGroups(size);
    const outs = groups.map(() => new Int32Array(7 * size));
    await onAllRanks(groups, (g, r) => allgatherRing(g, Int32Array.from({ length: 7 }, (_, i) => r * 100 + i), outs[r]!));
    for (const o of outs) assert.equal([...o], Array.from({ length: 7 * size }, (_, k) => Math.floor(k / 7) * 100 + (k % 7)));
    const parts = await onAllRanks(groups, (g, r) => allgatherBytes(g, new Uint8Array(r * 3).fill(r)));
    for (const p of parts) p.forEach((b, r) => assert.equal([...b], new Array(r * 3).fill(r)));
    await onAllRanks(groups, (g) => barrierRing(g));
    await Promise.all(groups.map((g) => g.close()));
  }
});

test('barrier holds every rank until the last one arrives', async () => {
  const groups = await memoryGroups(4);
  const left: number[] = [];
  const t0 = Date.now();
  await onAllRanks(groups, async (g, r) => {
    if (r === 2) await new Promise((res) => setTimeout(res, 150));
    await barrierRing(g);
    left.push(Date.now() - t0);
  });
  assert.ok(Math.min(...left) >= 140, `a rank left after ${Math.min(...left)} ms`);
  await Promise.all(groups.map((g) => g.close()));
});

test('ranks calling different collectives get ERR_MISMATCH or a fast peer error, never a hang; the group is then broken', async () => {
  const groups = await memoryGroups(3, { timeoutMs: 5000 });
  const t0 = Date.now();
  const res = await Promise.allSettled(groups.map((g, r) => (r === 1 ? barrierRing(g) : broadcastRing(g, new Float32Array(4)))));
  const codes = res.map(code);
  // the broadcast root may finish (it only sends); the receivers see the wrong collective
  assert.equal(codes.slice(1), ['ERR_MISMATCH', 'ERR_MISMATCH'], codes.join(','));
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  const again = await Promise.allSettled(groups.map((g) => barrierRing(g)));
  const c2 = again.map(code);
  assert.equal(c2.slice(1), ['ERR_STATE', 'ERR_STATE'], c2.join(','));
  assert.not.ok(c2.includes('ok'), c2.join(','));
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  await Promise.all(groups.map((g) => g.close()));
});

test('a rank that never joins makes the others time out with ERR_TIMEOUT within the op timeout', async () => {
  const groups = await memoryGroups(3, { timeoutMs: 300 });
  const t0 = Date.now();
  const res = await Promise.allSettled([barrierRing(groups[0]!), barrierRing(groups[1]!)]);
  const ms = Date.now() - t0;
  assert.not.ok(res.map(code).includes('ok'), res.map(code).join(','));
  assert.ok(res.map(code).includes('ERR_TIMEOUT'), res.map(code).join(','));
  assert.ok(ms < 600, `took ${ms} ms`);
  await Promise.all(groups.map((g) => g.close()));
});

test('process group rejects bad options with RangeError naming the option', async () => {
  const { ProcessGroup, MemoryNetwork, MemoryStore } = await import('@shoal/core');
  const base = { store: new MemoryStore(), transport: new MemoryNetwork().transport(), listenUrl: 'mem://' };
  assert.throws(() => new ProcessGroup({ ...base, rank: 3, size: 3 }), /options.rank/);
  assert.throws(() => new ProcessGroup({ ...base, rank: 0, size: 0 }), /options.size/);
  assert.throws(() => new ProcessGroup({ ...base, rank: 0, size: 2, timeoutMs: 0 }), /options.timeoutMs/);
});

test('bad collective arguments reject with a RangeError naming the option', async () => {
  const [g] = await memoryGroups(1);
  const { loadKernels } = await import('@shoal/core');
  const { allreduceRing } = await import('./allreduce-ring.js');
  const kernels = loadKernels();
  const rejects = async (p: Promise<unknown>, re: RegExp) => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    assert.instance(err, RangeError);
    assert.match((err as Error).message, re);
  };
  await rejects(allreduceRing(g!, new Float64Array(3), { kernels, wire: 'float16' }), /options.wire/);
  await rejects(allreduceRing(g!, new Float32Array(3), { kernels, op: 'prod' as never }), /options.op/);
  await rejects(broadcastRing(g!, new Float32Array(3), { root: 1 }), /options.root/);
  await rejects(allgatherRing(g!, new Float32Array(3), new Float32Array(4)), /output/);
  await g!.close();
});

test.run();
