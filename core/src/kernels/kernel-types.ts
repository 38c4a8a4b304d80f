/**
 * The reduction kernels' types, apart from their two implementations (the native addon in reduce-kernels.ts and
 * the JS fallback in js-kernels.ts), so each implementation depends on this file and not on the other.
 */
/** Element types the collectives reduce. `float16` exists only as a wire format (Uint16Array of IEEE halves). */
export type NumericArray = Float32Array | Float64Array | Int32Array;
export type ReduceOp = 'sum' | 'min' | 'max';
export type FloatArray = Float32Array | Float64Array;

/**
 * One optimizer step of a parameter server (see `ReduceKernels.optimize`) over the whole of `w` (`rows` absent:
 * `g` has w's length) or over rows of `w` (`rows`: row ids, `g` packed `rows.length * rowSize`). State arrays have
 * w's type and length. Arithmetic in double, each stored value rounded to the array's type.
 */
export type OptimStep =
  | { kind: 'adam'; w: FloatArray; g: FloatArray; m: FloatArray; v: FloatArray; rows?: Int32Array; rowSize?: number;
      /** per-row step size (one per row), else `lr` for all */ lrRows?: Float64Array; lr: number; beta1: number; beta2: number; eps: number; wd: number; rescale: number }
  | { kind: 'adagrad'; w: FloatArray; g: FloatArray; history: FloatArray; rows?: Int32Array; rowSize?: number; lr: number; eps: number; wd: number; rescale: number }
  | { kind: 'sgd'; w: FloatArray; g: FloatArray; momentum: FloatArray | null; rows?: Int32Array; rowSize?: number; lr: number; mu: number; wd: number; rescale: number };

/** Row moves of a row-sparse parameter-server key (see `ReduceKernels.rows`). */
export type RowOp = 'gather' | 'take' | 'merge' | 'scatter';

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
  /**
   * Optimizer steps, bit-identical to these JS loops per element j (gradient element gj):
   * - adam: `gi = rescale*gj + wd*w[j]; mj = beta1*m[j] + (1-beta1)*gi; vj = beta2*v[j] + (1-beta2)*gi*gi;
   *   m[j] = mj; v[j] = vj; w[j] -= (lr*mj) / (sqrt(vj) + eps)` (lr: `lrRows[i]` for row i when given);
   * - adagrad: `gi = rescale*gj + wd*w[j]; hj = history[j] + gi*gi; history[j] = hj; w[j] -= (lr*gi) / (sqrt(hj) + eps)`;
   * - sgd: with momentum `u = mu*mom[j] - lr*(rescale*gj + wd*w[j]); mom[j] = u; w[j] += u`, else
   *   `w[j] -= lr*(rescale*gj + wd*w[j])`.
   */
  optimize(step: OptimStep): void;
  /**
   * Rows of a table (`rowSize` values each): `gather`: `dst` row i = `src` row `rows[i]`; `take`: the same, then
   * that `src` row = 0; `merge`: `src` row i goes into `dst` row r = `rows[i]`, copied when `touched[r]` is 0 (then
   * `touched[r]` = 1 and r is appended to `fresh`), added otherwise; `scatter`: `dst` row `rows[i]` = `src` row i.
   * Returns the count appended (0 for the others). Row ids are checked (RangeError).
   */
  rows(op: RowOp, dst: FloatArray, src: FloatArray, rows: Int32Array, rowSize: number, touched?: Uint8Array, fresh?: Int32Array): number;
  /** The rows of `a` (`rowSize` values each) holding any value !== 0 (NaN counts, -0 does not), in order, into `out`; returns how many. */
  nonZeroRows(a: FloatArray, rowSize: number, out: Int32Array): number;
}
