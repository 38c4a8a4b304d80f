import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import { memoryPsCluster } from '@shoal/backends/testing';
import { attachJobTelemetry, PsSync, type DenseTensor, type GradientSync } from '@shoal/backends';
import { Timeline } from '@shoal/core/telemetry';
import { loadCheckpoint } from './checkpoint.js';
import { setupTfjs } from './runtime.js';
import { Trainer, type TrainerOptions } from './trainer.js';
import type { OptimizerSpec } from './losses.js';
import { adviceLine, type SyncSchedule } from './sync-schedule.js';
import { onRingRanks, outputCollector, rejects, toyData, toyModel } from '../testing/toy.js';

const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const toy = (n: number, seed = 1) => toyData(tf, n, seed);
const model = toyModel;

const collector = outputCollector;
type Opts = Omit<TrainerOptions, 'model' | 'optimizer' | 'loss' | 'runtime'>;
const mk = (sync: GradientSync | undefined, optimizer: OptimizerSpec, o: Opts = {}, seed = 3) =>
  new Trainer({ model: model(seed), optimizer, loss: 'binaryCrossentropy', metrics: ['accuracy'], ...(sync ? { sync } : {}), runtime: rt, verbose: 0, ...o });

/** Run `fn` on 2 in-process ring ranks (memory transport). */
const onRanks = <T>(fn: (sync: GradientSync) => Promise<T>, n = 2): Promise<T[]> => onRingRanks(n, fn);
function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(1e-3, Math.abs(b[i]!)));
  return m;
}

test('syncEvery: 1 and accumulateSteps: 1 train bit for bit like the default on 2 ranks', async () => {
  const data = toy(256, 5);
  const run = (o: Opts) => onRanks(async (sync) => {
    const t = mk(sync, 'adam', o);
    await t.fit(data, { epochs: 2, batchSize: 16, seed: 2 });
    return Array.from(t.weightsFlat());
  });
  const plain = await run({});
  assert.equal(plain[1], plain[0]);
  assert.equal((await run({ syncEvery: 1 }))[0], plain[0]);
  assert.equal((await run({ accumulateSteps: 1 }))[0], plain[0]);
});

test('accumulateSteps: K micro-batches of b rows step like one batch of K*b rows (1 rank and 2 ranks)', async () => {
  const data = toy(512, 6);
  for (const optimizer of [(t: typeof tf) => t.train.sgd(0.5), 'adam'] as OptimizerSpec[]) {
    // 1 rank: batch 8 x 4 micro-batches against batch 32, no shuffle: the same rows make each step.
    const big = mk(undefined, optimizer);
    const hb = await big.fit(data, { epochs: 2, batchSize: 32, shuffle: false });
    const acc = mk(undefined, optimizer, { accumulateSteps: 4 });
    const ha = await acc.fit(data, { epochs: 2, batchSize: 8, shuffle: false });
    assert.is(acc.globalStep, big.globalStep, 'one optimizer step per 4 micro-batches');
    const d = maxRelDiff(acc.weightsFlat(), big.weightsFlat());
    assert.ok(d < 1e-4, `accumulated vs big batch: max relative difference ${d}`);
    assert.ok(Math.abs(ha.epochs[1]!.loss! - hb.epochs[1]!.loss!) < 0.05, `epoch losses ${ha.epochs[1]!.loss} vs ${hb.epochs[1]!.loss}`);
  }
  // 2 ranks x batch 8 x 2 micro-batches: one sync per 2 batches, equal weights on both ranks, and it learns.
  const got = await onRanks(async (sync) => {
    const t = mk(sync, (t) => t.train.adam(0.05), { accumulateSteps: 2 });
    const h = await t.fit(data, { epochs: 4, batchSize: 8, seed: 1 });
    return { w: Array.from(t.weightsFlat()), step: t.globalStep, acc: h.epochs[3]!.accuracy!, ops: sync.stats().ops };
  });
  assert.equal(got[1]!.w, got[0]!.w);
  assert.is(got[0]!.step, 4 * 16); // 32 batches per epoch per rank, 16 optimizer steps
  assert.ok(got[0]!.acc > 0.9, `accuracy ${got[0]!.acc}`);
});

test('accumulateSteps: micro-batches of a fit that failed are dropped, not applied by the next fit', async () => {
  const data = toy(256, 13);
  const fresh = mk(undefined, 'adam', { accumulateSteps: 4 });
  await fresh.fit(data, { epochs: 1, batchSize: 8, seed: 5 });
  const again = mk(undefined, 'adam', { accumulateSteps: 4 });
  let err = '';
  await again.fit(data, { epochs: 1, batchSize: 8, seed: 9, callbacks: { stopsOnBatch: false, onBatchEnd: (s) => { if (s === 2) throw new Error('crash'); } } }).catch((e: Error) => (err = e.message));
  assert.is(err, 'crash');
  assert.is(again.globalStep, 0, 'three micro-batches: no step yet');
  await again.fit(data, { epochs: 1, batchSize: 8, seed: 5 });
  assert.equal(Array.from(again.weightsFlat()), Array.from(fresh.weightsFlat()));
});

test('syncEvery: K on 2 ranks = each rank K local steps on its shard, then weights and optimizer state averaged', async () => {
  const K = 3;
  const b = 8;
  const data = toy(2 * b * 2 * K, 8); // exactly 2K steps per rank
  const optimizer = (t: typeof tf) => t.train.momentum(0.2, 0.9);
  const got = await onRanks(async (sync) => {
    const t = mk(sync, optimizer, { syncEvery: K });
    await t.fit(data, { epochs: 1, batchSize: b, shuffle: false });
    return Array.from(t.weightsFlat());
  });
  assert.equal(got[1], got[0], 'the ranks hold the same weights after the sync');
  // Reference: two one-rank trainers, each on its rank's rows (global step s: rows [s*2b, s*2b+b) for rank 0).
  const rowsOf = (r: number, s0: number) => Int32Array.from({ length: K * b }, (_, i) => (s0 + Math.floor(i / b)) * 2 * b + r * b + (i % b));
  const sub = (rows: Int32Array) => tf.tidy(() => ({ x: tf.gather(data.x, tf.tensor1d(rows, 'int32')), y: tf.gather(data.y, tf.tensor1d(rows, 'int32')) }));
  const refs = [mk(undefined, optimizer), mk(undefined, optimizer)];
  const average = async () => {
    const states = await Promise.all(refs.map(async (t) => [...t.model.weights.map((w) => w.read() as tfjs.Variable), ...(await t.optimizer.getWeights()).filter((n) => n.name !== 'iter').map((n) => n.tensor as tfjs.Variable)]));
    states[0]!.forEach((v, i) => {
      const mean = tf.tidy(() => tf.div(tf.add(v, states[1]![i]!), 2));
      for (const s of states) s[i]!.assign(mean);
      mean.dispose();
    });
  };
  for (const s0 of [0, K]) {
    for (let r = 0; r < 2; r++) await refs[r]!.fit(sub(rowsOf(r, s0)), { epochs: 1, batchSize: b, shuffle: false });
    await average();
  }
  const d = maxRelDiff(got[0]!, refs[0]!.weightsFlat());
  assert.ok(d < 1e-5, `local SGD vs reference: max relative difference ${d}`);
});

test('with a job timeline, local SGD averages are spans on the step lane', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-sched-tl-'));
  try {
    const data = toy(2 * 8 * 6, 14); // 6 steps per rank
    await onRanks(async (sync) => {
      const timeline = new Timeline({ path: join(dir, `rank-${sync.rank}.jsonl`), pid: sync.rank });
      attachJobTelemetry(sync, { timeline });
      const t = mk(sync, 'sgd', { syncEvery: 3 });
      await t.fit(data, { epochs: 1, batchSize: 8, shuffle: false });
      await timeline.close();
    });
    const spans = readFileSync(join(dir, 'rank-0.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { name: string; ph: string });
    assert.is(spans.filter((e) => e.ph === 'X' && e.name === 'average').length, 2, 'one average per 3 steps');
    assert.is(spans.filter((e) => e.ph === 'X' && e.name === 'step').length, 6);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const [what, o] of [['syncEvery: 3', { syncEvery: 3 }], ['accumulateSteps: 3', { accumulateSteps: 3 }]] as const) {
  test(`${what}: a 2-rank run killed mid-epoch resumes from its last checkpoint bit-identical to an uninterrupted run`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-sched-ckpt-'));
    try {
      const data = toy(256, 7);
      const fit = { epochs: 2, batchSize: 8, seed: 1 }; // 16 batches per epoch
      const full = await onRanks(async (sync) => {
        const t = mk(sync, 'adam', o);
        await t.fit(data, fit);
        return Array.from(t.weightsFlat());
      });
      let batches = 0;
      const crashed = await onRanks(async (sync) => {
        const t = mk(sync, 'adam', o);
        try {
          await t.fit(data, { ...fit, checkpoint: { dir, everySteps: 4 }, callbacks: { stopsOnBatch: false, onBatchEnd: (s) => { if (sync.rank === 0) batches++; if (s === 12) throw new Error('crash'); } } });
          return 'finished';
        } catch (e) {
          return (e as Error).message;
        }
      });
      assert.equal(crashed, ['crash', 'crash']);
      assert.is(batches, 13);
      const saved = (await loadCheckpoint(dir))!;
      assert.ok(saved.step > 0 && saved.epoch === 0, `a mid-epoch checkpoint at a sync (step ${saved.step})`);
      const resumed = await onRanks(async (sync) => {
        const t = mk(sync, 'adam', o, 40 + sync.rank);
        const h = await t.fit(data, { ...fit, checkpoint: { dir, everySteps: 4 } });
        assert.is(h.startEpoch, 0);
        return Array.from(t.weightsFlat());
      });
      assert.equal(resumed[0], full[0]);
      assert.equal(resumed[1], full[0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('bad syncEvery / accumulateSteps / advice are named', async () => {
  await rejects(() => mk(undefined, 'sgd', { syncEvery: 0 }), /options\.syncEvery must be a positive integer, got 0/);
  await rejects(() => mk(undefined, 'sgd', { accumulateSteps: 1.5 }), /options\.accumulateSteps must be a positive integer, got 1\.5/);
  await rejects(() => mk(undefined, 'sgd', { syncEvery: 2, accumulateSteps: 2 }), /options\.syncEvery and options\.accumulateSteps are exclusive/);
  await rejects(() => mk(undefined, 'sgd', { advice: 'yes' as unknown as boolean }), /options\.advice must be true or false/);
});

/** A ring engine whose gradient allreduce takes `ms` longer: sync dominates the step. */
function slowSync(inner: GradientSync, ms: number): GradientSync {
  return Object.assign(Object.create(inner) as GradientSync, {
    allreduceMean: async (g: readonly DenseTensor[]) => {
      await new Promise((r) => setTimeout(r, ms));
      return inner.allreduceMean(g);
    },
  });
}

test('fit ends with one advice line on rank 0 when sync exceeds a quarter of the step; advice: false hides it', async () => {
  const data = toy(128, 9);
  const outs = await onRanks(async (sync) => {
    const lines: string[] = [];
    for (const advice of [true, false]) {
      const out = collector();
      const t = new Trainer({ model: model(), optimizer: 'sgd', loss: 'binaryCrossentropy', sync: slowSync(sync, 15), runtime: rt, output: out.sink, advice });
      await t.fit(data, { epochs: 1, batchSize: 16, verbose: 0 });
      lines.push(out.text());
    }
    return lines;
  });
  const advice = outs[0]![0]!.split('\n').filter((l) => l.includes('sync took'));
  assert.is(advice.length, 1, outs[0]![0]);
  assert.match(advice[0]!, /^\[rank 0\] sync took \d+% of the training time .*accumulateSteps: 4.*--ps-mode async --staleness 2.*syncEvery: 4.*a larger batchSize\. Trainer option advice: false hides this line\.$/);
  assert.not.match(outs[0]![1]!, /sync took/, 'advice: false');
  assert.not.match(outs[1]![0]!, /sync took/, 'rank 1 stays quiet');
  // Under the threshold: no line.
  const fake = (syncMsTotal: number) => ({ syncMsTotal, mode: { kind: 'every-step' } }) as unknown as SyncSchedule;
  assert.is(adviceLine(fake(240), 1000, {}), undefined);
  assert.match(adviceLine(fake(260), 1000, {})!, /^sync took 26% of the training time \(0\.3 of 1\.0 s\)/);
});

/** Run `fn` on `n` workers of an in-process ps job whose servers run `mode` (and `staleness`). */
async function onPs<T>(mode: 'sync' | 'async', staleness: number | undefined, fn: (sync: PsSync) => Promise<T>, n = 2): Promise<T[]> {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: n, mode, ...(staleness === undefined ? {} : { staleness }), timeoutMs: 20_000 });
  try {
    return await Promise.all(c.workers.map((kv) => fn(new PsSync(kv))));
  } finally {
    await c.close();
  }
}

test('async ps with staleness 0 trains like sync ps (SGD, within float rounding); the ranks end equal', async () => {
  const data = toy(256, 11);
  const fit = { epochs: 2, batchSize: 16, seed: 3 };
  const run = (mode: 'sync' | 'async') => onPs(mode, mode === 'async' ? 0 : undefined, async (sync) => {
    const t = mk(sync, (t) => t.train.sgd(0.3));
    const h = await t.fit(data, fit);
    return { w: Array.from(t.weightsFlat()), loss: h.epochs[1]!.loss! };
  });
  const sync = await run('sync');
  const asy = await run('async');
  assert.equal(asy[1]!.w, asy[0]!.w, 'every rank pulls the same weights at the end of an epoch');
  const d = maxRelDiff(asy[0]!.w, sync[0]!.w);
  assert.ok(d < 1e-4, `async s=0 vs sync: max relative difference ${d}`);
});

test('async ps: staleness S keeps the fast rank within S+1 steps of the slow one, and it still converges', async () => {
  const data = toy(1024, 12);
  const S = 2;
  const lead = async (staleness: number | undefined) => {
    const done = [0, 0];
    let maxLead = 0;
    const accs = await onPs('async', staleness, async (sync) => {
      const t = mk(sync, (t) => t.train.adam(0.05));
      const h = await t.fit(data, {
        epochs: 1,
        batchSize: 16,
        seed: 4,
        callbacks: {
          stopsOnBatch: false,
          onBatchBegin: async () => {
            if (sync.rank === 1) await new Promise((r) => setTimeout(r, 4)); // rank 1 is the slow one
          },
          onBatchEnd: () => {
            done[sync.rank]!++;
            maxLead = Math.max(maxLead, done[0]! - done[1]!);
          },
        },
      });
      return h.epochs[0]!.accuracy!;
    });
    return { maxLead, accs };
  };
  const bounded = await lead(S);
  assert.ok(bounded.maxLead <= S + 1, `rank 0 led by ${bounded.maxLead} steps with staleness ${S}`);
  assert.ok(bounded.accs[0]! > 0.85, `accuracy ${bounded.accs[0]}`);
  // Without a bound the fast rank runs far ahead: the assertion above can fail.
  const free = await lead(undefined);
  assert.ok(free.maxLead > S + 1, `unbounded: rank 0 led by only ${free.maxLead}`);
});

test('async ps servers refuse the averaging collectives by name; syncEvery does not apply there', async () => {
  await onPs('async', 1, async (sync) => {
    assert.is(sync.mode, 'async');
    await rejects(() => sync.allreduceMean([{ name: 'g', shape: [2], data: new Float32Array(2) }]), /PsSync\.allreduceMean averages over sync rounds, but the ps servers run in async mode/);
    assert.throws(() => mk(sync, 'sgd', { syncEvery: 2 }), /options\.syncEvery does not apply to async ps servers/);
  });
});

test.run();
