import { Errors } from '@shoal/core';
import { GraphBuilder } from './builder.js';
import { NN_RULES } from './grad-rules-nn.js';
import { RULES, UnsupportedGradient } from './grad-rules.js';
import { appendLoss, type LossKind } from './losses.js';
import {
  attrFloat,
  attrInt,
  DT,
  encodeModel,
  getAttr,
  makeNode,
  tensorDims,
  tensorValues,
  valueInfo,
  valueInfoType,
  type ArrayData,
  type ModelProto,
  type GraphProto,
  type NodeProto,
  type TensorProto,
} from './proto.js';

/**
 * Builds the training graph of an ONNX model: the forward pass rewritten for training (BatchNormalization on
 * batch statistics, Dropout as a multiplication by a mask shoal feeds, MaxPool with its Indices), the loss, and
 * the reverse-mode gradients of every parameter, as one ONNX model of standard ops (opset 17) for
 * onnxruntime. Parameters (the model's float initializers) become inputs, so weights are fed, not rebuilt.
 *
 * Shapes are static: the graph is built for one batch size, after a probe run of the rewritten forward pass
 * gives every value's shape (and the contents of small integer tensors such as axes and pads).
 */

/** Ops with a gradient rule, and in which input slots gradients flow ('all' = every input). */
const DIFF_SLOTS: Record<string, number[] | 'all'> = {
  Identity: [0], Add: 'all', Sub: 'all', Mul: 'all', Div: 'all', Sum: 'all', Neg: [0], Relu: [0], LeakyRelu: [0],
  Sigmoid: [0], Tanh: [0], Exp: [0], Log: [0], Sqrt: [0], Pow: [0], Softmax: [0], LogSoftmax: [0], MatMul: 'all',
  Gemm: 'all', Reshape: [0], Flatten: [0], Squeeze: [0], Unsqueeze: [0], Transpose: [0], ReduceSum: [0],
  ReduceMean: [0], Concat: 'all', Split: [0], Slice: [0], Pad: [0], Conv: 'all', MaxPool: [0], AveragePool: [0],
  Gather: [0, 1], Dropout: [0], BatchNormalization: [0, 1, 2],
};
/** Float inputs no gradient flows through: refused when they depend on parameters (never a silently lost gradient). */
const CONST_SLOTS: Record<string, { slot: number; what: string }> = {
  Pow: { slot: 1, what: 'the exponent of Pow must not depend on parameters (only constant exponents)' },
  Pad: { slot: 2, what: 'the constant value of Pad must not depend on parameters' },
  Dropout: { slot: 1, what: 'the Dropout ratio must be a constant' },
};
/** Ops allowed off the gradient path only (shape arithmetic, constants). */
const FORWARD_ONLY = new Set(['Constant', 'Shape', 'Cast', 'ConstantOfShape']);

/** Every op a trainable model may contain. */
export const SUPPORTED_OPS: readonly string[] = [...Object.keys(DIFF_SLOTS), ...FORWARD_ONLY].sort();

const OPSET_MIN = 13;
const OPSET_MAX = 17;
export const TRAINING_OPSET = 17;

/**
 * Refuse a model shoal cannot differentiate before any training starts: an op outside `SUPPORTED_OPS`, a
 * custom domain, or an opset outside 13..17. The error names the op and the node.
 */
export function checkTrainable(model: ModelProto, source: string): void {
  const opset = model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
  const v = opset ? Number(opset.version) : 0;
  if (v < OPSET_MIN || v > OPSET_MAX) throw Errors.data(`onnx model ${source}`, `uses opset ${v}; training supports opsets ${OPSET_MIN} to ${OPSET_MAX} (export with opset_version=13..17)`);
  (model.graph as GraphProto).node.forEach((n, i) => {
    const op = n.opType ?? '';
    const name = n.name || `#${i}`;
    if (n.domain && n.domain !== 'ai.onnx') throw Errors.data(`onnx model ${source}`, `node "${name}" uses op ${n.domain}.${op}, which shoal cannot train (only standard ONNX ops)`, { op, node: name });
    if (!(op in DIFF_SLOTS) && !FORWARD_ONLY.has(op)) {
      throw Errors.data(`onnx model ${source}`, `node "${name}" uses op ${op}, which shoal cannot train; supported ops: ${SUPPORTED_OPS.join(', ')}`, { op, node: name });
    }
  });
}

export interface TrainingGraphOptions {
  loss: LossKind;
  /** The model output the loss reads (default: the first output). */
  output?: string;
  batchSize: number;
  /** Float initializers to keep constant. */
  frozen?: ReadonlySet<string>;
  /** Emit the gradients of tables read only by Gather (axis 0) as touched rows + ids instead of dense. */
  sparseTables?: boolean;
}

export interface TensorSpec {
  name: string;
  elemType: number;
  dims: number[];
}
export interface ParamSpec {
  name: string;
  dims: number[];
  /** Output holding the dense gradient (absent: the loss does not depend on it, or it is sparse). */
  grad?: string;
  /** Sparse table: outputs holding touched rows `[n, rowSize]` and their ids `[n]` (int64), one pair per Gather. */
  sparse?: Array<{ rows: string; ids: string }>;
}
/** A BatchNormalization running statistic shoal updates after each step (PyTorch's rule, unbiased variance). */
export interface BufferSpec {
  name: string;
  dims: number[];
  stat: string;
  kind: 'mean' | 'var';
  momentum: number;
  /** Elements per channel in the batch (for the unbiased variance). */
  count: number;
}
export interface MaskSpec {
  input: string;
  dims: number[];
  ratio: number;
  node: string;
}
export interface TrainingGraph {
  bytes: Uint8Array;
  batchSize: number;
  inputs: TensorSpec[];
  labels?: TensorSpec;
  params: ParamSpec[];
  buffers: BufferSpec[];
  masks: MaskSpec[];
  loss: string;
  prediction: string;
  /** softmaxCrossEntropy: the number of classes (labels must lie in [0, classes)). */
  classes?: number;
}

/** Runs a model once on zero feeds and returns every output's dims and small integer contents. */
export type ShapeProbe = (model: Uint8Array, feeds: TensorSpec[]) => Promise<Map<string, { dims: number[]; data?: ArrayData }>>;

export async function buildTrainingGraph(model: ModelProto, source: string, options: TrainingGraphOptions, probe: ShapeProbe): Promise<TrainingGraph> {
  checkTrainable(model, source);
  const g = model.graph as GraphProto;
  const B = options.batchSize;
  const inits = new Map<string, TensorProto>(g.initializer.map((t) => [t.name!, t]));
  const shapes = new Map<string, number[]>();
  const values = new Map<string, ArrayData>();
  for (const t of g.initializer) if (tensorDims(t).reduce((p, d) => p * d, 1) <= 64) values.set(t.name!, tensorValues(t));
  const fb = new GraphBuilder(shapes, values, 'shoal/fwd');

  // 1. Forward rewrite for training.
  const fwd: NodeProto[] = [];
  const buffers: Array<Omit<BufferSpec, 'dims' | 'count'> & { x: string }> = [];
  const masks: Array<Omit<MaskSpec, 'dims'> & { x: string; out: string }> = [];
  const consumed = new Set(g.node.flatMap((n) => n.input ?? []));
  const emit = (nodes: NodeProto[]) => {
    fwd.push(...nodes);
    nodes.length = 0;
  };
  for (const [i, n] of g.node.entries()) {
    const name = n.name || `#${i}`;
    const op = n.opType!;
    if (op === 'Constant') {
      const t = getAttr(n, 'value')?.t;
      if (t) values.set(n.output![0]!, tensorValues(t));
    }
    if (op === 'BatchNormalization') {
      for (const extra of n.output!.slice(1)) if (extra && consumed.has(extra)) throw Errors.data(`onnx model ${source}`, `node "${name}": BatchNormalization's running-statistics outputs are read by other nodes; shoal updates them itself`, { op, node: name });
      const [x, scale, bias, rmean, rvar] = n.input! as [string, string, string, string, string];
      const eps = attrFloat(n, 'epsilon', 1e-5);
      const momentum = attrFloat(n, 'momentum', 0.9);
      // Any rank: [N, C, ...] viewed as [N, C, rest], statistics over axes 0 and 2, viewed back.
      const x3 = fb.op('Reshape', [x, fb.i64([0, 0, -1])]);
      const mean = fb.op('ReduceMean', [x3], { axes: [0, 2], keepdims: 1 });
      const d = fb.op('Sub', [x3, mean]);
      const variance = fb.op('ReduceMean', [fb.op('Mul', [d, d])], { axes: [0, 2], keepdims: 1 });
      const xhat = fb.op('Div', [d, fb.op('Sqrt', [fb.op('Add', [variance, fb.f32(eps)])])]);
      const c3 = fb.i64([1, -1, 1]);
      const y = fb.op('Add', [fb.op('Mul', [xhat, fb.op('Reshape', [scale, c3])]), fb.op('Reshape', [bias, c3])]);
      fb.nodes.push(makeNode('Reshape', [y, fb.op('Shape', [x])], [n.output![0]!], name));
      buffers.push({ name: rmean, stat: fb.op('Reshape', [mean, fb.i64([-1])]), kind: 'mean', momentum, x });
      buffers.push({ name: rvar, stat: fb.op('Reshape', [variance, fb.i64([-1])]), kind: 'var', momentum, x });
      emit(fb.nodes);
      continue;
    }
    if (op === 'Dropout') {
      const ratioName = n.input![1];
      const ratio = ratioName ? Number((values.get(ratioName) ?? [NaN])[0]) : 0.5;
      if (!(ratio >= 0 && ratio < 1)) throw Errors.data(`onnx model ${source}`, `node "${name}": Dropout ratio must be a constant in [0, 1)`, { op, node: name });
      if (n.output![1] && consumed.has(n.output![1])) throw Errors.data(`onnx model ${source}`, `node "${name}": Dropout's mask output is read by other nodes`, { op, node: name });
      masks.push({ input: `shoal/dropout_mask/${name}`, ratio, node: name, x: n.input![0]!, out: n.output![0]! });
      fwd.push(makeNode('Mul', [n.input![0]!, `shoal/dropout_mask/${name}`], [n.output![0]!], name));
      continue;
    }
    if (op === 'MaxPool' && !n.output![1]) {
      fwd.push({ ...n, output: [n.output![0]!, `shoal/maxpool_indices/${name}`] });
      continue;
    }
    fwd.push(n);
  }

  // 2. Parameters: float initializers (not frozen) read in a slot gradients flow through.
  const diffSlot = (n: NodeProto, k: number) => {
    const s = DIFF_SLOTS[n.opType!];
    return s === 'all' || (s !== undefined && s.includes(k));
  };
  const params = g.initializer.filter(
    (t) => t.dataType === DT.FLOAT && !options.frozen?.has(t.name!) && !buffers.some((bf) => bf.name === t.name) && fwd.some((n) => n.input!.some((x, k) => x === t.name && diffSlot(n, k))),
  );
  const paramSet = new Set(params.map((p) => p.name));
  const requires = new Set(paramSet);
  for (const n of fwd) if (n.input!.some((x, k) => requires.has(x) && diffSlot(n, k))) for (const o of n.output!) if (o) requires.add(o);
  for (const n of g.node) {
    const k = CONST_SLOTS[n.opType!];
    if (k && n.input![k.slot] && requires.has(n.input![k.slot]!)) throw Errors.data(`onnx model ${source}`, `node "${n.name}" (op ${n.opType}): ${k.what}`, { op: n.opType, node: n.name });
  }
  for (const n of fwd) {
    if (n.opType === 'Cast' && requires.has(n.input![0]!)) throw Errors.data(`onnx model ${source}`, `node "${n.name}": Cast of a value that depends on parameters (its gradient would be lost)`, { op: 'Cast', node: n.name });
  }

  // 3. Probe the rewritten forward pass at this batch size (Dropout as identity: masks do not change shapes).
  const dataInputs: TensorSpec[] = g.input
    .filter((v) => !inits.has(v.name!))
    .map((v) => {
      const t = valueInfoType(v);
      const dims = t.dims.map((d, k) => {
        if (k === 0) return B;
        if (typeof d === 'number' && d > 0) return d;
        throw Errors.data(`onnx model ${source}`, `input "${v.name}" has a symbolic dim ${JSON.stringify(d)} at axis ${k}: only the batch axis (0) may be symbolic`);
      });
      return { name: v.name!, elemType: t.elemType, dims };
    });
  const paramInputs: TensorSpec[] = params.map((p) => ({ name: p.name!, elemType: DT.FLOAT, dims: tensorDims(p) }));
  const keptInits = g.initializer.filter((t) => !paramSet.has(t.name!) && !buffers.some((bf) => bf.name === t.name));
  const probeNodes = fwd.map((n) => (masks.some((m) => m.out === n.output![0]) ? makeNode('Identity', [n.input![0]!], [n.output![0]!], n.name!) : n));
  const probeOutputs = [...new Set(fwd.flatMap((n) => n.output!).filter((o) => o))];
  const probeModel = assemble(model, probeNodes, [...keptInits, ...fb.initializers], [...dataInputs, ...paramInputs], probeOutputs);
  const probed = await probe(probeModel, [...dataInputs, ...paramInputs]);
  for (const [k, v] of probed) {
    shapes.set(k, v.dims);
    if (v.data) values.set(k, v.data);
  }
  for (const s of [...dataInputs, ...paramInputs]) shapes.set(s.name, s.dims);
  for (const t of keptInits) shapes.set(t.name!, tensorDims(t));

  // 4. Loss and backward pass.
  const bb = new GraphBuilder(shapes, values, 'shoal/bwd');
  for (const t of fb.initializers) bb.initializers.push(t);
  const pred = options.output ?? g.output[0]!.name!;
  if (!g.output.some((o) => o.name === pred)) throw Errors.invalidArg('options.output', `names no output of the model (outputs: ${g.output.map((o) => o.name).join(', ')})`);
  const loss = appendLoss(bb, options.loss, pred);
  const grads = new Map<string, string[]>([[pred, [loss.seed]]]);
  const add = (v: string, gname: string) => (grads.get(v) ?? grads.set(v, []).get(v)!).push(gname);
  const total = (v: string): string | null => {
    const gs = grads.get(v);
    if (!gs || gs.length === 0) return null;
    if (gs.length === 1) return gs[0]!;
    const sum = bb.op('Sum', gs, {}, bb.shape(v));
    grads.set(v, [sum]);
    return sum;
  };
  const sparseParams = new Set<string>();
  if (options.sparseTables) {
    for (const p of params) {
      const users = fwd.filter((n) => n.input!.includes(p.name!));
      if (tensorDims(p).length === 2 && users.length > 0 && users.every((n) => n.opType === 'Gather' && n.input![0] === p.name && n.input![1] !== p.name && attrInt(n, 'axis', 0) === 0)) sparseParams.add(p.name!);
    }
  }
  const sparse = new Map<string, Array<{ rows: string; ids: string }>>();
  for (let i = fwd.length - 1; i >= 0; i--) {
    const n = fwd[i]!;
    const dy = n.output!.map((o) => (o ? total(o) : null));
    if (dy.every((d) => d === null)) continue;
    const need = n.input!.map((x, k) => !!x && requires.has(x) && diffSlot(n, k));
    if (!need.some((x) => x)) continue;
    const name = n.name || `#${i}`;
    if (n.opType === 'Gather' && sparseParams.has(n.input![0]!)) {
      const rowSize = tensorDims(inits.get(n.input![0]!)!)[1]!;
      const rows = bb.op('Identity', [bb.reshape(dy[0]!, [-1, rowSize])]);
      const ids = bb.op('Identity', [bb.reshape(bb.op('Cast', [n.input![1]!], { to: DT.INT64 }), [-1])]);
      (sparse.get(n.input![0]!) ?? sparse.set(n.input![0]!, []).get(n.input![0]!)!).push({ rows, ids });
      continue;
    }
    const mask = masks.find((m) => m.out === n.output![0]);
    const rule = mask ? RULES.Mul : (RULES[n.opType!] ?? NN_RULES[n.opType!]);
    if (!rule) throw Errors.data(`onnx model ${source}`, `node "${name}" uses op ${n.opType}, which has no gradient rule`, { op: n.opType, node: name });
    let din: Array<string | null>;
    try {
      din = rule({ b: bb, node: n, dy, need });
    } catch (e) {
      if (!(e instanceof UnsupportedGradient)) throw e;
      throw Errors.data(`onnx model ${source}`, `node "${name}" (op ${n.opType}): no gradient for ${e.message}`, { op: n.opType, node: name });
    }
    n.input!.forEach((x, k) => {
      if (need[k] && din[k]) add(x, din[k]!);
    });
  }

  // 5. Assemble: inputs (data, labels, parameters, dropout masks), outputs (loss, prediction, gradients, stats).
  const paramSpecs: ParamSpec[] = params.map((p) => {
    const spec: ParamSpec = { name: p.name!, dims: tensorDims(p) };
    if (sparseParams.has(p.name!)) spec.sparse = sparse.get(p.name!) ?? [];
    else {
      const gsum = total(p.name!);
      if (gsum) spec.grad = bb.op('Identity', [gsum]);
    }
    return spec;
  });
  const maskSpecs: MaskSpec[] = masks.map((m) => ({ input: m.input, ratio: m.ratio, node: m.node, dims: shapes.get(m.x)! }));
  const bufferSpecs: BufferSpec[] = buffers.map((bf) => {
    const xs = shapes.get(bf.x)!;
    const init = inits.get(bf.name)!;
    return { name: bf.name, stat: bf.stat, kind: bf.kind, momentum: bf.momentum, dims: tensorDims(init), count: xs.reduce((p, d) => p * d, 1) / xs[1]! };
  });
  const inputs = [...dataInputs, ...(loss.labels ? [loss.labels] : []), ...paramInputs, ...maskSpecs.map((m) => ({ name: m.input, elemType: DT.FLOAT, dims: m.dims }))];
  const outputs = [
    loss.loss,
    pred,
    ...paramSpecs.flatMap((p) => [...(p.grad ? [p.grad] : []), ...(p.sparse ?? []).flatMap((s) => [s.rows, s.ids])]),
    ...bufferSpecs.map((b) => b.stat),
  ];
  const bytes = assemble(model, [...fwd, ...bb.nodes], [...keptInits, ...bb.initializers], inputs, outputs);
  return { bytes, batchSize: B, inputs: dataInputs, labels: loss.labels, params: paramSpecs, buffers: bufferSpecs, masks: maskSpecs, loss: loss.loss, prediction: pred, ...(options.loss === 'softmaxCrossEntropy' ? { classes: shapes.get(pred)![1]! } : {}) };
}

/** A ModelProto (opset 17) with these nodes, initializers, typed inputs and untyped outputs. */
function assemble(model: ModelProto, nodes: NodeProto[], initializers: TensorProto[], inputs: TensorSpec[], outputs: string[]): Uint8Array {
  return encodeModel({
    irVersion: Math.max(Number(model.irVersion), 8),
    producerName: 'shoal',
    opsetImport: [{ domain: '', version: TRAINING_OPSET }],
    graph: {
      name: `${(model.graph as GraphProto).name || 'model'}_training`,
      node: nodes,
      initializer: initializers,
      input: inputs.map((s) => valueInfo(s.name, s.elemType, s.dims)),
      output: [...new Set(outputs)].map((name) => ({ name })),
    },
  });
}
