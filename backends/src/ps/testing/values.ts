import * as assert from 'uvu/assert';

/** Test values for the parameter-server suites: `n` float32s all equal to `v`. */
export const ones = (n: number, v = 1): Float32Array => new Float32Array(n).fill(v);

/** Fail naming the first element of `a` that is not exactly `v`. */
export function allEqual(a: ArrayLike<number>, v: number, what: string): void {
  for (let i = 0; i < a.length; i++) if (a[i] !== v) assert.unreachable(`${what}[${i}] = ${a[i]}, want ${v}`);
}
