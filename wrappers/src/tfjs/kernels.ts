import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';

type Tf = typeof tfjs;
type TensorInfo = tfjs.TensorInfo;
type KernelConfig = tfjs.KernelConfig;

/** What `registerShoalKernels` changed, and how to undo it (tests compare against the stock kernels). */
export interface ShoalKernels {
  /** `Kernel@backend` names shoal registered, e.g. `BatchMatMul@wasm`. */
  readonly registered: readonly string[];
  /** Put the stock kernels back (and drop the ones that had no stock version). Idempotent. */
  restore(): void;
}

/** The part of tfjs-backend-wasm's `BackendWasm` these kernels use. */
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tfjs.DataType): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: object): boolean;
}

type KernelArgs = { inputs: Record<string, TensorInfo>; backend: unknown; attrs?: Record<string, unknown> };
type Kernel = (args: KernelArgs) => TensorInfo | TensorInfo[];

/** Marks kernel functions shoal registered, so registering twice does not wrap a wrapper. */
const SHOAL = Symbol.for('shoal.kernel');

/**
 * Register shoal's fixes for two stock tfjs kernel problems on the backend currently active (no-op on other
 * backends). Call after the backend is initialised (`setupTfjs` does). Never done at import time.
 *
 * 1. wasm `BatchMatMul` / `_FusedMatMul` with `transposeA`/`transposeB` take a strided path that is 6-10x slower
 *    than the plain one; every backward pass of a dense layer hits it (dW = xᵀ·dy, dx = dy·Wᵀ). The fix
 *    transposes the operand with the wasm `Transpose` kernel first and then runs the stock kernel untransposed.
 * 2. wasm has no `UnsortedSegmentSum`, the gradient of `tf.gather` (every embedding lookup). The fix is a
 *    scatter-add over the wasm heap: `out[ids[i], :] += x[i, :]`; ids outside `[0, numSegments)` are dropped
 *    (TensorFlow's semantics).
 * 3. wasm `GatherV2` (the forward pass of every embedding lookup) goes through a generic strided N-d loop:
 *    0.76 ms for 1024 rows of a 4000 x 32 table, 1.5 ms of a 7 ms recommender step. The fix copies whole rows
 *    on the wasm heap (`copyWithin`, no allocation) for the embedding case (axis 0, batchDims 0, 4-byte
 *    dtypes) and hands every other case to the stock kernel. An index outside the table is ERR_INVALID_ARG
 *    naming the index and its position (the stock kernel asserts too).
 * 4. wasm `Slice` first copies the WHOLE input out of the wasm heap (`readSync`), then slices the copy: 6.1 ms to
 *    take 256 rows of a 5888 x 784 batch source, and part of every backward pass through a concatenation. The fix
 *    copies only the slice's contiguous runs within the heap (numeric and bool dtypes; strings go to the stock
 *    kernel).
 * 5. wasm `BatchMatMul` / `_FusedMatMul` cache their XNNPACK operator (the packed weights `b` and its shape) under
 *    the data id of `b`, but a reshape shares its input's data id. A second product whose `b` is the same buffer in
 *    another shape reuses the operator built for the first: wrong values, or "memory access out of bounds" when the
 *    new `a` is smaller than the stale shape expects (tfjs 4.22.0; `kernels.test.ts` shows it on the stock kernel).
 *    A backward pass hits it whenever an upstream gradient `dy` is the `b` of two products in different shapes,
 *    e.g. `[B*n, 4] x [4, 1]` under a reshape to `[B, n]`: dW = aᵀ·dy sees dy as `[B*n, 1]`, the next layer's
 *    dW as `[B, n]`. The fix remembers the shape each data id was used as `b` with, and hands the stock kernel a
 *    copy of `b` (a fresh data id) when the shape differs; the common case (one shape per buffer) copies nothing.
 *
 * Returns a handle whose `restore()` reinstates the stock kernels.
 */
export function registerShoalKernels(tf: Tf): ShoalKernels {
  const backendName = tf.getBackend();
  const undo: Array<() => void> = [];
  const registered: string[] = [];
  const replace = (config: KernelConfig) => {
    const stock = tf.getKernel(config.kernelName, config.backendName);
    (config.kernelFunc as unknown as Record<symbol, boolean>)[SHOAL] = true;
    if (stock) tf.unregisterKernel(config.kernelName, config.backendName);
    tf.registerKernel(config);
    registered.push(`${config.kernelName}@${config.backendName}`);
    undo.push(() => {
      tf.unregisterKernel(config.kernelName, config.backendName);
      if (stock) tf.registerKernel(stock);
    });
  };
  if (backendName === 'wasm') {
    const transpose = tf.getKernel('Transpose', 'wasm');
    if (!transpose) throw Errors.state('tfjs wasm backend has no Transpose kernel; cannot install the matmul fix');
    // One record per backend for both kernels: they share the operator cache.
    const weightShapes = new WeakMap<object, string>();
    for (const name of ['BatchMatMul', '_FusedMatMul']) {
      const stock = tf.getKernel(name, 'wasm');
      // Already shoal's (a second setupTfjs in this process): leave it, the first handle restores it.
      if (stock && !(stock.kernelFunc as unknown as Record<symbol, boolean>)[SHOAL]) replace(untransposedMatMul(stock, transpose.kernelFunc as unknown as Kernel, weightShapes));
    }
    if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) replace(wasmUnsortedSegmentSum());
    const gather = tf.getKernel('GatherV2', 'wasm');
    if (gather && !(gather.kernelFunc as unknown as Record<symbol, boolean>)[SHOAL]) replace(wasmGatherRows(gather));
    const slice = tf.getKernel('Slice', 'wasm');
    if (slice && !(slice.kernelFunc as unknown as Record<symbol, boolean>)[SHOAL]) replace(wasmSlice(tf, slice));
  }
  let restored = false;
  return {
    registered,
    restore() {
      if (restored) return;
      restored = true;
      for (const u of undo.reverse()) u();
    },
  };
}

/** Swap the last two axes of a rank-r tensor. */
function lastTwoSwapped(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

/** A copy of `x` under a fresh data id (float32: the only dtype the matmul kernels take). */
function heapCopy(backend: WasmBackendLike, x: TensorInfo): TensorInfo {
  // Allocate first: allocation may grow the wasm heap and detach earlier views.
  const out = backend.makeOutput([...x.shape], x.dtype);
  (backend.typedArrayFromHeap(out) as Float32Array).set(backend.typedArrayFromHeap(x) as Float32Array);
  return out;
}

/**
 * Fixes 1 and 5 of `registerShoalKernels`: transposed operands are transposed first, and a `b` whose buffer was
 * already the weights of a product in another shape is copied (`weightShapes`: data id -> the shape it was first
 * used in as `b`).
 */
function untransposedMatMul(stock: KernelConfig, transposeKernel: Kernel, weightShapes: WeakMap<object, string>): KernelConfig {
  const stockFunc = stock.kernelFunc as unknown as Kernel;
  const kernelFunc: Kernel = (args) => {
    const attrs = args.attrs ?? {};
    const ta = Boolean(attrs.transposeA);
    const tb = Boolean(attrs.transposeB);
    const backend = args.backend as WasmBackendLike;
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const temps: TensorInfo[] = [];
    const flip = (x: TensorInfo) => {
      const t = transposeKernel({ inputs: { x }, backend, attrs: { perm: lastTwoSwapped(x.shape.length) } }) as TensorInfo;
      temps.push(t);
      return t;
    };
    try {
      let bIn = tb ? flip(b) : b;
      const shape = bIn.shape.join(',');
      const seen = weightShapes.get(bIn.dataId);
      if (seen === undefined) weightShapes.set(bIn.dataId, shape);
      else if (seen !== shape) temps.push((bIn = heapCopy(backend, bIn)));
      if (!ta && !tb && bIn === b) return stockFunc(args);
      return stockFunc({
        inputs: { ...args.inputs, a: ta ? flip(a) : a, b: bIn },
        backend,
        attrs: { ...attrs, transposeA: false, transposeB: false },
      });
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  };
  return {
    kernelName: stock.kernelName,
    backendName: stock.backendName,
    ...(stock.setupFunc ? { setupFunc: stock.setupFunc } : {}),
    kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'],
  };
}

function wasmGatherRows(stock: KernelConfig): KernelConfig {
  const stockFunc = stock.kernelFunc as unknown as Kernel;
  const kernelFunc: Kernel = (args) => {
    const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
    const rank = x.shape.length;
    const axis = Number(args.attrs?.axis ?? 0);
    const batchDims = Number(args.attrs?.batchDims ?? 0);
    const rowsCase = rank >= 1 && (axis === 0 || axis === -rank) && batchDims === 0;
    if (!rowsCase || (x.dtype !== 'float32' && x.dtype !== 'int32') || indices.dtype !== 'int32') return stockFunc(args);
    const backend = args.backend as WasmBackendLike;
    const numRows = x.shape[0]!;
    const inner = x.shape.slice(1).reduce((p, d) => p * d, 1);
    // Allocate first: allocation may grow the wasm heap and detach earlier views.
    const out = backend.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    const o = backend.typedArrayFromHeap(out) as Float32Array | Int32Array;
    const xs = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
    const ids = backend.typedArrayFromHeap(indices) as Int32Array;
    // x and out live on the same heap: copy rows within it, in 4-byte units.
    const heap = new Int32Array(o.buffer);
    const oBase = o.byteOffset >>> 2;
    const xBase = xs.byteOffset >>> 2;
    for (let i = 0; i < ids.length; i++) {
      const r = ids[i]!;
      if (r < 0 || r >= numRows) {
        backend.disposeData(out.dataId);
        throw Errors.invalidArg('GatherV2 indices', `index ${r} at position ${i} is not in [0, ${numRows - 1}] (axis 0 of shape [${x.shape}])`);
      }
      const src = xBase + r * inner;
      heap.copyWithin(oBase + i * inner, src, src + inner);
    }
    return out;
  };
  return { kernelName: 'GatherV2', backendName: 'wasm', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] };
}

type HeapArray = Float32Array | Int32Array | Uint8Array;

function wasmSlice(tf: Tf, stock: KernelConfig): KernelConfig {
  const stockFunc = stock.kernelFunc as unknown as Kernel;
  const kernelFunc: Kernel = (args) => {
    const { x } = args.inputs as { x: TensorInfo };
    if (x.dtype !== 'float32' && x.dtype !== 'int32' && x.dtype !== 'bool') return stockFunc(args);
    const backend = args.backend as WasmBackendLike;
    const [begin, size] = tf.slice_util.parseSliceParams(x as unknown as tfjs.Tensor, args.attrs?.begin as number[], args.attrs?.size as number[]);
    const shape = x.shape;
    const rank = shape.length;
    // Allocate first: allocation may grow the wasm heap and detach earlier views.
    const out = backend.makeOutput(size, x.dtype);
    const total = size.reduce((p, d) => p * d, 1);
    if (total === 0) return out;
    const o = backend.typedArrayFromHeap(out) as HeapArray;
    const xs = backend.typedArrayFromHeap(x) as HeapArray;
    const heap = new (o.constructor as new (b: ArrayBufferLike) => HeapArray)(o.buffer);
    const es = o.BYTES_PER_ELEMENT;
    const xBase = xs.byteOffset / es;
    let dst = o.byteOffset / es;
    // Trailing dims taken whole merge into one contiguous run; `k` is the last dim that is cut.
    let k = rank - 1;
    let run = 1;
    while (k >= 0 && begin[k] === 0 && size[k] === shape[k]) run *= shape[k--]!;
    if (k < 0) {
      heap.copyWithin(dst, xBase, xBase + run);
      return out;
    }
    const strides = tf.util.computeStrides(shape as number[]);
    const stride = (d: number) => (d === rank - 1 ? 1 : strides[d]!);
    run *= size[k]!;
    // Odometer over dims 0..k-1; each position copies one run starting at begin[k] of dim k.
    const idx = begin.slice(0, k);
    const runs = total / run;
    for (let r = 0; r < runs; r++) {
      let src = xBase + begin[k]! * stride(k);
      for (let d = 0; d < k; d++) src += idx[d]! * stride(d);
      heap.copyWithin(dst, src, src + run);
      dst += run;
      for (let d = k - 1; d >= 0; d--) {
        if (++idx[d]! < begin[d]! + size[d]!) break;
        idx[d] = begin[d]!;
      }
    }
    return out;
  };
  return { kernelName: 'Slice', backendName: 'wasm', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] };
}

function wasmUnsortedSegmentSum(): KernelConfig {
  const kernelFunc: Kernel = ({ inputs, backend: b, attrs }) => {
    const backend = b as WasmBackendLike;
    const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
    const numSegments = Number(attrs?.numSegments);
    if (!Number.isInteger(numSegments) || numSegments < 0) throw Errors.invalidArg('UnsortedSegmentSum numSegments', `must be a non-negative integer, got ${attrs?.numSegments}`);
    if (x.dtype !== 'float32' && x.dtype !== 'int32') throw Errors.invalidArg('UnsortedSegmentSum x', `must be float32 or int32, got ${x.dtype}`);
    const idRank = segmentIds.shape.length;
    for (let i = 0; i < idRank; i++) {
      if (x.shape[i] !== segmentIds.shape[i]) {
        throw Errors.invalidArg('UnsortedSegmentSum segmentIds', `shape [${segmentIds.shape}] must be a prefix of x's shape [${x.shape}]`);
      }
    }
    const rowShape = x.shape.slice(idRank);
    const inner = rowShape.reduce((p, d) => p * d, 1);
    // Allocate first: allocation may grow the wasm heap and detach earlier views.
    const out = backend.makeOutput([numSegments, ...rowShape], x.dtype);
    const o = backend.typedArrayFromHeap(out);
    const xs = backend.typedArrayFromHeap(x);
    const ids = backend.typedArrayFromHeap(segmentIds);
    o.fill(0);
    for (let i = 0; i < ids.length; i++) {
      const s = ids[i]!;
      if (s < 0 || s >= numSegments) continue;
      const src = i * inner;
      const dst = s * inner;
      for (let j = 0; j < inner; j++) o[dst + j]! += xs[src + j]!;
    }
    return out;
  };
  return { kernelName: 'UnsortedSegmentSum', backendName: 'wasm', kernelFunc: kernelFunc as unknown as KernelConfig['kernelFunc'] };
}
