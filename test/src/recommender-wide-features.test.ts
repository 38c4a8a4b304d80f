// Pins `wideFeatures` bit for bit to its first, straightforward implementation (kept below as the reference):
// the typed-array rewrite must not move a single float32 of the model's inputs, so trained weights and every
// reported figure (HR@10 etc.) stay exactly those of the published runs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setupTfjs } from '@shoal/wrappers';
import {
  BasketModel, easeInverse, epochExamples, gramMatrix, historyLists, itemItemInverse, wideFeatures, type Baskets,
} from '../../examples/recommender/dist/index.js';
import { syntheticTask } from './helpers/recommender-data.js';

type Lists = ReturnType<typeof historyLists>;
type Inverse = ReturnType<typeof itemItemInverse>;

/** The implementation of commit 302da6b (Maps of rows, Math.log1p per candidate), verbatim but for types. */
function referenceWideFeatures(
  train: Baskets, batch: readonly { basket: number }[], users: Int32Array, posIds: Int32Array, negIds: Int32Array, hist: Lists,
  ctx: readonly number[], ctxOff: Int32Array, histRange: Int32Array, ii: Inverse | null,
): { fp: Float32Array; fn: Float32Array } {
  const B = batch.length, K = negIds.length, F = 5;
  const fp = new Float32Array(B * F), fn = new Float32Array(B * K * F);
  // Repeat-buy: one pass over each history (its items are distinct).
  const negAt = new Map<number, number[]>();
  for (let k = 0; k < K; k++) { const j = negIds[k]!; const l = negAt.get(j); if (l) l.push(k); else negAt.set(j, [k]); }
  for (let i = 0; i < B; i++) {
    if (users[i] === 0) continue;
    const basket = batch[i]!.basket, t = posIds[i]!;
    for (let x = hist.offsets[basket]!; x < hist.offsets[basket + 1]!; x++) {
      const it = hist.items[x]!, n = hist.counts[x]!;
      if (it === t) { fp[i * F] = Math.log1p(n); fp[i * F + 1] = 1; }
      const ks = negAt.get(it);
      if (ks) for (const k of ks) { fn[(i * K + k) * F] = Math.log1p(n); fn[(i * K + k) * F + 1] = 1; }
    }
  }
  if (ii === null) return { fp, fn };
  const { p: P, diag, n: N, gram: C } = ii;
  const sub = new Map<number, Float32Array>();
  /** P[v][negIds[.]] as a K-wide row (cached for the step). */
  const rowOf = (v: number): Float32Array => {
    let r = sub.get(v);
    if (r === undefined) {
      r = new Float32Array(K);
      const o = v * N;
      for (let k = 0; k < K; k++) r[k] = P[o + negIds[k]!]!;
      sub.set(v, r);
    }
    return r;
  };
  const uNeg = new Float64Array(K), pjjNeg = new Float64Array(K), acc = new Float64Array(K), self = new Float64Array(K);
  let quad = ii.quad.get(train.items);
  if (quad === undefined) ii.quad.set(train.items, (quad = new Float64Array(train.users.length).fill(NaN)));
  for (let i = 0; i < B; i++) {
    const b = batch[i]!.basket, t = posIds[i]!;
    const s = train.offsets[b]!, e = train.offsets[b + 1]!;
    // u = P x over the basket's items, at the candidates and at the items that point (context, history).
    const uOf = (k: number): number => { let z = 0; for (let x = s; x < e; x++) z += P[train.items[x]! * N + k]!; return z; };
    // x^T P x costs |basket|^2 lookups (large invoices hold hundreds of items): once per basket.
    let c = quad[b]!;
    if (Number.isNaN(c)) { c = 0; for (let x = s; x < e; x++) c += uOf(train.items[x]!); quad[b] = c; }
    const den = 1 / Math.max(1 - c, 1e-6);
    uNeg.fill(0);
    for (let x = s; x < e; x++) { const r = rowOf(train.items[x]!); for (let k = 0; k < K; k++) uNeg[k]! += r[k]!; }
    for (let k = 0; k < K; k++) pjjNeg[k] = diag[negIds[k]!]! + uNeg[k]! * uNeg[k]! * den;
    const uT = uOf(t), pjjT = diag[t]! + uT * uT * den;
    // sum_v B'[v][j] = -(sum_v P[v][j] + (sum_v u_v) u_j / (1 - c)) / P'[j][j]: one K-wide row sum per item v.
    const feature = (list: ArrayLike<number>, from: number, to: number, f: number, mean: boolean): void => {
      if (to <= from) return;
      const scale = mean ? 1 / (to - from) : 1;
      let pos = 0, usum = 0;
      acc.fill(0);
      for (let x = from; x < to; x++) {
        const v = list[x]!, uv = uOf(v) * den, r = rowOf(v);
        if (v !== t) pos -= (P[v * N + t]! + uv * uT) / pjjT;
        usum += uv;
        for (let k = 0; k < K; k++) acc[k]! += r[k]!;
        // B[v][v] = 0: take back the terms where a negative is v itself.
        const ks = negAt.get(v);
        if (ks) for (const k of ks) { acc[k]! -= r[k]!; self[k]! += uv; }
      }
      for (let k = 0; k < K; k++) {
        fn[(i * K + k) * F + f] = (-(acc[k]! + (usum - self[k]!) * uNeg[k]!) / pjjNeg[k]!) * scale;
        self[k] = 0;
      }
      fp[i * F + f] = pos * scale;
    };
    feature(ctx, ctxOff[i]!, ctxOff[i + 1]!, 2, false);
    // Co-occurrence without the example's own basket: C' = C - x x^T, so each context item loses 1 at the basket's items.
    const cs = ctxOff[i]!, ce = ctxOff[i + 1]!, nctx = ce - cs;
    if (nctx > 0) {
      const inB = new Set<number>();
      for (let x = s; x < e; x++) inB.add(train.items[x]!);
      let pos = 0;
      acc.fill(0);
      for (let x = cs; x < ce; x++) {
        const v = ctx[x]!, o = v * N;
        pos += C[o + t]!;
        for (let k = 0; k < K; k++) acc[k]! += C[o + negIds[k]!]!;
      }
      fp[i * F + 4] = Math.log1p(Math.max(0, pos - nctx));
      for (let k = 0; k < K; k++) fn[(i * K + k) * F + 4] = Math.log1p(Math.max(0, acc[k]! - (inB.has(negIds[k]!) ? nctx : 0)));
    }
    feature(hist.items, histRange[2 * i]!, histRange[2 * i + 1]!, 3, true);
  }
  return { fp, fn };
}

function assertSameBits(a: { fp: Float32Array; fn: Float32Array }, b: { fp: Float32Array; fn: Float32Array }, what: string): void {
  for (const key of ['fp', 'fn'] as const) {
    const x = new Uint32Array(a[key].buffer), y = new Uint32Array(b[key].buffer);
    assert.is(x.length, y.length, `${what} ${key} length`);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) assert.unreachable(`${what}: ${key}[${i}] is ${b[key][i]}, the reference gives ${a[key][i]}`);
  }
}

const rt = await setupTfjs({ backend: 'wasm' });
const data = await syntheticTask(3000);
const N = data.numItems;
const gram = gramMatrix(data.train, N);
const p = await easeInverse(gram, N, 5);

test('wide features equal the reference bit for bit over many sampled steps (default model sizes)', () => {
  const hist = historyLists(data.train, data.train, 200);
  const model = new BasketModel(rt.tf, data.numUsers, N, {}, 0);
  const ii = itemItemInverse(p, Float32Array.from(gram), N), iiRef = itemItemInverse(p, Float32Array.from(gram), N);
  const ex = epochExamples(data.train, 8, 1);
  let steps = 0, rowsBeyondFirstBuffer = false;
  for (const B of [256, 1024, 7]) {
    for (let s = 0; s < 12 && (s + 1) * B <= ex.length; s++, steps++) {
      const pl = model.plan(data.train, hist, ex.slice(s * B, (s + 1) * B), { stepSeed: s, firstIndex: s * B });
      const args = [data.train, pl.batch, pl.users, pl.posIds, pl.negIds, hist, pl.ctx, pl.ctxOff, pl.histRange] as const;
      const ref = referenceWideFeatures(...args, iiRef);
      assertSameBits(ref, wideFeatures(...args, ii), `step ${s} of batch ${B}`);
      // Again, now from the per-basket caches (u at the basket's and the history's items) filled by the first call.
      assertSameBits(ref, wideFeatures(...args, ii), `step ${s} of batch ${B}, cached`);
      assertSameBits(referenceWideFeatures(...args, null), wideFeatures(...args, null), `step ${s} of batch ${B} without EASE`);
      if (B === 1024) rowsBeyondFirstBuffer ||= new Set([...pl.ctx, ...pl.rows[1]!]).size > 256;
    }
  }
  assert.ok(steps >= 30, `${steps} steps compared`);
  assert.ok(rowsBeyondFirstBuffer, 'a step gathers more than 256 distinct rows (the row buffer grows)');
});

test('wide features equal the reference with repeated negatives, negatives in the basket and history, and a new K', () => {
  const hist = historyLists(data.train, data.train, 200);
  const ii = itemItemInverse(p, Float32Array.from(gram), N), iiRef = itemItemInverse(p, Float32Array.from(gram), N);
  const t: Baskets = data.train;
  // Baskets with >= 3 items whose user has a history: negatives drawn from the basket, the history and repeats.
  const picks: number[] = [];
  for (let b = 0; b < t.users.length && picks.length < 40; b++) {
    if (t.offsets[b + 1]! - t.offsets[b]! >= 3 && hist.offsets[b + 1]! - hist.offsets[b]! >= 2) picks.push(b);
  }
  assert.ok(picks.length >= 10, `${picks.length} baskets with history`);
  for (const K of [5, 64]) {
    const batch = picks.map((b) => ({ basket: b }));
    const users = Int32Array.from(picks, (b, i) => (i % 5 === 0 ? 0 : t.users[b]!));
    const posIds = Int32Array.from(picks, (b) => t.items[t.offsets[b]!]!);
    const negIds = new Int32Array(K);
    for (let k = 0; k < K; k++) {
      const b = picks[k % picks.length]!;
      negIds[k] = k % 3 === 0 ? t.items[t.offsets[b]! + 1]! : k % 3 === 1 ? hist.items[hist.offsets[b]!]! : negIds[Math.max(0, k - 2)]!;
    }
    const ctx: number[] = [], ctxOff = new Int32Array(picks.length + 1), histRange = new Int32Array(2 * picks.length);
    picks.forEach((b, i) => {
      for (let x = t.offsets[b]! + (i % 4 === 3 ? t.offsets[b + 1]! : 1); x < t.offsets[b + 1]!; x++) ctx.push(t.items[x]!);
      ctxOff[i + 1] = ctx.length;
      if (users[i] !== 0) { histRange[2 * i] = hist.offsets[b]!; histRange[2 * i + 1] = Math.min(hist.offsets[b + 1]!, hist.offsets[b]! + 50); }
    });
    const args = [t, batch, users, posIds, negIds, hist, ctx, ctxOff, histRange] as const;
    assertSameBits(referenceWideFeatures(...args, iiRef), wideFeatures(...args, ii), `K = ${K}`);
    assertSameBits(referenceWideFeatures(...args, null), wideFeatures(...args, null), `K = ${K} without EASE`);
  }
});

test.run();
