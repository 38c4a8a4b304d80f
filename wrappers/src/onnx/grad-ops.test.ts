import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng } from '@shoal/core';
import type { LossKind } from './losses.js';
import { createSession, loadOrt, ortProbe, sessionOptions } from './ort-runtime.js';
import { decodeModel, DT, encodeModel, makeNode as N, makeTensor, onnx, tensorValues, valueInfo, type ArrayData, type AttrValue, type NodeProto, type TensorProto } from './proto.js';
import { buildTrainingGraph, SUPPORTED_OPS, type TrainingGraph } from './training-graph.js';

// Every supported op's generated gradient against central finite differences of the loss. The training graph is
// converted to float64 and run by onnxruntime where its CPU kernels take doubles (eps 1e-6, tolerance 1e-6);
// graphs with a float-only kernel (Conv, ConvTranspose, AveragePool) run in float32, where these ops are
// linear in each input and the MSE loss quadratic, so central differences are exact up to rounding (eps 1e-2,
// tolerance 2e-3).
const ort = await loadOrt();
const opts = sessionOptions(1);

interface Case {
  name: string;
  nodes: NodeProto[];
  /** Trainable float parameters: dims, and positive values (for Log, Sqrt, divisors) when `pos`. */
  params: Record<string, { dims: number[]; pos?: boolean }>;
  /** Constant initializers. */
  consts?: Record<string, { dims: number[]; data: ArrayData }>;
  /** Data inputs (batch axis 0). */
  inputs?: Record<string, { dims: number[]; data: ArrayData }>;
  output: string;
  loss?: LossKind;
  sparseTables?: boolean;
}

const f = (v: number): AttrValue => ({ float: v });
const i64 = (...v: number[]) => BigInt64Array.from(v.map(BigInt));
const c = (dims: number[], data: ArrayData) => ({ dims, data });

const unary = (op: string, attrs: Record<string, AttrValue> = {}, pos = false): Case => ({ name: op, nodes: [N(op, ['a'], ['y'], op, attrs)], params: { a: { dims: [3, 4], pos } }, output: 'y' });
const cases: Case[] = [
  { name: 'Gemm transB alpha beta', nodes: [N('Gemm', ['A', 'B', 'C'], ['y'], 'g', { transB: 1, alpha: f(0.7), beta: f(1.3) })], params: { A: { dims: [3, 4] }, B: { dims: [5, 4] }, C: { dims: [5] } }, output: 'y' },
  { name: 'Gemm transA', nodes: [N('Gemm', ['A', 'B', 'C'], ['y'], 'g', { transA: 1 })], params: { A: { dims: [4, 3] }, B: { dims: [4, 5] }, C: { dims: [1, 5] } }, output: 'y' },
  { name: 'MatMul 3-D x 2-D', nodes: [N('MatMul', ['A', 'B'], ['y'], 'm')], params: { A: { dims: [2, 3, 4] }, B: { dims: [4, 5] } }, output: 'y' },
  { name: 'MatMul broadcast batch', nodes: [N('MatMul', ['A', 'B'], ['y'], 'm')], params: { A: { dims: [2, 1, 3, 4] }, B: { dims: [3, 4, 2] } }, output: 'y' },
  { name: 'MatMul 1-D', nodes: [N('MatMul', ['a', 'B'], ['y'], 'm')], params: { a: { dims: [4] }, B: { dims: [4, 3] } }, output: 'y' },
  { name: 'Add broadcast', nodes: [N('Add', ['a', 'b'], ['y'], 'n')], params: { a: { dims: [3, 4] }, b: { dims: [4] } }, output: 'y' },
  { name: 'Sub broadcast both', nodes: [N('Sub', ['a', 'b'], ['y'], 'n')], params: { a: { dims: [2, 1, 4] }, b: { dims: [3, 1] } }, output: 'y' },
  { name: 'Mul broadcast', nodes: [N('Mul', ['a', 'b'], ['y'], 'n')], params: { a: { dims: [3, 4] }, b: { dims: [3, 1] } }, output: 'y' },
  { name: 'Div broadcast', nodes: [N('Div', ['a', 'b'], ['y'], 'n')], params: { a: { dims: [3, 4] }, b: { dims: [4], pos: true } }, output: 'y' },
  { name: 'Sum of three', nodes: [N('Sum', ['a', 'b', 'c'], ['y'], 'n')], params: { a: { dims: [3, 4] }, b: { dims: [4] }, c: { dims: [3, 1] } }, output: 'y' },
  unary('Neg'), unary('Relu'), unary('LeakyRelu', { alpha: f(0.2) }), unary('Sigmoid'), unary('Tanh'), unary('Exp'), unary('Identity'),
  unary('Log', {}, true), unary('Sqrt', {}, true),
  unary('Softmax', { axis: 1 }), unary('LogSoftmax', { axis: 1 }),
  { name: 'Softmax last axis of 3-D', nodes: [N('Softmax', ['a'], ['y'], 's', { axis: -1 })], params: { a: { dims: [2, 3, 4] } }, output: 'y' },
  { name: 'Pow 3', nodes: [N('Pow', ['a', 'e'], ['y'], 'p')], params: { a: { dims: [3, 4] } }, consts: { e: c([], Float32Array.of(3)) }, output: 'y' },
  { name: 'Pow 0.5', nodes: [N('Pow', ['a', 'e'], ['y'], 'p')], params: { a: { dims: [3, 4], pos: true } }, consts: { e: c([], Float32Array.of(0.5)) }, output: 'y' },
  { name: 'Gather table (dense scatter-add)', nodes: [N('Gather', ['T', 'idx'], ['y'], 'g')], params: { T: { dims: [6, 3] } }, inputs: { idx: c([5], i64(4, 1, 4, 0, 5)) }, output: 'y' },
  { name: 'Gather table (row-sparse)', nodes: [N('Gather', ['T', 'idx'], ['y'], 'g')], params: { T: { dims: [6, 3] } }, inputs: { idx: c([5], i64(4, 1, 4, 0, 5)) }, output: 'y', sparseTables: true },
  {
    name: 'Gather 2-D indices of a computed tensor',
    nodes: [N('Tanh', ['T'], ['t'], 't'), N('Gather', ['t', 'idx'], ['y'], 'g')],
    params: { T: { dims: [5, 2, 2] } },
    inputs: { idx: c([2, 3], i64(0, 4, 4, 2, 0, 0)) },
    output: 'y',
  },
  { name: 'Concat', nodes: [N('Concat', ['a', 'b'], ['y'], 'c', { axis: 1 })], params: { a: { dims: [3, 2] }, b: { dims: [3, 4] } }, output: 'y' },
  {
    name: 'Split',
    nodes: [N('Split', ['a', 'sp'], ['y1', 'y2', 'y3'], 's', { axis: 1 }), N('Tanh', ['y1'], ['t1'], 't'), N('Concat', ['t1', 'y3'], ['y'], 'c', { axis: 1 })],
    params: { a: { dims: [3, 6] } },
    consts: { sp: c([3], i64(2, 1, 3)) },
    output: 'y',
  },
  { name: 'Slice', nodes: [N('Slice', ['a', 's', 'e', 'ax'], ['y'], 's')], params: { a: { dims: [4, 5] } }, consts: { s: c([2], i64(1, 0)), e: c([2], i64(3, -1)), ax: c([2], i64(0, 1)) }, output: 'y' },
  { name: 'Pad', nodes: [N('Pad', ['a', 'p'], ['y'], 'p', { mode: 'constant' })], params: { a: { dims: [2, 3] } }, consts: { p: c([4], i64(0, 1, 1, 0)) }, output: 'y' },
  { name: 'Reshape', nodes: [N('Reshape', ['a', 's'], ['y'], 'r')], params: { a: { dims: [3, 4] } }, consts: { s: c([2], i64(2, -1)) }, output: 'y' },
  { name: 'Flatten', nodes: [N('Flatten', ['a'], ['y'], 'f', { axis: 1 })], params: { a: { dims: [2, 3, 2] } }, output: 'y' },
  { name: 'Squeeze', nodes: [N('Squeeze', ['a', 'ax'], ['y'], 's')], params: { a: { dims: [3, 1, 4] } }, consts: { ax: c([1], i64(1)) }, output: 'y' },
  { name: 'Unsqueeze', nodes: [N('Unsqueeze', ['a', 'ax'], ['y'], 'u')], params: { a: { dims: [3, 4] } }, consts: { ax: c([2], i64(0, 2)) }, output: 'y' },
  { name: 'Transpose', nodes: [N('Transpose', ['a'], ['y'], 't', { perm: [2, 0, 1] })], params: { a: { dims: [2, 3, 4] } }, output: 'y' },
  { name: 'ReduceSum', nodes: [N('ReduceSum', ['a', 'ax'], ['y'], 'r', { keepdims: 0 })], params: { a: { dims: [2, 3, 4] } }, consts: { ax: c([1], i64(1)) }, output: 'y' },
  { name: 'ReduceMean', nodes: [N('ReduceMean', ['a'], ['y'], 'r', { axes: [0, 2], keepdims: 1 })], params: { a: { dims: [2, 3, 4] } }, output: 'y' },
  { name: 'Dropout (seeded mask)', nodes: [N('Dropout', ['a', 'r'], ['y'], 'd')], params: { a: { dims: [3, 4] } }, consts: { r: c([], Float32Array.of(0.3)) }, output: 'y' },
  {
    name: 'BatchNormalization 4-D (training)',
    nodes: [N('BatchNormalization', ['x', 's', 'b', 'm', 'v'], ['y'], 'bn', { epsilon: f(1e-3) })],
    params: { x: { dims: [4, 3, 2, 2] }, s: { dims: [3] }, b: { dims: [3] } },
    consts: { m: c([3], new Float32Array(3)), v: c([3], Float32Array.of(1, 1, 1)) },
    output: 'y',
  },
  {
    name: 'BatchNormalization 2-D (training)',
    nodes: [N('BatchNormalization', ['x', 's', 'b', 'm', 'v'], ['y'], 'bn')],
    params: { x: { dims: [5, 3] }, s: { dims: [3] }, b: { dims: [3] } },
    consts: { m: c([3], new Float32Array(3)), v: c([3], Float32Array.of(1, 1, 1)) },
    output: 'y',
  },
  {
    name: 'Conv stride 2 pad 1',
    nodes: [N('Conv', ['x', 'W', 'b'], ['y'], 'c', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })],
    params: { x: { dims: [2, 2, 5, 5] }, W: { dims: [3, 2, 3, 3] }, b: { dims: [3] } },
    output: 'y',
  },
  {
    name: 'Conv dilation 2, uneven pads, unused edge',
    nodes: [N('Conv', ['x', 'W'], ['y'], 'c', { kernel_shape: [2, 3], dilations: [2, 1], strides: [1, 2], pads: [0, 1, 1, 0] })],
    params: { x: { dims: [1, 2, 6, 6] }, W: { dims: [2, 2, 2, 3] } },
    output: 'y',
  },
  { name: 'MaxPool 2x2', nodes: [N('MaxPool', ['x'], ['y'], 'p', { kernel_shape: [2, 2], strides: [2, 2] })], params: { x: { dims: [2, 2, 4, 4] } }, output: 'y' },
  { name: 'MaxPool 3x3 overlapping, padded', nodes: [N('MaxPool', ['x'], ['y'], 'p', { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] })], params: { x: { dims: [1, 2, 4, 4] } }, output: 'y' },
  { name: 'AveragePool padded, pads not counted', nodes: [N('AveragePool', ['x'], ['y'], 'p', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })], params: { x: { dims: [2, 2, 5, 5] } }, output: 'y' },
  { name: 'AveragePool pads counted', nodes: [N('AveragePool', ['x'], ['y'], 'p', { kernel_shape: [2, 2], strides: [1, 1], pads: [0, 0, 1, 1], count_include_pad: 1 })], params: { x: { dims: [1, 2, 3, 3] } }, output: 'y' },
  {
    name: 'Shape, Cast, Constant, ConstantOfShape (off the gradient path)',
    nodes: [
      N('Shape', ['a'], ['s'], 's'),
      N('Cast', ['s'], ['s64'], 'cast', { to: DT.INT64 }),
      N('ConstantOfShape', ['s64'], ['ones'], 'cos', { value: { tensor: makeTensor('', [1], Float32Array.of(1.5)) } }),
      N('Constant', [], ['k'], 'k', { value: { tensor: makeTensor('', [], Float32Array.of(0.25)) } }),
      N('Mul', ['a', 'ones'], ['m'], 'm'),
      N('Add', ['m', 'k'], ['y'], 'y'),
    ],
    params: { a: { dims: [3, 4] } },
    output: 'y',
  },
  { name: 'loss softmaxCrossEntropy', nodes: [N('Gemm', ['A', 'B'], ['y'], 'g')], params: { A: { dims: [4, 3] }, B: { dims: [3, 5] } }, output: 'y', loss: 'softmaxCrossEntropy' },
  { name: 'loss bceWithLogits', nodes: [N('Gemm', ['A', 'B'], ['y'], 'g')], params: { A: { dims: [4, 3] }, B: { dims: [3, 2] } }, output: 'y', loss: 'bceWithLogits' },
  { name: 'loss mse', nodes: [N('Gemm', ['A', 'B'], ['y'], 'g')], params: { A: { dims: [4, 3] }, B: { dims: [3, 2] } }, output: 'y', loss: 'mse' },
];

function modelOf(k: Case, values: Map<string, Float32Array>): Uint8Array {
  const inits = [
    ...Object.entries(k.params).map(([n, p]) => makeTensor(n, p.dims, values.get(n)!)),
    ...Object.entries(k.consts ?? {}).map(([n, v]) => makeTensor(n, v.dims, v.data)),
  ];
  const inputs = Object.entries(k.inputs ?? {}).map(([n, v]) => valueInfo(n, DT.INT64, ['batch', ...v.dims.slice(1)]));
  return encodeModel({ irVersion: 8, opsetImport: [{ domain: '', version: 13 }], graph: { name: k.name, node: k.nodes, initializer: inits, input: inputs, output: [{ name: k.output }] } });
}

/** The training graph with every float tensor made float64 (initializers, inputs, Cast targets, fill values). */
function toDouble(bytes: Uint8Array): Uint8Array {
  const m = decodeModel(bytes, 'training graph');
  const g = m.graph!;
  const dbl = (t: TensorProto) => (t.dataType === DT.FLOAT ? onnx.TensorProto.fromObject(makeTensor(t.name ?? '', (t.dims ?? []).map(Number), Float64Array.from(tensorValues(t) as Float32Array))) : t);
  g.initializer = g.initializer!.map(dbl) as typeof g.initializer;
  for (const v of g.input!) if (v.type?.tensorType?.elemType === DT.FLOAT) v.type.tensorType.elemType = DT.DOUBLE;
  for (const n of g.node!) {
    for (const a of n.attribute ?? []) {
      if (n.opType === 'Cast' && a.name === 'to' && Number(a.i) === DT.FLOAT) a.i = DT.DOUBLE;
      if (a.t) a.t = dbl(a.t);
    }
  }
  return encodeModel(m);
}

async function check(k: Case): Promise<{ precision: string; worst: number }> {
  const rng = new Rng(k.name.length * 7919 + 1);
  const uni = () => rng.u32() / 2 ** 32;
  const values = new Map<string, Float32Array>();
  for (const [n, p] of Object.entries(k.params)) values.set(n, Float32Array.from({ length: p.dims.reduce((a, d) => a * d, 1) }, () => (p.pos ? 0.5 + uni() : 2 * uni() - 1)));
  const bytes = modelOf(k, values);
  const batch = Object.values(k.inputs ?? {})[0]?.dims[0] ?? 1;
  const tg: TrainingGraph = await buildTrainingGraph(decodeModel(bytes, k.name), k.name, { loss: k.loss ?? 'mse', batchSize: batch, sparseTables: k.sparseTables }, ortProbe(ort, opts));
  let session;
  let double = true;
  try {
    session = await createSession(ort, toDouble(tg.bytes), opts, k.name);
  } catch {
    double = false;
    session = await createSession(ort, tg.bytes, opts, k.name);
  }
  const F = (double ? Float64Array : Float32Array) as Float64ArrayConstructor;
  const type = double ? 'float64' : 'float32';
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
  const params = new Map<string, Float64Array | Float32Array>();
  for (const p of tg.params) params.set(p.name, F.from(values.get(p.name)!));
  for (const [n, v] of Object.entries(k.inputs ?? {})) feeds[n] = new ort.Tensor('int64', v.data as BigInt64Array, v.dims);
  if (tg.labels) {
    const n = tg.labels.dims.reduce((a, d) => a * d, 1);
    const classes = tg.labels.elemType === DT.INT64 ? 5 : 0;
    feeds[tg.labels.name] = classes ? new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(rng.u32() % classes)), tg.labels.dims) : new ort.Tensor(type, F.from({ length: n }, () => (k.loss === 'bceWithLogits' ? rng.u32() % 2 : 2 * uni() - 1)), tg.labels.dims);
  }
  for (const m of tg.masks) feeds[m.input] = new ort.Tensor(type, F.from({ length: m.dims.reduce((a, d) => a * d, 1) }, () => (uni() < m.ratio ? 0 : 1 / (1 - m.ratio))), m.dims);
  const run = async () => {
    for (const p of tg.params) feeds[p.name] = new ort.Tensor(type, params.get(p.name)!, p.dims);
    return session.run(feeds);
  };
  const out = await run();
  const eps = double ? 1e-6 : 1e-2;
  let worst = 0;
  try {
    for (const p of tg.params) {
      const size = p.dims.reduce((a, d) => a * d, 1);
      const analytic = new Float64Array(size);
      if (p.grad) analytic.set(out[p.grad]!.data as Float64Array);
      for (const s of p.sparse ?? []) {
        const ids = out[s.ids]!.data as BigInt64Array;
        const rows = out[s.rows]!.data as Float64Array;
        const w = p.dims[1]!;
        ids.forEach((id, r) => {
          for (let j = 0; j < w; j++) analytic[Number(id) * w + j]! += rows[r * w + j]!;
        });
      }
      const v = params.get(p.name)!;
      let d = 0;
      let scale = 1e-3;
      for (let i = 0; i < size; i++) {
        const keep = v[i]!;
        v[i] = keep + eps;
        const up = Number((await run())[tg.loss]!.data[0]);
        v[i] = keep - eps;
        const down = Number((await run())[tg.loss]!.data[0]);
        v[i] = keep;
        const numeric = (up - down) / (2 * eps);
        d = Math.max(d, Math.abs(numeric - analytic[i]!));
        scale = Math.max(scale, Math.abs(numeric));
      }
      const rel = d / scale;
      worst = Math.max(worst, rel);
      assert.ok(rel <= (double ? 1e-6 : 2e-3), `${k.name}: gradient of ${p.name} differs from finite differences by ${rel} (relative, ${type})`);
    }
  } finally {
    await session.release();
  }
  return { precision: type, worst };
}

const report: string[] = [];
for (const k of cases) {
  test(`gradient of ${k.name} matches finite differences`, async () => {
    const r = await check(k);
    report.push(`${k.name}: ${r.precision}, ${r.worst.toExponential(1)}`);
  });
}

const refusals: Array<{ k: Case; error: RegExp }> = [
  { k: { name: 'Pow with a trainable exponent', nodes: [N('Identity', ['ep'], ['e'], 'id'), N('Pow', ['a', 'e'], ['y'], 'pow')], params: { a: { dims: [3], pos: true }, ep: { dims: [] } }, output: 'y' }, error: /node "pow" \(op Pow\): the exponent of Pow must not depend on parameters/ },
  { k: { name: 'Cast of a parameter', nodes: [N('Tanh', ['a'], ['t'], 'tanh'), N('Cast', ['t'], ['y'], 'cast', { to: DT.DOUBLE })], params: { a: { dims: [3] } }, output: 'y' }, error: /node "cast": Cast of a value that depends on parameters/ },
  { k: { name: 'grouped Conv', nodes: [N('Conv', ['x', 'W'], ['y'], 'conv', { group: 2 })], params: { x: { dims: [1, 2, 4, 4] }, W: { dims: [2, 1, 3, 3] } }, output: 'y' }, error: /node "conv" \(op Conv\): no gradient for Conv with group != 1/ },
];
for (const { k, error } of refusals) {
  test(`refused with the node named, never a wrong gradient: ${k.name}`, async () => {
    try {
      await check(k);
      assert.unreachable('accepted');
    } catch (e) {
      assert.match((e as Error).message, error);
    }
  });
}

test('every supported op has a finite-difference case above', () => {
  const used = new Set(cases.flatMap((k) => k.nodes.map((n) => n.opType!)));
  const missing = SUPPORTED_OPS.filter((op) => !used.has(op));
  assert.equal(missing, [], `ops without a gradient check: ${missing.join(', ')}`);
  console.log(`\n  ${report.join('\n  ')}`);
});

test.run();
