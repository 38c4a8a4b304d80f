import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import type { BridgeStats } from './gradient-bridge.js';
import type { LearningRateSchedule } from './schedules.js';

export type Logs = Record<string, number>;

export interface EpochRecord extends Logs {
  epoch: number;
  seconds: number;
  samplesPerSec: number;
  /** The optimizer's learning rate at the end of the epoch. */
  learningRate: number;
}
export interface History {
  epochs: EpochRecord[];
  /** Epoch training started at (> 0 after a resume or with `initialEpoch`). */
  startEpoch: number;
  /** True when a callback stopped training (`model.stopTraining`) before the last epoch. */
  stopped: boolean;
}

/** What a callback sees of the trainer (set through `setTrainer` before `onTrainBegin`). */
export interface CallbackTrainer {
  readonly rank: number;
  readonly size: number;
  readonly model: tfjs.LayersModel;
  /** Optimizer steps taken so far over the whole run (restored on resume). */
  readonly globalStep: number;
  /** The optimizer's learning rate; setting it takes effect at the next step. */
  learningRate: number;
  /** Timings of the last step (compute / sync / apply ms). */
  readonly stepStats: BridgeStats | undefined;
  /** Time and throughput of the epoch that just ended (set before `onEpochEnd`). */
  readonly lastEpoch: { seconds: number; samplesPerSec: number } | undefined;
  /** Bytes this rank's engine sent and received so far. */
  syncStats(): { bytesSent: number; bytesReceived: number; ops: number };
  /** Save the model in the tfjs Layers format (rank 0 writes; collective-free). */
  save(url: string): Promise<unknown>;
}

/**
 * Training callbacks, called on every rank in the same order. Setting `trainer.model.stopTraining = true` in any
 * hook on any rank stops every rank at the same step: the trainer agrees on it with one scalar allreduce after
 * each batch (only when some callback has batch hooks and does not declare `stopsOnBatch: false`) and after each
 * epoch. Objects built by `tf.callbacks.*` (tfjs' own `earlyStopping`) work too: they get `setModel`/`setParams`.
 */
export interface Callbacks {
  /** Called once before `onTrainBegin` with the trainer running the fit. */
  setTrainer?(trainer: CallbackTrainer): void;
  onTrainBegin?(): void | Promise<void>;
  onEpochBegin?(epoch: number): void | Promise<void>;
  /** Before optimizer step `step` (0-based within the epoch). */
  onBatchBegin?(step: number): void | Promise<void>;
  /** Local (this rank's) loss and metrics of the batch. */
  onBatchEnd?(step: number, logs: Logs): void | Promise<void>;
  /**
   * Loss and metrics of the batch averaged over all ranks (samples-weighted). Defining it costs one small
   * allreduce per step (shared with the stop agreement).
   */
  onGlobalBatchEnd?(step: number, logs: Logs): void | Promise<void>;
  /** Loss and metrics averaged over all ranks (and `val_*` with validation data). */
  onEpochEnd?(epoch: number, logs: Logs): void | Promise<void>;
  onTrainEnd?(history: History): void | Promise<void>;
  /** false: this callback's batch hooks never set `stopTraining` (spares the per-step agreement). */
  readonly stopsOnBatch?: boolean;
}

type Mode = 'auto' | 'min' | 'max';
function better(mode: Mode, monitor: string): (a: number, b: number, minDelta: number) => boolean {
  const max = mode === 'max' || (mode === 'auto' && /acc|auc|precision|recall|f1/i.test(monitor));
  return max ? (a, b, d) => a - d > b : (a, b, d) => a + d < b;
}
function checkKeys(where: string, o: object, allowed: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw Errors.invalidArg(`${where} option ${k}`, `is not supported (known: ${allowed.join(', ')})`);
}
function checkMode(where: string, mode: unknown): Mode {
  if (mode !== 'auto' && mode !== 'min' && mode !== 'max') throw Errors.invalidArg(`${where} mode`, `must be auto|min|max, got ${JSON.stringify(mode)}`);
  return mode;
}
function monitored(where: string, logs: Logs, monitor: string): number {
  const v = logs[monitor];
  if (v === undefined) throw Errors.invalidArg(`${where} monitor`, `names ${JSON.stringify(monitor)}, which is not in the epoch logs (${Object.keys(logs).join(', ')})${monitor.startsWith('val_') ? ': pass validationData or validationSplit' : ''}`);
  return v;
}

export interface EarlyStoppingOptions {
  /** Epoch log to watch (default `val_loss`). */
  monitor?: string;
  /** Smallest change that counts as an improvement (default 0). */
  minDelta?: number;
  /** Epochs without improvement before stopping (default 0). */
  patience?: number;
  /** `auto` (default): max for accuracy-like names, else min. */
  mode?: Mode;
  /** Stop unless the monitored value beats this within `patience` epochs. */
  baseline?: number;
  /** Put back the weights of the best epoch when stopping (default false). */
  restoreBestWeights?: boolean;
}

/**
 * Keras' `EarlyStopping`: stop when `monitor` has not improved for `patience` epochs. Epoch logs are the same on
 * every rank, so every rank decides alike (and the trainer agrees on the stop anyway).
 */
export function earlyStopping(options: EarlyStoppingOptions = {}): Callbacks & { readonly stoppedEpoch: number; readonly bestEpoch: number } {
  checkKeys('earlyStopping', options, ['monitor', 'minDelta', 'patience', 'mode', 'baseline', 'restoreBestWeights']);
  const monitor = options.monitor ?? 'val_loss';
  const minDelta = Math.abs(options.minDelta ?? 0);
  const patience = options.patience ?? 0;
  if (!Number.isInteger(patience) || patience < 0) throw Errors.invalidArg('earlyStopping patience', `must be a non-negative integer, got ${patience}`);
  const isBetter = better(checkMode('earlyStopping', options.mode ?? 'auto'), monitor);
  let trainer: CallbackTrainer | undefined;
  let best = NaN;
  let wait = 0;
  let bestWeights: tfjs.Tensor[] | undefined;
  const state = { stoppedEpoch: -1, bestEpoch: -1 };
  const dropBest = () => {
    for (const t of bestWeights ?? []) t.dispose();
    bestWeights = undefined;
  };
  return {
    get stoppedEpoch() {
      return state.stoppedEpoch;
    },
    get bestEpoch() {
      return state.bestEpoch;
    },
    stopsOnBatch: false,
    setTrainer: (t) => void (trainer = t),
    onTrainBegin: () => {
      best = options.baseline ?? NaN;
      wait = 0;
      state.stoppedEpoch = -1;
      dropBest();
    },
    onEpochEnd: (epoch, logs) => {
      const v = monitored('earlyStopping', logs, monitor);
      if (Number.isNaN(best) || isBetter(v, best, minDelta)) {
        best = v;
        wait = 0;
        state.bestEpoch = epoch;
        if (options.restoreBestWeights) {
          dropBest();
          bestWeights = trainer!.model.getWeights().map((w) => w.clone());
        }
        return;
      }
      wait += 1;
      if (wait > patience) {
        state.stoppedEpoch = epoch;
        trainer!.model.stopTraining = true;
      }
    },
    onTrainEnd: () => {
      if (bestWeights && state.stoppedEpoch >= 0) trainer!.model.setWeights(bestWeights);
      dropBest();
    },
  };
}

export interface ModelCheckpointOptions {
  /** Epoch log to compare with `saveBestOnly` (default `val_loss`). */
  monitor?: string;
  /** Only save when `monitor` improved (default false: every epoch). */
  saveBestOnly?: boolean;
  mode?: Mode;
}

/**
 * Keras' `ModelCheckpoint`: after each epoch, rank 0 saves the model in the tfjs Layers format to `url`
 * (`file://DIR`, `{epoch}` replaced by the 1-based epoch number), read back with `tf.loadLayersModel`.
 * For resumable training state (optimizer included) use `fit`'s `checkpoint` option instead.
 */
export function modelCheckpoint(url: string, options: ModelCheckpointOptions = {}): Callbacks & { readonly saved: string[] } {
  if (typeof url !== 'string' || url.length === 0) throw Errors.invalidArg('modelCheckpoint url', `must be a non-empty string such as 'file://models/best', got ${JSON.stringify(url)}`);
  checkKeys('modelCheckpoint', options, ['monitor', 'saveBestOnly', 'mode']);
  const monitor = options.monitor ?? 'val_loss';
  const isBetter = better(checkMode('modelCheckpoint', options.mode ?? 'auto'), monitor);
  let trainer: CallbackTrainer | undefined;
  let best = NaN;
  const saved: string[] = [];
  return {
    saved,
    stopsOnBatch: false,
    setTrainer: (t) => void (trainer = t),
    onTrainBegin: () => void (best = NaN),
    onEpochEnd: async (epoch, logs) => {
      if (options.saveBestOnly) {
        const v = monitored('modelCheckpoint', logs, monitor);
        if (!Number.isNaN(best) && !isBetter(v, best, 0)) return;
        best = v;
      }
      const target = url.replaceAll('{epoch}', String(epoch + 1));
      await trainer!.save(target);
      if (trainer!.rank === 0) saved.push(target);
    },
  };
}

/** Set the learning rate from `schedule(globalStep, epoch)` before every step (the same on every rank). */
export function learningRateScheduler(schedule: LearningRateSchedule): Callbacks {
  if (typeof schedule !== 'function') throw Errors.invalidArg('learningRateScheduler schedule', 'must be a function (step, epoch) => rate, e.g. schedules.cosine({...})');
  let trainer: CallbackTrainer | undefined;
  let epoch = 0;
  return {
    stopsOnBatch: false,
    setTrainer: (t) => void (trainer = t),
    onEpochBegin: (e) => void (epoch = e),
    onBatchBegin: () => {
      const lr = schedule(trainer!.globalStep, epoch);
      if (!Number.isFinite(lr) || lr < 0) throw Errors.invalidArg('learning-rate schedule', `returned ${lr} at step ${trainer!.globalStep}`);
      trainer!.learningRate = lr;
    },
  };
}

export interface ReduceLROnPlateauOptions {
  monitor?: string;
  /** Multiply the rate by this when stuck (default 0.1). */
  factor?: number;
  /** Epochs without improvement before reducing (default 10). */
  patience?: number;
  /** Default 1e-4. */
  minDelta?: number;
  /** Epochs to wait after a reduction before counting again (default 0). */
  cooldown?: number;
  /** Never go below this rate (default 0). */
  minLr?: number;
  mode?: Mode;
}

/** Keras' `ReduceLROnPlateau`, on the rank-averaged epoch logs (so every rank changes its rate alike). */
export function reduceLROnPlateau(options: ReduceLROnPlateauOptions = {}): Callbacks {
  checkKeys('reduceLROnPlateau', options, ['monitor', 'factor', 'patience', 'minDelta', 'cooldown', 'minLr', 'mode']);
  const monitor = options.monitor ?? 'val_loss';
  const factor = options.factor ?? 0.1;
  if (!(factor > 0 && factor < 1)) throw Errors.invalidArg('reduceLROnPlateau factor', `must be in (0, 1), got ${factor}`);
  const patience = options.patience ?? 10;
  const minDelta = options.minDelta ?? 1e-4;
  const cooldown = options.cooldown ?? 0;
  const minLr = options.minLr ?? 0;
  const isBetter = better(checkMode('reduceLROnPlateau', options.mode ?? 'auto'), monitor);
  let trainer: CallbackTrainer | undefined;
  let best = NaN;
  let wait = 0;
  let cool = 0;
  return {
    stopsOnBatch: false,
    setTrainer: (t) => void (trainer = t),
    onTrainBegin: () => {
      best = NaN;
      wait = 0;
      cool = 0;
    },
    onEpochEnd: (_epoch, logs) => {
      const v = monitored('reduceLROnPlateau', logs, monitor);
      if (cool > 0) {
        cool -= 1;
        wait = 0;
      }
      if (Number.isNaN(best) || isBetter(v, best, minDelta)) {
        best = v;
        wait = 0;
        return;
      }
      if (cool > 0) return;
      wait += 1;
      if (wait >= patience) {
        const lr = trainer!.learningRate;
        if (lr > minLr) trainer!.learningRate = Math.max(lr * factor, minLr);
        cool = cooldown;
        wait = 0;
      }
    },
  };
}
