/**
 * A minimal ONNX model writer (protobuf by hand) for tests and examples without the Python `onnx` package:
 * `y = relu(x · W + b)` with x `[batch, in]`, W `[in, out]`, b `[out]`, float32, opset 13.
 */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
const bytes = (s: string) => Array.from(new TextEncoder().encode(s));
/** Field `f` as a length-delimited value. */
const ld = (f: number, payload: number[]) => [...varint((f << 3) | 2), ...varint(payload.length), ...payload];
/** Field `f` as a varint. */
const vi = (f: number, v: number) => [...varint(f << 3), ...varint(v)];
const str = (f: number, s: string) => ld(f, bytes(s));

function tensorProto(name: string, dims: number[], values: Float32Array): number[] {
  return [...dims.flatMap((d) => vi(1, d)), ...vi(2, 1), ...str(8, name), ...ld(9, Array.from(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)))];
}
function valueInfo(name: string, dims: Array<number | string>): number[] {
  const dimProtos = dims.flatMap((d) => ld(1, typeof d === 'number' ? vi(1, d) : str(2, d)));
  const tensorType = [...vi(1, 1), ...ld(2, dimProtos)];
  return [...str(1, name), ...ld(2, ld(1, tensorType))];
}
function node(op: string, inputs: string[], outputs: string[], name: string): number[] {
  return [...inputs.flatMap((i) => str(1, i)), ...outputs.flatMap((o) => str(2, o)), ...str(3, name), ...str(4, op)];
}

/** Serialized ModelProto of `relu(x·W + b)`; input `x` (dims ['batch', in]), output `y`. */
export function denseReluOnnx(w: Float32Array, b: Float32Array, inDim: number, outDim: number): Uint8Array {
  if (w.length !== inDim * outDim || b.length !== outDim) throw new RangeError(`W must hold ${inDim}x${outDim} and b ${outDim} values`);
  const graph = [
    ...ld(1, node('MatMul', ['x', 'W'], ['xw'], 'matmul')),
    ...ld(1, node('Add', ['xw', 'b'], ['z'], 'add')),
    ...ld(1, node('Relu', ['z'], ['y'], 'relu')),
    ...str(2, 'dense_relu'),
    ...ld(5, tensorProto('W', [inDim, outDim], w)),
    ...ld(5, tensorProto('b', [outDim], b)),
    ...ld(11, valueInfo('x', ['batch', inDim])),
    ...ld(12, valueInfo('y', ['batch', outDim])),
  ];
  const model = [...vi(1, 7), ...str(2, 'shoal'), ...ld(7, graph), ...ld(8, [...str(1, ''), ...vi(2, 13)])];
  return Uint8Array.from(model);
}
