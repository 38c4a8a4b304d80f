/**
 * Chaos (issue #16): seeded runs of 2-worker ring, ps and hybrid jobs under launch(), each losing a random worker
 * (SIGKILL) or hanging one (SIGSTOP) or losing a server (SIGKILL, with and without --ps-durable) at a random
 * step. For every run: the job either finishes with the weights of a fault-free run (durable servers), or fails
 * within 2x the timeout of the fault with a result naming the lost process; never a hang; nothing left behind
 * (process, /dev/shm segment, socket). CHAOS_SEED picks another schedule.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { launch } from '@shoal/run';
import { FAULT_WORKER, serverPid, settledLeftovers, waitStep, workerPids } from './fault-helpers.js';

const TIMEOUT_MS = 3000;
const STEPS = 40;
const RUNS = 10;
const seed = Number(process.env.CHAOS_SEED ?? 16);

/** mulberry32: a small seeded generator, so a failing schedule can be replayed with CHAOS_SEED. */
function rng(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Backend = 'ring' | 'ps' | 'hybrid';
type Fault = 'kill-worker' | 'stop-worker' | 'kill-server' | 'kill-durable-server';
interface Plan {
  backend: Backend;
  fault: Fault;
  rank: number;
  step: number;
}

const quiet = () => new Writable({ write: (_c, _e, cb) => cb() });
let jobs = 0;

async function runJob(backend: Backend, plan?: Plan): Promise<{ code: number; failedRank?: number; failedProcess?: string; error?: string; weights?: number[]; msAfterFault?: number; leftovers: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-chaos-'));
  const durable = plan?.fault === 'kill-durable-server' ? mkdtempSync(join(tmpdir(), 'shoal-chaos-d-')) : undefined;
  const jobId = `chaos-${process.pid}-${jobs++}`;
  const out = join(dir, 'weights.json');
  const selfFault = plan?.fault === 'kill-worker' ? 'SIGKILL' : plan?.fault === 'stop-worker' ? 'SIGSTOP' : undefined;
  try {
    const job = launch({
      script: FAULT_WORKER,
      numWorkers: 2,
      backend,
      servers: 2,
      timeoutMs: TIMEOUT_MS,
      jobTimeoutMs: 60_000,
      graceMs: 500,
      jobId,
      stdout: quiet(),
      stderr: quiet(),
      ...(durable ? { psDurable: durable } : {}),
      env: { PROGRESS_DIR: dir, OUT: out, STEPS: String(STEPS), STEP_MS: '10', ...(selfFault ? { FAULT: `${plan!.rank}:${plan!.step}:${selfFault}` } : {}) },
    });
    let faultAt: number | undefined;
    const fault = (async () => {
      if (!plan) return;
      const watched = selfFault ? plan.rank : 0;
      await waitStep(dir, watched, plan.step).catch(() => {}); // a job that ends first has nothing to fault
      faultAt = Date.now();
      if (!selfFault) {
        const pid = serverPid(jobId, `ps-server-${plan.rank}`);
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      }
    })();
    const r = await job;
    const ended = Date.now();
    await fault;
    let weights: number[] | undefined;
    try {
      weights = JSON.parse(readFileSync(out, 'utf8')) as number[];
    } catch {
      /* failed */
    }
    return { ...r, ...(weights ? { weights } : {}), ...(faultAt ? { msAfterFault: ended - faultAt } : {}), leftovers: await settledLeftovers(jobId, workerPids(dir)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    if (durable) rmSync(durable, { recursive: true, force: true });
  }
}

const reference = new Map<Backend, number[]>();
const random = rng(seed);
const plans: Plan[] = Array.from({ length: RUNS }, (_, i) => {
  const backend = (['ring', 'ps', 'hybrid'] as const)[i % 3]!;
  const faults: Fault[] = backend === 'ring' ? ['kill-worker', 'stop-worker'] : ['kill-worker', 'stop-worker', 'kill-server', 'kill-durable-server'];
  const fault = faults[Math.floor(random() * faults.length)]!;
  return { backend, fault, rank: Math.floor(random() * 2), step: 3 + Math.floor(random() * (STEPS - 10)) };
});

for (const backend of ['ring', 'ps', 'hybrid'] as const) {
  test(`chaos reference: ${backend} without faults`, async () => {
    const r = await runJob(backend);
    assert.is(r.code, 0, r.error);
    assert.ok(r.weights);
    reference.set(backend, r.weights!);
    assert.equal(r.leftovers, []);
  });
}

for (const [i, p] of plans.entries()) {
  test(`chaos #${i} (seed ${seed}): ${p.backend}, ${p.fault} ${p.fault.includes('server') ? 'ps-server' : 'rank'} ${p.rank} at step ${p.step}`, async () => {
    const r = await runJob(p.backend, p);
    const what = JSON.stringify({ ...r, weights: r.weights ? '...' : undefined });
    if (p.fault === 'kill-durable-server') {
      assert.is(r.code, 0, what);
      assert.equal(r.weights, reference.get(p.backend), 'weights differ from the fault-free run');
    } else {
      assert.is.not(r.code, 0, what);
      assert.ok(r.msAfterFault !== undefined && r.msAfterFault < 2 * TIMEOUT_MS, `failed ${r.msAfterFault} ms after the fault: ${what}`);
      if (p.fault === 'kill-server') {
        assert.is(r.failedProcess, `ps-server-${p.rank}`, what);
        assert.match(r.error ?? '', new RegExp(`^ps-server-${p.rank} died`));
      } else {
        assert.is(r.failedRank, p.rank, what);
        assert.is(r.failedProcess, undefined, what);
      }
    }
    assert.equal(r.leftovers, []);
  });
}

test.run();
