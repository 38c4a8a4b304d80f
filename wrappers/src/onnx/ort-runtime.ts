import type * as ortTypes from 'onnxruntime-node';
import { Errors } from '@shoal/core';
import { DT, type ArrayData } from './proto.js';
import type { ShapeProbe, TensorSpec } from './training-graph.js';

export type Ort = typeof ortTypes;

/** onnxruntime-node, loaded on first use (importing @shoal/wrappers must not load ORT's native library). */
export async function loadOrt(): Promise<Ort> {
  return import('onnxruntime-node');
}

const ORT_TYPES: Record<number, ortTypes.Tensor.Type> = { [DT.FLOAT]: 'float32', [DT.DOUBLE]: 'float64', [DT.INT32]: 'int32', [DT.INT64]: 'int64', [DT.BOOL]: 'bool', [DT.UINT8]: 'uint8' };

export function ortType(elemType: number, where: string): ortTypes.Tensor.Type {
  const t = ORT_TYPES[elemType];
  if (!t) throw Errors.data(where, `element type ${elemType} is not supported`);
  return t;
}

/** A zero-filled typed array for a tensor spec. */
export function zeros(spec: TensorSpec): ArrayData {
  const n = spec.dims.reduce((p, d) => p * d, 1);
  switch (spec.elemType) {
    case DT.FLOAT:
      return new Float32Array(n);
    case DT.DOUBLE:
      return new Float64Array(n);
    case DT.INT32:
      return new Int32Array(n);
    case DT.INT64:
      return new BigInt64Array(n);
    default:
      return new Uint8Array(n);
  }
}

/** Session options for training: all graph optimizations, `threads` intra-op threads (0 = ORT's default). */
export function sessionOptions(threads: number): ortTypes.InferenceSession.SessionOptions {
  return { graphOptimizationLevel: 'all', executionMode: 'sequential', logSeverityLevel: 3, ...(threads > 0 ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}) };
}

export async function createSession(ort: Ort, bytes: Uint8Array, options: ortTypes.InferenceSession.SessionOptions, what: string): Promise<ortTypes.InferenceSession> {
  try {
    return await ort.InferenceSession.create(bytes, options);
  } catch (e) {
    throw Errors.data(what, `onnxruntime could not load it: ${(e as Error).message}`);
  }
}

/** The shape probe of `buildTrainingGraph`: one run on zero feeds, every output's dims and small integer values. */
export function ortProbe(ort: Ort, options: ortTypes.InferenceSession.SessionOptions): ShapeProbe {
  return async (bytes, specs) => {
    const session = await createSession(ort, bytes, { ...options, graphOptimizationLevel: 'disabled' }, 'onnx training graph (shape probe)');
    try {
      const feeds: Record<string, ortTypes.Tensor> = {};
      for (const s of specs) feeds[s.name] = new ort.Tensor(ortType(s.elemType, s.name), zeros(s) as Float32Array, s.dims);
      const out = await session.run(feeds);
      const result = new Map<string, { dims: number[]; data?: ArrayData }>();
      for (const [name, t] of Object.entries(out)) {
        const small = (t.type === 'int64' || t.type === 'int32') && t.size <= 64;
        result.set(name, { dims: [...t.dims], ...(small ? { data: (t.data as ArrayData).slice() } : {}) });
      }
      return result;
    } finally {
      await session.release();
    }
  };
}
