import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LocalSync, RingSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { setupTfjs } from '@shoal/wrappers';
import {
  BasketModel, DEFAULT_SPEC, easeInverse, epochExamples, evaluate, gramMatrix, historyLists, meanGradients, MostPopular, runTraining, type Features,
} from '../../examples/recommender/dist/index.js';
import { syntheticTask } from './helpers/recommender-data.js';

const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const data = await syntheticTask(3000);

test('analytic gradients match finite differences (tables through the JS row scatter, dense layers through tfjs)', async () => {
  const hist = historyLists(data.train, data.train, 30);
  const model = new BasketModel(tf, data.numUsers, data.numItems, { dim: 6, hidden: 5, negatives: 7, maxContext: 3, poolHistory: 4, userDropout: 0, seed: 3 });
  // Make the wide weights non-zero and give the model EASE features so their path is exercised.
  model.dense[4]!.data.set([0.3, -0.2, 0.5, 0.4, 0.2]);
  const gram = gramMatrix(data.train, data.numItems);
  model.setItemItem({ p: await easeInverse(gram, data.numItems, 5), gram: Float32Array.from(gram) });
  const batch = epochExamples(data.train, 2, 9).filter((e) => data.train.users[e.basket]! !== 0).slice(0, 6);
  model.reseed(5);
  const g = await model.computeGradients(data.train, hist, batch);
  const lossAt = async (): Promise<number> => { model.reseed(5); return (await model.computeGradients(data.train, hist, batch)).loss; };
  const eps = 1e-2;
  let checked = 0;
  const check = async (arr: Float32Array, i: number, analytic: number, what: string): Promise<void> => {
    const v = arr[i]!;
    arr[i] = v + eps; const up = await lossAt();
    arr[i] = v - eps; const down = await lossAt();
    arr[i] = v;
    const num = (up - down) / (2 * eps);
    assert.ok(Math.abs(num - analytic) < 2e-3 + 0.05 * Math.abs(num), `${what}: numeric ${num} vs analytic ${analytic}`);
    checked++;
  };
  for (const sp of g.sparse) {
    const t = model.tables().find((x) => x.name === sp.name)!;
    for (let r = 0; r < Math.min(3, sp.rowIds.length); r++) {
      const row = sp.rowIds[Math.floor((r * sp.rowIds.length) / 3)]!, ri = Array.from(sp.rowIds).indexOf(row);
      await check(t.data, row * t.rowSize + 1, sp.rows[ri * t.rowSize + 1]!, `${sp.name}[${row}]`);
    }
  }
  for (let p = 0; p < model.dense.length; p++) await check(model.dense[p]!.data, 1, g.dense[p]!.data[1]!, model.dense[p]!.name);
  assert.ok(checked >= 12, `checked ${checked}`);
});

test('a short training run on the synthetic log beats most-popular by far', async () => {
  const pop = await evaluate(new MostPopular(data.train, data.numItems), data.test, data.numItems);
  const sync = new LocalSync();
  const r = await runTraining(tf, rt.describe(), data, sync, {
    ...DEFAULT_SPEC, model: { lr: 0.01 }, epochs: 2, towerScale: 1, train: { globalBatch: 256, targetsPerBasket: 4, seed: 1 }, historyMax: 100, evalEachEpoch: false, progress: false,
  });
  await sync.close();
  assert.ok(r.epochs[1]!.loss < r.epochs[0]!.loss, 'loss falls');
  assert.ok(r.final.hr > 1.2 * pop.hr, `model HR@10 ${r.final.hr} vs most-popular ${pop.hr}`);
  assert.ok(r.final.hr > 0.2, `model HR@10 ${r.final.hr}`);
  // Row-sparse: a step touches a fraction of the user table.
  assert.ok(r.epochs[0]!.tableRows.user_embedding!.rowsPerStep < data.numUsers, JSON.stringify(r.epochs[0]!.tableRows));
});

test('4 in-process ring workers at the same global batch land within 2% (relative HR@10) of 1 worker', async () => {
  const spec = { ...DEFAULT_SPEC, model: { lr: 0.01 }, epochs: 2, towerScale: 1, train: { globalBatch: 256, targetsPerBasket: 4, seed: 1 }, historyMax: 100, evalEachEpoch: false, progress: false };
  const one = await runTraining(tf, '', data, new LocalSync(), spec);
  for (const n of [4]) {
    const groups = await memoryGroups(n, { timeoutMs: 30_000 });
    const syncs = groups.map((grp) => new RingSync(grp));
    try {
      const rs = await Promise.all(syncs.map((s) => runTraining(tf, '', data, s, spec)));
      // Identical replicas: every rank evaluates the same weights.
      for (const r of rs) assert.is(r.final.hr, rs[0]!.final.hr);
      // Step-seeded sampling: the same examples, negatives and contexts as 1 worker; only float rounding differs.
      for (let e = 0; e < 2; e++) assert.ok(Math.abs(rs[0]!.epochs[e]!.loss / one.epochs[e]!.loss - 1) < 1e-3, `epoch ${e + 1} loss ${rs[0]!.epochs[e]!.loss} vs ${one.epochs[e]!.loss}`);
      const rel = Math.abs(rs[0]!.final.hr / one.final.hr - 1);
      assert.ok(rel < 0.02 || Math.abs(rs[0]!.final.hr - one.final.hr) * data.test.hidden.length <= 3,
        `${n} workers HR@10 ${rs[0]!.final.hr} vs 1 worker ${one.final.hr} (${(rel * 100).toFixed(2)}%)`);
    } finally {
      await Promise.all(syncs.map((s) => s.close()));
    }
  }
});

test('accumulateSteps: K micro-batches averaged per update (half the steps at K = 2), and 2 ring workers follow 1 worker', async () => {
  // meanGradients: dense and loss averaged; rows merged over the micro-batches, a row one of them lacks counting 0.
  const t = { name: 't', numRows: 4, rowSize: 2 };
  const m = meanGradients([
    { loss: 1, dense: [{ name: 'w', shape: [2], data: Float32Array.of(1, 2) }], sparse: [{ ...t, rowIds: Int32Array.of(0, 2), rows: Float32Array.of(1, 1, 2, 2) }] },
    { loss: 3, dense: [{ name: 'w', shape: [2], data: Float32Array.of(3, 6) }], sparse: [{ ...t, rowIds: Int32Array.of(2, 3), rows: Float32Array.of(4, 4, 8, 8) }] },
  ]);
  assert.is(m.loss, 2);
  assert.equal(Array.from(m.dense[0]!.data), [2, 4]);
  assert.equal(Array.from(m.sparse[0]!.rowIds), [0, 2, 3]);
  assert.equal(Array.from(m.sparse[0]!.rows), [0.5, 0.5, 3, 3, 4, 4]);
  const spec = { ...DEFAULT_SPEC, model: { lr: 0.01 }, epochs: 1, towerScale: 1, historyMax: 100, evalEachEpoch: false, progress: false };
  const base = { globalBatch: 128, targetsPerBasket: 4, seed: 1 };
  const k1 = await runTraining(tf, '', data, new LocalSync(), { ...spec, train: base });
  const k2 = await runTraining(tf, '', data, new LocalSync(), { ...spec, train: { ...base, accumulateSteps: 2 } });
  assert.is(k2.epochs[0]!.steps, Math.floor(k1.epochs[0]!.steps / 2));
  assert.is(k2.epochs[0]!.samples, k2.epochs[0]!.steps * 256);
  assert.ok(k2.epochs[0]!.loss !== k1.epochs[0]!.loss, 'another path');
  const groups = await memoryGroups(2, { timeoutMs: 30_000 });
  const syncs = groups.map((grp) => new RingSync(grp));
  try {
    const rs = await Promise.all(syncs.map((s) => runTraining(tf, '', data, s, { ...spec, train: { ...base, accumulateSteps: 2 } })));
    assert.ok(Math.abs(rs[0]!.epochs[0]!.loss / k2.epochs[0]!.loss - 1) < 1e-3, `2 workers ${rs[0]!.epochs[0]!.loss} vs 1 worker ${k2.epochs[0]!.loss}`);
    assert.ok(Math.abs(rs[0]!.final.hr - k2.final.hr) * data.test.hidden.length <= 3, `HR@10 ${rs[0]!.final.hr} vs ${k2.final.hr}`);
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

/** Features for the synthetic task: item j has tokens j % 3 and, for every fifth item, 3 + j % 2; users u > 0 token 5 + u % 2. */
function syntheticFeatures(): Features {
  const lists = (n: number, of: (e: number) => number[]) => {
    const offsets = new Int32Array(n + 1), ids: number[] = [];
    for (let e = 0; e < n; e++) { ids.push(...of(e)); offsets[e + 1] = ids.length; }
    return { offsets, ids: Int32Array.from(ids) };
  };
  return {
    names: ['item:g=0', 'item:g=1', 'item:g=2', 'item:t=0', 'item:t=1', 'user:s=0', 'user:s=1'],
    item: lists(data.numItems, (j) => (j % 5 === 0 ? [j % 3, 3 + (j % 2)] : [j % 3])),
    user: lists(data.numUsers, (u) => (u === 0 ? [] : [5 + (u % 2)])),
  };
}

test('features: analytic gradients of the token table match finite differences; the base tables are unchanged in shape', async () => {
  const hist = historyLists(data.train, data.train, 30);
  const model = new BasketModel(tf, data.numUsers, data.numItems, { dim: 6, hidden: 5, negatives: 7, maxContext: 3, poolHistory: 4, userDropout: 0, seed: 3 });
  model.dense[4]!.data.set([0.3, -0.2, 0.5, 0.4, 0.2]);
  model.setFeatures(syntheticFeatures());
  assert.equal(model.tables().map((t) => t.name), ['user_embedding', 'item_in_embedding', 'item_out_embedding', 'feature_embedding']);
  const batch = epochExamples(data.train, 2, 9).filter((e) => data.train.users[e.basket]! !== 0).slice(0, 6);
  model.reseed(5);
  const g = await model.computeGradients(data.train, hist, batch);
  assert.is(g.sparse.length, 4);
  const fg = g.sparse[3]!;
  assert.equal(Array.from(fg.rowIds), [0, 1, 2, 3, 4, 5, 6].filter((t) => fg.rowIds.includes(t)));
  assert.ok(fg.rowIds.length >= 5, `tokens touched: ${Array.from(fg.rowIds)}`);
  const table = model.tables()[3]!;
  const lossAt = async (): Promise<number> => { model.invalidate(); model.reseed(5); return (await model.computeGradients(data.train, hist, batch)).loss; };
  const eps = 1e-2;
  let checked = 0;
  for (let r = 0; r < fg.rowIds.length; r++) {
    for (const k of [0, 4]) {
      const i = fg.rowIds[r]! * table.rowSize + k, v = table.data[i]!;
      table.data[i] = v + eps; const up = await lossAt();
      table.data[i] = v - eps; const down = await lossAt();
      table.data[i] = v;
      const num = (up - down) / (2 * eps), an = fg.rows[r * table.rowSize + k]!;
      assert.ok(Math.abs(num - an) < 2e-3 + 0.05 * Math.abs(num), `token ${fg.rowIds[r]} [${k}]: numeric ${num} vs analytic ${an}`);
      checked++;
    }
  }
  assert.ok(checked >= 10);
});

test('features: a short run trains the token table and scores with it', async () => {
  const sync = new LocalSync();
  const withF = { ...data, features: syntheticFeatures() };
  const r = await runTraining(tf, rt.describe(), withF, sync, {
    ...DEFAULT_SPEC, model: { lr: 0.01 }, epochs: 2, towerScale: 1, train: { globalBatch: 256, targetsPerBasket: 4, seed: 1 }, historyMax: 100, evalEachEpoch: false, progress: false,
  });
  await sync.close();
  assert.ok(r.epochs[1]!.loss < r.epochs[0]!.loss, 'loss falls');
  assert.is(r.epochs[0]!.tableRows.feature_embedding!.numRows, 7);
  assert.ok(r.epochs[0]!.tableRows.feature_embedding!.rowsPerStep >= 6, JSON.stringify(r.epochs[0]!.tableRows));
  const pop = await evaluate(new MostPopular(data.train, data.numItems), data.test, data.numItems);
  assert.ok(r.final.hr > 1.2 * pop.hr, `model HR@10 ${r.final.hr} vs most-popular ${pop.hr}`);
});

test.run();
