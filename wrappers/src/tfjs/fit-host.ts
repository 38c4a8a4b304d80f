import type * as tfjs from '@tensorflow/tfjs';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';
import type { Callbacks, CallbackTrainer, Logs } from './callbacks.js';
import type { ElasticHost } from './elastic.js';
import type { TensorData } from './fit-options.js';
import type { LossFn, Metric } from './losses.js';
import type { LogSink } from './progress.js';
import type { SyncSchedule } from './sync-schedule.js';

/**
 * What `fit`'s pieces (the step loop, checkpoints, evaluation, the elastic loop) need of the Trainer: its model,
 * optimizer, engine and step counter, one step, and its output. The Trainer builds one after `init()`; kept
 * narrow so each piece can be read without the Trainer.
 */
export interface FitHost extends ElasticHost {
  readonly schedule: SyncSchedule;
  readonly metricFns: readonly Metric[];
  readonly lossFn: LossFn;
  /** Where progress and logs go, and the Trainer's own `verbose` (a fit's `verbose` overrides it). */
  readonly out: LogSink;
  readonly verbose?: 0 | 1;
  /** The job's timeline and the Trainer's `step` lane, when `shoal run --timeline` records one. */
  readonly trace?: { timeline: Timeline; lane: TimelineLane };
  /** `fn` as a span on the `step` lane when the job records a timeline. */
  traced<T>(name: string, fn: () => Promise<T>): Promise<T>;
  evaluate(data: TensorData, options: { batchSize: number; prefix: string; local?: boolean }): Promise<Logs>;
  /** `model.stopTraining`; false for a Sequential whose input shape is still unknown (tfjs cannot hold it yet). */
  stopRequested(): boolean;
}

/** tfjs' own callback objects (`tf.callbacks.earlyStopping`) take the model and params this way. */
interface TfjsCallbackHooks {
  setModel?(model: tfjs.LayersModel): void;
  setParams?(params: Record<string, unknown>): void;
}

/** Hand every callback the trainer and the model, and (tfjs callbacks) the fit's parameters. */
export function attachCallbacks(callbacks: Callbacks[], trainer: CallbackTrainer, model: tfjs.LayersModel, params?: Record<string, unknown>): void {
  for (const cb of callbacks) {
    cb.setTrainer?.(trainer);
    (cb as TfjsCallbackHooks).setModel?.(model);
    if (params) (cb as TfjsCallbackHooks).setParams?.(params);
  }
}
