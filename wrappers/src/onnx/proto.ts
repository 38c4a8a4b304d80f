import { createRequire } from 'node:module';
import type { onnx as OnnxNs } from 'onnx-proto';
import { Errors } from '@shoal/core';

/**
 * ONNX protobuf I/O through `onnx-proto` (protobufjs static code generated from onnx.proto): decode and encode
 * ModelProto, plus the few constructors the training-graph builder needs (nodes, attributes, tensors, value
 * infos). onnx-proto is CommonJS; it is loaded with `createRequire` so this ES module can import it.
 */
const onnx = (createRequire(import.meta.url)('onnx-proto') as { onnx: typeof OnnxNs }).onnx;
export { onnx };
export type ModelProto = OnnxNs.ModelProto;
export type GraphProto = OnnxNs.GraphProto;
export type NodeProto = OnnxNs.INodeProto;
export type TensorProto = OnnxNs.ITensorProto;
export type ValueInfoProto = OnnxNs.IValueInfoProto;

/** ONNX TensorProto.DataType values shoal uses. */
export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, BOOL: 9, DOUBLE: 11 } as const;

export function decodeModel(bytes: Uint8Array, source: string): ModelProto {
  try {
    const m = onnx.ModelProto.decode(bytes);
    if (!m.graph) throw new Error('no graph');
    return m;
  } catch (e) {
    throw Errors.data(`onnx model ${source}`, `is not an ONNX ModelProto: ${(e as Error).message}`);
  }
}

export function encodeModel(model: OnnxNs.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
}

export type AttrValue = number | number[] | string | { float: number } | { floats: number[] } | { tensor: TensorProto };

/** An AttributeProto from a plain value: integers -> INT(S), `{float}` -> FLOAT, strings -> STRING. */
export function attr(name: string, v: AttrValue): OnnxNs.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  return { name, type: T.TENSOR, t: v.tensor };
}

export function makeNode(opType: string, inputs: string[], outputs: string[], name: string, attrs: Record<string, AttrValue> = {}): NodeProto {
  return { opType, input: inputs, output: outputs, name, domain: '', attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) };
}

const num = (v: number | { toNumber(): number } | null | undefined): number => (v == null ? 0 : typeof v === 'number' ? v : v.toNumber());

/** Attribute lookup with a default; integers come back as numbers (ONNX stores them as int64). */
export function getAttr(node: NodeProto, name: string): OnnxNs.IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}
export function attrInt(node: NodeProto, name: string, dflt: number): number {
  const a = getAttr(node, name);
  return a ? num(a.i as number) : dflt;
}
export function attrInts(node: NodeProto, name: string, dflt: number[]): number[] {
  const a = getAttr(node, name);
  return a ? (a.ints ?? []).map((x) => num(x as number)) : dflt;
}
export function attrFloat(node: NodeProto, name: string, dflt: number): number {
  const a = getAttr(node, name);
  return a ? (a.f ?? 0) : dflt;
}

export type ArrayData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/** A TensorProto's values as a typed array (raw_data or the typed repeated fields). */
export function tensorValues(t: TensorProto): ArrayData {
  const dims = (t.dims ?? []).map((d) => num(d as number));
  const n = dims.reduce((p, d) => p * d, 1);
  const raw = t.rawData && t.rawData.length ? t.rawData : null;
  const copy = (bytesPer: number) => {
    const b = new Uint8Array(n * bytesPer);
    b.set(raw!.subarray(0, n * bytesPer));
    return b.buffer;
  };
  switch (t.dataType) {
    case DT.FLOAT:
      return raw ? new Float32Array(copy(4)) : Float32Array.from(t.floatData ?? []);
    case DT.DOUBLE:
      return raw ? new Float64Array(copy(8)) : Float64Array.from(t.doubleData ?? []);
    case DT.INT32:
      return raw ? new Int32Array(copy(4)) : Int32Array.from(t.int32Data ?? []);
    case DT.INT64:
      return raw ? new BigInt64Array(copy(8)) : BigInt64Array.from((t.int64Data ?? []).map((x) => BigInt(num(x as number))));
    case DT.BOOL:
    case DT.UINT8:
      return raw ? new Uint8Array(copy(1)) : Uint8Array.from(t.int32Data ?? []);
    default:
      throw Errors.data(`onnx tensor ${t.name}`, `data type ${t.dataType} is not supported`);
  }
}

export function tensorDims(t: TensorProto): number[] {
  return (t.dims ?? []).map((d) => num(d as number));
}

/** A TensorProto holding `data` as raw_data. */
export function makeTensor(name: string, dims: readonly number[], data: ArrayData): TensorProto {
  const dataType = data instanceof Float32Array ? DT.FLOAT : data instanceof Float64Array ? DT.DOUBLE : data instanceof Int32Array ? DT.INT32 : data instanceof BigInt64Array ? DT.INT64 : DT.BOOL;
  return { name, dims: [...dims], dataType, rawData: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) };
}

/** A graph input/output declaration with a fixed shape. */
export function valueInfo(name: string, elemType: number, dims: ReadonlyArray<number | string>): ValueInfoProto {
  return { name, type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } };
}

/** Element type and dims (symbolic dims as strings) of a graph input or output. */
export function valueInfoType(v: ValueInfoProto): { elemType: number; dims: Array<number | string> } {
  const tt = v.type?.tensorType;
  return { elemType: tt?.elemType ?? 0, dims: (tt?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : num(d.dimValue as number))) };
}
