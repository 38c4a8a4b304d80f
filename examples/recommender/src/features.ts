import type { Baskets } from './prepare.js';

/** CSR lists: list i is `items[offsets[i] .. offsets[i+1])`, with `counts` aligned to `items`. */
export interface Lists { offsets: Int32Array; items: Int32Array; counts: Float32Array }

/**
 * The customer's history before each basket of `target`: distinct items from the same user's baskets in `past`
 * that are strictly earlier than the target basket (most recent first, at most `max`), each with the number of
 * those baskets that hold it (the repeat-buy signal). Unknown users (id 0) and first baskets get an empty list. `past` and `target` may be the same Baskets (training) or train and test.
 */
export function historyLists(past: Baskets, target: Baskets, max: number): Lists {
  const byUser = new Map<number, number[]>();
  for (let b = 0; b < past.users.length; b++) {
    const u = past.users[b]!;
    if (u === 0) continue;
    let l = byUser.get(u);
    if (l === undefined) { l = []; byUser.set(u, l); }
    l.push(b);
  }
  for (const l of byUser.values()) l.sort((a, b) => past.times[a]! - past.times[b]!);
  const offsets = new Int32Array(target.users.length + 1);
  const out: number[] = [];
  const cnt: number[] = [];
  const seen = new Map<number, number>();
  for (let b = 0; b < target.users.length; b++) {
    const l = target.users[b]! === 0 ? undefined : byUser.get(target.users[b]!);
    if (l !== undefined) {
      seen.clear();
      const t = target.times[b]!;
      // Baskets of this user earlier than t, newest first.
      let hi = l.length - 1;
      while (hi >= 0 && past.times[l[hi]!]! >= t) hi--;
      for (let i = hi; i >= 0; i--) {
        const pb = l[i]!;
        for (let x = past.offsets[pb]!; x < past.offsets[pb + 1]!; x++) {
          const it = past.items[x]!;
          const at = seen.get(it);
          if (at !== undefined) cnt[at]! += 1;
          else if (seen.size < max) { seen.set(it, out.length); out.push(it); cnt.push(1); }
        }
      }
    }
    offsets[b + 1] = out.length;
  }
  return { offsets, items: Int32Array.from(out), counts: Float32Array.from(cnt) };
}

/**
 * Number of wide features per (example, candidate item): 0 log(1 + n_uj), 1 [n_uj > 0] (n_uj: the user's earlier
 * baskets holding j), 2 sum over the context items v of B[v][j], 3 mean over the pooled history items h of B[h][j]
 * (B: EASE weights), 4 log(1 + sum over the context items v of C[v][j]) (C: co-occurrence counts); 2-4 are 0
 * without item-item statistics.
 */
export const WIDE = 5;

/** EASE as the model's features: the inverse P = (G + lambda I)^-1 (row-major n x n) and its diagonal. */
export interface ItemItemInverse {
  p: Float32Array; diag: Float32Array; n: number;
  /** Co-occurrence counts C = X^T X (the Gram matrix EASE inverts, without lambda), n x n. */
  gram: Float32Array;
  /** x^T P x per basket of a training set (keyed by its items array; NaN until first needed). */
  quad: WeakMap<Int32Array, Float64Array>;
  /**
   * u_v = (P x)_v of a training basket x at its own items (aligned with the training set's items array) and at its
   * pooled history items (aligned with the history lists' items array): NaN until first needed, then reused by
   * every later step (each costs |basket| reads down a column of P).
   */
  uBasket: WeakMap<Int32Array, Float64Array>;
  uHist: WeakMap<Int32Array, Float64Array>;
  /** `wideFeatures`' reused per-step buffers (null until its first step). */
  scratch: WideScratch | null;
}

export function itemItemInverse(p: Float32Array, gram: Float32Array, n: number): ItemItemInverse {
  if (p.length !== n * n || gram.length !== n * n) throw new RangeError(`EASE inverse and Gram matrix need ${n}^2 values, got ${p.length} and ${gram.length}`);
  return { p, gram, diag: Float32Array.from({ length: n }, (_, j) => p[j * n + j]!), n, quad: new WeakMap(), uBasket: new WeakMap(), uHist: new WeakMap(), scratch: null };
}

/** log1p(n) of the small integer counts behind the repeat-buy and co-occurrence features: Math.log1p's own values, looked up (measured: log1p per candidate was a tenth of a step). */
const LOG1P_SMALL = Float64Array.from({ length: 1024 }, (_, n) => Math.log1p(n));
function log1pCount(x: number): number {
  return x >= 0 && x < LOG1P_SMALL.length && Number.isInteger(x) ? LOG1P_SMALL[x]! : Math.log1p(x);
}

/**
 * Rows of an n x n matrix at a step's K negatives, gathered once per distinct item of the step into one reused
 * buffer (typed arrays instead of a Map of arrays: allocation and lookups were a large part of a step). A row's
 * values are the matrix's own float32 values, so results do not depend on this cache.
 */
class StepRows {
  private readonly stamp: Int32Array; private readonly slot: Int32Array;
  private rows: Float32Array; private used = 0; private step = 0;
  /**
   * The step's negatives in ascending item order (`order[q]` is a k, `cols[q]` its item): a row is read front to
   * back, so the hardware prefetches it (measured on Online Retail, 3,625 items: the gather was the largest cost).
   */
  private readonly order: Int32Array; private readonly cols: Int32Array;
  constructor(private readonly m: Float32Array, private readonly n: number, readonly k: number) {
    this.stamp = new Int32Array(n); this.slot = new Int32Array(n);
    this.rows = new Float32Array(Math.min(n, 256) * k);
    this.order = new Int32Array(k); this.cols = new Int32Array(k);
  }
  /** Forget the previous step's rows: the step's negatives are now `neg`. */
  next(neg: Int32Array): void {
    this.step++; this.used = 0;
    const order = this.order;
    for (let k = 0; k < this.k; k++) order[k] = k;
    order.sort((a, b) => neg[a]! - neg[b]!);
    for (let q = 0; q < this.k; q++) this.cols[q] = neg[order[q]!]!;
  }
  /** The offset in `data` of item v's row at the step's negatives (gathered on first use in this step). */
  at(v: number): number {
    if (this.stamp[v] === this.step) return this.slot[v]!;
    const K = this.k, at = this.used * K;
    if (at + K > this.rows.length) { const r = new Float32Array(Math.min(this.n * K, 2 * this.rows.length)); r.set(this.rows); this.rows = r; }
    const o = v * this.n, m = this.m, rows = this.rows, order = this.order, cols = this.cols;
    for (let q = 0; q < K; q++) rows[at + order[q]!] = m[o + cols[q]!]!;
    this.stamp[v] = this.step; this.slot[v] = at; this.used++;
    return at;
  }
  get data(): Float32Array { return this.rows; }
}

/** The reused step buffers of `wideFeatures`: P and C rows, and per item the stamp of the example whose basket holds it with its u. */
interface WideScratch { p: StepRows; c: StepRows; inB: Int32Array; mark: number; uInB: Float64Array }

/** The cached array aligned with `key` in `m` (NaN until computed), created on first use. */
function cacheFor(m: WeakMap<Int32Array, Float64Array>, key: Int32Array): Float64Array {
  let a = m.get(key);
  if (a === undefined) m.set(key, (a = new Float64Array(key.length).fill(NaN)));
  return a;
}

/** sum over the basket's items x of P[x][k] (u = P x at k), in basket order. */
function uAt(P: Float32Array, N: number, items: Int32Array, s: number, e: number, k: number): number {
  let z = 0;
  for (let x = s; x < e; x++) z += P[items[x]! * N + k]!;
  return z;
}

/**
 * The wide features of a training step: `fp` [B, WIDE] for each example's target, `fn` [B, K, WIDE] for the K
 * negatives shared by the batch.
 *
 * The EASE features of a training example are computed leave-one-basket-out: B from the Gram matrix without the
 * example's own basket x (Sherman-Morrison: P' = P + P x x^T P / (1 - x^T P x)), so they are as informative as
 * they will be on unseen test baskets and the model learns how far to trust them (with the in-sample B, every
 * training target co-occurs with its context in B's own fit). P's and C's rows at the step's negatives are
 * gathered once per distinct item of the step; each example then adds K-wide rows. The float64 sums run in a
 * fixed order (test/src/recommender-wide-features.test.ts pins the values bit for bit). Precondition (as `plan`
 * makes them): `hist` is aligned with `train`'s baskets and example i's history range lies in its basket's list.
 */
export function wideFeatures(
  train: Baskets, batch: readonly { basket: number }[], users: Int32Array, posIds: Int32Array, negIds: Int32Array, hist: Lists,
  ctx: readonly number[], ctxOff: Int32Array, histRange: Int32Array, ii: ItemItemInverse | null, reuse?: Float32Array,
): { fp: Float32Array; fn: Float32Array } {
  const B = batch.length, K = negIds.length, F = WIDE;
  // `reuse`: a spare array for `fn` (zeroed here) when it has the size, so a step allocates no fresh 1.3 MB.
  const fp = new Float32Array(B * F), fn = reuse?.length === B * K * F ? reuse.fill(0) : new Float32Array(B * K * F);
  // The negatives at each item: negFirst[j] is the first k with negIds[k] = j (-1 if none), negNext[k] the next.
  let size = ii ? ii.n : 0;
  if (!ii) for (let k = 0; k < K; k++) size = Math.max(size, negIds[k]! + 1);
  const negFirst = new Int32Array(size).fill(-1), negNext = new Int32Array(K);
  for (let k = K - 1; k >= 0; k--) { const j = negIds[k]!; negNext[k] = negFirst[j]!; negFirst[j] = k; }
  const firstNeg = (j: number): number => (j < size ? negFirst[j]! : -1);
  // Repeat-buy: one pass over each history (its items are distinct).
  for (let i = 0; i < B; i++) {
    if (users[i] === 0) continue;
    const basket = batch[i]!.basket, t = posIds[i]!;
    for (let x = hist.offsets[basket]!; x < hist.offsets[basket + 1]!; x++) {
      const it = hist.items[x]!, l = log1pCount(hist.counts[x]!);
      if (it === t) { fp[i * F] = l; fp[i * F + 1] = 1; }
      for (let k = firstNeg(it); k >= 0; k = negNext[k]!) { fn[(i * K + k) * F] = l; fn[(i * K + k) * F + 1] = 1; }
    }
  }
  if (ii === null) return { fp, fn };
  const { p: P, diag, n: N, gram: C } = ii;
  let sc = ii.scratch;
  if (sc === null || sc.p.k !== K) ii.scratch = sc = { p: new StepRows(P, N, K), c: new StepRows(C, N, K), inB: new Int32Array(N), mark: 0, uInB: new Float64Array(N) };
  const items = train.items;
  const uB = cacheFor(ii.uBasket, items), uH = cacheFor(ii.uHist, hist.items), uInB = sc.uInB;
  const pRows = sc.p, cRows = sc.c, inB = sc.inB;
  pRows.next(negIds); cRows.next(negIds);
  const uNeg = new Float64Array(K), pjjNeg = new Float64Array(K), acc = new Float64Array(K), self = new Float64Array(K);
  let quad = ii.quad.get(items);
  if (quad === undefined) ii.quad.set(items, (quad = new Float64Array(train.users.length).fill(NaN)));
  for (let i = 0; i < B; i++) {
    const b = batch[i]!.basket, t = posIds[i]!;
    const s = train.offsets[b]!, e = train.offsets[b + 1]!;
    // x^T P x costs |basket|^2 lookups (large invoices hold hundreds of items): once per basket.
    let c = quad[b]!;
    if (Number.isNaN(c) || (e > s && Number.isNaN(uB[s]!))) {
      c = 0;
      for (let x = s; x < e; x++) { const u = uAt(P, N, items, s, e, items[x]!); uB[x] = u; c += u; }
      quad[b] = c;
    }
    // The basket's items with their u (the target and the context are among them); the stamp also serves the co-occurrence.
    const mark = ++sc.mark;
    for (let x = s; x < e; x++) { inB[items[x]!] = mark; uInB[items[x]!] = uB[x]!; }
    const den = 1 / Math.max(1 - c, 1e-6);
    // u = P x over the basket's items, at the candidates and at the items that point (context, history).
    uNeg.fill(0);
    for (let x = s; x < e; x++) { const r = pRows.at(items[x]!), R = pRows.data; for (let k = 0; k < K; k++) uNeg[k]! += R[r + k]!; }
    for (let k = 0; k < K; k++) pjjNeg[k] = diag[negIds[k]!]! + uNeg[k]! * uNeg[k]! * den;
    const uT = inB[t] === mark ? uInB[t]! : uAt(P, N, items, s, e, t), pjjT = diag[t]! + uT * uT * den;
    // sum_v B'[v][j] = -(sum_v P[v][j] + (sum_v u_v) u_j / (1 - c)) / P'[j][j]: one K-wide row sum per item v.
    // `cache`: the list is hist.items, whose u values are kept per position (else the list's items are looked up in the basket).
    const feature = (list: ArrayLike<number>, from: number, to: number, f: number, mean: boolean, cache: Float64Array | null): void => {
      if (to <= from) return;
      const scale = mean ? 1 / (to - from) : 1;
      let pos = 0, usum = 0;
      acc.fill(0);
      for (let x = from; x < to; x++) {
        const v = list[x]!;
        let u: number;
        if (cache !== null) { u = cache[x]!; if (Number.isNaN(u)) cache[x] = u = uAt(P, N, items, s, e, v); }
        else u = inB[v] === mark ? uInB[v]! : uAt(P, N, items, s, e, v);
        const uv = u * den, r = pRows.at(v), R = pRows.data;
        if (v !== t) pos -= (P[v * N + t]! + uv * uT) / pjjT;
        usum += uv;
        for (let k = 0; k < K; k++) acc[k]! += R[r + k]!;
        // B[v][v] = 0: take back the terms where a negative is v itself.
        for (let k = negFirst[v]!; k >= 0; k = negNext[k]!) { acc[k]! -= R[r + k]!; self[k]! += uv; }
      }
      for (let k = 0; k < K; k++) {
        fn[(i * K + k) * F + f] = (-(acc[k]! + (usum - self[k]!) * uNeg[k]!) / pjjNeg[k]!) * scale;
        self[k] = 0;
      }
      fp[i * F + f] = pos * scale;
    };
    feature(ctx, ctxOff[i]!, ctxOff[i + 1]!, 2, false, null);
    // Co-occurrence without the example's own basket: C' = C - x x^T, so each context item loses 1 at the basket's items.
    const cs = ctxOff[i]!, ce = ctxOff[i + 1]!, nctx = ce - cs;
    if (nctx > 0) {
      let pos = 0;
      acc.fill(0);
      for (let x = cs; x < ce; x++) {
        const v = ctx[x]!, r = cRows.at(v), R = cRows.data;
        pos += C[v * N + t]!;
        for (let k = 0; k < K; k++) acc[k]! += R[r + k]!;
      }
      fp[i * F + 4] = log1pCount(Math.max(0, pos - nctx));
      for (let k = 0; k < K; k++) fn[(i * K + k) * F + 4] = log1pCount(Math.max(0, acc[k]! - (inB[negIds[k]!] === mark ? nctx : 0)));
    }
    feature(hist.items, histRange[2 * i]!, histRange[2 * i + 1]!, 3, true, uH);
  }
  return { fp, fn };
}

/** The wide features of every catalog item for scored baskets [from, to): [B * numItems, WIDE] (EASE: B = -P[v][j] / P[j][j]). */
export function catalogFeatures(
  test: Baskets, from: number, to: number, th: Lists | null, poolHistory: number, ii: ItemItemInverse | null, numItems: number,
): Float32Array {
  const N = numItems, F = WIDE, out = new Float32Array((to - from) * N * F);
  const addRow = (base: number, v: number, f: number, scale: number): void => {
    const P = ii!.p, diag = ii!.diag, o = v * N;
    for (let j = 0; j < N; j++) if (j !== v) out[(base + j) * F + f]! -= (P[o + j]! / diag[j]!) * scale;
  };
  for (let b = from; b < to; b++) {
    const base = (b - from) * N;
    const hs = th && test.users[b] !== 0 ? th.offsets[b]! : 0, he = th && test.users[b] !== 0 ? th.offsets[b + 1]! : 0;
    for (let x = hs; x < he; x++) { const j = th!.items[x]!; out[(base + j) * F] = Math.log1p(th!.counts[x]!); out[(base + j) * F + 1] = 1; }
    if (ii === null) continue;
    for (let x = test.offsets[b]!; x < test.offsets[b + 1]!; x++) {
      addRow(base, test.items[x]!, 2, 1);
      const o = test.items[x]! * N, C = ii.gram;
      for (let j = 0; j < N; j++) out[(base + j) * F + 4]! += C[o + j]!;
    }
    if (test.offsets[b + 1]! > test.offsets[b]!) for (let j = 0; j < N; j++) out[(base + j) * F + 4] = Math.log1p(out[(base + j) * F + 4]!);
    const pe = Math.min(he, hs + poolHistory);
    for (let x = hs; x < pe; x++) addRow(base, th!.items[x]!, 3, 1 / (pe - hs));
  }
  return out;
}
