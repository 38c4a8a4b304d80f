import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { Errors } from '../errors.js';
import { jsKernels } from './js-kernels.js';

export type { FloatArray, NumericArray, OptimStep, ReduceKernels, ReduceOp, RowOp } from './kernel-types.js';
import type { FloatArray, NumericArray, ReduceKernels, ReduceOp, RowOp } from './kernel-types.js';
export const OP_CODES: Readonly<Record<ReduceOp, number>> = { sum: 0, min: 1, max: 2 };

interface Addon {
  reduce(op: number, d: NumericArray, s: NumericArray): void;
  reduceF16(op: number, d: Float32Array, s: Uint16Array): void;
  f32ToF16(d: Uint16Array, s: Float32Array): void;
  f16ToF32(d: Float32Array, s: Uint16Array): void;
  scale(d: Float32Array | Float64Array, f: number): void;
  firstNonFinite(a: NumericArray): number;
  sumUpdate(axpy: boolean, w: Float32Array | Float64Array, grads: readonly (Float32Array | Float64Array)[], outs: readonly (Float32Array | Float64Array)[], factor: number): void;
  optim(kind: number, w: FloatArray, g: FloatArray, s1: FloatArray | null, s2: FloatArray | null, rows: Int32Array | null, rowSize: number, lrRows: Float64Array | null, ...p: number[]): void;
  rows(op: number, dst: FloatArray, src: FloatArray, rows: Int32Array, rowSize: number, touched?: Uint8Array, fresh?: Int32Array): number;
  nonZeroRows(a: FloatArray, rowSize: number, out: Int32Array): number;
  isa(): string;
}

const ROW_OPS: Readonly<Record<RowOp, number>> = { gather: 0, take: 1, merge: 2, scatter: 3 };

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
    if (prefer === 'native') throw Errors.state(`native kernels not built: ${path} missing (run npm rebuild @shoal/core, or npm run build:native -w @shoal/core in a checkout)`);
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
    optimize: (s) => {
      const rows = s.rows ?? null;
      const rs = s.rowSize ?? 0;
      if (s.kind === 'adam') a.optim(0, s.w, s.g, s.m, s.v, rows, rs, s.lrRows ?? null, s.lr, s.beta1, s.beta2, s.eps, s.wd, s.rescale);
      else if (s.kind === 'adagrad') a.optim(1, s.w, s.g, s.history, null, rows, rs, null, s.lr, s.eps, s.wd, s.rescale, 0, 0);
      else a.optim(2, s.w, s.g, s.momentum, null, rows, rs, null, s.lr, s.mu, s.wd, s.rescale, 0, 0);
    },
    rows: (op, d, s, r, rs, t, f) => (op === 'merge' ? a.rows(2, d, s, r, rs, t, f) : a.rows(ROW_OPS[op], d, s, r, rs)),
    nonZeroRows: (x, rs, out) => a.nonZeroRows(x, rs, out),
  };
}
