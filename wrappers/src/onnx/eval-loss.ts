import type { LossKind } from './losses.js';

/**
 * The losses of `losses.ts` evaluated in TypeScript on a model's predictions (float64 sums), for `evaluate`:
 * returns the summed loss over the rows and, for softmaxCrossEntropy, the number of correct argmax predictions.
 * `pred` is `[rows, k]`; labels are class ids (`[rows]`) or targets shaped like `pred`.
 */
export function lossSums(kind: Exclude<LossKind, 'output'>, pred: Float32Array, labels: ArrayLike<number | bigint>, rows: number): { loss: number; correct: number } {
  const k = pred.length / rows;
  let loss = 0;
  let correct = 0;
  if (kind === 'softmaxCrossEntropy') {
    for (let r = 0; r < rows; r++) {
      let max = -Infinity;
      let arg = 0;
      for (let j = 0; j < k; j++) if (pred[r * k + j]! > max) [max, arg] = [pred[r * k + j]!, j];
      let sum = 0;
      for (let j = 0; j < k; j++) sum += Math.exp(pred[r * k + j]! - max);
      const y = Number(labels[r]!);
      loss += max + Math.log(sum) - pred[r * k + y]!;
      if (arg === y) correct += 1;
    }
    return { loss, correct };
  }
  // Per element, then averaged over the k elements of a row (the training loss is the mean over all elements).
  for (let i = 0; i < pred.length; i++) {
    const z = pred[i]!;
    const y = Number(labels[i]!);
    loss += (kind === 'bceWithLogits' ? Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z))) : (z - y) * (z - y)) / k;
  }
  return { loss, correct };
}
