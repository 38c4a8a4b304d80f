/** Shared by the elastic tests (elastic.test.ts, elastic-ps.test.ts): run elastic-worker.ts jobs, the reference. */
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { launch, type LaunchOptions, type LaunchResult } from '@shoal/run';
import { settledLeftovers } from './fault-helpers.js';
import { ROOT } from './train-helpers.js';

export const ELASTIC_WORKER = `${ROOT}test/dist/elastic-worker.js`;
let jobs = 0; // job ids of this process's runs

export interface WorkerOut {
  id: number;
  size: number;
  steps: number;
  commits: number;
  changes: Array<{ generation: number; workers: number; lost: Array<{ rank: number; workerId: number; reason: string }>; joined: number[]; step: number }>;
  loss: number[];
  weights: number[];
}

/** One elastic job of elastic-worker.ts (3 workers unless `o` says otherwise): its result, outputs, stderr, leftovers. */
export async function run(o: Partial<LaunchOptions>, env: Record<string, string>): Promise<{ result: LaunchResult; outs: WorkerOut[]; stderr: string; leftovers: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-elastic-'));
  const jobId = `elastic-${process.pid}-${jobs++}`;
  let stderr = '';
  const err = new Writable({ write: (c, _e, cb) => ((stderr += String(c)), cb()) });
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  try {
    const result = await launch({ script: ELASTIC_WORKER, numWorkers: 3, timeoutMs: 10_000, jobTimeoutMs: 120_000, graceMs: 1000, jobId, stdout: quiet, stderr: err, ...o, env: { OUT_DIR: dir, PID_DIR: dir, ...env } });
    const files = readdirSync(dir);
    const outs = files.filter((f) => f.startsWith('worker-')).map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as WorkerOut).sort((a, b) => a.id - b.id);
    const pids = files.filter((f) => f.startsWith('pid-')).map((f) => Number(readFileSync(join(dir, f), 'utf8')));
    return { result, outs, stderr, leftovers: await settledLeftovers(jobId, pids) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The one-process reference that followed membership `schedule` (elastic-worker.ts --reference). */
export function reference(schedule: string, env: Record<string, string> = {}): { steps: number; weights: number[] } {
  return JSON.parse(execFileSync(process.execPath, [ELASTIC_WORKER, '--reference', schedule], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } })) as { steps: number; weights: number[] };
}

export function assertSameWeights(outs: WorkerOut[]): void {
  for (const o of outs.slice(1)) assert.ok(o.weights.every((v, i) => Object.is(v, outs[0]!.weights[i])), `worker ${o.id}'s weights differ from worker ${outs[0]!.id}'s`);
}

