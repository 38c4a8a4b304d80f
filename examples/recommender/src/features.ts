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
 * (B: EASE weights, 0 without them).
 */
export const WIDE = 4;

/** EASE as the model's features: the inverse P = (G + lambda I)^-1 (row-major n x n) and its diagonal. */
export interface ItemItemInverse { p: Float32Array; diag: Float32Array; n: number }

export function itemItemInverse(p: Float32Array, n: number): ItemItemInverse {
  if (p.length !== n * n) throw new RangeError(`EASE inverse needs ${n}^2 values, got ${p.length}`);
  return { p, diag: Float32Array.from({ length: n }, (_, j) => p[j * n + j]!), n };
}

/**
 * The wide features of a training step: `fp` [B, WIDE] for each example's target, `fn` [B, K, WIDE] for the K
 * negatives shared by the batch.
 *
 * The EASE features of a training example are computed leave-one-basket-out: B from the Gram matrix without the
 * example's own basket x (Sherman-Morrison: P' = P + P x x^T P / (1 - x^T P x)), so they are as informative as
 * they will be on unseen test baskets and the model learns how far to trust them (with the in-sample B, every
 * training target co-occurs with its context in B's own fit). P's rows at the step's negatives are gathered once
 * per distinct item of the step; each example then adds K-wide rows.
 */
export function wideFeatures(
  train: Baskets, batch: readonly { basket: number }[], users: Int32Array, posIds: Int32Array, negIds: Int32Array, hist: Lists,
  ctx: readonly number[], ctxOff: Int32Array, histRange: Int32Array, ii: ItemItemInverse | null,
): { fp: Float32Array; fn: Float32Array } {
  const B = batch.length, K = negIds.length, F = WIDE;
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
  const { p: P, diag, n: N } = ii;
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
  const uNeg = new Float64Array(K), pjjNeg = new Float64Array(K), acc = new Float64Array(K);
  for (let i = 0; i < B; i++) {
    const b = batch[i]!.basket, t = posIds[i]!;
    const s = train.offsets[b]!, e = train.offsets[b + 1]!;
    // u = P x over the basket's items, at the candidates and at the items that point (context, history).
    const uOf = (k: number): number => { let z = 0; for (let x = s; x < e; x++) z += P[train.items[x]! * N + k]!; return z; };
    let c = 0;
    for (let x = s; x < e; x++) c += uOf(train.items[x]!);
    const den = 1 / Math.max(1 - c, 1e-6);
    uNeg.fill(0);
    for (let x = s; x < e; x++) { const r = rowOf(train.items[x]!); for (let k = 0; k < K; k++) uNeg[k]! += r[k]!; }
    for (let k = 0; k < K; k++) pjjNeg[k] = diag[negIds[k]!]! + uNeg[k]! * uNeg[k]! * den;
    const uT = uOf(t), pjjT = diag[t]! + uT * uT * den;
    const feature = (list: ArrayLike<number>, from: number, to: number, f: number, mean: boolean): void => {
      if (to <= from) return;
      const scale = mean ? 1 / (to - from) : 1;
      let pos = 0;
      acc.fill(0);
      for (let x = from; x < to; x++) {
        const v = list[x]!, uv = uOf(v) * den, r = rowOf(v);
        if (v !== t) pos -= (P[v * N + t]! + uv * uT) / pjjT;
        for (let k = 0; k < K; k++) acc[k]! -= (r[k]! + uv * uNeg[k]!) / pjjNeg[k]!;
        // B[v][v] = 0: undo the terms where a negative is v itself.
        const ks = negAt.get(v);
        if (ks) for (const k of ks) acc[k]! += (r[k]! + uv * uNeg[k]!) / pjjNeg[k]!;
      }
      fp[i * F + f] = pos * scale;
      for (let k = 0; k < K; k++) fn[(i * K + k) * F + f] = acc[k]! * scale;
    };
    feature(ctx, ctxOff[i]!, ctxOff[i + 1]!, 2, false);
    feature(hist.items, histRange[2 * i]!, histRange[2 * i + 1]!, 3, true);
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
    for (let x = test.offsets[b]!; x < test.offsets[b + 1]!; x++) addRow(base, test.items[x]!, 2, 1);
    const pe = Math.min(he, hs + poolHistory);
    for (let x = hs; x < pe; x++) addRow(base, th!.items[x]!, 3, 1 / (pe - hs));
  }
  return out;
}
