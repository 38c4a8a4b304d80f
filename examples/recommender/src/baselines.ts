import type { Recommender } from './metrics.js';
import type { Baskets, TestBaskets } from './prepare.js';

/** Number of training baskets holding each item. */
export function itemCounts(train: Baskets, numItems: number): Float64Array {
  const c = new Float64Array(numItems);
  for (let i = 0; i < train.items.length; i++) c[train.items[i]!]! += 1;
  return c;
}

/** Most-popular: every basket gets the same ranking, by training-basket count. */
export class MostPopular implements Recommender {
  readonly name = 'most-popular';
  private readonly scores: Float32Array;
  constructor(train: Baskets, numItems: number) { this.scores = Float32Array.from(itemCounts(train, numItems)); }
  scoreBatch(_test: TestBaskets, from: number, to: number, out: Float32Array): void {
    const n = this.scores.length;
    for (let b = 0; b < to - from; b++) out.set(this.scores, b * n);
  }
}

/**
 * Item co-occurrence: C[i][j] = number of training baskets holding both i and j; a basket scores item j by the sum
 * of C[v][j] over its visible items v. Ties (e.g. items never seen with the basket) break by popularity.
 * Memory: numItems^2 float32 (about 53 MB for 3,600 items).
 */
export class CoOccurrence implements Recommender {
  readonly name = 'co-occurrence';
  private readonly c: Float32Array;
  private readonly pop: Float32Array;
  constructor(train: Baskets, private readonly numItems: number) {
    const n = numItems;
    this.c = new Float32Array(n * n);
    for (let b = 0; b + 1 < train.offsets.length; b++) {
      const s = train.offsets[b]!, e = train.offsets[b + 1]!;
      for (let x = s; x < e; x++) {
        const row = train.items[x]! * n;
        for (let y = s; y < e; y++) if (y !== x) this.c[row + train.items[y]!]! += 1;
      }
    }
    const counts = itemCounts(train, n);
    let max = 1;
    for (const v of counts) max = Math.max(max, v);
    // Popularity in (0, 1e-3): smaller than one co-occurrence, so it only orders ties.
    this.pop = Float32Array.from(counts, (v) => (v / max) * 1e-3);
  }
  scoreBatch(test: TestBaskets, from: number, to: number, out: Float32Array): void {
    const n = this.numItems;
    for (let b = from; b < to; b++) {
      const base = (b - from) * n;
      out.set(this.pop, base);
      for (let x = test.offsets[b]!; x < test.offsets[b + 1]!; x++) {
        const row = test.items[x]! * n;
        for (let j = 0; j < n; j++) out[base + j]! += this.c[row + j]!;
      }
    }
  }
}

/**
 * Repeat-buy: score items by how many of the user's training baskets hold them (the customer's own history), ties
 * by popularity. Unknown users get plain popularity.
 */
export class RepeatBuy implements Recommender {
  readonly name = 'repeat-buy';
  private readonly hist = new Map<number, Map<number, number>>();
  private readonly pop: Float32Array;
  constructor(train: Baskets, private readonly numItems: number) {
    for (let b = 0; b < train.users.length; b++) {
      const u = train.users[b]!;
      let m = this.hist.get(u);
      if (m === undefined) { m = new Map(); this.hist.set(u, m); }
      for (let x = train.offsets[b]!; x < train.offsets[b + 1]!; x++) m.set(train.items[x]!, (m.get(train.items[x]!) ?? 0) + 1);
    }
    const counts = itemCounts(train, numItems);
    let max = 1;
    for (const v of counts) max = Math.max(max, v);
    this.pop = Float32Array.from(counts, (v) => (v / max) * 1e-3);
  }
  scoreBatch(test: TestBaskets, from: number, to: number, out: Float32Array): void {
    for (let b = from; b < to; b++) {
      const base = (b - from) * this.numItems;
      out.set(this.pop, base);
      const m = test.users[b]! === 0 ? undefined : this.hist.get(test.users[b]!);
      if (m !== undefined) for (const [j, c] of m) out[base + j]! += c;
    }
  }
}
