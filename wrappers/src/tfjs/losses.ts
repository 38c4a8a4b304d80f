import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';

type Tf = typeof tfjs;
type Tensor = tfjs.Tensor;

/** A loss: the mean over the batch of a per-sample loss, as a scalar. */
export type LossFn = (yTrue: Tensor, yPred: Tensor) => tfjs.Scalar;
/** The loss names `model.compile` accepts in tfjs (tfjs-layers' `lossesMap`) and Keras' short aliases. */
export type LossName =
  | 'meanSquaredError' | 'mse' | 'MSE'
  | 'meanAbsoluteError' | 'mae' | 'MAE'
  | 'meanAbsolutePercentageError' | 'mape' | 'MAPE'
  | 'meanSquaredLogarithmicError' | 'msle' | 'MSLE'
  | 'squaredHinge' | 'hinge' | 'categoricalHinge' | 'logcosh'
  | 'binaryCrossentropy' | 'categoricalCrossentropy' | 'sparseCategoricalCrossentropy'
  | 'kullbackLeiblerDivergence' | 'kld' | 'KLD' | 'poisson' | 'cosineProximity' | 'cosine';
export type LossSpec = LossName | LossFn;

/** A metric: the per-batch mean of a per-sample score (averaged over samples, then over ranks). */
export interface Metric {
  readonly name: string;
  fn: (yTrue: Tensor, yPred: Tensor) => tfjs.Scalar;
}
/**
 * Metric names as tfjs `compile` takes them: `accuracy`/`acc` and `crossentropy`/`ce` (binary, categorical or
 * sparse picked from the output shape and the loss, as tfjs does), the explicit accuracy names, and any loss name.
 * Logs use the name as given (`acc` logs `acc`, `val_acc`).
 */
export type MetricName = 'accuracy' | 'acc' | 'crossentropy' | 'ce' | 'binaryAccuracy' | 'categoricalAccuracy' | 'sparseCategoricalAccuracy' | 'precision' | 'recall' | LossName;
export type MetricSpec = MetricName | Metric;

const EPS = 1e-7; // tfjs-layers' backend epsilon()

/** Per-sample losses (last axis reduced), written after tfjs-layers' `losses.ts` (Keras' definitions). */
function perSample(tf: Tf): Record<string, (y: Tensor, p: Tensor) => Tensor> {
  const clipPos = (t: Tensor) => tf.clipByValue(t, EPS, Number.MAX_VALUE);
  const mse = (y: Tensor, p: Tensor) => tf.mean(tf.square(tf.sub(p, y)), -1);
  const mae = (y: Tensor, p: Tensor) => tf.mean(tf.abs(tf.sub(p, y)), -1);
  const mape = (y: Tensor, p: Tensor) => tf.mul(100, tf.mean(tf.abs(tf.div(tf.sub(y, p), clipPos(tf.abs(y)))), -1));
  const msle = (y: Tensor, p: Tensor) => tf.mean(tf.square(tf.sub(tf.log1p(clipPos(p)), tf.log1p(clipPos(y)))), -1);
  const sqHinge = (y: Tensor, p: Tensor) => tf.mean(tf.square(tf.relu(tf.sub(1, tf.mul(y, p)))), -1);
  const hinge = (y: Tensor, p: Tensor) => tf.mean(tf.relu(tf.sub(1, tf.mul(y, p))), -1);
  const catHinge = (y: Tensor, p: Tensor) => tf.relu(tf.add(1, tf.sub(tf.max(tf.mul(tf.sub(1, y), p), -1), tf.sum(tf.mul(y, p), -1))));
  const logcosh = (y: Tensor, p: Tensor) => {
    const d = tf.sub(p, y);
    return tf.mean(tf.sub(tf.add(d, tf.softplus(tf.mul(-2, d))), Math.log(2)), -1);
  };
  const bce = (y: Tensor, p: Tensor) => tf.metrics.binaryCrossentropy(y, p);
  const cce = (y: Tensor, p: Tensor) => tf.metrics.categoricalCrossentropy(y, p);
  const scce = (y: Tensor, p: Tensor) => {
    const classes = p.shape[p.shape.length - 1]!;
    const labels = tf.oneHot(tf.cast(y.flatten(), 'int32') as tfjs.Tensor1D, classes);
    return tf.metrics.categoricalCrossentropy(labels, p.reshape([-1, classes]));
  };
  const kld = (y: Tensor, p: Tensor) => {
    const yc = tf.clipByValue(y, EPS, 1);
    return tf.sum(tf.mul(y, tf.log(tf.div(yc, tf.clipByValue(p, EPS, 1)))), -1);
  };
  const poisson = (y: Tensor, p: Tensor) => tf.mean(tf.sub(p, tf.mul(y, tf.log(tf.add(p, EPS)))), -1);
  const cosine = (y: Tensor, p: Tensor) => tf.metrics.cosineProximity(y, p);
  return {
    meanSquaredError: mse, mse, MSE: mse,
    meanAbsoluteError: mae, mae, MAE: mae,
    meanAbsolutePercentageError: mape, mape, MAPE: mape,
    meanSquaredLogarithmicError: msle, msle, MSLE: msle,
    squaredHinge: sqHinge, hinge, categoricalHinge: catHinge, logcosh,
    binaryCrossentropy: bce, categoricalCrossentropy: cce, sparseCategoricalCrossentropy: scce,
    kullbackLeiblerDivergence: kld, kld, KLD: kld, poisson, cosineProximity: cosine, cosine,
  };
}

/** Resolve a loss spec to a function. Throws RangeError naming an unknown loss. */
export function resolveLoss(tf: Tf, spec: LossSpec): LossFn {
  if (typeof spec === 'function') return spec;
  const table = perSample(tf);
  const f = typeof spec === 'string' && Object.hasOwn(table, spec) ? table[spec] : undefined;
  if (!f) throw Errors.invalidArg('options.loss', `must be a function or one of ${Object.keys(table).join('|')}, got ${JSON.stringify(spec)}`);
  const sparse = spec === 'sparseCategoricalCrossentropy';
  return (y, p) => tf.mean(f(sparse ? y : align(y, p), p)) as tfjs.Scalar;
}

/** Labels of shape `[n]` for predictions `[n, 1]` (and the like): reshaped to the predictions' shape, as Keras does. */
function align(y: Tensor, p: Tensor): Tensor {
  return y.size === p.size && y.shape.join() !== p.shape.join() ? y.reshape(p.shape) : y;
}

/**
 * Resolve a metric spec. `accuracy`/`acc` picks the Keras meaning as tfjs does: one output unit (or a binary
 * cross-entropy loss) -> binary accuracy at 0.5; several units and one-hot labels of the same shape ->
 * categorical; several units and integer labels -> sparse categorical. `crossentropy`/`ce` likewise.
 */
export function resolveMetric(tf: Tf, spec: MetricSpec, loss?: LossSpec): Metric {
  if (typeof spec === 'object' && spec && typeof spec.fn === 'function' && typeof spec.name === 'string') return spec;
  const table = perSample(tf);
  const mean = (t: Tensor) => tf.mean(t) as tfjs.Scalar;
  const binary = (p: Tensor) => p.shape.length === 1 || p.shape[p.shape.length - 1] === 1 || loss === 'binaryCrossentropy';
  const sparseLabels = (y: Tensor, p: Tensor) => !(y.shape.length === p.shape.length && y.shape[y.shape.length - 1] === p.shape[p.shape.length - 1]);
  const binaryAcc = (y: Tensor, p: Tensor) => tf.metrics.binaryAccuracy(y.reshape(p.shape), p);
  const catAcc = (y: Tensor, p: Tensor) => tf.cast(tf.equal(p.argMax(-1), y.argMax(-1)), 'float32');
  const sparseAcc = (y: Tensor, p: Tensor) => tf.cast(tf.equal(p.argMax(-1), tf.cast(y.reshape(p.shape.slice(0, -1)), 'int32')), 'float32');
  const fns: Record<string, (y: Tensor, p: Tensor) => Tensor> = {
    binaryAccuracy: binaryAcc,
    categoricalAccuracy: catAcc,
    sparseCategoricalAccuracy: sparseAcc,
    precision: (y, p) => tf.metrics.precision(y.reshape(p.shape), p),
    recall: (y, p) => tf.metrics.recall(y.reshape(p.shape), p),
    ...table,
  };
  const accuracy = (y: Tensor, p: Tensor) => (binary(p) ? binaryAcc(y, p) : sparseLabels(y, p) ? sparseAcc(y, p) : catAcc(y, p));
  const crossentropy = (y: Tensor, p: Tensor) => (binary(p) ? table.binaryCrossentropy!(y.reshape(p.shape), p) : sparseLabels(y, p) ? table.sparseCategoricalCrossentropy!(y, p) : table.categoricalCrossentropy!(y, p));
  fns.accuracy = fns.acc = accuracy;
  fns.crossentropy = fns.ce = crossentropy;
  const f = typeof spec === 'string' && Object.hasOwn(fns, spec) ? fns[spec] : undefined;
  if (!f) throw Errors.invalidArg('options.metrics', `entries must be {name, fn} or one of ${Object.keys(fns).join('|')}, got ${JSON.stringify(spec)}`);
  const raw = spec === 'accuracy' || spec === 'acc' || spec === 'crossentropy' || spec === 'ce' || spec === 'sparseCategoricalAccuracy' || spec === 'sparseCategoricalCrossentropy';
  return { name: spec as string, fn: (y, p) => mean(f(raw ? y : align(y, p), p)) };
}

/** Optimizer names tfjs `compile` accepts, with tfjs-layers' defaults (`optimizers.ts`). */
export type OptimizerName = 'sgd' | 'SGD' | 'adam' | 'Adam' | 'adamax' | 'Adamax' | 'adagrad' | 'Adagrad' | 'adadelta' | 'Adadelta' | 'rmsprop' | 'RMSProp';
export type OptimizerSpec = OptimizerName | tfjs.Optimizer | ((tf: Tf) => tfjs.Optimizer);

/** Build the optimizer a spec names. Throws RangeError naming an unknown one. */
export function resolveOptimizer(tf: Tf, spec: OptimizerSpec): tfjs.Optimizer {
  if (typeof spec === 'function') return spec(tf);
  if (typeof spec === 'object' && spec !== null && typeof (spec as tfjs.Optimizer).applyGradients === 'function') return spec;
  const table: Record<string, () => tfjs.Optimizer> = {
    SGD: () => tf.train.sgd(0.01),
    Adam: () => tf.train.adam(0.001, 0.9, 0.999, EPS),
    Adamax: () => tf.train.adamax(0.002, 0.9, 0.999, EPS, 0),
    Adagrad: () => tf.train.adagrad(0.01),
    Adadelta: () => tf.train.adadelta(1, 0.95, EPS),
    RMSProp: () => tf.train.rmsprop(0.001, 0.9, 0, EPS),
  };
  for (const k of Object.keys(table)) table[k.toLowerCase()] = table[k]!;
  const make = typeof spec === 'string' && Object.hasOwn(table, spec) ? table[spec] : undefined;
  if (!make) throw Errors.invalidArg('options.optimizer', `must be a tf.Optimizer, a function returning one, or one of ${Object.keys(table).join('|')}, got ${JSON.stringify(spec)}`);
  return make();
}
