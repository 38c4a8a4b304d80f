import { Errors } from '@shoal/core';
import { numel, type GraphBuilder } from './builder.js';
import { DT } from './proto.js';

/**
 * Losses appended to a model's output for training: each gives the scalar mean loss and, directly (no graph
 * differentiation), the gradient of that loss with respect to the model output, which seeds the backward pass.
 *
 * - `softmaxCrossEntropy`: logits `[batch, classes]`, integer labels `[batch]` (PyTorch `F.cross_entropy`).
 * - `bceWithLogits`: logits and 0/1 float labels of the same shape (`F.binary_cross_entropy_with_logits`).
 * - `mse`: predictions and float targets of the same shape, mean over every element (`F.mse_loss`).
 * - `output`: the model output is already the scalar loss (labels, if any, are ordinary model inputs).
 */
export type LossKind = 'softmaxCrossEntropy' | 'bceWithLogits' | 'mse' | 'output';
export const LOSS_KINDS: readonly LossKind[] = ['softmaxCrossEntropy', 'bceWithLogits', 'mse', 'output'];

export interface LossNodes {
  loss: string;
  seed: string;
  /** The labels input (absent for `output`): element type and dims. */
  labels?: { name: string; elemType: number; dims: number[] };
}

export const LABELS_INPUT = 'shoal/labels';

export function appendLoss(b: GraphBuilder, kind: LossKind, pred: string): LossNodes {
  const ps = b.shape(pred);
  const n = numel(ps);
  switch (kind) {
    case 'softmaxCrossEntropy': {
      if (ps.length !== 2) throw Errors.invalidArg('options.loss', `softmaxCrossEntropy needs logits [batch, classes]; output "${pred}" has shape [${ps}]`);
      const [B, C] = ps as [number, number];
      const ls = b.op('LogSoftmax', [pred], { axis: 1 }, ps);
      const oh = b.op('OneHot', [LABELS_INPUT, b.i64([C]), b.f32([0, 1])], { axis: -1 }, ps);
      const loss = b.op('Mul', [b.op('ReduceSum', [b.op('Mul', [oh, ls])], { keepdims: 0 }), b.f32(-1 / B)], {}, []);
      const seed = b.op('Mul', [b.op('Sub', [b.op('Exp', [ls]), oh]), b.f32(1 / B)], {}, ps);
      return { loss, seed, labels: { name: LABELS_INPUT, elemType: DT.INT64, dims: [B] } };
    }
    case 'bceWithLogits': {
      // max(z, 0) - z*y + log(1 + exp(-|z|)): stable for large |z|
      const z = pred;
      const terms = b.op('Add', [b.op('Sub', [b.op('Relu', [z]), b.op('Mul', [z, LABELS_INPUT])]), b.op('Softplus', [b.op('Neg', [b.op('Abs', [z])])])]);
      const loss = b.op('ReduceMean', [terms], { keepdims: 0 }, []);
      const seed = b.op('Mul', [b.op('Sub', [b.op('Sigmoid', [z]), LABELS_INPUT]), b.f32(1 / n)], {}, ps);
      return { loss, seed, labels: { name: LABELS_INPUT, elemType: DT.FLOAT, dims: ps } };
    }
    case 'mse': {
      const d = b.op('Sub', [pred, LABELS_INPUT]);
      const loss = b.op('ReduceMean', [b.op('Mul', [d, d])], { keepdims: 0 }, []);
      const seed = b.op('Mul', [d, b.f32(2 / n)], {}, ps);
      return { loss, seed, labels: { name: LABELS_INPUT, elemType: DT.FLOAT, dims: ps } };
    }
    case 'output': {
      if (n !== 1) throw Errors.invalidArg('options.loss', `"output" needs a scalar model output; "${pred}" has shape [${ps}]`);
      return { loss: b.reshape(pred, []), seed: b.f32(1, ps) };
    }
    default:
      throw Errors.invalidArg('options.loss', `must be one of ${LOSS_KINDS.join(', ')}, got ${JSON.stringify(kind)}`);
  }
}
