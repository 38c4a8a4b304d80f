import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Errors } from '@shoal/core';
import { mergeTimeline, timelinePartPath, type MergedTimeline } from '@shoal/core/telemetry';

/** What a job records (`shoal run --logdir`, `--timeline`), resolved once by `launch`. */
export interface LaunchTelemetry {
  /** Absolute TensorBoard folder: SHOAL_LOGDIR of every worker, `metrics.logdir` of every server. */
  readonly logdir?: string;
  /** Absolute merged timeline file: SHOAL_TIMELINE of every worker, `timeline` of every server. */
  readonly timeline?: string;
  /** The workers' SHOAL_LOGDIR / SHOAL_TIMELINE. */
  readonly env: Record<string, string>;
}

/** Resolve the paths (workers may start in another folder, or on another host) and make the timeline's folder. */
export function launchTelemetry(o: { logdir?: string; timeline?: string }): LaunchTelemetry {
  const logdir = o.logdir === undefined ? undefined : resolve(o.logdir);
  const timeline = o.timeline === undefined ? undefined : resolve(o.timeline);
  if (timeline !== undefined) {
    try {
      mkdirSync(dirname(timeline), { recursive: true });
    } catch (e) {
      throw Errors.config('timeline', `the folder of ${timeline} cannot be created: ${(e as Error).message}`);
    }
  }
  return {
    ...(logdir === undefined ? {} : { logdir }),
    ...(timeline === undefined ? {} : { timeline }),
    env: { ...(logdir === undefined ? {} : { SHOAL_LOGDIR: logdir }), ...(timeline === undefined ? {} : { SHOAL_TIMELINE: timeline }) },
  };
}

/** The servers' share of the telemetry (`startPsServerActors` options). */
export function serverTelemetry(t: LaunchTelemetry): { metrics?: { logdir: string }; timeline?: string } {
  return { ...(t.logdir === undefined ? {} : { metrics: { logdir: t.logdir } }), ...(t.timeline === undefined ? {} : { timeline: t.timeline }) };
}

/**
 * Once every worker and server has exited (their parts are complete: flushed at close or at exit), merge the
 * ranks' and the servers' parts into the timeline file and remove them. A failed merge is reported on `errOut`
 * (the job's own result stands); undefined without a timeline or then.
 */
export async function mergeJobTimeline(t: LaunchTelemetry, ranks: number, servers: number, errOut: NodeJS.WritableStream): Promise<MergedTimeline | undefined> {
  if (t.timeline === undefined) return undefined;
  const file = t.timeline;
  const parts = [...Array.from({ length: ranks }, (_, r) => timelinePartPath(file, r)), ...Array.from({ length: servers }, (_, i) => timelinePartPath(file, `server-${i}`))];
  try {
    return await mergeTimeline(file, parts, { remove: true });
  } catch (e) {
    errOut.write(`shoal run: timeline not merged: ${(e as Error).message}\n`);
    return undefined;
  }
}
