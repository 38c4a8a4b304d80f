import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connectGroup, createNetTransport, loadKernels, MemoryStore, type NumericArray } from '@shoal/core';
import { allreduceGuarded, allreduceRing, type AllreduceOp } from './allreduce-ring.js';
import { memoryGroups, onAllRanks } from './memory-groups.js';

const kernels = loadKernels();

/**
 * Unique per rank and element (gloo benchmark style): v = rank * n + i. Sums stay exact in int32 (7 ranks x
 * 16 Mi elements < 2^31) and float64.
 */
function fill(a: NumericArray, rank: number): void {
  const n = a.length;
  for (let i = 0; i < n; i++) a[i] = rank * n + i;
}
function expected(n: number, size: number, i: number, op: AllreduceOp): number {
  if (op === 'min') return i;
  if (op === 'max') return (size - 1) * n + i;
  const s = ((size * (size - 1)) / 2) * n + size * i;
  return op === 'mean' ? s / size : s;
}

async function check(size: number, n: number, ctor: 'int32' | 'float64' | 'float32', op: AllreduceOp, segmentBytes?: number, algorithm?: 'ring' | 'direct') {
  const groups = await memoryGroups(size);
  try {
    const arrays = groups.map((_, r) => {
      const a = ctor === 'int32' ? new Int32Array(n) : ctor === 'float64' ? new Float64Array(n) : new Float32Array(n);
      fill(a, r);
      return a;
    });
    await onAllRanks(groups, (g, r) => allreduceRing(g, arrays[r]!, { kernels, op, segmentBytes, algorithm }));
    for (let r = 0; r < size; r++) {
      const a = arrays[r]!;
      for (let i = 0; i < n; i++) {
        let want = expected(n, size, i, op);
        if (ctor === 'int32' && op === 'mean') want = Math.trunc(want);
        if (ctor === 'float32') want = Math.fround(want);
        if (a[i] !== want) assert.unreachable(`size ${size} n ${n} ${ctor} ${op}: rank ${r} [${i}] = ${a[i]}, want ${want}`);
      }
    }
  } finally {
    await Promise.all(groups.map((g) => g.close()));
  }
}

test('ring allreduce int32 sum exact for sizes 0, 1, 7, 1000 and 1 MiB on world sizes 1..7', async () => {
  for (let size = 1; size <= 7; size++) {
    for (const n of [0, 1, 7, 1000]) await check(size, n, 'int32', 'sum');
    await check(size, (1 << 20) / 4, 'int32', 'sum', 64 * 1024);
  }
});

test('ring allreduce mean, min, max on float64 and int32', async () => {
  for (const size of [2, 3, 5]) {
    for (const op of ['mean', 'min', 'max'] as const) {
      await check(size, 1003, 'float64', op);
      await check(size, 20_000, 'int32', op, 4096);
    }
  }
});

test('small buffers are exact by either small variant (direct mesh, ring) on 3..9 ranks, float16 wire included', async () => {
  for (const smallAlgorithm of ['direct', 'ring'] as const) {
    for (const size of [3, 5, 9]) {
      const groups = await memoryGroups(size);
      try {
        for (const n of [0, 1, 7, 1000]) {
          const a = groups.map((_, r) => Int32Array.from({ length: n }, (_, i) => r * n + i));
          await onAllRanks(groups, (g, r) => allreduceRing(g, a[r]!, { kernels, smallAlgorithm }));
          for (const x of a) for (let i = 0; i < n; i++) if (x[i] !== expected(n, size, i, 'sum')) assert.unreachable(`${smallAlgorithm} size ${size} n ${n} [${i}] = ${x[i]}`);
        }
        const f = groups.map((_, r) => Float32Array.from({ length: 999 }, (_, i) => Math.cos(r + i) * 3));
        await onAllRanks(groups, (g, r) => allreduceRing(g, f[r]!, { kernels, smallAlgorithm, wire: 'float16' }));
        for (let r = 1; r < size; r++) assert.equal([...f[r]!], [...f[0]!], `${smallAlgorithm} size ${size}: float16 results agree`);
      } finally {
        await Promise.all(groups.map((g) => g.close()));
      }
    }
  }
});

test('direct allreduce is exact for sum, mean, min, max on 3..7 ranks and odd lengths', async () => {
  for (let size = 3; size <= 7; size++) {
    for (const n of [0, 1, 7, 5003, 300_001]) await check(size, n, 'int32', 'sum', 64 << 10, 'direct');
    for (const op of ['mean', 'min', 'max'] as const) await check(size, 20_011, 'float64', op, 4096, 'direct');
  }
});

test('two-rank exchange with a credit window of 1 and 3 segments stays exact', async () => {
  for (const window of [1, 3]) {
    const groups = await memoryGroups(2);
    const n = 100_003;
    const a = groups.map((_, r) => Int32Array.from({ length: n }, (_, i) => r * n + i));
    await onAllRanks(groups, (g, r) => allreduceRing(g, a[r]!, { kernels, segmentBytes: 4096, window }));
    for (const x of a) for (let i = 0; i < n; i++) if (x[i] !== n + 2 * i) assert.unreachable(`window ${window} [${i}] = ${x[i]}`);
    await Promise.all(groups.map((g) => g.close()));
  }
});

test('ring allreduce 64 MiB + 4 B int32 sum exact on 2 and 3 ranks', async () => {
  for (const size of [2, 3]) await check(size, (64 << 20) / 4 + 1, 'int32', 'sum', 4 << 20);
});

test('ring allreduce float32 sweep within Horovod-style tolerance', async () => {
  for (const size of [2, 4, 7]) {
    for (const n of [1, 17, 4099, 100_000]) {
      const groups = await memoryGroups(size);
      const arrays = groups.map((_, r) => Float32Array.from({ length: n }, (_, i) => Math.sin(r * 7 + i) * 10));
      const ref = new Float64Array(n);
      arrays.forEach((a) => a.forEach((v, i) => (ref[i]! += v)));
      await onAllRanks(groups, (g, r) => allreduceRing(g, arrays[r]!, { kernels, segmentBytes: 8192 }));
      for (let r = 0; r < size; r++)
        for (let i = 0; i < n; i++) {
          const err = Math.abs(arrays[r]![i]! - ref[i]!);
          if (err > 1e-5 * size * 10) assert.unreachable(`size ${size} n ${n}: [${i}] err ${err}`);
          if (arrays[r]![i] !== arrays[0]![i]) assert.unreachable(`ranks disagree at [${i}]`);
        }
      await Promise.all(groups.map((g) => g.close()));
    }
  }
});

test('ring allreduce float16 wire stays within the documented error and agrees on every rank', async () => {
  for (const size of [2, 3]) {
    for (const n of [5, 3000, 300_000]) {
      const groups = await memoryGroups(size);
      const arrays = groups.map((_, r) => Float32Array.from({ length: n }, (_, i) => 1 + ((r * 31 + i) % 100) / 100));
      const ref = new Float64Array(n);
      arrays.forEach((a) => a.forEach((v, i) => (ref[i]! += v)));
      await onAllRanks(groups, (g, r) => allreduceRing(g, arrays[r]!, { kernels, wire: 'float16', segmentBytes: 16384 }));
      for (let i = 0; i < n; i++) {
        const rel = Math.abs(arrays[0]![i]! - ref[i]!) / ref[i]!;
        if (rel > 2 ** -9) assert.unreachable(`size ${size} n ${n} [${i}]: rel err ${rel}`);
        for (let r = 1; r < size; r++) if (arrays[r]![i] !== arrays[0]![i]) assert.unreachable(`ranks disagree at [${i}]`);
      }
      await Promise.all(groups.map((g) => g.close()));
    }
  }
});

test('ring allreduce with different lengths across ranks raises ERR_MISMATCH, not silent mixing', async () => {
  const groups = await memoryGroups(3, { timeoutMs: 2000 });
  const res = await Promise.allSettled(groups.map((g, r) => allreduceRing(g, new Int32Array(r === 1 ? 50_000 : 40_000), { kernels })));
  const codes = res.map((x) => (x.status === 'rejected' ? (x.reason as { code?: string }).code : 'ok'));
  assert.ok(codes.includes('ERR_MISMATCH'), codes.join(','));
  assert.not.ok(codes.includes('ok'), codes.join(','));
  await Promise.all(groups.map((g) => g.close()));
});

test('the JS fallback kernels give the same exact sums and fp16 results as the native ones', async () => {
  const js = loadKernels({ prefer: 'js' });
  const size = 3;
  const n = 50_001;
  for (const k of [js, kernels]) {
    const groups = await memoryGroups(size);
    const ints = groups.map((_, r) => Int32Array.from({ length: n }, (_, i) => r * n + i));
    await onAllRanks(groups, (g, r) => allreduceRing(g, ints[r]!, { kernels: k, segmentBytes: 8192 }));
    for (let i = 0; i < n; i++) if (ints[2]![i] !== 3 * n + 3 * i) assert.unreachable(`${k.impl} [${i}] = ${ints[2]![i]}`);
    await Promise.all(groups.map((g) => g.close()));
  }
  const halves = await Promise.all(
    [js, kernels].map(async (k) => {
      const groups = await memoryGroups(size);
      const f = groups.map((_, r) => Float32Array.from({ length: 4099 }, (_, i) => Math.cos(r + i) * 3));
      await onAllRanks(groups, (g, r) => allreduceRing(g, f[r]!, { kernels: k, wire: 'float16', segmentBytes: 1024 }));
      await Promise.all(groups.map((g) => g.close()));
      return f[0]!;
    }),
  );
  assert.equal([...halves[0]!], [...halves[1]!]);
});

test('ring allreduce over the net transport stays exact over repeated calls that recycle receive buffers', async () => {
  // in-process ranks over real sockets: segments of 64 KiB go as split messages whose buffers the ring gives back
  const transport = createNetTransport();
  for (const size of [2, 3, 4]) {
    const store = new MemoryStore().prefixed(`net${size}`);
    const groups = await Promise.all(
      Array.from({ length: size }, (_, rank) => connectGroup({ rank, size, store, transport, listenUrl: 'tcp://127.0.0.1:0', timeoutMs: 10_000 })),
    );
    try {
      const n = 300_001;
      for (let call = 0; call < 4; call++) {
        const a = groups.map((_, r) => Int32Array.from({ length: n }, (_, i) => r * n + i + call * 7));
        await onAllRanks(groups, (g, r) => allreduceRing(g, a[r]!, { kernels, segmentBytes: 64 << 10 }));
        const base = ((size * (size - 1)) / 2) * n + size * call * 7;
        for (const x of a) for (let i = 0; i < n; i++) if (x[i] !== base + size * i) assert.unreachable(`size ${size} call ${call} [${i}] = ${x[i]}, want ${base + size * i}`);
      }
      const f = groups.map((_, r) => Float32Array.from({ length: 100_003 }, (_, i) => 1 + ((r * 31 + i) % 100) / 100));
      await onAllRanks(groups, (g, r) => allreduceRing(g, f[r]!, { kernels, wire: 'float16', segmentBytes: 64 << 10 }));
      for (let i = 0; i < 100_003; i++) for (let r = 1; r < size; r++) if (f[r]![i] !== f[0]![i]) assert.unreachable(`float16 size ${size}: ranks disagree at [${i}]`);
    } finally {
      await Promise.all(groups.map((g) => g.close()));
    }
  }
});

test('allreduceGuarded over net: equal leads reduce; a different guard, count or window drains what was sent ahead and the group goes on', async () => {
  const transport = createNetTransport();
  const store = new MemoryStore().prefixed('guarded');
  const groups = await Promise.all([0, 1].map((rank) => connectGroup({ rank, size: 2, store, transport, listenUrl: 'tcp://127.0.0.1:0', timeoutMs: 10_000 })));
  try {
    const n = 1 << 20; // 4 MiB: 64 KiB segments travel as split messages, 16 of them ahead
    const mk = (r: number, len = n) => Int32Array.from({ length: len }, (_, i) => r * 7 + (i % 1000));
    const o = { kernels, segmentBytes: 64 << 10 };
    const a = [mk(0), mk(1)];
    assert.equal(await onAllRanks(groups, (g, r) => allreduceGuarded(g, a[r]!, { ...o, guard: 0xdeadbeef })), [true, true]);
    for (const x of a) for (let i = 0; i < n; i += 997) if (x[i] !== 7 + 2 * (i % 1000)) assert.unreachable(`[${i}] = ${x[i]}`);
    const cases: [string, (r: number) => Parameters<typeof allreduceGuarded>[2], (r: number) => Int32Array][] = [
      ['guard', (r) => ({ ...o, guard: r }), (r) => mk(r)],
      ['count', () => ({ ...o, guard: 5 }), (r) => mk(r, r ? n + 3 : n)],
      ['window', (r) => ({ ...o, guard: 5, window: r ? 3 : 16 }), (r) => mk(r)],
    ];
    for (const [what, opts, data] of cases) {
      const d = [data(0), data(1)];
      assert.equal(await onAllRanks(groups, (g, r) => allreduceGuarded(g, d[r]!, opts(r))), [false, false], what);
      d.forEach((x, r) => assert.equal(x, data(r), `${what}: rank ${r} untouched`));
      const b = [mk(0), mk(1)];
      await onAllRanks(groups, (g, r) => allreduceRing(g, b[r]!, o));
      for (const x of b) for (let i = 0; i < n; i += 997) if (x[i] !== 7 + 2 * (i % 1000)) assert.unreachable(`${what}: next call [${i}] = ${x[i]}`);
    }
  } finally {
    await Promise.all(groups.map((g) => g.close()));
  }
});

test.run();
