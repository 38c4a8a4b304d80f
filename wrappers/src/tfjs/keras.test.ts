import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setupTfjs } from './runtime.js';
import { Trainer, type TrainerOptions } from './trainer.js';
import { earlyStopping, learningRateScheduler, modelCheckpoint, reduceLROnPlateau } from './callbacks.js';
import { schedules } from './schedules.js';
import { tensorBoard } from './tensorboard/tensorboard.js';
import { onRingRanks, rejects, toyData, toyModel } from '../testing/toy.js';

// Keras habits (issue 17): fit(x, y, opts), validation, callbacks that stop, schedules, names, save/load.
const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const toy = (n: number, seed = 1) => toyData(tf, n, seed);
const model = toyModel;

const base = (o: Partial<TrainerOptions> = {}): TrainerOptions => ({ model: model(), optimizer: (t) => t.train.sgd(0.2), loss: 'binaryCrossentropy', metrics: ['accuracy'], runtime: rt, verbose: 0, ...o });
const onRanks = onRingRanks;
const flat = (t: Trainer) => Array.from(t.weightsFlat());
const data = toy(400, 5);

test('fit(x, y, options) trains exactly like fit({ x, y }, options), with tfjs defaults (1 epoch, batch 32)', async () => {
  const a = new Trainer(base());
  const b = new Trainer(base());
  const ha = await a.fit(data.x, data.y, { seed: 4 });
  const hb = await b.fit({ x: data.x, y: data.y }, { epochs: 1, batchSize: 32, seed: 4 });
  assert.equal(flat(a), flat(b));
  assert.is(ha.epochs.length, 1);
  assert.is(a.globalStep, Math.floor(400 / 32));
  assert.is(ha.epochs[0]!.loss, hb.epochs[0]!.loss);
  const ev = await a.evaluate(data.x, data.y, { batchSize: 64 });
  assert.equal(ev, await a.evaluate({ x: data.x, y: data.y }, { batchSize: 64 }));
});

test('validationSplit holds out the last fraction: val_* equal on every rank and equal to evaluating that slice', async () => {
  const results = await onRanks(2, async (sync) => {
    const t = new Trainer(base({ sync }));
    const h = await t.fit(data.x, data.y, { epochs: 2, batchSize: 16, validationSplit: 0.2, seed: 1 });
    return { h, w: flat(t) };
  });
  const [r0, r1] = results as [(typeof results)[0], (typeof results)[0]];
  assert.equal(r0.h.epochs, r1.h.epochs.map((e, i) => ({ ...e, seconds: r0.h.epochs[i]!.seconds, samplesPerSec: r0.h.epochs[i]!.samplesPerSec })), 'identical logs on both ranks');
  assert.equal(r0.w, r1.w);
  // Training saw only the first 320 rows: a run on that slice without validation takes the same path.
  const train = { x: data.x.slice(0, 320), y: data.y.slice(0, 320) };
  const val = { x: data.x.slice(320), y: data.y.slice(320) };
  const [plain] = await onRanks(2, async (sync) => {
    const t = new Trainer(base({ sync }));
    await t.fit(train, { epochs: 2, batchSize: 16, seed: 1 });
    return flat(t);
  });
  assert.equal(plain, r0.w);
  // val_* = the loss and accuracy of the final weights on the held-out 80 rows (one process scoring them all).
  const one = new Trainer(base({ model: model() }));
  await one.init();
  one.model.setWeights(one.model.weights.map((w, i) => tf.tensor(r0.w.slice(offsets(one)[i]!, offsets(one)[i]! + w.read().size), w.shape as number[])));
  const ev = await one.evaluate(val);
  const last = r0.h.epochs[1]!;
  assert.ok(Math.abs(last.val_loss! - ev.loss!) < 1e-6, `val_loss ${last.val_loss} vs ${ev.loss}`);
  assert.ok(Math.abs(last.val_accuracy! - ev.accuracy!) < 1e-6);
  assert.ok('val_loss' in r0.h.epochs[0]!);
});
function offsets(t: Trainer): number[] {
  let o = 0;
  return t.model.weights.map((w) => ((o += w.read().size), o - w.read().size));
}

test('initialEpoch starts the epoch count there (no checkpoint)', async () => {
  const t = new Trainer(base());
  const seen: number[] = [];
  const h = await t.fit(data.x, data.y, { epochs: 4, initialEpoch: 2, batchSize: 100, callbacks: { onEpochBegin: (e) => void seen.push(e) } });
  assert.is(h.startEpoch, 2);
  assert.equal(seen, [2, 3]);
  assert.equal(h.epochs.map((e) => e.epoch), [2, 3]);
});

test('validationData as Keras [x, y] and validationFreq', async () => {
  const t = new Trainer(base());
  const v = toy(64, 9);
  const h = await t.fit(data.x, data.y, { epochs: 3, batchSize: 50, validationData: [v.x, v.y], validationFreq: 2 });
  assert.not.ok('val_loss' in h.epochs[0]!);
  assert.ok('val_loss' in h.epochs[1]!);
  assert.not.ok('val_loss' in h.epochs[2]!);
});

test('model.stopTraining set on one rank in onBatchEnd stops every rank at the same step (no rank left in a collective)', async () => {
  const t0 = Date.now();
  const out = await onRanks(2, async (sync) => {
    const t = new Trainer(base({ sync }));
    const h = await t.fit(data.x, data.y, {
      epochs: 5,
      batchSize: 10,
      callbacks: { onBatchEnd: (step) => void (sync.rank === 1 && step === 3 && (t.model.stopTraining = true)) },
    });
    return { steps: t.globalStep, epochs: h.epochs.length, stopped: h.stopped, w: flat(t), loss: h.epochs[0]!.loss };
  });
  assert.ok(Date.now() - t0 < 15_000, 'no timeout involved');
  for (const o of out) {
    assert.is(o.steps, 4);
    assert.is(o.epochs, 1);
    assert.is(o.stopped, true);
  }
  assert.equal(out[0]!.w, out[1]!.w);
  assert.is(out[0]!.loss, out[1]!.loss);
});

test('model.stopTraining set on rank 0 only in onEpochEnd stops both after that epoch', async () => {
  const out = await onRanks(2, async (sync) => {
    const t = new Trainer(base({ sync }));
    const h = await t.fit(data.x, data.y, { epochs: 6, batchSize: 20, callbacks: { onEpochEnd: (e) => void (sync.rank === 0 && e === 1 && (t.model.stopTraining = true)) } });
    return h.epochs.length;
  });
  assert.equal(out, [2, 2]);
});

test('earlyStopping: patience counts epochs without improvement; restoreBestWeights puts back the best epoch', async () => {
  const t = new Trainer(base());
  let afterFirst: number[] = [];
  // minDelta 10: no epoch after the first counts as an improvement.
  const es = earlyStopping({ monitor: 'loss', minDelta: 10, patience: 1, restoreBestWeights: true });
  const h = await t.fit(data.x, data.y, { epochs: 10, batchSize: 40, callbacks: [{ onEpochEnd: (e) => void (e === 0 && (afterFirst = flat(t))) }, es] });
  assert.is(h.epochs.length, 3);
  assert.is(es.stoppedEpoch, 2);
  assert.is(es.bestEpoch, 0);
  assert.equal(flat(t), afterFirst);
  await rejects(() => new Trainer(base()).fit(data.x, data.y, { callbacks: earlyStopping() }), /earlyStopping monitor names "val_loss", which is not in the epoch logs .*pass validationData or validationSplit/);
});

test("tfjs' own tf.callbacks.earlyStopping works (it sets model.stopTraining)", async () => {
  const t = new Trainer(base());
  const h = await t.fit(data.x, data.y, { epochs: 10, batchSize: 40, callbacks: tf.callbacks.earlyStopping({ monitor: 'loss', minDelta: 10, patience: 0 }) as never });
  assert.is(h.epochs.length, 2);
});

test('modelCheckpoint saves the best epochs in the Layers format; tf.loadLayersModel reads them with equal predictions', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-mc-'));
  try {
    const v = toy(64, 9);
    const mc = modelCheckpoint(`file://${dir}/best`, { saveBestOnly: true, monitor: 'val_accuracy' });
    const all = modelCheckpoint(`file://${dir}/e{epoch}`);
    const out = await onRanks(2, async (sync) => {
      const t = new Trainer(base({ sync, optimizer: (x) => x.train.adam(0.05) }));
      await t.fit(data.x, data.y, { epochs: 3, batchSize: 20, validationData: v, callbacks: sync.rank === 0 ? [mc, all] : [modelCheckpoint(`file://${dir}/best`, { saveBestOnly: true, monitor: 'val_accuracy' }), modelCheckpoint(`file://${dir}/e{epoch}`)] });
      return t;
    });
    assert.equal(all.saved, [1, 2, 3].map((e) => `file://${dir}/e${e}`));
    assert.ok(mc.saved.length >= 1);
    for (const f of ['model.json', 'weights.bin']) assert.ok(existsSync(join(dir, 'e3', f)), f);
    const loaded = await tf.loadLayersModel(`file://${dir}/e3/model.json`);
    const probe = toy(16, 21).x;
    const want = await out[0]!.predict(probe);
    assert.equal(Array.from((loaded.predict(probe) as never as { dataSync(): Float32Array }).dataSync()), Array.from(want.dataSync()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trainer.save(file://DIR) writes model.json + weights.bin without tfjs-node; rank 1 writes nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-save-'));
  try {
    const out = await onRanks(2, async (sync) => {
      const t = new Trainer(base({ sync }));
      await t.fit(data.x, data.y, { epochs: 1, batchSize: 20 });
      return { t, res: await t.save(`file://${dir}/m`) };
    });
    assert.ok(out[0]!.res && out[0]!.res.modelArtifactsInfo.weightDataBytes! > 0);
    assert.is(out[1]!.res, null);
    const m = await tf.loadLayersModel(`file://${dir}/m/model.json`);
    const probe = toy(32, 17).x;
    const a = (m.predict(probe) as never as { dataSync(): Float32Array }).dataSync();
    const b = (await out[0]!.t.predict(probe)).dataSync();
    assert.equal(Array.from(a), Array.from(b));
    assert.equal(m.getWeights().map((w) => w.shape), out[0]!.t.model.getWeights().map((w) => w.shape));
    // The folder itself also loads, as a directory URL.
    assert.is((await tf.loadLayersModel(`file://${dir}/m`)).layers.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('schedules follow their formulas', () => {
  const st = schedules.step({ initial: 0.1, factor: 0.5, everyEpochs: 2 });
  assert.equal([0, 1, 2, 3, 4].map((e) => st(99, e)), [0.1, 0.1, 0.05, 0.05, 0.025]);
  const ss = schedules.step({ initial: 1, factor: 0.1, everySteps: 10 });
  assert.equal([ss(9, 0), ss(10, 0)], [1, 0.1 ** 1]);
  const ex = schedules.exponential({ initial: 0.1, decayRate: 0.5, decaySteps: 10 });
  assert.ok(Math.abs(ex(5, 0) - 0.1 * 0.5 ** 0.5) < 1e-15);
  assert.is(schedules.exponential({ initial: 0.1, decayRate: 0.5, decaySteps: 10, staircase: true })(15, 0), 0.05);
  const cos = schedules.cosine({ initial: 1, decaySteps: 100, alpha: 0.1 });
  assert.is(cos(0, 0), 1);
  assert.ok(Math.abs(cos(50, 0) - 0.55) < 1e-12);
  assert.ok(Math.abs(cos(100, 0) - 0.1) < 1e-12);
  assert.ok(Math.abs(cos(500, 0) - 0.1) < 1e-12);
  const wu = schedules.warmup({ steps: 4, then: schedules.exponential({ initial: 0.8, decayRate: 0.5, decaySteps: 1 }) });
  [0.2, 0.4, 0.6, 0.8, 0.8, 0.4].forEach((want, s) => assert.ok(Math.abs(wu(s, 0) - want) < 1e-12, `warmup step ${s}: ${wu(s, 0)}`));
  assert.throws(() => schedules.step({ initial: 0.1, factor: 0.5 } as never), /exactly one of everyEpochs or everySteps/);
  assert.throws(() => schedules.cosine({ initial: 0.1, decaySteps: 10, warmup: 3 } as never), /schedules.cosine.warmup is not an option/);
});

test('learningRateScheduler sets the same rate at the same step on every rank, and the optimizer uses it', async () => {
  const sched = schedules.warmup({ steps: 3, then: schedules.cosine({ initial: 0.3, decaySteps: 10 }) });
  const out = await onRanks(2, async (sync) => {
    const t = new Trainer(base({ sync, optimizer: 'adam' }));
    const lrs: number[] = [];
    const h = await t.fit(data.x, data.y, { epochs: 2, batchSize: 25, callbacks: [learningRateScheduler(sched), { onBatchEnd: () => void lrs.push(t.learningRate) }] });
    return { lrs, w: flat(t), lr: h.epochs.map((e) => e.learningRate) };
  });
  assert.equal(out[0]!.lrs, out[1]!.lrs);
  assert.equal(out[0]!.lrs, out[0]!.lrs.map((_, s) => sched(s, 0)));
  assert.equal(out[0]!.w, out[1]!.w);
  // A rate of 0 leaves the weights where they were, for the optimizers that cache it (sgd) and those that do not (adam).
  for (const optimizer of ['sgd', 'adam'] as const) {
    const t = new Trainer(base({ optimizer }));
    await t.init();
    const before = flat(t);
    await t.fit(data.x, data.y, { batchSize: 50, callbacks: learningRateScheduler(() => 0) });
    assert.equal(flat(t), before, optimizer);
  }
});

test('reduceLROnPlateau multiplies the rate after `patience` epochs without improvement', async () => {
  const t = new Trainer(base({ optimizer: (x) => x.train.sgd(0.4) }));
  const h = await t.fit(data.x, data.y, { epochs: 5, batchSize: 50, callbacks: reduceLROnPlateau({ monitor: 'loss', minDelta: 10, patience: 2, factor: 0.5 }) });
  // Recorded at the end of each epoch, before the callbacks: reduced after epochs 2 and 4.
  assert.equal(h.epochs.map((e) => e.learningRate), [0.4, 0.4, 0.4, 0.2, 0.2]);
  assert.is(t.learningRate, 0.1);
});

test("names tfjs accepts: 'mse' loss, 'acc'/'mae' metrics, 'adam' optimizer with tfjs' defaults", async () => {
  const a = new Trainer({ model: model(), optimizer: 'adam', loss: 'mse', metrics: ['acc', 'mae', 'binaryAccuracy'], runtime: rt, verbose: 0 });
  const b = new Trainer({ model: model(), optimizer: (x) => x.train.adam(0.001, 0.9, 0.999, 1e-7), loss: (y, p) => tf.losses.meanSquaredError(y, p) as never, runtime: rt, verbose: 0 });
  const ha = await a.fit(data.x, data.y, { epochs: 2, batchSize: 40, validationSplit: 0.25 });
  await b.fit(data.x.slice(0, 300), data.y.slice(0, 300), { epochs: 2, batchSize: 40 });
  assert.equal(Object.keys(ha.epochs[1]!).filter((k) => !['epoch', 'seconds', 'samplesPerSec', 'learningRate'].includes(k)).sort(), ['acc', 'binaryAccuracy', 'loss', 'mae', 'val_acc', 'val_binaryAccuracy', 'val_loss', 'val_mae'].sort());
  assert.is(ha.epochs[1]!.acc, ha.epochs[1]!.binaryAccuracy);
  const wa = flat(a);
  const wb = flat(b);
  assert.ok(wa.every((v, i) => Math.abs(v - wb[i]!) < 1e-6), 'adam by name = tf.train.adam(0.001, 0.9, 0.999, 1e-7)');
  const y = tf.tensor2d([[0], [1], [1]]);
  const p = tf.tensor2d([[0.5], [0.25], [1.5]]);
  const { resolveLoss, resolveMetric } = await import('./losses.js');
  assert.ok(Math.abs(resolveLoss(tf, 'mse')(y, p).dataSync()[0]! - (0.25 + 0.5625 + 0.25) / 3) < 1e-7);
  assert.ok(Math.abs(resolveLoss(tf, 'hinge')(y, p).dataSync()[0]! - (1 + 0.75 + 0) / 3) < 1e-7);
  assert.ok(Math.abs(resolveMetric(tf, 'mae').fn(y.reshape([3]), p).dataSync()[0]! - (0.5 + 0.75 + 0.5) / 3) < 1e-7);
});

test('options shoal does not support are errors naming them, never ignored', async () => {
  const t = new Trainer(base());
  await rejects(() => t.fit(data.x, data.y, { classWeight: { 0: 1 } } as never), /fit options.classWeight is a tfjs option shoal does not support/);
  await rejects(() => t.fit(data.x, data.y, { epoch: 3 } as never), /fit options.epoch is not an option shoal knows/);
  await rejects(() => t.fit(data.x, data.y, { validationSplit: 1.5 }), /validationSplit must be a number in \(0, 1\)/);
  await rejects(() => t.fit({ batches: () => [] }, { validationSplit: 0.1 }), /validationSplit needs in-memory x and y/);
  await rejects(() => t.fit(data.x, data.y, { checkpoint: { dir: '/tmp/x', every: 3 } } as never), /fit options.checkpoint.every is not an option/);
  await rejects(() => t.fit(data.x, data.y, { validationData: [data.x, data.y, data.y] } as never), /must be \[x, y\]/);
  await rejects(() => new Trainer(base({ optimizer: 'adamw' as never })).fit(data.x, data.y), /options.optimizer must be .* got "adamw"/);
  await rejects(() => new Trainer(base({ metrics: ['f1' as never] })).fit(data.x, data.y), /options.metrics entries .* got "f1"/);
  assert.throws(() => new Trainer({ ...base(), lr: 0.1 } as never), /options.lr is not a Trainer option/);
  assert.throws(() => tensorBoard('/tmp/tb', { histogramFreq: 1 } as never), /histogramFreq is not supported/);
  await rejects(() => t.fit(data.x, data.y, { callbacks: tensorBoard('/dev/null/logs') }), /bad config tensorBoard logdir: \/dev\/null\/logs cannot be created/);
  assert.throws(() => earlyStopping({ patiance: 2 } as never), /earlyStopping option patiance is not supported/);
});

test.run();
