import type * as tfjs from '@tensorflow/tfjs';
import type { GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import { batches, localSteps, syncSteps, type BatchOptions, type Dataset, type Shard, type StepsPolicy, type TrainingData } from '@shoal/datasets';
import type { Batch, BatchContext, BatchSource } from './data.js';
import type { Tf } from './runtime.js';

export interface DatasetSourceOptions extends Omit<BatchOptions, 'batchSize' | 'epoch' | 'steps'> {
  /** Model inputs: `features` (one Float32 matrix) when omitted; or several named columns, one input each. */
  inputs?: readonly string[];
  /** The label column (required). */
  label: string;
  /** Shape of a label row; default `[]` for width 1 (y is `[batch]`), `[width]` otherwise. */
  labelShape?: number[];
}

/**
 * The number of steps every rank runs per epoch over its shard: each rank's `localSteps`, exchanged with the
 * engine's `allreduceScalars` (a one-hot vector per rank), then `agreeSteps(policy)`. Collective.
 */
export async function agreeStepsPerEpoch(sync: GradientSync, shard: Shard | Dataset, batchSize: number, policy: StepsPolicy = 'wrap'): Promise<number> {
  const local = localSteps(shard, batchSize);
  return syncSteps(
    local,
    async (n) => {
      const v = new Float64Array(sync.size);
      v[sync.rank] = n;
      const mean = await sync.allreduceScalars(v);
      return Array.from(mean, (m) => Math.round(m * sync.size));
    },
    policy,
  );
}

/**
 * A `BatchSource` for `Trainer.fit` over this rank's shard of a `@shoal/datasets` dataset (Arrow, Parquet, CSV,
 * Spark partitions): each epoch runs `batches(shard, { epoch, steps: stepsPerEpoch, ... })` and turns each batch
 * into tensors: `x` from `features` (a `[b, width]` float32 matrix) or from `inputs` (one `[b, width]` tensor per
 * column, int32 columns stay int32, e.g. embedding ids), `y` from `label`. Pass the same `stepsPerEpoch` to `fit`
 * (see `agreeStepsPerEpoch`), so every rank runs the same number of steps.
 */
export function datasetSource(tf: Tf, shard: Shard | Dataset, opts: DatasetSourceOptions & { stepsPerEpoch: number }): BatchSource {
  if (!opts.label) throw Errors.invalidArg('opts.label', 'is required');
  const { inputs, label, labelShape, stepsPerEpoch, ...rest } = opts;
  const toTensor = (data: Float32Array | Int32Array, rows: number, width: number, shape?: number[]): tfjs.Tensor => {
    const dtype = data instanceof Int32Array ? 'int32' : 'float32';
    return tf.tensor(data, [rows, ...(shape ?? [width])], dtype);
  };
  return {
    async *batches(ctx: BatchContext): AsyncIterable<Batch> {
      const it = batches(shard, {
        ...rest,
        ...(inputs ? { columns: [...inputs] } : {}),
        label,
        batchSize: ctx.batchSize,
        epoch: ctx.epoch,
        steps: stepsPerEpoch,
      });
      for await (const b of it) {
        if (b.size === 0) throw Errors.data(shard.source, `rank ${ctx.rank}'s shard has no rows (give this rank some data or use fewer workers)`);
        const x = inputs ? inputs.map((c) => toTensor(b.columns[c]!, b.size, b.widths[c]!)) : toTensor(b.columns.features!, b.size, b.widths.features!);
        const lw = b.widths.label!;
        const y = toTensor(b.columns.label!, b.size, lw, labelShape ?? (lw === 1 ? [] : [lw]));
        yield { x, y: y.dtype === 'float32' ? y : castAndDispose(tf, y) };
      }
    },
  };
}

function castAndDispose(tf: Tf, t: tfjs.Tensor): tfjs.Tensor {
  const c = tf.cast(t, 'float32');
  t.dispose();
  return c;
}

/**
 * `Trainer.fit`'s view of what `worker.data()` returns: a `BatchSource` over its batches (x `[b, features]`
 * float32, y `[b]` or `[b, width]` float32) and this rank's validation rows as tensors (owned by the caller).
 */
export function trainingDataSource(tf: Tf, d: TrainingData): { source: BatchSource; validation?: { x: tfjs.Tensor; y: tfjs.Tensor } } {
  const { features: fw, label: lw } = d.widths;
  const yShape = (rows: number) => (lw === 1 ? [rows] : [rows, lw]);
  const source: BatchSource = {
    async *batches(ctx: BatchContext): AsyncIterable<Batch> {
      for await (const b of d.batches(ctx.epoch)) {
        const y = b.columns.label!;
        yield {
          x: tf.tensor(b.columns.features!, [b.size, fw], 'float32'),
          y: tf.tensor(y instanceof Float32Array ? y : Float32Array.from(y), yShape(b.size), 'float32'),
        };
      }
    },
  };
  const v = d.validation;
  if (!v) return { source };
  const y = v.label instanceof Float32Array ? v.label : Float32Array.from(v.label);
  return { source, validation: { x: tf.tensor(v.features, [v.rows, fw], 'float32'), y: tf.tensor(y, yShape(v.rows), 'float32') } };
}
