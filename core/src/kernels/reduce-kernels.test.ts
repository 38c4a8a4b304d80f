import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { defaultKernelAddonPath, loadKernels, type NumericArray, type OptimStep, type ReduceKernels } from './reduce-kernels.js';

const impls: ReduceKernels[] = [loadKernels({ prefer: 'js' })];
if (existsSync(defaultKernelAddonPath())) impls.push(loadKernels({ prefer: 'native' }));

for (const k of impls) {
  test(`${k.impl}: sum, min, max on f32, f64, i32 of odd lengths match a scalar loop`, () => {
    for (const n of [0, 1, 7, 33, 1001]) {
      for (const C of [Float32Array, Float64Array, Int32Array] as { new (n: number): NumericArray; name: string }[]) {
        for (const op of ['sum', 'min', 'max'] as const) {
          const a = new C(n);
          const b = new C(n);
          for (let i = 0; i < n; i++) {
            a[i] = ((i * 7919) % 201) - 100;
            b[i] = ((i * 104729) % 199) - 99;
          }
          const want = [...a].map((x, i) => (op === 'sum' ? x + b[i]! : op === 'min' ? Math.min(x, b[i]!) : Math.max(x, b[i]!)));
          k.reduce(op, a, b);
          assert.equal([...a], [...want], `${C.name} ${op} n=${n}`);
        }
      }
    }
  });
  test(`${k.impl}: sumUpdate equals reduce, scale, reduce over whole arrays bit for bit; outputs get the weights`, () => {
    for (const C of [Float32Array, Float64Array] as { new (n: number): Float32Array | Float64Array; from(a: ArrayLike<number>): Float32Array | Float64Array; name: string }[]) {
      for (const n of [1, 2047, 2048, 5000]) {
        for (const ng of [1, 2, 3]) {
          for (const axpy of [true, false]) {
            const gs = Array.from({ length: ng }, (_, r) => C.from(Array.from({ length: n }, (_, i) => Math.sin(i * 0.7 + r) * 10 ** ((i % 7) - 3))));
            const w0 = C.from(Array.from({ length: n }, (_, i) => Math.cos(i * 0.3)));
            const factor = -0.013;
            // reference: the separate kernels
            const want = w0.slice();
            const m = gs[0]!.slice();
            for (let r = 1; r < ng; r++) k.reduce('sum', m, gs[r]!);
            if (axpy) {
              k.scale(m, factor);
              k.reduce('sum', want, m);
            } else want.set(m);
            const w = w0.slice();
            const outs = [new C(n), new C(n)];
            const before = gs.map((g) => g.slice());
            k.sumUpdate(axpy, w, gs, outs, factor);
            const what = `${C.name} n=${n} grads=${ng} axpy=${axpy}`;
            for (let i = 0; i < n; i++) if (!Object.is(w[i], want[i])) assert.unreachable(`${what}: w[${i}] = ${w[i]}, want ${want[i]}`);
            for (const o of outs) assert.equal([...o], [...w], `${what}: outputs`);
            gs.forEach((g, r) => assert.equal([...g], [...before[r]!], `${what}: gradient ${r} untouched`));
          }
        }
      }
    }
    // large updates write their outputs with streaming stores: unaligned starts and odd tails
    for (const C of [Float32Array, Float64Array]) {
      const n = (5 << 20) / C.BYTES_PER_ELEMENT + 3;
      const g = new C(n).fill(0.5);
      const w = new C(n).fill(1);
      const outs = [new C(n + 1).subarray(1), new C(n + 3).subarray(3)];
      k.sumUpdate(true, w, [g, g], outs, 2);
      for (const o of outs) {
        if (o.some((v) => v !== 3)) assert.unreachable(`${C.name}: streamed output has ${o.find((v) => v !== 3)} at ${o.findIndex((v) => v !== 3)}`);
      }
    }
    // as many gradients as a job has workers (no fixed limit)
    const many = Array.from({ length: 300 }, () => new Float32Array(5).fill(1));
    const wm = new Float32Array(5);
    k.sumUpdate(false, wm, many, [], 1);
    assert.equal([...wm], [300, 300, 300, 300, 300]);
    assert.throws(() => k.sumUpdate(true, new Float32Array(4), [], [], 1), /at least one gradient/);
    assert.throws(() => k.sumUpdate(true, new Float32Array(4), [new Float32Array(3)], [], 1), /match the weights/);
    assert.throws(() => k.sumUpdate(true, new Float32Array(4), [new Float64Array(4)], [], 1), /match the weights/);
    assert.throws(() => k.sumUpdate(true, new Float32Array(4), [new Float32Array(4)], [new Float32Array(5)], 1), /match the weights/);
  });
  test(`${k.impl}: optimizer steps and row moves equal the JS reference bit for bit`, () => {
    const ref = loadKernels({ prefer: 'js' });
    type F = Float32Array | Float64Array;
    for (const C of [Float32Array, Float64Array] as { new (n: number): F; from(a: ArrayLike<number>): F; name: string }[]) {
      const rowSize = 7;
      const numRows = 50;
      const n = rowSize * numRows;
      const vals = (len: number, seed: number) => C.from(Array.from({ length: len }, (_, i) => Math.sin(i * 0.91 + seed) * 10 ** ((i % 5) - 2)));
      const positive = (len: number, seed: number) => C.from(Array.from({ length: len }, (_, i) => Math.abs(Math.cos(i * 0.37 + seed)) * 0.01));
      const rows = Int32Array.from([3, 0, 49, 17, 4]);
      for (const sparse of [false, true]) {
        const g = sparse ? vals(rows.length * rowSize, 5) : vals(n, 5);
        const lrRows = Float64Array.from(rows, (r) => 0.001 * (r + 1));
        const steps = (w: F, a: F, b: F): OptimStep[] => [
          { kind: 'adam', w, g, m: a, v: b, rows: sparse ? rows : undefined, rowSize, lrRows: sparse ? lrRows : undefined, lr: 0.003, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.01, rescale: 0.5 },
          { kind: 'adagrad', w, g, history: b, rows: sparse ? rows : undefined, rowSize, lr: 0.1, eps: 1e-7, wd: 0.001, rescale: 2 },
          { kind: 'sgd', w, g, momentum: a, rows: sparse ? rows : undefined, rowSize, lr: 0.05, mu: 0.9, wd: 0.01, rescale: 1 },
          { kind: 'sgd', w, g, momentum: null, rows: sparse ? rows : undefined, rowSize, lr: 0.05, mu: 0, wd: 0.02, rescale: 3 },
        ];
        for (let s = 0; s < 4; s++) {
          const [w1, a1, b1] = [vals(n, 1), vals(n, 2), positive(n, 3)];
          const [w2, a2, b2] = [w1.slice(), a1.slice(), b1.slice()];
          for (let rep = 0; rep < 3; rep++) {
            k.optimize(steps(w1, a1, b1)[s]!);
            ref.optimize(steps(w2, a2, b2)[s]!);
          }
          const what = `${C.name} ${sparse ? 'rows' : 'dense'} ${steps(w1, a1, b1)[s]!.kind}#${s}`;
          for (const [x, y, name] of [[w1, w2, 'w'], [a1, a2, 'state 1'], [b1, b2, 'state 2']] as const) {
            for (let i = 0; i < n; i++) if (!Object.is(x[i], y[i])) assert.unreachable(`${what}: ${name}[${i}] = ${x[i]}, JS gives ${y[i]}`);
          }
        }
      }
      // gather / take / merge
      const table = vals(n, 9);
      const t2 = table.slice();
      const got = new C(rows.length * rowSize);
      const want = new C(rows.length * rowSize);
      k.rows('take', got, table, rows, rowSize);
      ref.rows('take', want, t2, rows, rowSize);
      assert.equal([...got], [...want], `${C.name} take`);
      assert.equal([...table], [...t2], `${C.name} take zeroes the rows`);
      assert.ok([...table.subarray(3 * rowSize, 4 * rowSize)].every((x) => x === 0));
      const ids = Int32Array.from([5, 9, 5, 0, 9, 5]);
      const src = vals(ids.length * rowSize, 4);
      const [d1, d2] = [new C(n), new C(n)];
      const [t1, tt2] = [new Uint8Array(numRows), new Uint8Array(numRows)];
      const [f1, f2] = [new Int32Array(ids.length), new Int32Array(ids.length)];
      assert.is(k.rows('merge', d1, src, ids, rowSize, t1, f1), 3);
      assert.is(ref.rows('merge', d2, src, ids, rowSize, tt2, f2), 3);
      assert.equal([...f1.subarray(0, 3)], [5, 9, 0]);
      assert.equal([...d1], [...d2], `${C.name} merge`);
      assert.equal([...t1], [...tt2]);
      assert.throws(() => k.rows('gather', new C(rowSize), table, Int32Array.of(numRows), rowSize), /row id outside/);
      // scatter, and the rows holding anything but zeros (NaN counts, -0 does not)
      const [s1, s2] = [new C(n), new C(n)];
      k.rows('scatter', s1, src, Int32Array.from([5, 9, 6, 0, 8, 49]), rowSize);
      ref.rows('scatter', s2, src, Int32Array.from([5, 9, 6, 0, 8, 49]), rowSize);
      assert.equal([...s1], [...s2], `${C.name} scatter`);
      assert.equal([...s1.subarray(49 * rowSize)], [...src.subarray(5 * rowSize)]);
      const z = new C(n);
      z[3 * rowSize + 6] = 1e-30;
      z[7 * rowSize] = Number.NaN;
      z[8 * rowSize + 2] = -0;
      z[49 * rowSize + 1] = -2;
      const [o1, o2] = [new Int32Array(numRows), new Int32Array(numRows)];
      assert.is(k.nonZeroRows(z, rowSize, o1), 3);
      assert.is(ref.nonZeroRows(z, rowSize, o2), 3);
      assert.equal([...o1.subarray(0, 3)], [3, 7, 49]);
      assert.equal([...o2.subarray(0, 3)], [3, 7, 49]);
      assert.throws(() => k.nonZeroRows(z, rowSize, new Int32Array(2)), /nonZeroRows/);
    }
    assert.throws(() => k.optimize({ kind: 'adagrad', w: new Float32Array(4), g: new Float32Array(3), history: new Float32Array(4), lr: 1, eps: 0, wd: 0, rescale: 1 }), /grad must/);
    // both implementations refuse the same bad input
    const w4 = new Float32Array(8);
    const bads: [string, () => void, RegExp][] = [
      ['lrRows shorter than rows', () => k.optimize({ kind: 'adam', w: w4, g: new Float32Array(8), m: new Float32Array(8), v: new Float32Array(8), rows: Int32Array.of(0, 1), rowSize: 4, lrRows: new Float64Array(0), lr: 1, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0, rescale: 1 }), /lrRows/],
      ['state of another length', () => k.optimize({ kind: 'adagrad', w: w4, g: new Float32Array(8), history: new Float32Array(4), lr: 1, eps: 0, wd: 0, rescale: 1 }), /state/],
      ['a parameter that is not a number', () => k.optimize({ kind: 'sgd', w: w4, g: new Float32Array(8), momentum: null, lr: undefined as unknown as number, mu: 0, wd: 0, rescale: 1 }), /parameters must be numbers/],
      ['rowSize 0', () => k.rows('gather', new Float32Array(0), w4, Int32Array.of(0), 0), /rowSize positive/],
      ['a short packed side', () => k.rows('take', new Float32Array(3), w4, Int32Array.of(0), 4), /packed side/],
    ];
    for (const [what, f, re] of bads) assert.throws(f, re, what);
    // a round that touched no row
    const w0 = new Float32Array(8).fill(1);
    k.optimize({ kind: 'adam', w: w0, g: new Float32Array(0), m: new Float32Array(8), v: new Float32Array(8), rows: new Int32Array(0), rowSize: 4, lrRows: new Float64Array(0), lr: 1, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0, rescale: 1 });
    assert.equal([...w0], [1, 1, 1, 1, 1, 1, 1, 1]);
  });
  test(`${k.impl}: int32 sums wrap modulo 2^32`, () => {
    const a = Int32Array.from([2 ** 31 - 1, -(2 ** 31)]);
    k.reduce('sum', a, Int32Array.from([1, -1]));
    assert.equal([...a], [-(2 ** 31), 2 ** 31 - 1]);
  });
  test(`${k.impl}: fp16 round trip is exact on halves and rounds to nearest even`, () => {
    const vals = [0, -0, 1, -2.5, 65504, 1e-7, 6.1e-5, 3.14159, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 70000, -Infinity, NaN];
    const src = Float32Array.from(vals);
    const h = new Uint16Array(src.length);
    k.f32ToF16(h, src);
    const back = new Float32Array(src.length);
    k.f16ToF32(back, h);
    assert.is(back[2], 1);
    assert.is(back[3], -2.5);
    assert.is(back[4], 65504);
    assert.is(back[8], 1); // tie rounds to even
    assert.is(back[9], 1 + 2 * 2 ** -10); // tie rounds to even (up)
    assert.is(back[10], Infinity);
    assert.is(back[11], -Infinity);
    assert.ok(Number.isNaN(back[12]!));
    assert.ok(Math.abs(back[7]! - 3.14159) / 3.14159 < 2 ** -11);
    assert.ok(Math.abs(back[5]! - 1e-7) < 2 ** -25);
    const acc = Float32Array.from([1, 2, 3]);
    k.reduceF16('sum', acc, h.subarray(2, 5));
    assert.equal([...acc], [2, -0.5, 65507]);
  });
  test(`${k.impl}: scale and firstNonFinite`, () => {
    const a = Float32Array.from({ length: 10_000 }, () => 3);
    k.scale(a, 0.5);
    assert.is(a[9999], 1.5);
    assert.is(k.firstNonFinite(a), -1);
    a[8191] = Infinity;
    assert.is(k.firstNonFinite(a), 8191);
    assert.is(k.firstNonFinite(Float64Array.from([1, NaN])), 1);
    assert.is(k.firstNonFinite(new Int32Array(3)), -1);
  });
}

test('native kernels and JS agree bit for bit on fp16 conversion of 2^16 patterns', () => {
  if (impls.length < 2) return;
  const [js, nat] = impls as [ReduceKernels, ReduceKernels];
  const h = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const a = new Float32Array(65536);
  const b = new Float32Array(65536);
  js.f16ToF32(a, h);
  nat.f16ToF32(b, h);
  for (let i = 0; i < 65536; i++) if (!(Object.is(a[i], b[i]) || (Number.isNaN(a[i]!) && Number.isNaN(b[i]!)))) assert.unreachable(`half ${i}: js ${a[i]} native ${b[i]}`);
  const f = Float32Array.from({ length: 200_000 }, (_, i) => (i - 100_000) * 0.37 * (i % 3 ? 1e-3 : 1));
  const hj = new Uint16Array(f.length);
  const hn = new Uint16Array(f.length);
  js.f32ToF16(hj, f);
  nat.f32ToF16(hn, f);
  for (let i = 0; i < f.length; i++) if (hj[i] !== hn[i]) assert.unreachable(`f32 ${f[i]}: js ${hj[i]} native ${hn[i]}`);
});

test.run();
