import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadKernels } from '@shoal/core';
import { allreduceRing, smallAlgorithmFor } from './allreduce-ring.js';
import { memoryGroups, onAllRanks } from './memory-groups.js';

const kernels = loadKernels();

test('recursive doubling is exact on 3..9 ranks (powers of two and folded extras), odd lengths, every op', async () => {
  for (const size of [3, 4, 5, 7, 8, 9]) {
    const groups = await memoryGroups(size);
    try {
      for (const n of [0, 1, 7, 1000]) {
        const a = groups.map((_, r) => Int32Array.from({ length: n }, (_, i) => r * n + i));
        await onAllRanks(groups, (g, r) => allreduceRing(g, a[r]!, { kernels, smallAlgorithm: 'doubling' }));
        const sum = (i: number) => ((size * (size - 1)) / 2) * n + size * i;
        for (const [r, x] of a.entries()) for (let i = 0; i < n; i++) if (x[i] !== sum(i)) assert.unreachable(`size ${size} n ${n} rank ${r} [${i}] = ${x[i]}, want ${sum(i)}`);
        for (const op of ['min', 'max', 'mean'] as const) {
          const b = groups.map((_, r) => Float64Array.from({ length: n }, (_, i) => r * n + i));
          await onAllRanks(groups, (g, r) => allreduceRing(g, b[r]!, { kernels, smallAlgorithm: 'doubling', op }));
          const want = (i: number) => (op === 'min' ? i : op === 'max' ? (size - 1) * n + i : sum(i) / size);
          for (const x of b) for (let i = 0; i < n; i++) if (x[i] !== want(i)) assert.unreachable(`${op} size ${size} n ${n} [${i}] = ${x[i]}`);
        }
      }
      // float32 sums round differently in another order: every rank must still end with the same bits
      const f = groups.map((_, r) => Float32Array.from({ length: 999 }, (_, i) => Math.cos(r * 7 + i) * 1e3 + 1 / (r + 1)));
      await onAllRanks(groups, (g, r) => allreduceRing(g, f[r]!, { kernels, smallAlgorithm: 'doubling' }));
      for (let r = 1; r < size; r++) assert.equal([...f[r]!], [...f[0]!], `size ${size}: rank ${r} agrees bit for bit with rank 0`);
      const h = groups.map((_, r) => Float32Array.from({ length: 99 }, (_, i) => Math.sin(r + i)));
      await onAllRanks(groups, (g, r) => allreduceRing(g, h[r]!, { kernels, smallAlgorithm: 'doubling', wire: 'float16' }));
      for (let r = 1; r < size; r++) assert.equal([...h[r]!], [...h[0]!], `size ${size}: float16 wire (the ring variant) agrees`);
    } finally {
      await Promise.all(groups.map((g) => g.close()));
    }
  }
});

test('the default small variant is the one with fewer hops: doubling on 4 and 6+ ranks, the ring on 3 and 5', async () => {
  assert.equal([3, 4, 5, 6, 7, 8, 9, 16].map(smallAlgorithmFor), ['ring', 'doubling', 'ring', 'doubling', 'doubling', 'doubling', 'doubling', 'doubling']);
  // what runs is seen in the messages each rank sends per call: log2(size) for doubling, size - 1 for the ring
  for (const [size, perRank] of [
    [4, 2],
    [5, 4],
    [8, 3],
  ] as const) {
    const groups = await memoryGroups(size);
    try {
      const sent = () => groups.map((g) => g.stats().messagesSent);
      const before = sent();
      const a = groups.map((_, r) => Float32Array.of(r, 1));
      await onAllRanks(groups, (g, r) => allreduceRing(g, a[r]!, { kernels }));
      for (const x of a) assert.equal([...x], [(size * (size - 1)) / 2, size]);
      assert.equal(sent().map((n, r) => n - before[r]!), Array(size).fill(perRank), `size ${size}: ${perRank} messages per rank`);
      const forced = sent();
      await onAllRanks(groups, (g, r) => allreduceRing(g, a[r]!, { kernels, smallAlgorithm: 'ring' }));
      assert.equal(sent().map((n, r) => n - forced[r]!), Array(size).fill(size - 1), `size ${size}: smallAlgorithm 'ring' still forces the ring`);
    } finally {
      await Promise.all(groups.map((g) => g.close()));
    }
  }
});

test.run();
