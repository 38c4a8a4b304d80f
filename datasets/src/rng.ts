/** A small seeded PRNG (mulberry32): deterministic for a given 32-bit seed, on every platform. Not cryptographic. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 2^32). */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Uniform integer in [0, n), n >= 1 (n < 2^32). */
  int(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }
}
