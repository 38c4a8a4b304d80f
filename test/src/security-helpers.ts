/** What the security, fuzz and TLS tests share: a hang guard, a seeded PRNG and this process's memory figures. */
import { readFileSync } from 'node:fs';

/** `body` as a uvu test body that fails with "<what>: no result within <ms> ms (hang)" instead of hanging. */
export function guard<T>(what: string, ms: number, body: () => Promise<T>): () => Promise<T> {
  return () =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms (hang)`)), ms);
      body().then(
        (v) => (clearTimeout(t), resolve(v)),
        (e) => (clearTimeout(t), reject(e)),
      );
    });
}

/** mulberry32: a small seeded PRNG, so a failing fuzz run can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** This process's resident (VmRSS) or virtual (VmSize) memory in KiB, from /proc/self/status. */
export const vmKiB = (field: 'VmRSS' | 'VmSize') => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync('/proc/self/status', 'utf8'))![1]);
