import { Errors, ShoalError } from '@shoal/core';
import { fnv1a32 } from '@shoal/core/util';
import type { DenseTensor } from '../api.js';

/** Default fusion threshold: tensors are packed into buffers of at most this many bytes. */
export const DEFAULT_FUSION_BYTES = 64 << 20;

/** One collective's worth of tensors: either one tensor reduced in place, or several packed into the fusion buffer. */
export interface FusionBatch {
  /** Indices into the tensor list, in order. */
  readonly tensors: readonly number[];
  /** Total elements. */
  readonly length: number;
  /** True when the batch is packed into the fusion buffer (more than one tensor). */
  readonly packed: boolean;
}

/** The agreed description of a tensor list: what ranks compare before fusing. */
export interface TensorListSignature {
  /** Two independent 32-bit FNV-1a hashes of the descriptor text (exact in a float64 collective). */
  readonly hash: readonly [number, number];
  /** One line per tensor, `name shape=[..] float32 len=N`, exchanged only when hashes differ. */
  readonly lines: readonly string[];
}

/** Describe `tensors` (name, shape, dtype, data length) for the cross-rank agreement check. */
export function signatureOf(tensors: readonly DenseTensor[]): TensorListSignature {
  const lines = tensors.map((t) => `${t.name} shape=[${t.shape.join(',')}] float32 len=${t.data.length}`);
  const text = `${lines.length}\n${lines.join('\n')}`;
  return { hash: [fnv1a32(text), fnv1a32(text, 0x2545f491)], lines };
}

/**
 * Given every rank's descriptor lines (index = rank), the error that names the first tensor the ranks disagree
 * on. Deterministic, so every rank that holds the same lists raises the same error.
 */
export function describeMismatch(what: string, all: readonly (readonly string[])[]): ShoalError {
  const ref = all[0]!;
  for (let r = 1; r < all.length; r++) {
    const l = all[r]!;
    const n = Math.max(ref.length, l.length);
    for (let i = 0; i < n; i++) {
      if (ref[i] === l[i]) continue;
      const name = (ref[i] ?? l[i] ?? '').split(' ')[0];
      const detail =
        ref[i] === undefined
          ? `rank ${r} has ${l.length} tensors but rank 0 has ${ref.length}; extra tensor #${i} "${name}" on rank ${r}`
          : l[i] === undefined
            ? `rank ${r} has ${l.length} tensors but rank 0 has ${ref.length}; tensor #${i} "${name}" missing on rank ${r}`
            : `tensor #${i} "${name}": rank 0 has "${ref[i]}", rank ${r} has "${l[i]}"`;
      return Errors.mismatch(what, detail, { tensor: name, index: i, rank: r });
    }
  }
  return Errors.mismatch(what, 'descriptor hashes differ but the lists are equal (hash of an unprintable name?)', {});
}

/** Check each tensor's data length against its shape (call after the ranks agreed on the list). */
export function checkShapes(tensors: readonly DenseTensor[]): void {
  for (const t of tensors) {
    const want = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== want) throw Errors.invalidArg(`tensor "${t.name}"`, `has ${t.data.length} values but shape [${t.shape.join(',')}] needs ${want}`);
  }
}

/**
 * Tensor fusion (Horovod's fusion buffer, fused by size since GradientSync gets all gradients at once): plans
 * batches of consecutive tensors of at most `thresholdBytes` and owns one persistent float32 fusion buffer
 * (grown on demand up to the threshold, reused across calls). A tensor larger than the threshold is its own
 * batch and is reduced in place without a copy.
 */
export class TensorFusion {
  readonly thresholdBytes: number;
  private buffer = new Float32Array(0);
  private cachedKey = '';
  private cachedPlan: FusionBatch[] = [];

  constructor(thresholdBytes = DEFAULT_FUSION_BYTES) {
    if (!(Number.isInteger(thresholdBytes) && thresholdBytes >= 4)) throw Errors.invalidArg('fusionThresholdBytes', `must be an integer >= 4, got ${thresholdBytes}`);
    this.thresholdBytes = thresholdBytes;
  }

  /** Batches for `tensors`, cached for a repeated list (keyed by the signature's hash). */
  plan(tensors: readonly DenseTensor[], sig: TensorListSignature): FusionBatch[] {
    const key = `${sig.hash[0]}:${sig.hash[1]}:${tensors.length}`;
    if (key === this.cachedKey) return this.cachedPlan;
    const maxElems = Math.floor(this.thresholdBytes / 4);
    const out: FusionBatch[] = [];
    let cur: number[] = [];
    let len = 0;
    const flush = () => {
      if (cur.length) out.push({ tensors: cur, length: len, packed: cur.length > 1 });
      cur = [];
      len = 0;
    };
    tensors.forEach((t, i) => {
      const n = t.data.length;
      if (len + n > maxElems) flush();
      cur.push(i);
      len += n;
    });
    flush();
    this.cachedKey = key;
    this.cachedPlan = out;
    return out;
  }

  /**
   * When a batch's tensors already lie back to back in one buffer, in order (e.g. views into one flat gradient
   * buffer, as the tfjs gradient bridge hands them over), the view spanning them: the batch is reduced in place
   * with no pack and unpack copies. Otherwise null.
   */
  contiguous(tensors: readonly DenseTensor[], b: FusionBatch): Float32Array | null {
    const first = tensors[b.tensors[0]!]!.data;
    let end = first.byteOffset;
    for (const i of b.tensors) {
      const d = tensors[i]!.data;
      if (d.buffer !== first.buffer || d.byteOffset !== end) return null;
      end += d.byteLength;
    }
    return new Float32Array(first.buffer, first.byteOffset, b.length);
  }

  /** Copy a batch's tensors into the fusion buffer; returns the view to reduce (owned by this object). */
  pack(tensors: readonly DenseTensor[], b: FusionBatch): Float32Array {
    if (this.buffer.length < b.length) this.buffer = new Float32Array(b.length);
    const view = this.buffer.subarray(0, b.length);
    let o = 0;
    for (const i of b.tensors) {
      const d = tensors[i]!.data;
      view.set(d, o);
      o += d.length;
    }
    return view;
  }

  /** Copy the reduced values back into the tensors of the batch. */
  unpack(tensors: readonly DenseTensor[], b: FusionBatch, view: Float32Array): void {
    let o = 0;
    for (const i of b.tensors) {
      const d = tensors[i]!.data;
      d.set(view.subarray(o, o + d.length));
      o += d.length;
    }
  }
}
