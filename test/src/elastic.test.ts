/**
 * Issue #16, elastic training (`shoal run --elastic`): real worker processes (elastic-worker.ts) on one host, one
 * SIGKILLed mid-training. The survivors roll back to their last commit, go on with the new membership and finish
 * with bit-identical weights equal (to float rounding) to a reference that followed the same membership schedule
 * from the same commit; a replacement joins at the survivors' next commit and ends with the same weights; below
 * --min-workers the job fails naming the lost rank; nothing is left behind.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { launch, parseRunArgs, type LaunchOptions, type LaunchResult } from '@shoal/run';
import { settledLeftovers } from './fault-helpers.js';
import { maxRelDiff, ROOT } from './train-helpers.js';

const WORKER = `${ROOT}test/dist/elastic-worker.js`;
let jobs = 0;

interface WorkerOut {
  id: number;
  size: number;
  steps: number;
  commits: number;
  changes: Array<{ generation: number; workers: number; lost: Array<{ rank: number; workerId: number; reason: string }>; joined: number[]; step: number }>;
  loss: number[];
  weights: number[];
}

async function run(o: Partial<LaunchOptions>, env: Record<string, string>): Promise<{ result: LaunchResult; outs: WorkerOut[]; stderr: string; leftovers: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-elastic-'));
  const jobId = `elastic-${process.pid}-${jobs++}`;
  let stderr = '';
  const err = new Writable({ write: (c, _e, cb) => ((stderr += String(c)), cb()) });
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  try {
    const result = await launch({ script: WORKER, numWorkers: 3, timeoutMs: 10_000, jobTimeoutMs: 120_000, graceMs: 1000, jobId, stdout: quiet, stderr: err, ...o, env: { OUT_DIR: dir, PID_DIR: dir, ...env } });
    const files = readdirSync(dir);
    const outs = files.filter((f) => f.startsWith('worker-')).map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as WorkerOut).sort((a, b) => a.id - b.id);
    const pids = files.filter((f) => f.startsWith('pid-')).map((f) => Number(readFileSync(join(dir, f), 'utf8')));
    return { result, outs, stderr, leftovers: await settledLeftovers(jobId, pids) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function reference(schedule: string): { steps: number; weights: number[] } {
  return JSON.parse(execFileSync(process.execPath, [WORKER, '--reference', schedule], { encoding: 'utf8', timeout: 60_000 })) as { steps: number; weights: number[] };
}

function assertSameWeights(outs: WorkerOut[]): void {
  for (const o of outs.slice(1)) assert.ok(o.weights.every((v, i) => Object.is(v, outs[0]!.weights[i])), `worker ${o.id}'s weights differ from worker ${outs[0]!.id}'s`);
}

test('elastic: a worker SIGKILLed at step 25 leaves 2 that roll back to the step-20 commit and match the reference', async () => {
  const { result, outs, stderr, leftovers } = await run({ elastic: { minWorkers: 2, maxWorkers: 3 } }, { KILL_WORKER: '2', KILL_STEP: '25', COMMIT_EVERY: '10' });
  assert.is(result.code, 0, `${result.error}\n${stderr}`);
  assert.equal(result.elastic, { generation: 1, workers: 2, lost: [{ rank: 2, workerId: 2, reason: 'killed by SIGKILL' }], joined: [] });
  assert.match(stderr, 'rank 2 (worker 2) lost (killed by SIGKILL); generation 1 goes on with 2 worker(s)');
  assert.equal(outs.map((o) => o.id), [0, 1]);
  for (const o of outs) {
    assert.equal(o.changes, [{ generation: 1, workers: 2, rank: o.id, lost: [{ rank: 2, workerId: 2, reason: 'killed by SIGKILL' }], joined: [], step: 20 }]);
    assert.is(o.size, 2);
  }
  assertSameWeights(outs);
  const ref = reference('0:3,20:2');
  assert.is(outs[0]!.steps, ref.steps);
  const d = maxRelDiff(outs[0]!.weights, ref.weights);
  assert.ok(d < 1e-4, `max relative difference from the reference ${d}`);
  assert.ok(outs[0]!.loss[1]! < outs[0]!.loss[0]!, `loss went down: ${outs[0]!.loss}`);
  assert.equal(leftovers, []);
});

test('elastic: a replacement joins at the next commit, gets the state by broadcast and ends bit-equal', async () => {
  const { result, outs, stderr, leftovers } = await run({ elastic: { minWorkers: 2, maxWorkers: 3, replacements: 1 } }, { KILL_WORKER: '1', KILL_STEP: '15', COMMIT_EVERY: '10', STEP_DELAY_MS: '40' });
  assert.is(result.code, 0, `${result.error}\n${stderr}`);
  assert.equal(result.elastic?.joined, [3]);
  assert.is(result.elastic?.workers, 3);
  assert.match(stderr, 'worker 3 joins at generation 2 with 3 worker(s)');
  assert.equal(outs.map((o) => o.id), [0, 2, 3]);
  const join = outs[0]!.changes[1]!;
  assert.equal({ generation: join.generation, workers: join.workers, joined: join.joined }, { generation: 2, workers: 3, joined: [3] });
  assert.is(join.step % 10, 0, 'a join happens at a commit');
  // the replacement ran the hook too (same generation, same learning rate)
  assert.equal(outs[2]!.changes.map((c) => c.generation), [2]);
  assertSameWeights(outs);
  const ref = reference(`0:3,10:2,${join.step}:3`);
  assert.is(outs[0]!.steps, ref.steps);
  const d = maxRelDiff(outs[0]!.weights, ref.weights);
  assert.ok(d < 1e-4, `max relative difference from the reference ${d}`);
  assert.equal(leftovers, []);
});

for (const backend of ['ps', 'hybrid'] as const) {
  test(`elastic ${backend}: each generation gets its own servers; after a kill at step 25${backend === 'ps' ? ' and a replacement' : ''} the workers end bit-equal and match the reference`, async () => {
    // ps: a replacement too; hybrid: the loss alone (its ring half is the ring's, tested above)
    const replace = backend === 'ps';
    const { result, outs, stderr, leftovers } = await run({ backend, elastic: { minWorkers: 2, maxWorkers: 3, replacements: replace ? 1 : 0 } }, { KILL_WORKER: '2', KILL_STEP: '25', COMMIT_EVERY: '10', ...(replace ? { STEP_DELAY_MS: '40' } : {}) });
    assert.is(result.code, 0, `${result.error}\n${stderr}`);
    assert.equal(result.elastic?.lost.map((l) => l.workerId), [2]);
    assert.equal(result.elastic?.joined, replace ? [3] : []);
    assert.equal(outs.map((o) => o.id), replace ? [0, 1, 3] : [0, 1]);
    assertSameWeights(outs);
    const join = outs[0]!.changes[1];
    const ref = reference(`0:3,20:2${join ? `,${join.step}:3` : ''}`);
    assert.is(outs[0]!.steps, ref.steps);
    const d = maxRelDiff(outs[0]!.weights, ref.weights);
    assert.ok(d < 1e-4, `max relative difference from the reference ${d}`);
    assert.equal(leftovers, []);
  });
}

test('elastic: below --min-workers the job fails fast, naming the lost rank', async () => {
  const t0 = Date.now();
  const { result, leftovers } = await run({ elastic: { minWorkers: 3, maxWorkers: 3 } }, { KILL_WORKER: '1', KILL_STEP: '5' });
  assert.is.not(result.code, 0);
  assert.is(result.failedRank, 1);
  assert.match(result.error ?? '', 'rank 1 (worker 1) was lost (killed by SIGKILL): 2 worker(s) left, fewer than --min-workers 3');
  assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
  assert.equal(leftovers, []);
});

test('shoal run --elastic options: parsed, checked, refused without --elastic', () => {
  assert.equal(parseRunArgs(['-n', '3', '--elastic', '--min-workers', '2', '--max-workers', '4', '--replacements', '1', 'w.js'], { cores: 2 }).elastic, { minWorkers: 2, maxWorkers: 4, replacements: 1 });
  assert.equal(parseRunArgs(['-n', '3', '--elastic', 'w.js'], { cores: 2 }).elastic, { minWorkers: 3, maxWorkers: 3 });
  assert.throws(() => parseRunArgs(['-n', '3', '--min-workers', '2', 'w.js'], { cores: 2 }), /--min-workers needs --elastic/);
  assert.throws(() => parseRunArgs(['-n', '3', '--elastic', '--min-workers', '4', 'w.js'], { cores: 2 }), /--min-workers must be an integer in 1\.\.3/);
  assert.throws(() => parseRunArgs(['-n', '3', '--elastic', '--max-workers', '2', 'w.js'], { cores: 2 }), /--max-workers must be an integer in 3\.\./);
});

test('elastic: refused with --ps-durable and with threads, before anything starts', async () => {
  for (const [o, msg] of [[{ backend: 'ps' as const, psDurable: tmpdir() }, 'do not go together'], [{ threads: true }, 'needs worker processes']] as const) {
    try {
      await launch({ script: WORKER, numWorkers: 2, elastic: { minWorkers: 1, maxWorkers: 2 }, ...o });
      assert.unreachable(`${JSON.stringify(o)} accepted`);
    } catch (e) {
      assert.match((e as Error).message, msg);
    }
  }
});

test.run();
