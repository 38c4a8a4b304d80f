import { Errors } from '@shoal/core';
import { makeNode, makeTensor, type ArrayData, type AttrValue, type NodeProto, type TensorProto } from './proto.js';

/**
 * Appends nodes to a graph under construction with fresh value names, and answers static questions about the
 * values: shapes (every value's, from the shape probe at a fixed batch size) and the contents of small integer
 * tensors (axes, pads, slice bounds: initializers, Constant nodes, or probed values).
 */
export class GraphBuilder {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private counter = 0;
  private readonly consts = new Map<string, string>();

  constructor(
    readonly shapes: Map<string, number[]>,
    readonly values: Map<string, ArrayData>,
    private readonly prefix = 'shoal',
  ) {}

  fresh(hint: string): string {
    return `${this.prefix}/${hint}/${this.counter++}`;
  }

  /** Add a node with one output; record the output's shape when given. Returns the output name. */
  op(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}, shape?: readonly number[]): string {
    const out = this.fresh(type);
    this.nodes.push(makeNode(type, inputs, [out], `${out}`, attrs));
    if (shape) this.shapes.set(out, [...shape]);
    return out;
  }

  /** Add a node with `n` outputs. */
  ops(type: string, inputs: string[], n: number, attrs: Record<string, AttrValue> = {}): string[] {
    const outs = Array.from({ length: n }, () => this.fresh(type));
    this.nodes.push(makeNode(type, inputs, outs, outs[0]!, attrs));
    return outs;
  }

  /** An int64 constant (1-D unless `dims` says otherwise), shared by every use of the same values. */
  i64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `i64:${dims}:${values}`;
    let name = this.consts.get(key);
    if (!name) {
      name = this.fresh('const');
      this.initializers.push(makeTensor(name, dims, BigInt64Array.from(values.map((v) => BigInt(v)))));
      this.consts.set(key, name);
      this.values.set(name, BigInt64Array.from(values.map((v) => BigInt(v))));
      this.shapes.set(name, [...dims]);
    }
    return name;
  }

  /** A float32 constant (scalar by default). */
  f32(values: number | readonly number[], dims: readonly number[] = typeof values === 'number' ? [] : [values.length]): string {
    const vals = typeof values === 'number' ? [values] : values;
    const key = `f32:${dims}:${vals}`;
    let name = this.consts.get(key);
    if (!name) {
      name = this.fresh('const');
      this.initializers.push(makeTensor(name, dims, Float32Array.from(vals)));
      this.consts.set(key, name);
      this.shapes.set(name, [...dims]);
    }
    return name;
  }

  shape(name: string): number[] {
    const s = this.shapes.get(name);
    if (!s) throw Errors.state(`onnx training graph: no shape known for value "${name}"`);
    return s;
  }

  /** The integer contents of a constant or probed tensor (axes, pads, bounds), or undefined. */
  ints(name: string | undefined): number[] | undefined {
    if (!name) return undefined;
    const v = this.values.get(name);
    if (!v) return undefined;
    return Array.from(v as ArrayLike<number | bigint>, (x) => Number(x));
  }

  /** Reshape `x` to `dims` (no-op when the shape already matches). */
  reshape(x: string, dims: readonly number[]): string {
    const s = this.shapes.get(x);
    if (s && sameShape(s, dims)) return x;
    return this.op('Reshape', [x, this.i64(dims)], {}, dims);
  }

  /**
   * Sum a broadcast gradient `g` (shape `from`) down to `to` (numpy broadcasting in reverse): leading axes and
   * axes where `to` has 1 are summed.
   */
  sumTo(g: string, from: readonly number[], to: readonly number[]): string {
    if (sameShape(from, to)) return g;
    const lead = from.length - to.length;
    const axes: number[] = [];
    for (let i = 0; i < from.length; i++) if (i < lead || (to[i - lead] === 1 && from[i] !== 1)) axes.push(i);
    const r = axes.length ? this.op('ReduceSum', [g, this.i64(axes)], { keepdims: 1 }) : g;
    return this.reshape(r, to);
  }

  /** `x` with its last two axes swapped. */
  swapLast(x: string, dims: readonly number[]): string {
    const perm = dims.map((_, i) => i);
    const n = dims.length;
    [perm[n - 2], perm[n - 1]] = [perm[n - 1]!, perm[n - 2]!];
    const out = [...dims];
    [out[n - 2], out[n - 1]] = [out[n - 1]!, out[n - 2]!];
    return this.op('Transpose', [x], { perm }, out);
  }

  /** Zeros of a static shape. */
  zeros(dims: readonly number[]): string {
    return this.op('ConstantOfShape', [this.i64(dims)], { value: { tensor: makeTensor('', [1], new Float32Array(1)) } }, dims);
  }
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export const numel = (dims: readonly number[]) => dims.reduce((p, d) => p * d, 1);

/** Broadcast shape of two shapes (numpy rules). */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    out.push(x === 1 ? y : x);
  }
  return out;
}
