import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { DenseTensor } from '../api.js';
import { signatureOf, TensorFusion } from './fusion.js';
import { memoryGroups } from './memory-groups.js';
import { RingSync } from './ring-sync.js';

const mk = (rank: number, size: number, lens: number[]): DenseTensor[] =>
  lens.map((n, t) => ({ name: `layer${t}/kernel`, shape: [n], data: Float32Array.from({ length: n }, (_, i) => size * (rank * 97 + i + t)) }));

/** Every rank's tensors (made by `mk`) hold the exact mean over `size` ranks. */
function expectMeans(grads: readonly DenseTensor[][], size: number): void {
  for (let r = 0; r < size; r++)
    grads[r]!.forEach((g, t) =>
      g.data.forEach((v, i) => {
        const want = (size * (97 * ((size * (size - 1)) / 2) + size * (i + t))) / size;
        if (v !== want) assert.unreachable(`rank ${r} ${g.name}[${i}] = ${v}, want ${want}`);
      }),
    );
}

test('fusion plans batches under the threshold and gives an oversized tensor its own batch', () => {
  const f = new TensorFusion(400); // 100 float32
  const ts = mk(0, 1, [30, 30, 30, 30, 250, 10]);
  const plan = f.plan(ts, signatureOf(ts));
  assert.equal(plan.map((b) => [...b.tensors]), [[0, 1, 2], [3], [4], [5]]);
  assert.equal(plan.map((b) => b.packed), [true, false, false, false]);
});

test('500 small tensors are fused into few collectives and reduced exactly on 4 ranks', async () => {
  const size = 4;
  const lens = Array.from({ length: 500 }, (_, i) => 1 + (i % 37));
  const total = lens.reduce((a, b) => a + b, 0);
  const groups = await memoryGroups(size);
  const syncs = groups.map((g) => new RingSync(g, { fusionThresholdBytes: 4096 }));
  const grads = syncs.map((s) => mk(s.rank, size, lens));
  await Promise.all(syncs.map((s, r) => s.allreduceMean(grads[r]!)));
  const batches = Math.ceil(total / 1024);
  // one control collective + one per batch (a batch may close early when the next tensor does not fit)
  const ops = syncs[0]!.stats().ops;
  assert.ok(ops >= 1 + batches && ops <= 1 + batches + 5, `ops ${ops} for ${total} floats in 1024-float batches`);
  expectMeans(grads, size);
  await Promise.all(syncs.map((s) => s.close()));
});

test('tensors back to back in one buffer are reduced in place (no pack copy); gaps, other buffers and reorderings are packed', async () => {
  const f = new TensorFusion(1 << 20);
  const flat = new Float32Array(100);
  const views = (offsets: number[][]): DenseTensor[] => offsets.map(([a, n], t) => ({ name: `v${t}`, shape: [n!], data: flat.subarray(a, a! + n!) }));
  const batchOf = (ts: DenseTensor[]) => f.plan(ts, signatureOf(ts))[0]!;
  const chained = views([[0, 30], [30, 50], [80, 20]]);
  const v = f.contiguous(chained, batchOf(chained));
  assert.ok(v !== null && v.buffer === flat.buffer && v.byteOffset === 0 && v.length === 100);
  const gap = views([[0, 30], [31, 50]]);
  assert.is(f.contiguous(gap, batchOf(gap)), null);
  const swapped = views([[30, 50], [0, 30]]);
  assert.is(f.contiguous(swapped, batchOf(swapped)), null);
  const mixed = [chained[0]!, { name: 'other', shape: [50], data: new Float32Array(50) }];
  assert.is(f.contiguous(mixed, batchOf(mixed)), null);

  // Through RingSync on 3 ranks: views of one flat buffer per rank reduce to exactly the packed result.
  const size = 3;
  const lens = [7, 1000, 1, 4096, 33];
  const groups = await memoryGroups(size);
  const syncs = groups.map((g) => new RingSync(g));
  const flats = syncs.map((s) => {
    const src = mk(s.rank, size, lens);
    const buf = new Float32Array(lens.reduce((a, b) => a + b, 0));
    let o = 0;
    return {
      buf,
      ts: src.map((t) => {
        buf.set(t.data, o);
        const d = buf.subarray(o, o + t.data.length);
        o += t.data.length;
        return { ...t, data: d };
      }),
    };
  });
  await Promise.all(syncs.map((s, r) => s.allreduceMean(flats[r]!.ts)));
  expectMeans(flats.map((f) => f.ts), size);
  await Promise.all(syncs.map((s) => s.close()));
});

test('RingSync with the direct allreduce reduces a 1 MB fused list exactly on 3 ranks', async () => {
  const size = 3;
  const lens = Array.from({ length: 100 }, (_, i) => 2500 + i);
  const groups = await memoryGroups(size);
  const syncs = groups.map((g) => new RingSync(g, { algorithm: 'direct', segmentBytes: 64 << 10 }));
  const grads = syncs.map((s) => mk(s.rank, size, lens));
  await Promise.all(syncs.map((s, r) => s.allreduceMean(grads[r]!)));
  expectMeans(grads, size);
  await Promise.all(syncs.map((s) => s.close()));
});

test('fp16 wire through RingSync keeps the mean within 2^-10 relative error', async () => {
  const size = 3;
  const groups = await memoryGroups(size);
  const syncs = groups.map((g) => new RingSync(g, { wire: 'float16' }));
  const grads = syncs.map((s) => [{ name: 'w', shape: [50_000], data: Float32Array.from({ length: 50_000 }, (_, i) => 0.5 + ((s.rank + i) % 10) / 7) }]);
  const ref = Float64Array.from({ length: 50_000 }, (_, i) => {
    let a = 0;
    for (let r = 0; r < size; r++) a += 0.5 + ((r + i) % 10) / 7;
    return a / size;
  });
  await Promise.all(syncs.map((s, r) => s.allreduceMean(grads[r]!)));
  ref.forEach((w, i) => {
    const e = Math.abs(grads[0]![0]!.data[i]! - w) / w;
    if (e > 2 ** -10) assert.unreachable(`[${i}] rel err ${e}`);
  });
  await Promise.all(syncs.map((s) => s.close()));
});

test.run();
