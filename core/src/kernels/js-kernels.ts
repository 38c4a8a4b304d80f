import type { FloatArray, NumericArray, OptimStep, ReduceKernels, ReduceOp, RowOp } from './kernel-types.js';

/** The checks the native kernel makes (same messages), so both implementations refuse the same input. */
function checkStep(s: OptimStep): void {
  const { w, g } = s;
  const same = (a: FloatArray | null | undefined) => !a || (a.constructor === w.constructor && a.length === w.length);
  const states = s.kind === 'adam' ? [s.m, s.v] : s.kind === 'adagrad' ? [s.history] : [s.momentum];
  if (g.constructor !== w.constructor || !states.every(same)) throw new RangeError("grad and state must have the weights' type (state also its length)");
  if ((s.kind === 'adam' && (!s.m || !s.v)) || (s.kind === 'adagrad' && !s.history)) throw new RangeError('missing optimizer state');
  if (s.kind === 'adam' && s.lrRows && (!s.rows || s.lrRows.length !== s.rows.length)) throw new RangeError('lrRows must be a Float64Array, one per row');
  const params = s.kind === 'adam' ? [s.lr, s.beta1, s.beta2, s.eps, s.wd, s.rescale] : s.kind === 'adagrad' ? [s.lr, s.eps, s.wd, s.rescale] : [s.lr, s.mu, s.wd, s.rescale];
  if (!params.every((x) => typeof x === 'number')) throw new RangeError('optimizer parameters must be numbers');
}

/** Call `fn(wOff, gOff, len, i)` for each run of an optimizer step: the whole array, or row i of `rows`. */
function forRuns(s: OptimStep, fn: (wo: number, go: number, n: number, i: number) => void): void {
  checkStep(s);
  if (!s.rows) {
    if (s.g.length !== s.w.length) throw new RangeError('grad must hold one run per row (or match the weights)');
    return fn(0, 0, s.w.length, 0);
  }
  const rs = s.rowSize ?? 0;
  const nr = rs > 0 ? s.w.length / rs : 0;
  if (!(rs > 0) || s.g.length !== s.rows.length * rs) throw new RangeError('grad must hold one run per row (or match the weights)');
  for (let i = 0; i < s.rows.length; i++) {
    const r = s.rows[i]!;
    if (r < 0 || r >= nr) throw new RangeError('row id outside the weights');
  }
  for (let i = 0; i < s.rows.length; i++) fn(s.rows[i]! * rs, i * rs, rs, i);
}

function optimize(s: OptimStep): void {
  const { w, g } = s;
  if (s.kind === 'adam') {
    const { m, v, beta1: b1, beta2: b2, eps, wd, rescale: rs, lr, lrRows } = s;
    forRuns(s, (wo, go, n, r) => {
      const lrT = lrRows ? lrRows[r]! : lr;
      for (let i = 0; i < n; i++) {
        const j = wo + i;
        const gi = rs * g[go + i]! + wd * w[j]!;
        const mj = b1 * m[j]! + (1 - b1) * gi;
        const vj = b2 * v[j]! + (1 - b2) * gi * gi;
        m[j] = mj;
        v[j] = vj;
        w[j]! -= (lrT * mj) / (Math.sqrt(vj) + eps);
      }
    });
  } else if (s.kind === 'adagrad') {
    const { history: h, eps, wd, rescale: rs, lr } = s;
    forRuns(s, (wo, go, n) => {
      for (let i = 0; i < n; i++) {
        const j = wo + i;
        const gi = rs * g[go + i]! + wd * w[j]!;
        const hj = h[j]! + gi * gi;
        h[j] = hj;
        w[j]! -= (lr * gi) / (Math.sqrt(hj) + eps);
      }
    });
  } else {
    const { momentum: m, mu, wd, rescale: rs, lr } = s;
    forRuns(s, (wo, go, n) => {
      for (let i = 0; i < n; i++) {
        const j = wo + i;
        if (m) {
          const u = mu * m[j]! - lr * (rs * g[go + i]! + wd * w[j]!);
          m[j] = u;
          w[j]! += u;
        } else w[j]! -= lr * (rs * g[go + i]! + wd * w[j]!);
      }
    });
  }
}

function rows(op: RowOp, dst: FloatArray, src: FloatArray, ids: Int32Array, rs: number, touched?: Uint8Array, fresh?: Int32Array): number {
  if (dst.constructor !== src.constructor) throw new RangeError('dst and src must be float arrays of one type');
  if (!(rs > 0)) throw new RangeError('rows must be an Int32Array and rowSize positive');
  const packedSrc = op === 'merge' || op === 'scatter';
  if ((packedSrc ? src.length : dst.length) !== ids.length * rs) throw new RangeError('the packed side must hold rows.length * rowSize values');
  if (op === 'merge' && (!touched || !fresh || touched.length * rs !== dst.length || fresh.length < ids.length)) {
    throw new RangeError('merge needs touched (Uint8Array, one per row of dst) and fresh (Int32Array, >= rows.length)');
  }
  const table = packedSrc ? dst : src;
  const nr = table.length / rs;
  for (let i = 0; i < ids.length; i++) if (ids[i]! < 0 || ids[i]! >= nr) throw new RangeError('row id outside the table');
  if (op === 'scatter') {
    for (let i = 0; i < ids.length; i++) dst.set(src.subarray(i * rs, (i + 1) * rs), ids[i]! * rs);
    return 0;
  }
  if (op !== 'merge') {
    for (let i = 0; i < ids.length; i++) {
      const r = ids[i]! * rs;
      dst.set(src.subarray(r, r + rs), i * rs);
      if (op === 'take') src.fill(0, r, r + rs);
    }
    return 0;
  }
  let count = 0;
  for (let i = 0; i < ids.length; i++) {
    const r = ids[i]!;
    const base = r * rs;
    if (!touched![r]) {
      touched![r] = 1;
      fresh![count++] = r;
      dst.set(src.subarray(i * rs, (i + 1) * rs), base);
    } else {
      for (let j = 0; j < rs; j++) dst[base + j]! += src[i * rs + j]!;
    }
  }
  return count;
}

/**
 * Plain-JS reduction kernels: the fallback when the native addon is not built (about 2 GB/s for a float32 sum
 * on this machine versus 6+ GB/s native). Same contract as the addon; fp16 conversion is bit-exact
 * (round to nearest even) through a Float32Array/Uint32Array alias.
 */
export function jsKernels(): ReduceKernels {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const f2h = (x: number): number => {
    f[0] = x;
    const bits = u[0]!;
    const sign = (bits >>> 16) & 0x8000;
    const ax = bits & 0x7fffffff;
    if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >>> 13) & 0x3ff) : 0);
    if (ax >= 0x477ff000) return sign | 0x7c00;
    if (ax < 0x38800000) {
      u[0] = ax;
      const m = f[0]! * 16777216;
      // round half to even
      let r = Math.round(m);
      if (r - m === 0.5 && (r & 1) === 1) r -= 1;
      return sign | r;
    }
    return sign | (((ax + 0xc8000fff + ((ax >>> 13) & 1)) >>> 13) & 0xffff);
  };
  const h2fSlow = (h: number): number => {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) return s * m * 2 ** -24;
    if (e === 31) return m ? NaN : s * Infinity;
    return s * (1 + m / 1024) * 2 ** (e - 15);
  };
  // half -> float through a 64K-entry table (256 KiB, built on first use by this kernel object)
  let table: Float32Array | undefined;
  const h2fTable = (): Float32Array => {
    if (!table) {
      table = new Float32Array(65536);
      for (let i = 0; i < 65536; i++) table[i] = h2fSlow(i);
    }
    return table;
  };
  const reduce = (op: ReduceOp, d: NumericArray, s: NumericArray): void => {
    const n = d.length;
    if (s.length !== n) throw new TypeError('dst and src must have the same length');
    if (op === 'sum') {
      if (d instanceof Int32Array) for (let i = 0; i < n; i++) d[i] = (d[i]! + s[i]!) | 0;
      else for (let i = 0; i < n; i++) d[i] += s[i]!;
    } else if (op === 'min') {
      for (let i = 0; i < n; i++) if (s[i]! < d[i]!) d[i] = s[i]!;
    } else for (let i = 0; i < n; i++) if (s[i]! > d[i]!) d[i] = s[i]!;
  };
  return {
    impl: 'js',
    reduce,
    reduceF16(op, d, s) {
      const n = d.length;
      if (s.length !== n) throw new TypeError('dst and src must have the same length');
      const t = h2fTable();
      if (op === 'sum') {
        for (let i = 0; i < n; i++) d[i] += t[s[i]!]!;
        return;
      }
      for (let i = 0; i < n; i++) {
        const b = t[s[i]!]!;
        d[i] = op === 'min' ? (b < d[i]! ? b : d[i]!) : b > d[i]! ? b : d[i]!;
      }
    },
    f32ToF16(d, s) {
      for (let i = 0; i < s.length; i++) d[i] = f2h(s[i]!);
    },
    f16ToF32(d, s) {
      const t = h2fTable();
      for (let i = 0; i < s.length; i++) d[i] = t[s[i]!]!;
    },
    scale(d, factor) {
      const k = d instanceof Float32Array ? Math.fround(factor) : factor;
      for (let i = 0; i < d.length; i++) d[i] *= k;
    },
    sumUpdate(axpy, w, grads, outs, factor) {
      const n = w.length;
      for (const a of [...grads, ...outs]) if (a.length !== n || a.constructor !== w.constructor) throw new TypeError('sumUpdate: every gradient and output must match the weights\' type and length');
      if (grads.length < 1) throw new RangeError('sumUpdate needs at least one gradient');
      // the same steps as reduce/scale/reduce over whole arrays: each result rounds to the array's type
      const tmp = w instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
      tmp.set(grads[0]!);
      for (let r = 1; r < grads.length; r++) {
        const g = grads[r]!;
        for (let i = 0; i < n; i++) tmp[i] += g[i]!;
      }
      if (axpy) {
        const k = w instanceof Float32Array ? Math.fround(factor) : factor;
        for (let i = 0; i < n; i++) tmp[i] *= k;
        for (let i = 0; i < n; i++) w[i] += tmp[i]!;
      } else w.set(tmp);
      for (const o of outs) o.set(w);
    },
    optimize,
    rows,
    nonZeroRows(a, rs, out) {
      if (!(rs > 0) || a.length % rs !== 0 || out.length < a.length / rs) throw new RangeError('nonZeroRows(a: float array of whole rows, rowSize > 0, out: Int32Array of >= rows)');
      let count = 0;
      for (let r = 0, rows = a.length / rs; r < rows; r++) {
        for (let j = r * rs, e = j + rs; j < e; j++) {
          if (a[j] !== 0) {
            out[count++] = r;
            break;
          }
        }
      }
      return count;
    },
    firstNonFinite(a) {
      if (a instanceof Int32Array) return -1;
      for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
      return -1;
    },
  };
}
