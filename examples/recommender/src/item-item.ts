/**
 * Item-item recommenders over the training baskets: EASE (Steck 2019) and item-kNN with cosine normalisation.
 * Both score an item j for a basket by summing a weight W[v][j] over the basket's visible items v (plus, for
 * known users, over their earlier items with `historyWeight`), so one `ItemItem` class serves both.
 *
 * EASE: B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0 over the basket-item matrix X has the closed form
 * P = (X^T X + lambda I)^-1, B[i][j] = -P[i][j] / P[j][j] (i != j), B[j][j] = 0: one inverse of a catalog-sized
 * symmetric positive definite matrix. The inverse is a Cholesky factorisation and two triangular passes written
 * here in JS (no linear-algebra package in the project; the loops run over contiguous rows, ~n^3/2 multiply-adds,
 * measured in the README).
 */
import type { Recommender } from './metrics.js';
import type { Baskets, TestBaskets } from './prepare.js';
import type { Lists } from './features.js';
import { itemCounts } from './baselines.js';

/** Gram matrix G = X^T X of the basket-item matrix (co-occurrence counts, item counts on the diagonal), n x n float64. */
export function gramMatrix(train: Baskets, n: number): Float64Array {
  const g = new Float64Array(n * n);
  for (let b = 0; b + 1 < train.offsets.length; b++) {
    const s = train.offsets[b]!, e = train.offsets[b + 1]!;
    for (let x = s; x < e; x++) {
      const row = train.items[x]! * n;
      for (let y = s; y < e; y++) g[row + train.items[y]!]! += 1;
    }
  }
  return g;
}

/**
 * Inverse of the symmetric positive definite n x n matrix `a` (row-major; only its lower triangle is read).
 * Overwrites `a` with scratch and returns the full symmetric inverse in a new array. Throws if `a` is not
 * positive definite.
 */
export function spdInverse(a: Float64Array, n: number): Float64Array {
  // 1. Cholesky a = L L^T, L in the lower triangle of `a` (row-oriented: dot products of row prefixes).
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = a[rj + j]!;
    for (let k = 0; k < j; k++) d -= a[rj + k]! * a[rj + k]!;
    if (!(d > 0)) throw new RangeError(`matrix is not positive definite (pivot ${j}: ${d})`);
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let s = a[ri + j]!;
      for (let k = 0; k < j; k++) s -= a[ri + k]! * a[rj + k]!;
      a[ri + j] = s * inv;
    }
  }
  // 2. W = L^-T (upper triangular, row-major), by back substitution row by row from the bottom:
  //    W[i][.] = (e_i - sum_{k>i} L[k][i] W[k][.]) / L[i][i]  (axpy over contiguous row tails).
  const w = new Float64Array(n * n);
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * n;
    w[ri + i] = 1;
    for (let k = i + 1; k < n; k++) {
      const c = a[k * n + i]!;
      if (c === 0) continue;
      const rk = k * n;
      for (let x = k; x < n; x++) w[ri + x]! -= c * w[rk + x]!;
    }
    const inv = 1 / a[ri + i]!;
    for (let x = i; x < n; x++) w[ri + x]! *= inv;
  }
  // 3. a^-1 = W W^T: entry (i, j) = dot of the row tails from max(i, j).
  const out = a; // reuse the storage
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j <= i; j++) {
      const rj = j * n;
      let s = 0;
      for (let x = i; x < n; x++) s += w[ri + x]! * w[rj + x]!;
      out[ri + j] = s;
      out[rj + i] = s;
    }
  }
  return out;
}

/**
 * The EASE inverse P = (G + lambda I)^-1 of a Gram matrix (not modified), float32. With `tf`, through tfjs matrix
 * products (`spdInverseTf`), else in float64 JS loops. EASE's weights are B[i][j] = -P[i][j] / P[j][j] (i != j).
 */
export async function easeInverse(gram: Float64Array, n: number, lambda: number, tf?: Tf): Promise<Float32Array> {
  const a = Float64Array.from(gram);
  for (let i = 0; i < n; i++) a[i * n + i]! += lambda;
  return tf ? spdInverseTf(tf, a, n) : Float32Array.from(spdInverse(a, n));
}

/** EASE weights B from the inverse P: B[i][j] = -P[i][j] / P[j][j], diagonal 0. */
export function easeFromInverse(p: Float32Array, n: number): Float32Array {
  const b = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) b[i * n + j] = i === j ? 0 : -p[i * n + j]! / p[j * n + j]!;
  }
  return b;
}

/** EASE weights for regularisation `lambda` (see `easeInverse`). */
export async function easeWeights(gram: Float64Array, n: number, lambda: number, tf?: Tf): Promise<Float32Array> {
  return easeFromInverse(await easeInverse(gram, n, lambda, tf), n);
}

/** Cosine item-item similarity C[i][j] / sqrt(c_i c_j), each row keeping its `k` largest entries (0: all). */
export function cosineWeights(gram: Float64Array, n: number, k: number): Float32Array {
  const w = new Float32Array(n * n);
  const norm = new Float64Array(n);
  for (let i = 0; i < n; i++) norm[i] = Math.sqrt(Math.max(gram[i * n + i]!, 1));
  const row = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) row[j] = i === j ? 0 : gram[i * n + j]! / (norm[i]! * norm[j]!);
    let cut = 0;
    if (k > 0 && k < n) cut = Float64Array.from(row).sort()[n - k]!;
    for (let j = 0; j < n; j++) if (row[j]! >= cut && row[j]! > 0) w[i * n + j] = row[j]!;
  }
  return w;
}

/**
 * Scores item j for a basket as sum over visible items v of W[v][j], plus `historyWeight` x sum over the user's
 * earlier items h (from `history`, aligned with the scored baskets) of W[h][j]; ties by popularity.
 */
export class ItemItem implements Recommender {
  private readonly pop: Float32Array;
  history: Lists | null = null;
  constructor(readonly name: string, private readonly w: Float32Array, train: Baskets, private readonly numItems: number, private readonly historyWeight = 0) {
    const counts = itemCounts(train, numItems);
    let max = 1;
    for (const v of counts) max = Math.max(max, v);
    this.pop = Float32Array.from(counts, (v) => (v / max) * 1e-6);
  }
  scoreBatch(test: TestBaskets, from: number, to: number, out: Float32Array): void {
    const n = this.numItems, w = this.w;
    for (let b = from; b < to; b++) {
      const base = (b - from) * n;
      out.set(this.pop, base);
      const add = (item: number, f: number): void => {
        const row = item * n;
        for (let j = 0; j < n; j++) out[base + j]! += f * w[row + j]!;
      };
      for (let x = test.offsets[b]!; x < test.offsets[b + 1]!; x++) add(test.items[x]!, 1);
      const h = this.history;
      if (h !== null && this.historyWeight > 0) for (let x = h.offsets[b]!; x < h.offsets[b + 1]!; x++) add(h.items[x]!, this.historyWeight);
    }
  }
}

type Tf = typeof import('@tensorflow/tfjs');
type T2 = import('@tensorflow/tfjs').Tensor2D;

/**
 * `spdInverse` for large n through tfjs matrix products (float32, the wasm backend's SIMD kernels): a recursive
 * 2 x 2 block inverse with the Schur complement S = A22 - A12^T A11^-1 A12 (positive definite when A is), down to
 * blocks of `leaf` rows inverted in float64 by `spdInverse`. About 1.3 n^3 multiply-adds, nearly all in matMul;
 * measured ~10x faster than the JS loops at n = 3,625 (README). Returns the inverse as float32, row-major.
 */
export async function spdInverseTf(tf: Tf, a: Float64Array, n: number, leaf = 384): Promise<Float32Array> {
  const inv = (m: T2): T2 => {
    const k = m.shape[0];
    if (k <= leaf) {
      const d = Float64Array.from(m.dataSync());
      return tf.tensor2d(Float32Array.from(spdInverse(d, k)), [k, k]);
    }
    const h = k >> 1;
    return tf.tidy(() => {
      const a11 = tf.slice(m, [0, 0], [h, h]), a12 = tf.slice(m, [0, h], [h, k - h]), a22 = tf.slice(m, [h, h], [k - h, k - h]);
      const i11 = inv(a11);
      const x = tf.matMul(i11, a12); // A11^-1 A12
      const si = inv(tf.sub(a22, tf.matMul(a12, x, true, false)));
      const y = tf.matMul(x, si); // A11^-1 A12 S^-1
      const tl = tf.add(i11, tf.matMul(y, x, false, true));
      const tr = tf.neg(y);
      return tf.concat([tf.concat([tl, tr], 1), tf.concat([tf.transpose(tr), si], 1)], 0) as T2;
    });
  };
  const m = tf.tensor2d(Float32Array.from(a), [n, n]);
  const r = inv(m);
  m.dispose();
  const out = (await r.data()) as Float32Array;
  r.dispose();
  return out;
}
