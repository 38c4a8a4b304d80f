/**
 * Chaos (issue #16): seeded runs of 2-worker ring, ps and hybrid jobs under launch(), each losing a random worker
 * (SIGKILL) or hanging one (SIGSTOP) or losing a server (SIGKILL, with and without --ps-durable) at a random
 * step. For every run: the job either finishes with the weights of a fault-free run (durable servers), or fails
 * within 2x the timeout of the fault with a result naming the lost process; never a hang; nothing left behind
 * (process, /dev/shm segment, socket). Elastic runs (3 workers, --min-workers 2) lose a random worker at a random
 * step and must finish with 2 whose weights are bit-identical and equal (to float rounding) to a reference that
 * followed the same membership schedule from the same commit. CHAOS_SEED picks another schedule.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { launch } from '@shoal/run';
import { FAULT_WORKER, serverPid, settledLeftovers, waitStep, workerPids } from './fault-helpers.js';
import { maxRelDiff, ROOT } from './train-helpers.js';

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

// Elastic: drawn after the plans above, so adding them changed none of those.
const ELASTIC_WORKER = `${ROOT}test/dist/elastic-worker.js`;
const elasticPlans = Array.from({ length: 2 }, () => ({ worker: Math.floor(random() * 3), step: 3 + Math.floor(random() * 35), commitEvery: [5, 10][Math.floor(random() * 2)]! }));
for (const [i, p] of elasticPlans.entries()) {
  test(`chaos elastic #${i} (seed ${seed}): ring, 3 workers, SIGKILL of worker ${p.worker} at step ${p.step}, commit every ${p.commitEvery}`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-chaos-el-'));
    const jobId = `chaos-el-${process.pid}-${jobs++}`;
    try {
      const r = await launch({
        script: ELASTIC_WORKER,
        numWorkers: 3,
        elastic: { minWorkers: 2, maxWorkers: 3 },
        timeoutMs: TIMEOUT_MS * 3,
        jobTimeoutMs: 60_000,
        graceMs: 500,
        jobId,
        stdout: quiet(),
        stderr: quiet(),
        env: { OUT_DIR: dir, PID_DIR: dir, KILL_WORKER: String(p.worker), KILL_STEP: String(p.step), COMMIT_EVERY: String(p.commitEvery), EPOCHS: '1' },
      });
      assert.is(r.code, 0, r.error);
      assert.equal(r.elastic?.lost.map((l) => [l.workerId, l.reason]), [[p.worker, 'killed by SIGKILL']]);
      const outs = [0, 1, 2].filter((w) => w !== p.worker).map((w) => JSON.parse(readFileSync(join(dir, `worker-${w}.json`), 'utf8')) as { weights: number[]; steps: number });
      assert.ok(outs[1]!.weights.every((v, j) => Object.is(v, outs[0]!.weights[j])), 'the survivors disagree on the weights');
      const commit = Math.floor(p.step / p.commitEvery) * p.commitEvery;
      const ref = JSON.parse(execFileSync(process.execPath, [ELASTIC_WORKER, '--reference', `0:3,${commit}:2`], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, EPOCHS: '1' } })) as { steps: number; weights: number[] };
      assert.is(outs[0]!.steps, ref.steps);
      const d = maxRelDiff(outs[0]!.weights, ref.weights);
      assert.ok(d < 1e-4, `max relative difference from the reference ${d}`);
      const pids = readdirSync(dir).filter((f) => f.startsWith('pid-')).map((f) => Number(readFileSync(join(dir, f), 'utf8')));
      assert.equal(await settledLeftovers(jobId, pids), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test.run();
