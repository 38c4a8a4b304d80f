/**
 * The one seeded PRNG of shoal (mulberry32): the same sequence on every platform and rank for a 32-bit seed,
 * which is what shuffles, negative sampling and synthetic data need so that N workers follow the 1-worker path.
 * Not for cryptography. An ordinary object: make one per stream of draws.
 */
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
