import type { FloatArray, ReduceKernels } from '@shoal/core';
import { allocFloat, type Dtype } from '../key-layout.js';
import type { Slot } from './slot.js';

/** Elements per chunk of an element-wise update (128 KiB of float32: the chunk's arrays stay in L2). */
export const UPDATE_CHUNK = 32768;

/**
 * The dense update of a key: fold the sum of `gs` (in the order given: rank order for a sync round) into the
 * weights with the key's updater, then copy the new values into `outs` (workers' staging buffers). An element-wise
 * updater runs chunk by chunk, so the sum, the update and the copies of one chunk stay in cache: one pass over
 * memory. The gradients are only read (they may be a worker's shared memory); the sum goes to a scratch buffer
 * this object keeps (one per dtype, grown to the largest chunk).
 */
export class DenseUpdate {
  private scratch32: Float32Array | null = null;
  private scratch64: Float64Array | null = null;

  constructor(private readonly kernels: ReduceKernels) {}

  apply(slot: Slot, gs: readonly FloatArray[], outs: readonly FloatArray[]): void {
    const w = slot.data;
    const n = w.length;
    const u = slot.updater;
    if (u.linear) {
      this.kernels.sumUpdate(u.linear.axpy, w, gs, outs, u.linear.axpy ? u.linear.factor : 1);
      return;
    }
    const names = u.elementwiseState;
    const chunk = names ? UPDATE_CHUNK : n;
    if (names) for (const name of names) slot.state[name] ??= allocFloat(slot.spec.dtype, n);
    const scratch = this.scratchFor(slot.spec.dtype, Math.min(n, chunk));
    for (let off = 0; off < n; off += chunk) {
      const end = Math.min(n, off + chunk);
      const m = scratch.subarray(0, end - off);
      m.set(gs[0]!.subarray(off, end));
      for (let r = 1; r < gs.length; r++) this.kernels.reduce('sum', m, gs[r]!.subarray(off, end));
      const wv = end - off === n ? w : w.subarray(off, end);
      let state = slot.state;
      if (names && wv !== w) {
        state = {};
        for (const name of names) state[name] = slot.state[name]!.subarray(off, end);
      }
      u({ key: slot.spec.key, weights: wv, grad: m, state, step: slot.version, kernels: this.kernels });
      for (const o of outs) o.set(wv, off);
    }
  }

  private scratchFor(dtype: Dtype | undefined, n: number): FloatArray {
    if (dtype === 'float64') {
      if (!this.scratch64 || this.scratch64.length < n) this.scratch64 = new Float64Array(Math.max(n, 1));
      return this.scratch64;
    }
    if (!this.scratch32 || this.scratch32.length < n) this.scratch32 = new Float32Array(Math.max(n, 1));
    return this.scratch32;
  }
}
