/**
 * The one seeded PRNG of shoal (mulberry32): the same sequence on every platform and rank for a 32-bit seed,
 * which is what shuffles, negative sampling and synthetic data need so that N workers follow the 1-worker path.
 * Not for cryptography. An ordinary object: make one per stream of draws.
 */
/**
 * A 32-bit seed derived from a base seed and the parts of a stream's identity (epoch, cycle, rank...): different
 * parts give unrelated seeds, the same parts the same seed on every rank. Used for each shuffle so that resuming
 * at a given epoch reproduces its order.
 */
export function mixSeed(seed: number, ...parts: readonly number[]): number {
  const K = [0x85ebca6b, 0xc2b2ae35, 0x27d4eb2f, 0x165667b1];
  let h = Math.imul(seed | 0, 0x9e3779b1);
  parts.forEach((p, i) => (h ^= Math.imul(p + 1, K[i % K.length]!)));
  return h >>> 0;
}

export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform integer in [0, 2^32). */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Uniform float in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }
  /** Uniform integer in [0, n), n >= 1 (n < 2^32). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Shuffle `a` in place (Fisher-Yates from the end) and return it. */
  shuffle<T extends { length: number; [i: number]: unknown }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }
}
