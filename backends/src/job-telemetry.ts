import type { Timeline } from '@shoal/core/telemetry';
import type { GradientSync } from './api.js';

/**
 * What the job asks every rank to log (`shoal run --logdir DIR` sets `SHOAL_LOGDIR`, `--timeline FILE` sets
 * `SHOAL_TIMELINE`; both parsed once by `initWorker`).
 */
export interface JobTelemetry {
  /** TensorBoard log folder shared by the ranks: the tfjs Trainer adds a `tensorBoard(logdir)` callback to each fit. */
  readonly logdir?: string;
  /**
   * This rank's timeline recorder (owned by the worker handle): the engine traces its sync ops on it, the Trainer
   * its compute, apply, data and checkpoint phases.
   */
  readonly timeline?: Timeline;
}

/**
 * The job's telemetry settings travel with the engine the worker join built, so a script that hands
 * `worker.sync` to its Trainer logs without code changes. A side table keyed by the engine object, not
 * process-wide configuration: two workers in one process keep their own settings, and nothing outlives the engine.
 */
const byEngine = new WeakMap<GradientSync, JobTelemetry>();

export function attachJobTelemetry(sync: GradientSync, telemetry: JobTelemetry | undefined): void {
  if (telemetry) byEngine.set(sync, telemetry);
}

export function jobTelemetryOf(sync: GradientSync): JobTelemetry | undefined {
  return byEngine.get(sync);
}
