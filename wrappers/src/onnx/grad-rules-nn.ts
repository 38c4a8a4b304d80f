import { makeTensor } from './proto.js';
import { attrInt, attrInts, getAttr, type NodeProto } from './proto.js';
import { UnsupportedGradient, type GradContext, type GradRule } from './grad-rules.js';

/**
 * Reverse-mode rules for the layer ops: Conv (2-D, group 1), MaxPool (through the Indices output the training
 * rewrite adds) and AveragePool (2-D), and Gather along axis 0 (a scatter-add; parameter tables take the
 * row-sparse path in `training-graph.ts` instead).
 */
const inp = (c: GradContext, i: number) => c.node.input![i]!;

function autoPadNotSet(node: NodeProto): void {
  const a = getAttr(node, 'auto_pad');
  const v = a?.s ? new TextDecoder().decode(a.s) : 'NOTSET';
  if (v !== 'NOTSET' && v !== '') throw new UnsupportedGradient(`auto_pad ${v} (export with explicit pads)`);
}

/** The 2-D geometry of a Conv or pooling node: kernel, strides, pads [top, left, bottom, right], dilations. */
function geometry(c: GradContext, kernel: number[]) {
  const xs = c.b.shape(inp(c, 0));
  if (xs.length !== 4) throw new UnsupportedGradient(`${c.node.opType} on a rank-${xs.length} input (only 2-D: NCHW)`);
  autoPadNotSet(c.node);
  if (attrInt(c.node, 'ceil_mode', 0) !== 0) throw new UnsupportedGradient('ceil_mode 1');
  return {
    xs,
    ys: c.b.shape(c.node.output![0]!),
    k: kernel,
    s: attrInts(c.node, 'strides', [1, 1]),
    p: attrInts(c.node, 'pads', [0, 0, 0, 0]),
    d: attrInts(c.node, 'dilations', [1, 1]),
  };
}

/** output_padding making ConvTranspose give back the forward input's spatial size. */
function outputPadding(g: ReturnType<typeof geometry>): number[] {
  return [0, 1].map((i) => g.xs[2 + i]! - ((g.ys[2 + i]! - 1) * g.s[i]! - g.p[i]! - g.p[i + 2]! + g.d[i]! * (g.k[i]! - 1) + 1));
}

const conv: GradRule = (c) => {
  const { b } = c;
  if (attrInt(c.node, 'group', 1) !== 1) throw new UnsupportedGradient('Conv with group != 1');
  const ws = b.shape(inp(c, 1));
  const g = geometry(c, ws.slice(2));
  const dy = c.dy[0]!;
  const dx = c.need[0] ? b.op('ConvTranspose', [dy, inp(c, 1)], { strides: g.s, pads: g.p, dilations: g.d, output_padding: outputPadding(g) }, g.xs) : null;
  let dw: string | null = null;
  if (c.need[1]) {
    // dW[o,c,i,j] = sum_{n,y,x} dY[n,o,y,x] Xpad[n,c,y*s+i*d, x*s+j*d]: one GEMM per kernel offset (i,j) of the
    // strided window of the padded input [C, N*Ho*Wo] by dY [O, N*Ho*Wo]^T. The bench CNN step: 6.3 CPU ms against 7.2
    // for one Conv of X^T with dY^T as an (Ho x Wo) kernel (onnxruntime im2cols a buffer N*Ho*Wo wide).
    const [N, C, H, W] = g.xs as [number, number, number, number];
    const [O, Ho, Wo] = [ws[0]!, g.ys[2]!, g.ys[3]!];
    const padded = g.p.some((v) => v !== 0) ? b.op('Pad', [inp(c, 0), b.i64([0, 0, g.p[0]!, g.p[1]!, 0, 0, g.p[2]!, g.p[3]!])], { mode: 'constant' }) : inp(c, 0);
    const xc = b.op('Transpose', [padded], { perm: [1, 0, 2, 3] }, [C, N, H + g.p[0]! + g.p[2]!, W + g.p[1]! + g.p[3]!]);
    const gm = b.reshape(b.op('Transpose', [dy], { perm: [1, 0, 2, 3] }), [O, N * Ho * Wo]);
    const parts: string[] = [];
    for (let i = 0; i < g.k[0]!; i++) {
      for (let j = 0; j < g.k[1]!; j++) {
        const y0 = i * g.d[0]!;
        const x0 = j * g.d[1]!;
        const win = b.op('Slice', [xc, b.i64([y0, x0]), b.i64([y0 + (Ho - 1) * g.s[0]! + 1, x0 + (Wo - 1) * g.s[1]! + 1]), b.i64([2, 3]), b.i64(g.s)]);
        parts.push(b.op('Gemm', [b.reshape(win, [C, N * Ho * Wo]), gm], { transB: 1 }, [C, O]));
      }
    }
    const stacked = b.reshape(b.op('Concat', parts, { axis: 0 }), [g.k[0]!, g.k[1]!, C, O]);
    dw = b.op('Transpose', [stacked], { perm: [3, 2, 0, 1] }, ws);
  }
  const db = c.need[2] && c.node.input![2] ? b.op('ReduceSum', [dy, b.i64([0, 2, 3])], { keepdims: 0 }, b.shape(inp(c, 2))) : null;
  return [dx, dw, db];
};

const maxPool: GradRule = (c) => {
  const { b } = c;
  const xs = b.shape(inp(c, 0));
  geometry(c, attrInts(c.node, 'kernel_shape', []));
  if (attrInt(c.node, 'storage_order', 0) !== 0) throw new UnsupportedGradient('MaxPool storage_order 1');
  const idx = c.node.output![1];
  if (!idx) throw new UnsupportedGradient('MaxPool without its Indices output (internal: the training rewrite adds it)');
  // Indices are positions in the flattened input (N and C included): scatter-add dY there.
  const n = xs.reduce((p, d) => p * d, 1);
  const flat = b.op('ScatterElements', [b.zeros([n]), b.reshape(idx, [-1]), b.reshape(c.dy[0]!, [-1])], { axis: 0, reduction: 'add' }, [n]);
  return [b.reshape(flat, xs)];
};

const averagePool: GradRule = (c) => {
  const { b } = c;
  const g = geometry(c, attrInts(c.node, 'kernel_shape', []));
  const [N, C, H, W] = g.xs as [number, number, number, number];
  const [Ho, Wo] = [g.ys[2]!, g.ys[3]!];
  const includePad = attrInt(c.node, 'count_include_pad', 0) === 1;
  // Divisor of each output position (the count of the window's elements inside the input unless pads count).
  const div = new Float32Array(Ho * Wo);
  for (let y = 0; y < Ho; y++) {
    for (let x = 0; x < Wo; x++) {
      const y0 = y * g.s[0]! - g.p[0]!;
      const x0 = x * g.s[1]! - g.p[1]!;
      const rows = includePad ? g.k[0]! : Math.min(y0 + g.k[0]!, H) - Math.max(y0, 0);
      const cols = includePad ? g.k[1]! : Math.min(x0 + g.k[1]!, W) - Math.max(x0, 0);
      div[y * Wo + x] = 1 / (rows * cols);
    }
  }
  const divName = b.fresh('avgpool_div');
  b.initializers.push(makeTensor(divName, [Ho, Wo], div));
  const scaled = b.reshape(b.op('Mul', [c.dy[0]!, divName]), [N * C, 1, Ho, Wo]);
  const ones = b.f32(new Array<number>(g.k[0]! * g.k[1]!).fill(1), [1, 1, g.k[0]!, g.k[1]!]);
  const spread = b.op('ConvTranspose', [scaled, ones], { strides: g.s, pads: g.p, output_padding: outputPadding({ ...g, d: [1, 1] }) }, [N * C, 1, H, W]);
  return [b.reshape(spread, g.xs)];
};

const gather: GradRule = (c) => {
  const { b } = c;
  if (c.need[1]) throw new UnsupportedGradient('Gather indices cannot need a gradient');
  const xs = b.shape(inp(c, 0));
  let axis = attrInt(c.node, 'axis', 0);
  if (axis < 0) axis += xs.length;
  if (axis !== 0) throw new UnsupportedGradient(`Gather along axis ${axis} (only axis 0 has a gradient)`);
  const is = b.shape(inp(c, 1));
  const idx = b.op('Cast', [inp(c, 1)], { to: 7 }, is);
  const idxNd = b.reshape(idx, [...is, 1]);
  return [b.op('ScatterND', [b.zeros(xs), idxNd, c.dy[0]!], { reduction: 'add' }, xs), null];
};

export const NN_RULES: Record<string, GradRule> = { Conv: conv, MaxPool: maxPool, AveragePool: averagePool, Gather: gather };
