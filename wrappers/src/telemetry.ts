import type { GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import type { TensorBoardOptions } from './tfjs/tensorboard/tensorboard.js';

/** What the job asks every rank to log (from `shoal run --logdir DIR`: `SHOAL_LOGDIR`). */
export interface JobTelemetry {
  /** TensorBoard log folder shared by the ranks: the Trainer adds a `tensorBoard(logdir)` callback to every fit. */
  logdir?: string;
  tensorBoard?: TensorBoardOptions;
}

/** Parse the job's telemetry settings from the worker environment (read once, by the worker join). */
export function parseJobTelemetry(env: Record<string, string | undefined>): JobTelemetry | undefined {
  const logdir = env.SHOAL_LOGDIR;
  if (logdir === undefined || logdir === '') return undefined;
  if (logdir.includes('\0')) throw Errors.config('SHOAL_LOGDIR', 'contains a NUL byte');
  return { logdir };
}

/**
 * The job's telemetry settings travel with the engine the worker join built, so a script that passes
 * `worker.sync` to its Trainer logs without code changes. A side table keyed by the engine object (not
 * process-wide configuration): two workers in one process keep their own settings, and nothing outlives the engine.
 */
const byEngine = new WeakMap<GradientSync, JobTelemetry>();

export function attachJobTelemetry(sync: GradientSync, telemetry: JobTelemetry | undefined): void {
  if (telemetry) byEngine.set(sync, telemetry);
}

export function telemetryOf(sync: GradientSync): JobTelemetry | undefined {
  return byEngine.get(sync);
}
