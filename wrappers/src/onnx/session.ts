import type * as ortTypes from 'onnxruntime-node';
import type { DenseTensor, GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';

/** One named input: row-major values and dims; dim 0 is the batch dimension. */
export interface OnnxInput {
  data: Float32Array | Int32Array | BigInt64Array;
  dims: readonly number[];
}

/**
 * Inference with an ONNX model through onnxruntime-node (CPU provider by default), batch by batch.
 *
 * Training: onnxruntime-node runs inference only. ORT's training API (`onnxruntime-training`, training artifacts
 * from `onnxruntime.training.artifacts`) ships for web and mobile builds, not in onnxruntime-node; to train
 * data-parallel from ONNX-land, compute gradients yourself and average them with `averageGradients`.
 */
export class OnnxModel {
  private constructor(
    readonly session: ortTypes.InferenceSession,
    private readonly ort: typeof ortTypes,
    readonly source: string,
  ) {}

  /** Load a model from a file path or bytes. Throws ERR_DATA naming the source if ORT rejects it. */
  static async load(model: string | Uint8Array, options: ortTypes.InferenceSession.SessionOptions = {}): Promise<OnnxModel> {
    // Loaded on first use: importing @shoal/wrappers must not load ORT's native library.
    const ort = await import('onnxruntime-node');
    const source = typeof model === 'string' ? model : `<${model.byteLength} bytes>`;
    try {
      const session = typeof model === 'string' ? await ort.InferenceSession.create(model, options) : await ort.InferenceSession.create(model, options);
      return new OnnxModel(session, ort, source);
    } catch (e) {
      throw Errors.data(`onnx model ${source}`, `onnxruntime could not load it: ${(e as Error).message}`, {});
    }
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /**
   * Run the model over all rows of `inputs`, `batchSize` rows per session run, and concatenate each output
   * along dim 0. Every input must have the same number of rows. Returns new arrays owned by the caller.
   */
  async predict(inputs: Record<string, OnnxInput>, batchSize = 1024): Promise<Record<string, OnnxInput>> {
    const names = Object.keys(inputs);
    for (const n of this.inputNames) if (!(n in inputs)) throw Errors.invalidArg('inputs', `is missing model input ${JSON.stringify(n)} (model ${this.source} takes ${this.inputNames.join(', ')})`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw Errors.invalidArg('batchSize', `must be a positive integer, got ${batchSize}`);
    const rows = inputs[names[0]!]!.dims[0]!;
    for (const n of names) {
      const inp = inputs[n]!;
      const size = inp.dims.reduce((p, d) => p * d, 1);
      if (inp.dims[0] !== rows) throw Errors.invalidArg(`inputs.${n}`, `has ${inp.dims[0]} rows, ${names[0]} has ${rows}`);
      if (inp.data.length !== size) throw Errors.invalidArg(`inputs.${n}`, `holds ${inp.data.length} values for dims [${inp.dims}] (${size})`);
    }
    const parts: Record<string, { chunks: OnnxInput['data'][]; rowDims: number[]; type: string }> = {};
    for (let start = 0; start < rows; start += batchSize) {
      const n = Math.min(batchSize, rows - start);
      const feeds: Record<string, ortTypes.Tensor> = {};
      for (const name of names) {
        const inp = inputs[name]!;
        const row = inp.dims.slice(1).reduce((p, d) => p * d, 1);
        const data = inp.data.subarray(start * row, (start + n) * row);
        const type = data instanceof Float32Array ? 'float32' : data instanceof Int32Array ? 'int32' : 'int64';
        feeds[name] = new this.ort.Tensor(type, data, [n, ...inp.dims.slice(1)]);
      }
      const out = await this.session.run(feeds);
      for (const [name, t] of Object.entries(out)) {
        const p = (parts[name] ??= { chunks: [], rowDims: t.dims.slice(1) as number[], type: t.type });
        p.chunks.push((t.data as OnnxInput['data']).slice());
      }
    }
    const result: Record<string, OnnxInput> = {};
    for (const [name, p] of Object.entries(parts)) {
      const total = p.chunks.reduce((s, c) => s + c.length, 0);
      const data = p.type === 'float32' ? new Float32Array(total) : p.type === 'int32' ? new Int32Array(total) : new BigInt64Array(total);
      let off = 0;
      for (const c of p.chunks) {
        (data as Float32Array).set(c as Float32Array, off);
        off += c.length;
      }
      result[name] = { data, dims: [rows, ...p.rowDims] };
    }
    return result;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Average user-computed gradients over all ranks in place (collective): each entry becomes the mean of that
 * name's array over every rank. Names are sent sorted, so every rank must pass the same names and lengths.
 */
export async function averageGradients(sync: GradientSync, grads: Record<string, Float32Array>): Promise<void> {
  const tensors: DenseTensor[] = Object.keys(grads)
    .sort()
    .map((name) => ({ name, shape: [grads[name]!.length], data: grads[name]! }));
  await sync.allreduceMean(tensors);
}
