/**
 * Issue #16, elastic training (`shoal run --elastic`): real worker processes (elastic-worker.ts) on one host, one
 * SIGKILLed mid-training. The survivors roll back to their last commit, go on with the new membership and finish
 * with bit-identical weights equal (to float rounding) to a reference that followed the same membership schedule
 * from the same commit; a replacement joins at the survivors' next commit and ends with the same weights; below
 * --min-workers the job fails naming the lost rank; a hung one is named and stopped; nothing is left behind. The ps
 * and hybrid engines: elastic-ps.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tmpdir } from 'node:os';
import { launch, parseRunArgs } from '@shoal/run';
import { assertSameWeights, ELASTIC_WORKER as WORKER, reference, run } from './elastic-helpers.js';
import { maxRelDiff } from './train-helpers.js';

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

test("elastic: batchPolicy 'global' keeps the global batch of 30 when 2 of 3 workers remain (15 each)", async () => {
  const { result, outs, stderr } = await run({ elastic: { minWorkers: 2, maxWorkers: 3 } }, { KILL_WORKER: '0', KILL_STEP: '25', COMMIT_EVERY: '10', BATCH_POLICY: 'global' });
  assert.is(result.code, 0, `${result.error}\n${stderr}`);
  assert.equal(outs.map((o) => o.id), [1, 2]);
  assertSameWeights(outs);
  const ref = reference('0:3,20:2', { BATCH_POLICY: 'global' });
  assert.is(ref.steps, 80, 'the reference keeps 40 steps per epoch');
  assert.is(outs[0]!.steps, ref.steps);
  const d = maxRelDiff(outs[0]!.weights, ref.weights);
  assert.ok(d < 1e-4, `max relative difference from the reference ${d}`);
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

test('elastic: a hung worker (SIGSTOP) is named by the rank that timed out, stopped, and the job goes on', async () => {
  const t0 = Date.now();
  const { result, outs, stderr, leftovers } = await run({ timeoutMs: 3000, elastic: { minWorkers: 2, maxWorkers: 3 } }, { KILL_WORKER: '2', KILL_STEP: '25', KILL_SIGNAL: 'SIGSTOP' });
  assert.is(result.code, 0, `${result.error}\n${stderr}`);
  assert.equal(result.elastic?.lost.map((l) => l.workerId), [2]);
  assert.match(result.elastic!.lost[0]!.reason, /^stopped making progress: rank [01] \(worker [01]\) timed out waiting for it$/);
  assert.match(stderr, /worker 2 \(rank 2\) stopped making progress: rank [01] \(worker [01]\) timed out waiting for it; stopping it/);
  assertSameWeights(outs);
  assert.equal(outs.map((o) => o.id), [0, 1]);
  const ref = reference('0:3,20:2');
  assert.ok(maxRelDiff(outs[0]!.weights, ref.weights) < 1e-4);
  assert.ok(Date.now() - t0 < 60_000, `took ${Date.now() - t0} ms`);
  assert.equal(leftovers, []);
});

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
