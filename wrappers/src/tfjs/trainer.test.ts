import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isShoalError } from '@shoal/core';
import { setupTfjs } from './runtime.js';
import { Trainer } from './trainer.js';
import { loadCheckpoint } from './checkpoint.js';
import { epochOrder, rankBatchRows } from './data.js';
import { memoryGroups } from '@shoal/backends/testing';
import { RingSync, type GradientSync } from '@shoal/backends';
import { outputCollector, rejects, toyData, toyModel } from '../testing/toy.js';

const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const toy = (n: number, seed = 1) => toyData(tf, n, seed);
const model = toyModel;

const collector = outputCollector;

test('fit learns, prints Keras-like epochs and calls callbacks in order', async () => {
  const out = collector();
  const events: string[] = [];
  const trainer = new Trainer({ model: model(), optimizer: (t) => t.train.adam(0.05), loss: 'binaryCrossentropy', metrics: ['accuracy'], runtime: rt, output: out.sink });
  const data = toy(512);
  const h = await trainer.fit(data, {
    epochs: 6,
    batchSize: 32,
    validationData: toy(128, 9),
    callbacks: {
      onTrainBegin: () => void events.push('begin'),
      onEpochEnd: (e, logs) => void events.push(`epoch${e}:${logs.loss! > 0}`),
      onTrainEnd: () => void events.push('end'),
    },
  });
  assert.is(h.epochs.length, 6);
  assert.ok(h.epochs[5]!.loss! < h.epochs[0]!.loss!, 'loss decreased');
  assert.ok(h.epochs[5]!.accuracy! > 0.9, `accuracy ${h.epochs[5]!.accuracy}`);
  assert.ok(h.epochs[5]!.val_accuracy! > 0.85, `val accuracy ${h.epochs[5]!.val_accuracy}`);
  assert.ok(h.epochs[5]!.samplesPerSec > 0);
  assert.equal(events, ['begin', 'epoch0:true', 'epoch1:true', 'epoch2:true', 'epoch3:true', 'epoch4:true', 'epoch5:true', 'end']);
  const text = out.text();
  assert.match(text, /\[rank 0\] tfjs 4\.22\.0 on wasm/);
  assert.match(text, /Epoch 6\/6\n/);
  assert.match(text, /16\/16 \[=+\] - \d+s \d+ms\/step - loss: [\d.]+ - accuracy: [\d.]+ - val_loss: [\d.]+ - val_accuracy: [\d.]+ - \d+ samples\/s\n/);
  const ev = await trainer.evaluate(toy(128, 9));
  assert.ok(ev.accuracy! > 0.85);
  const p = await trainer.predict(toy(10, 4).x);
  assert.equal(p.shape, [10, 1]);
  p.dispose();
});

test('on a TTY the progress line is redrawn in place and ends with a newline', async () => {
  const lines: string[] = [];
  const trainer = new Trainer({ model: model(), optimizer: (t) => t.train.sgd(0.1), loss: 'binaryCrossentropy', runtime: rt, output: { write: (s) => void lines.push(s), isTTY: true } });
  await trainer.fit(toy(128), { epochs: 1, batchSize: 32 });
  const bar = lines.filter((l) => l.startsWith('\r'));
  assert.ok(bar.length >= 1);
  assert.match(bar[bar.length - 1]!, /^\r4\/4 \[={30}\] - .*samples\/s\x1b\[K\n$/);
});

test('a NaN gradient raises ERR_NAN naming the variable', async () => {
  const trainer = new Trainer({ model: model(), optimizer: (t) => t.train.sgd(0.1), loss: (y, p) => tf.sqrt(tf.sub(p, y).sum().neg().sub(1e9)) as never, runtime: rt, verbose: 0 });
  try {
    await trainer.fit(toy(64), { epochs: 1, batchSize: 32 });
    assert.unreachable('should throw');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_NAN'), String(e));
    assert.match((e as Error).message, /gradient of dense_Dense\d+\/kernel/);
  }
});

test('bad options are named', async () => {
  const t = new Trainer({ model: model(), optimizer: (x) => x.train.sgd(0.1), loss: 'binaryCrossentropy', runtime: rt, verbose: 0 });
  await rejects(() => t.fit(toy(64), { epochs: 1, batchSize: 0 }), /batchSize must be a positive integer/);
  await rejects(() => t.fit(toy(16), { epochs: 1, batchSize: 32 }), /fewer than one global batch/);
  assert.throws(() => new Trainer({ model: model(), optimizer: undefined as never, loss: 'mse' as never }), /options.optimizer/);
  const bad = new Trainer({ model: model(), optimizer: (x) => x.train.sgd(0.1), loss: 'hingeLoss' as never, runtime: rt, verbose: 0 });
  await rejects(() => bad.fit(toy(64), { epochs: 1, batchSize: 32 }), /options.loss must be/);
});

test('checkpoint then resume in a new trainer gives the uninterrupted weights (adam)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ckpt-'));
  try {
    const data = toy(256, 5);
    const opts = { epochs: 4, batchSize: 32, seed: 2 };
    const full = new Trainer({ model: model(), optimizer: (t) => t.train.adam(0.02), loss: 'binaryCrossentropy', runtime: rt, verbose: 0 });
    await full.fit(data, opts);
    const a = new Trainer({ model: model(), optimizer: (t) => t.train.adam(0.02), loss: 'binaryCrossentropy', runtime: rt, verbose: 0 });
    await rejects(
      () => a.fit(data, { ...opts, checkpoint: { dir }, callbacks: { onEpochEnd: (e) => { if (e === 1) throw new Error('stop'); } } }),
      /stop/,
    );
    const st = await loadCheckpoint(dir);
    assert.is(st!.epoch, 2);
    assert.is(st!.step, 16);
    assert.ok(readdirSync(dir).every((f) => !f.startsWith('.tmp')), 'no temporary folders left');
    // A different init: the checkpoint must overwrite it.
    const b = new Trainer({ model: model(11), optimizer: (t) => t.train.adam(0.02), loss: 'binaryCrossentropy', runtime: rt, verbose: 0 });
    const h = await b.fit(data, { ...opts, checkpoint: { dir } });
    assert.is(h.startEpoch, 2);
    assert.equal(Array.from(b.weightsFlat()), Array.from(full.weightsFlat()));
    assert.is((await loadCheckpoint(dir))!.epoch, 4);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('step checkpoints (everySteps): a run killed mid-epoch resumes from the last one, bit-identical to an uninterrupted run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ckpt-steps-'));
  try {
    const data = toy(256, 6);
    const opts = { epochs: 3, batchSize: 16, seed: 5 }; // 16 steps per epoch
    const mk = (seed = 3) => new Trainer({ model: model(seed), optimizer: (t) => t.train.adam(0.02), loss: 'binaryCrossentropy', metrics: ['accuracy'], runtime: rt, verbose: 0 });
    const full = mk();
    const hFull = await full.fit(data, opts);
    const a = mk();
    await rejects(() => a.fit(data, { ...opts, checkpoint: { dir, everySteps: 5 }, callbacks: { onBatchEnd: (s) => { if (a.globalStep === 23) throw new Error(`stop at ${s}`); } } }), /stop at 6/);
    const st = await loadCheckpoint(dir);
    assert.is(st!.step, 20, 'the last step checkpoint before the failure');
    assert.is(st!.epoch, 1);
    assert.is((st!.extra as { epochStep: number }).epochStep, 4);
    const b = mk(11);
    const h = await b.fit(data, { ...opts, checkpoint: { dir, everySteps: 5 } });
    assert.is(h.startEpoch, 1);
    assert.is(b.globalStep, 48);
    assert.equal(Array.from(b.weightsFlat()), Array.from(full.weightsFlat()));
    // The resumed epoch's logs include the steps done before the failure (their running sums are checkpointed).
    assert.is(h.epochs[0]!.loss, hFull.epochs[1]!.loss);
    assert.is(h.epochs[1]!.accuracy, hFull.epochs[2]!.accuracy);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a step checkpoint due at the last step of an epoch is written even when the epoch is not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ckpt-edge-'));
  try {
    const t = new Trainer({ model: model(), optimizer: (x) => x.train.sgd(0.1), loss: 'binaryCrossentropy', runtime: rt, verbose: 0 });
    // 8 steps per epoch, everySteps 8, everyEpochs 3: step 8 ends epoch 0.
    await rejects(() => t.fit(toy(128), { epochs: 3, batchSize: 16, checkpoint: { dir, everySteps: 8, everyEpochs: 3 }, callbacks: { onEpochEnd: (e) => { if (e === 1) throw new Error('stop'); } } }), /stop/);
    const st = await loadCheckpoint(dir);
    assert.is(st!.step, 16);
    assert.is(st!.epoch, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('step checkpoints from a BatchSource skip the batches already trained on; everySeconds saves mid-epoch', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ckpt-src-'));
  try {
    const data = toy(160, 8);
    const source = {
      *batches(ctx: { epoch: number; batchSize: number }) {
        for (let i = 0; i + ctx.batchSize <= 160; i += ctx.batchSize) {
          const rows = (ctx.epoch * 7 + i) % 160 <= 160 - ctx.batchSize ? (ctx.epoch * 7 + i) % 160 : 0;
          yield { x: data.x.slice(rows, ctx.batchSize), y: data.y.slice(rows, ctx.batchSize) };
        }
      },
    };
    const opts = { epochs: 2, batchSize: 16 }; // 10 steps per epoch
    const mk = () => new Trainer({ model: model(), optimizer: (t) => t.train.adam(0.02), loss: 'binaryCrossentropy', runtime: rt, verbose: 0 });
    const full = mk();
    await full.fit(source, opts);
    const a = mk();
    await rejects(() => a.fit(source, { ...opts, checkpoint: { dir, everySeconds: 1e-6 }, callbacks: { onBatchEnd: () => { if (a.globalStep === 14) throw new Error('boom'); } } }), /boom/);
    const st = await loadCheckpoint(dir);
    assert.is(st!.step, 13, 'everySeconds saved after every step');
    const b = mk();
    await b.fit(source, { ...opts, checkpoint: { dir } });
    assert.equal(Array.from(b.weightsFlat()), Array.from(full.weightsFlat()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('step checkpoints on 2 ranks: both crash at step 23, resume from step 20, equal the uninterrupted 2-rank run', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ckpt-2r-'));
  const onRanks = async <T>(fn: (sync: GradientSync) => Promise<T>): Promise<T[]> => {
    const syncs = (await memoryGroups(2, { timeoutMs: 20_000 })).map((g) => new RingSync(g));
    try {
      return await Promise.all(syncs.map(fn));
    } finally {
      await Promise.all(syncs.map((s) => s.close()));
    }
  };
  try {
    const data = toy(256, 7);
    const opts = { epochs: 2, batchSize: 8, seed: 1 }; // 16 steps per epoch
    const mk = (sync: GradientSync, seed = 3) => new Trainer({ model: model(seed), optimizer: 'adam', loss: 'binaryCrossentropy', sync, runtime: rt, verbose: 0 });
    const full = await onRanks(async (sync) => {
      const t = mk(sync);
      await t.fit(data, opts);
      return Array.from(t.weightsFlat());
    });
    const crashed = await onRanks(async (sync) => {
      const t = mk(sync);
      try {
        await t.fit(data, { ...opts, checkpoint: { dir, everySteps: 10 }, callbacks: { stopsOnBatch: false, onBatchEnd: () => { if (t.globalStep === 23) throw new Error('crash'); } } });
        return 'finished';
      } catch (e) {
        return (e as Error).message;
      }
    });
    assert.equal(crashed, ['crash', 'crash']);
    assert.is((await loadCheckpoint(dir))!.step, 20);
    const resumed = await onRanks(async (sync) => {
      const t = mk(sync, 40 + sync.rank);
      const h = await t.fit(data, { ...opts, checkpoint: { dir, everySteps: 10 } });
      assert.is(h.startEpoch, 1);
      return Array.from(t.weightsFlat());
    });
    assert.equal(resumed[0], full[0]);
    assert.equal(resumed[1], full[0]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sharding: N ranks with batch b cover the global batch of 1 rank with batch N*b, in order', () => {
  const order = epochOrder(100, 3, true, 7);
  assert.equal(Array.from(epochOrder(100, 3, true, 7)), Array.from(order), 'same seed and epoch, same order');
  assert.not.equal(Array.from(epochOrder(100, 4, true, 7)), Array.from(order));
  const one = rankBatchRows(order, 2, { epoch: 3, rank: 0, size: 1, batchSize: 12 });
  const parts = [0, 1, 2, 3].map((r) => Array.from(rankBatchRows(order, 2, { epoch: 3, rank: r, size: 4, batchSize: 3 })));
  assert.equal(parts.flat(), Array.from(one));
});

test.run();
