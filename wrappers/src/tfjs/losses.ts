import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';

type Tf = typeof tfjs;
type Tensor = tfjs.Tensor;

/** A loss: the mean over the batch of a per-sample loss, as a scalar. */
export type LossFn = (yTrue: Tensor, yPred: Tensor) => tfjs.Scalar;
export type LossName = 'meanSquaredError' | 'binaryCrossentropy' | 'categoricalCrossentropy' | 'sparseCategoricalCrossentropy';
export type LossSpec = LossName | LossFn;

/** A metric: the per-batch mean of a per-sample score (averaged over samples, then over ranks). */
export interface Metric {
  readonly name: string;
  fn: (yTrue: Tensor, yPred: Tensor) => tfjs.Scalar;
}
export type MetricSpec = 'accuracy' | Metric;

/** Resolve a loss spec to a function. Throws RangeError naming an unknown loss. */
export function resolveLoss(tf: Tf, spec: LossSpec): LossFn {
  if (typeof spec === 'function') return spec;
  switch (spec) {
    case 'meanSquaredError':
      return (y, p) => tf.losses.meanSquaredError(y, p) as tfjs.Scalar;
    case 'binaryCrossentropy':
      return (y, p) => tf.metrics.binaryCrossentropy(y, p).mean() as tfjs.Scalar;
    case 'categoricalCrossentropy':
      return (y, p) => tf.metrics.categoricalCrossentropy(y, p).mean() as tfjs.Scalar;
    case 'sparseCategoricalCrossentropy':
      return (y, p) => {
        const classes = p.shape[p.shape.length - 1]!;
        const labels = tf.oneHot(tf.cast(y.flatten(), 'int32') as tfjs.Tensor1D, classes);
        return tf.metrics.categoricalCrossentropy(labels, p.reshape([-1, classes])).mean() as tfjs.Scalar;
      };
    default:
      throw Errors.invalidArg('options.loss', `must be a function or one of meanSquaredError|binaryCrossentropy|categoricalCrossentropy|sparseCategoricalCrossentropy, got ${JSON.stringify(spec)}`);
  }
}

/**
 * `accuracy` picks the Keras meaning from the shapes: one output unit -> binary accuracy at 0.5; several units
 * and one-hot labels of the same shape -> categorical; several units and integer labels -> sparse categorical.
 */
export function resolveMetric(tf: Tf, spec: MetricSpec): Metric {
  if (typeof spec === 'object' && spec && typeof spec.fn === 'function') return spec;
  if (spec !== 'accuracy') throw Errors.invalidArg('options.metrics', `entries must be 'accuracy' or {name, fn}, got ${JSON.stringify(spec)}`);
  return {
    name: 'accuracy',
    fn: (y, p) => {
      const units = p.shape[p.shape.length - 1]!;
      if (p.shape.length === 1 || units === 1) return tf.metrics.binaryAccuracy(y.reshape(p.shape), p).mean() as tfjs.Scalar;
      const predicted = p.argMax(-1);
      const truth = y.shape.length === p.shape.length && y.shape[y.shape.length - 1] === units ? y.argMax(-1) : tf.cast(y.reshape(predicted.shape), 'int32');
      return tf.cast(tf.equal(predicted, truth), 'float32').mean() as tfjs.Scalar;
    },
  };
}
