import { Errors, Rng } from '@shoal/core';
import type { TestBaskets } from './prepare.js';

/**
 * Anything that scores the whole catalog for a run of test baskets. `scoreBatch` writes `(to - from) * numItems`
 * scores into `out` (owned by the caller; row b is basket `from + b`); higher means more likely to be the hidden item.
 */
export interface Recommender {
  readonly name: string;
  scoreBatch(test: TestBaskets, from: number, to: number, out: Float32Array): void | Promise<void>;
}

export interface RankingMetrics {
  /** Fraction of test baskets whose hidden item ranks in the top k. */
  hr: number;
  /** Mean of 1 / log2(rank + 2) over baskets with rank < k (rank 0 is the top), else 0. */
  ndcg: number;
  /** Mean reciprocal rank over the full ranking (no cut-off), for diagnostics. */
  mrr: number;
  k: number;
  n: number;
  /** 95 % bootstrap intervals (percentile method, `BOOTSTRAP` resamples of the evaluated baskets, seeded). */
  ci: { hr: [number, number]; ndcg: [number, number]; mrr: [number, number] };
}

/** Bootstrap resamples behind `RankingMetrics.ci`. */
export const BOOTSTRAP = 1000;

/** 95 % percentile-bootstrap intervals of the means of per-basket values (same resamples for every column). */
export function bootstrapCi(cols: readonly Float64Array[], resamples = BOOTSTRAP, seed = 12345): [number, number][] {
  const n = cols[0]!.length;
  const rng = new Rng(seed);
  const means = cols.map(() => new Float64Array(resamples));
  const idx = new Int32Array(n);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) idx[i] = rng.int(n);
    cols.forEach((c, k) => { let s = 0; for (let i = 0; i < n; i++) s += c[idx[i]!]!; means[k]![r] = s / n; });
  }
  return means.map((m) => {
    m.sort();
    return [m[Math.floor(0.025 * resamples)]!, m[Math.min(resamples - 1, Math.ceil(0.975 * resamples) - 1)]!];
  });
}

/**
 * Rank of the hidden item among all items except the visible ones, counting ties against it (an item scoring
 * equal to the hidden one ranks ahead): a constant scorer gets no free hits.
 */
export function rankOfHidden(scores: Float32Array, base: number, numItems: number, hidden: number, visible: ArrayLike<number>): number {
  const sh = scores[base + hidden]!;
  if (Number.isNaN(sh)) throw Errors.nan('recommender scores');
  let rank = 0;
  for (let j = 0; j < numItems; j++) if (j !== hidden && scores[base + j]! >= sh) rank++;
  for (let v = 0; v < visible.length; v++) {
    const j = visible[v]!;
    if (j !== hidden && scores[base + j]! >= sh) rank--;
  }
  return rank;
}

/**
 * HR@k, NDCG@k and MRR over every test basket (hide-one-item basket completion), with 95 % bootstrap intervals.
 * `batch` baskets are scored at once.
 */
export async function evaluate(rec: Recommender, test: TestBaskets, numItems: number, k = 10, batch = 256): Promise<RankingMetrics> {
  const n = test.hidden.length;
  if (n === 0) throw Errors.data('evaluate', 'no test baskets');
  const out = new Float32Array(Math.min(batch, n) * numItems);
  let hits = 0, ndcg = 0, mrr = 0;
  const perHit = new Float64Array(n), perNdcg = new Float64Array(n), perRr = new Float64Array(n);
  for (let from = 0; from < n; from += batch) {
    const to = Math.min(n, from + batch);
    await rec.scoreBatch(test, from, to, out);
    for (let b = from; b < to; b++) {
      const visible = test.items.subarray(test.offsets[b]!, test.offsets[b + 1]!);
      const r = rankOfHidden(out, (b - from) * numItems, numItems, test.hidden[b]!, visible);
      if (r < k) { hits++; ndcg += 1 / Math.log2(r + 2); perHit[b] = 1; perNdcg[b] = 1 / Math.log2(r + 2); }
      mrr += 1 / (r + 1);
      perRr[b] = 1 / (r + 1);
    }
  }
  const [hr, nd, rr] = bootstrapCi([perHit, perNdcg, perRr]);
  return { hr: hits / n, ndcg: ndcg / n, mrr: mrr / n, k, n, ci: { hr: hr!, ndcg: nd!, mrr: rr! } };
}
