import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';

/**
 * A learning-rate schedule: the rate for optimizer step `step` (0-based, counted over the whole run and restored
 * on resume) in epoch `epoch`. Pure functions of their arguments, so every rank computes the same rate at the
 * same step without communicating. Use with the `learningRateScheduler` callback.
 */
export type LearningRateSchedule = (step: number, epoch: number) => number;

function positive(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw Errors.invalidArg(name, `must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}
function nonNegative(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw Errors.invalidArg(name, `must be a non-negative number, got ${JSON.stringify(v)}`);
  return v;
}
function checkKeys(where: string, o: object, allowed: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw Errors.invalidArg(`${where}.${k}`, `is not an option (known: ${allowed.join(', ')})`);
}

/** The schedules Keras users reach for (`tf.keras.optimizers.schedules` and the usual callback recipes). */
export const schedules = {
  /**
   * Step decay: `initial * factor^floor(epoch / everyEpochs)` (or per `everySteps` optimizer steps).
   * `step({ initial: 0.1, factor: 0.5, everyEpochs: 10 })` halves the rate every 10 epochs.
   */
  step(o: { initial: number; factor: number; everyEpochs?: number; everySteps?: number }): LearningRateSchedule {
    checkKeys('schedules.step', o, ['initial', 'factor', 'everyEpochs', 'everySteps']);
    const initial = positive('schedules.step initial', o.initial);
    const factor = positive('schedules.step factor', o.factor);
    if ((o.everyEpochs === undefined) === (o.everySteps === undefined)) throw Errors.invalidArg('schedules.step', 'needs exactly one of everyEpochs or everySteps');
    if (o.everyEpochs !== undefined) {
      const every = positive('schedules.step everyEpochs', o.everyEpochs);
      return (_s, epoch) => initial * factor ** Math.floor(epoch / every);
    }
    const every = positive('schedules.step everySteps', o.everySteps);
    return (s) => initial * factor ** Math.floor(s / every);
  },
  /** Keras `ExponentialDecay`: `initial * decayRate^(step / decaySteps)` (floored exponent when `staircase`). */
  exponential(o: { initial: number; decayRate: number; decaySteps: number; staircase?: boolean }): LearningRateSchedule {
    checkKeys('schedules.exponential', o, ['initial', 'decayRate', 'decaySteps', 'staircase']);
    const initial = positive('schedules.exponential initial', o.initial);
    const rate = positive('schedules.exponential decayRate', o.decayRate);
    const steps = positive('schedules.exponential decaySteps', o.decaySteps);
    return (s) => initial * rate ** (o.staircase ? Math.floor(s / steps) : s / steps);
  },
  /** Keras `CosineDecay`: from `initial` down to `initial * alpha` over `decaySteps` along a half cosine, then flat. */
  cosine(o: { initial: number; decaySteps: number; alpha?: number }): LearningRateSchedule {
    checkKeys('schedules.cosine', o, ['initial', 'decaySteps', 'alpha']);
    const initial = positive('schedules.cosine initial', o.initial);
    const steps = positive('schedules.cosine decaySteps', o.decaySteps);
    const alpha = nonNegative('schedules.cosine alpha', o.alpha ?? 0);
    return (s) => {
      const p = Math.min(s, steps) / steps;
      return initial * ((1 - alpha) * 0.5 * (1 + Math.cos(Math.PI * p)) + alpha);
    };
  },
  /**
   * Linear warm-up over the first `steps` steps from `initial * (1 / steps)` to the rate `then` gives at its
   * start, then `then` shifted by `steps` (so a decay starts when the warm-up ends). `then` may be a number.
   */
  warmup(o: { steps: number; then: LearningRateSchedule | number }): LearningRateSchedule {
    checkKeys('schedules.warmup', o, ['steps', 'then']);
    const steps = positive('schedules.warmup steps', o.steps);
    const after: LearningRateSchedule = typeof o.then === 'number' ? ((v) => () => v)(positive('schedules.warmup then', o.then)) : o.then;
    if (typeof after !== 'function') throw Errors.invalidArg('schedules.warmup then', 'must be a number or a schedule');
    return (s, epoch) => (s < steps ? (after(0, epoch) * (s + 1)) / steps : after(s - steps, epoch));
  },
};

/** The learning rate a tfjs optimizer applies now (every tfjs optimizer keeps it in `learningRate`). */
export function getLearningRate(opt: tfjs.Optimizer): number {
  const lr = (opt as unknown as { learningRate?: unknown }).learningRate;
  if (typeof lr !== 'number') throw Errors.state(`optimizer ${opt.getClassName()} has no numeric learningRate`);
  return lr;
}

/**
 * Set a tfjs optimizer's learning rate for its next `applyGradients`. SGD and Momentum cache `-lr` as a tensor
 * (`setLearningRate` refreshes it); the others read `this.learningRate` on every step.
 */
export function setLearningRate(opt: tfjs.Optimizer, lr: number): void {
  if (!Number.isFinite(lr) || lr < 0) throw Errors.invalidArg('learning rate', `must be a finite non-negative number, got ${lr}`);
  const o = opt as unknown as { learningRate?: unknown; setLearningRate?: (v: number) => void };
  if (typeof o.learningRate !== 'number') throw Errors.state(`optimizer ${opt.getClassName()} has no numeric learningRate`);
  if (o.learningRate === lr) return;
  if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
  else o.learningRate = lr;
}
