import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { Errors } from '../errors.js';
import { jsKernels } from './js-kernels.js';

/** Element types the collectives reduce. `float16` exists only as a wire format (Uint16Array of IEEE halves). */
export type NumericArray = Float32Array | Float64Array | Int32Array;
export type ReduceOp = 'sum' | 'min' | 'max';
export const OP_CODES: Readonly<Record<ReduceOp, number>> = { sum: 0, min: 1, max: 2 };

/**
 * Element-wise reduction kernels, all in place on the caller's arrays (the caller owns both; nothing is
 * retained or copied). Preconditions: `dst` and `src` have the same element count (and type for `reduce`).
 */
export interface ReduceKernels {
  /** 'native:avx2+f16c', 'native:generic' or 'js'. */
  readonly impl: string;
  /** dst[i] = op(dst[i], src[i]). int32 sums wrap modulo 2^32. */
  reduce(op: ReduceOp, dst: NumericArray, src: NumericArray): void;
  /** Same with `src` in fp16 wire format. */
  reduceF16(op: ReduceOp, dst: Float32Array, src: Uint16Array): void;
  /** Round to nearest even; |x| >= 65520 becomes +-Inf; NaN stays NaN. */
  f32ToF16(dst: Uint16Array, src: Float32Array): void;
  f16ToF32(dst: Float32Array, src: Uint16Array): void;
  /** dst[i] *= factor (float arrays only). */
  scale(dst: Float32Array | Float64Array, factor: number): void;
  /** Index of the first NaN/Inf, or -1 (int32 arrays: always -1). */
  firstNonFinite(a: NumericArray): number;
  /**
   * A parameter server's linear update in one pass: `s = grads[0] + grads[1] + ...` (in that order), then
   * `w = s` (axpy false) or `w += s * factor` (factor rounded to w's type; the product rounds before the sum),
   * then every `outs[k] = w`. Bit-identical to reduce/scale/reduce over whole arrays; `grads` are only read. All
   * arrays of w's type (float32/float64) and length.
   */
  sumUpdate(axpy: boolean, w: Float32Array | Float64Array, grads: readonly (Float32Array | Float64Array)[], outs: readonly (Float32Array | Float64Array)[], factor: number): void;
}

interface Addon {
  reduce(op: number, d: NumericArray, s: NumericArray): void;
  reduceF16(op: number, d: Float32Array, s: Uint16Array): void;
  f32ToF16(d: Uint16Array, s: Float32Array): void;
  f16ToF32(d: Float32Array, s: Uint16Array): void;
  scale(d: Float32Array | Float64Array, f: number): void;
  firstNonFinite(a: NumericArray): number;
  sumUpdate(axpy: boolean, w: Float32Array | Float64Array, grads: readonly (Float32Array | Float64Array)[], outs: readonly (Float32Array | Float64Array)[], factor: number): void;
  isa(): string;
}

export interface LoadKernelsOptions {
  /** 'auto' (default): the native addon when built, else JS. 'js': force the fallback. 'native': fail if absent. */
  prefer?: 'auto' | 'native' | 'js';
  /** Path of `shoal_kernels.node`; defaults to core/native/kernels/build/Release/. */
  addonPath?: string;
}

/** Default addon location, relative to this compiled file (core/dist/kernels/). */
export function defaultKernelAddonPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return resolve(here, '../../native/kernels/build/Release/shoal_kernels.node');
}

/**
 * Load the reduction kernels: the N-API addon (built by `npm run build:native -w @shoal/core`) when present,
 * else the plain-JS fallback. Returns a fresh object each call (Node caches the addon itself).
 */
export function loadKernels(opts: LoadKernelsOptions = {}): ReduceKernels {
  const prefer = opts.prefer ?? 'auto';
  if (prefer === 'js') return jsKernels();
  const path = opts.addonPath ?? defaultKernelAddonPath();
  if (!existsSync(path)) {
    if (prefer === 'native') throw Errors.state(`native kernels not built: ${path} missing (run npm run build:native -w @shoal/core)`);
    return jsKernels();
  }
  const a = createRequire(import.meta.url)(path) as Addon;
  return {
    impl: `native:${a.isa()}`,
    reduce: (op, d, s) => a.reduce(OP_CODES[op], d, s),
    reduceF16: (op, d, s) => a.reduceF16(OP_CODES[op], d, s),
    f32ToF16: (d, s) => a.f32ToF16(d, s),
    f16ToF32: (d, s) => a.f16ToF32(d, s),
    scale: (d, f) => a.scale(d, f),
    firstNonFinite: (x) => a.firstNonFinite(x),
    sumUpdate: (axpy, w, g, o, f) => a.sumUpdate(axpy, w, g, o, f),
  };
}
