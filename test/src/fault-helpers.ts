/**
 * Helpers of the fault tests (launcher-faults, chaos): find a job's server processes, wait for a worker's step,
 * and list what a job may leave behind (processes, /dev/shm segments, unix sockets).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from '@shoal/core';
import { ROOT } from './train-helpers.js';

export const FAULT_WORKER = `${ROOT}test/dist/fault-worker.js`;

function environOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8');
  } catch {
    return '';
  }
}
function pids(): number[] {
  return readdirSync('/proc').filter((f) => /^\d+$/.test(f)).map(Number);
}
/** A live process (not a zombie). */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Pid of the actor process serving `name` (`ps-server-1`) of job `jobId`, started by this machine. */
export function serverPid(jobId: string, name: string): number | undefined {
  return pids().find((p) => {
    const env = environOf(p);
    return env.includes(`"name":"${name}"`) && env.includes(jobId);
  });
}

/** Wait until worker `rank` reports step `step` or later in `dir` (fault-worker's PROGRESS_DIR). */
export async function waitStep(dir: string, rank: number, step: number, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const f = join(dir, String(rank));
    if (existsSync(f) && Number(readFileSync(f, 'utf8')) >= step) return;
    if (Date.now() > end) throw new Error(`rank ${rank} did not reach step ${step} in ${ms} ms`);
    await sleep(10);
  }
}

/** Worker pids fault-worker recorded in `dir`. */
export function workerPids(dir: string): number[] {
  return readdirSync(dir).filter((f) => f.startsWith('pid-')).map((f) => Number(readFileSync(join(dir, f), 'utf8')));
}

/**
 * What job `jobId` left behind: live processes (its workers by pid, anything whose environment names the job),
 * /dev/shm segments naming the job or a worker, unix sockets of its servers. Empty when the job cleaned up.
 */
export function leftovers(jobId: string, workers: readonly number[]): string[] {
  const out: string[] = [];
  for (const p of workers) if (running(p)) out.push(`worker process ${p}`);
  for (const p of pids()) if (p !== process.pid && running(p) && environOf(p).includes(jobId)) out.push(`process ${p}`);
  for (const f of readdirSync('/dev/shm')) {
    if (f.includes(jobId) || workers.some((p) => f.includes(`-${p}-`))) out.push(`/dev/shm/${f}`);
  }
  for (const f of readdirSync(tmpdir())) if (f.startsWith(`shoal-${jobId}-`) && f.endsWith('.sock')) out.push(join(tmpdir(), f));
  return [...new Set(out)];
}

/** `leftovers` once the stragglers had up to `ms` to go (a killed process is reaped asynchronously). */
export async function settledLeftovers(jobId: string, workers: readonly number[], ms = 3000): Promise<string[]> {
  const end = Date.now() + ms;
  let left = leftovers(jobId, workers);
  while (left.length && Date.now() < end) {
    await sleep(100);
    left = leftovers(jobId, workers);
  }
  return left;
}
