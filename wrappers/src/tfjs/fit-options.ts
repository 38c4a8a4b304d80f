import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import type { Callbacks } from './callbacks.js';
import { isTrainingData } from '@shoal/datasets';
import { isBatchSource, numSamples, type TrainData } from './data.js';
import { trainingDataSource } from './dataset-source.js';

type Tf = typeof tfjs;
type Tensor = tfjs.Tensor;
export type TensorData = { x: Tensor | Tensor[]; y: Tensor };
/** Validation data: `{ x, y }` or Keras' `[x, y]`. */
export type ValidationData = TensorData | [Tensor | Tensor[], Tensor];

export interface CheckpointOptions {
  dir: string;
  /** Save after every this many epochs (default 1; the last epoch is always saved). */
  everyEpochs?: number;
  /** Also save after every this many optimizer steps (counted over the whole run). */
  everySteps?: number;
  /** Also save when this many seconds passed since the last save (rank 0's clock; checked after each step). */
  everySeconds?: number;
  /** Checkpoints kept (default 2). */
  keep?: number;
  /** Resume from the newest checkpoint in `dir` (default true). */
  resume?: boolean;
}

export interface FitOptions {
  /** Default 1 (as in tfjs). */
  epochs?: number;
  /** Per-worker batch size (the global batch is `batchSize * worldSize`); default 32 (as in tfjs). */
  batchSize?: number;
  /** Cap on steps per epoch; required for a `BatchSource` when there is more than one worker. */
  stepsPerEpoch?: number;
  /** Shuffle in-memory data each epoch with a seed shared by all ranks (default true). */
  shuffle?: boolean;
  seed?: number;
  callbacks?: Callbacks | Callbacks[];
  /** Scored after each epoch (each rank its shard, averaged) into `val_*` logs. */
  validationData?: ValidationData;
  /** Hold out this last fraction of in-memory `x`/`y` (before shuffling, as Keras does) as validation data. */
  validationSplit?: number;
  /** Validate every this many epochs (default 1). */
  validationFreq?: number;
  /** Per-worker batch size for validation (default: `batchSize`). */
  validationBatchSize?: number;
  /** Epoch to start at when not resuming from a checkpoint (default 0). */
  initialEpoch?: number;
  /** 0 = silent, 1 = progress on rank 0 (default: the trainer's `verbose`). */
  verbose?: 0 | 1;
  /**
   * Save a checkpoint (weights, optimizer state, position in the data) to `dir` from rank 0, atomically, every
   * `everyEpochs` epochs and optionally every `everySteps` steps / `everySeconds` seconds; resume from the newest
   * one there when `resume` (default true), mid-epoch included. With several hosts the folder must be shared;
   * `shoal run` workers share the local disk.
   */
  checkpoint?: CheckpointOptions;
}

/** tfjs `fit` options shoal refuses by name, with what to do instead. */
const UNSUPPORTED: Record<string, string> = {
  classWeight: 'weight the classes inside a custom loss function',
  sampleWeight: 'weight the samples inside a custom loss function',
  validationSteps: 'validation data is scored whole (each rank its shard); pass a smaller validationData',
  yieldEvery: 'shoal yields to the event loop at every collective already',
};
const KNOWN = ['epochs', 'batchSize', 'stepsPerEpoch', 'shuffle', 'seed', 'callbacks', 'validationData', 'validationSplit', 'validationFreq', 'validationBatchSize', 'initialEpoch', 'verbose', 'checkpoint'];
const CHECKPOINT_KEYS = ['dir', 'everyEpochs', 'everySteps', 'everySeconds', 'keep', 'resume'];

/** Normalised `fit` arguments. */
export interface FitPlan {
  data: TrainData;
  validation?: TensorData;
  /** The validation data is this rank's own (from `worker.data()`), scored whole rather than split by rank. */
  validationLocal?: boolean;
  /** Tensors `fit` made (the validation split) and must dispose. */
  owned: Tensor[];
  epochs: number;
  batchSize: number;
  options: FitOptions;
}

export function isTensor(v: unknown): v is Tensor {
  return typeof v === 'object' && v !== null && typeof (v as Tensor).dataSync === 'function' && Array.isArray((v as Tensor).shape);
}

function checkKeys(where: string, o: object, known: string[], unsupported: Record<string, string> = {}): void {
  for (const k of Object.keys(o)) {
    if ((o as Record<string, unknown>)[k] === undefined) continue;
    if (k in unsupported) throw Errors.invalidArg(`${where}.${k}`, `is a tfjs option shoal does not support: ${unsupported[k]}`);
    if (!known.includes(k)) throw Errors.invalidArg(`${where}.${k}`, `is not an option shoal knows (known: ${known.join(', ')})`);
  }
}

function positiveInt(name: string, v: unknown): void {
  if (!Number.isInteger(v) || (v as number) < 1) throw Errors.invalidArg(name, `must be a positive integer, got ${JSON.stringify(v)}`);
}

/**
 * Accept both Keras call shapes, `fit(x, y, options)` and `fit({ x, y } | batchSource, options)`, validate every
 * option (unknown or unsupported ones are errors naming them), and split off `validationSplit`.
 */
export function planFit(tf: Tf, a: unknown, b: unknown, c: unknown): FitPlan {
  let data: TrainData;
  let options: FitOptions;
  if (isTensor(a) || (Array.isArray(a) && a.every(isTensor))) {
    if (!isTensor(b)) throw Errors.invalidArg('fit(x, y, options)', 'y must be a tf.Tensor');
    data = { x: a as Tensor | Tensor[], y: b };
    options = (c ?? {}) as FitOptions;
  } else {
    if (typeof a !== 'object' || a === null) throw Errors.invalidArg('fit data', 'must be tensors (fit(x, y, options)), { x, y } or a BatchSource');
    if (c !== undefined) throw Errors.invalidArg('fit', 'takes (x, y, options) or (data, options): got a third argument after data that is not a tensor');
    data = a as TrainData;
    options = (b ?? {}) as FitOptions;
  }
  if (isTrainingData(data)) return planTrainingData(tf, data, options);
  if (typeof options !== 'object' || options === null) throw Errors.invalidArg('fit options', 'must be an object');
  checkKeys('fit options', options, KNOWN, UNSUPPORTED);
  const epochs = options.epochs ?? 1;
  if (!Number.isInteger(epochs) || epochs < 0) throw Errors.invalidArg('fit options.epochs', `must be a non-negative integer, got ${options.epochs}`);
  const batchSize = options.batchSize ?? 32;
  positiveInt('fit options.batchSize', batchSize);
  if (options.stepsPerEpoch !== undefined) positiveInt('fit options.stepsPerEpoch', options.stepsPerEpoch);
  if (options.validationFreq !== undefined) positiveInt('fit options.validationFreq', options.validationFreq);
  if (options.validationBatchSize !== undefined) positiveInt('fit options.validationBatchSize', options.validationBatchSize);
  if (options.initialEpoch !== undefined && (!Number.isInteger(options.initialEpoch) || options.initialEpoch < 0)) throw Errors.invalidArg('fit options.initialEpoch', `must be a non-negative integer, got ${options.initialEpoch}`);
  if (options.verbose !== undefined && options.verbose !== 0 && options.verbose !== 1) throw Errors.invalidArg('fit options.verbose', `must be 0 or 1, got ${JSON.stringify(options.verbose)}`);
  const ck = options.checkpoint;
  if (ck !== undefined) {
    if (typeof ck !== 'object' || ck === null || typeof ck.dir !== 'string' || ck.dir === '') throw Errors.invalidArg('fit options.checkpoint.dir', 'must be a folder path');
    checkKeys('fit options.checkpoint', ck, CHECKPOINT_KEYS);
    for (const k of ['everyEpochs', 'everySteps', 'keep'] as const) if (ck[k] !== undefined) positiveInt(`fit options.checkpoint.${k}`, ck[k]);
    if (ck.everySeconds !== undefined && !(typeof ck.everySeconds === 'number' && ck.everySeconds > 0)) throw Errors.invalidArg('fit options.checkpoint.everySeconds', `must be a positive number, got ${JSON.stringify(ck.everySeconds)}`);
  }
  const owned: Tensor[] = [];
  let validation: TensorData | undefined;
  if (options.validationData !== undefined) {
    if (options.validationSplit !== undefined) throw Errors.invalidArg('fit options', 'validationData and validationSplit are exclusive');
    const v = options.validationData;
    if (Array.isArray(v)) {
      if (v.length !== 2) throw Errors.invalidArg('fit options.validationData', `as an array must be [x, y], got ${v.length} elements (sample weights are not supported)`);
      validation = { x: v[0], y: v[1] };
    } else validation = v;
    if (!validation || !isTensor(validation.y)) throw Errors.invalidArg('fit options.validationData', 'must be { x, y } or [x, y] of tensors');
    numSamples(validation, 'fit options.validationData');
  }
  if (options.validationSplit !== undefined) {
    const s = options.validationSplit;
    if (typeof s !== 'number' || !(s > 0 && s < 1)) throw Errors.invalidArg('fit options.validationSplit', `must be a number in (0, 1), got ${JSON.stringify(s)}`);
    if (isBatchSource(data)) throw Errors.invalidArg('fit options.validationSplit', 'needs in-memory x and y; with a BatchSource pass validationData');
    const n = numSamples(data, 'fit data');
    const at = Math.floor(n * (1 - s));
    if (at < 1 || at >= n) throw Errors.invalidArg('fit options.validationSplit', `${s} of ${n} samples leaves an empty training or validation set`);
    const cut = (t: Tensor, lo: number, hi: number) => {
      const r = tf.slice(t, [lo], [hi - lo]);
      owned.push(r);
      return r;
    };
    const xs = Array.isArray(data.x) ? data.x : [data.x];
    const trainX = xs.map((t) => cut(t, 0, at));
    const valX = xs.map((t) => cut(t, at, n));
    validation = { x: Array.isArray(data.x) ? valX : valX[0]!, y: cut(data.y, at, n) };
    data = { x: Array.isArray(data.x) ? trainX : trainX[0]!, y: cut(data.y, 0, at) };
  }
  return { data, ...(validation ? { validation } : {}), owned, epochs, batchSize, options };
}

/**
 * `fit(worker.data(...), options)`: the steps per epoch and batch size come from the data (the ranks agreed on
 * them); its validation rows (if any) are scored each epoch, every rank its own.
 */
function planTrainingData(tf: Tf, d: import('@shoal/datasets').TrainingData, options: FitOptions): FitPlan {
  for (const k of ['batchSize', 'stepsPerEpoch'] as const) {
    const want = k === 'batchSize' ? d.batchSize : d.stepsPerEpoch;
    if (options[k] !== undefined && options[k] !== want) throw Errors.invalidArg(`fit options.${k}`, `is ${options[k]} but the data from worker.data() has ${want}; set it in worker.data({ ${k === 'batchSize' ? 'batchSize' : 'steps'} }) instead`);
  }
  if (d.validation && (options.validationData !== undefined || options.validationSplit !== undefined)) {
    throw Errors.invalidArg('fit options', 'validationData/validationSplit cannot be combined with validation rows from worker.data() (its validation column)');
  }
  if (options.validationSplit !== undefined) throw Errors.invalidArg('fit options.validationSplit', 'needs in-memory x and y; worker.data() takes validation rows from the shoal_validation column (shoal_spark.fit(validation_df=...))');
  const plan = planFit(tf, { batches: () => [] }, { ...options, batchSize: d.batchSize, stepsPerEpoch: d.stepsPerEpoch }, undefined);
  const { source, validation } = trainingDataSource(tf, d);
  plan.data = source;
  if (validation) {
    plan.validation = validation;
    plan.validationLocal = true;
    plan.owned.push(validation.x, validation.y);
  }
  return plan;
}
