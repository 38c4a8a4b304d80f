import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryGroups } from '@shoal/backends/testing';
import { PsSync, RingSync, startPsServers, type GradientSync, HybridSync, LocalSync } from '@shoal/backends';
import { MemoryNetwork, MemoryStore, Rng } from '@shoal/core';
import { OnnxTrainer, type OnnxTrainData } from './onnx-trainer.js';
import { decodeModel, encodeModel, makeNode, makeTensor, onnx } from './proto.js';
import { OnnxModel, type OnnxInput } from './session.js';
import type { LossKind } from './losses.js';

// The PyTorch fixtures (wrappers/fixtures/onnx, made by make_fixtures.py): models exported by torch.onnx.export,
// a batch, and autograd's loss and gradients on it (float64), plus the weights after 5 plain-SGD steps.
const FIXTURES = new URL('../../fixtures/onnx/', import.meta.url).pathname;
type Arr = { dims: number[]; dtype: 'float' | 'int'; data: number[] };
interface Fixture {
  model: string;
  loss: LossKind;
  lossValue: number;
  inputs: Record<string, Arr>;
  labels: Arr;
  grads: Record<string, Arr>;
  sgd: { steps: number; lr: number; weights: Record<string, Arr>; buffers: Record<string, Arr>; evalOutput: Arr };
}
const NAMES = ['mlp', 'cnn', 'rec'] as const;

function batchOf(fx: Fixture): OnnxTrainData {
  const x: OnnxTrainData['x'] = {};
  for (const [k, v] of Object.entries(fx.inputs)) x[k] = { data: v.dtype === 'int' ? BigInt64Array.from(v.data.map(BigInt)) : Float32Array.from(v.data), dims: v.dims };
  const y = fx.loss === 'softmaxCrossEntropy' ? Int32Array.from(fx.labels.data) : Float32Array.from(fx.labels.data);
  return { x, y: { data: y, dims: fx.labels.dims } };
}

/** max |a - b| / max(max |b|, 1e-3): relative to the tensor's scale (a bias whose true gradient is 0 stays finite). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.is(a.length, b.length);
  let d = 0;
  let m = 1e-3;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

async function compareWithTorch(dir: string, label: string): Promise<void> {
  for (const name of NAMES) {
    const fx = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as Fixture;
    const trainer = new OnnxTrainer({ model: join(dir, fx.model), loss: fx.loss, optimizer: { type: 'sgd', lr: fx.sgd.lr }, verbose: 0 });
    try {
      const { loss, grads } = await trainer.gradients(batchOf(fx));
      assert.ok(Math.abs(loss - fx.lossValue) <= 1e-5 * Math.abs(fx.lossValue), `${label} ${name}: loss ${loss} vs torch ${fx.lossValue}`);
      assert.equal([...grads.keys()].sort(), Object.keys(fx.grads).sort(), `${label} ${name}: parameters`);
      for (const [p, ref] of Object.entries(fx.grads)) {
        const e = relErr(grads.get(p)!, ref.data);
        assert.ok(e <= 1e-5, `${label} ${name}: gradient of ${p} differs from PyTorch autograd by ${e} (relative)`);
      }
      // Train: 5 SGD steps on the same batch follow PyTorch's weights.
      for (let s = 0; s < fx.sgd.steps; s++) await trainer.trainOnBatch(batchOf(fx));
      const w = trainer.weights();
      for (const [p, ref] of Object.entries(fx.sgd.weights)) {
        const e = relErr(w.get(p)!, ref.data);
        assert.ok(e <= 1e-5, `${label} ${name}: ${p} after ${fx.sgd.steps} SGD steps differs from PyTorch by ${e}`);
      }
      for (const [b, ref] of Object.entries(fx.sgd.buffers)) {
        const e = relErr(w.get(b)!, ref.data);
        assert.ok(e <= 1e-5, `${label} ${name}: running statistic ${b} differs from PyTorch by ${e}`);
      }
      // The exported inference model (BatchNorm on running statistics) predicts what PyTorch's eval mode does.
      const exported = await OnnxModel.load(trainer.exportModel());
      try {
        const batch = batchOf(fx);
        const pred = (await exported.predict(batch.x as Record<string, OnnxInput>)).out!;
        const e = relErr(pred.data as Float32Array, fx.sgd.evalOutput.data);
        assert.ok(e <= 1e-5, `${label} ${name}: exported model's output differs from PyTorch eval mode by ${e}`);
      } finally {
        await exported.close();
      }
    } finally {
      await trainer.close();
    }
  }
}

test('models exported by PyTorch (MLP, CNN with BatchNorm, embedding recommender): gradients, SGD steps, running statistics and the exported model match PyTorch', async () => {
  await compareWithTorch(FIXTURES, 'committed fixture');
});

/** A python with torch, or null: the PATH python, then Debian's (python3-torch from scripts/setup.sh). */
function torchPython(): string | null {
  for (const py of ['python3', '/usr/bin/python3']) {
    try {
      execFileSync(py, ['-c', 'import torch'], { stdio: 'ignore', timeout: 60_000 });
      return py;
    } catch {
      /* next */
    }
  }
  return null;
}

test('live PyTorch: freshly exported models and gradients match too (skipped without torch)', async () => {
  const py = torchPython();
  if (!py) {
    console.log('  (torch not importable: live comparison skipped, committed fixtures checked above)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-torch-'));
  try {
    execFileSync(py, [join(FIXTURES, 'make_fixtures.py'), dir], { stdio: 'ignore', timeout: 180_000 });
    await compareWithTorch(dir, 'live torch');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a label outside [0, classes) is a clear error naming the sample', async () => {
  const trainer = new OnnxTrainer({ model: join(FIXTURES, 'mlp.onnx'), loss: 'softmaxCrossEntropy', optimizer: { type: 'sgd', lr: 0.1 }, verbose: 0 });
  try {
    const y = Int32Array.from({ length: 8 }, (_, i) => (i === 6 ? 5 : i % 5));
    await trainer.trainOnBatch({ x: { x: { data: new Float32Array(8 * 12), dims: [8, 12] } }, y: { data: y, dims: [8] } });
    assert.unreachable('accepted label 5 of 5 classes');
  } catch (e) {
    assert.match((e as Error).message, /data.y holds label 5 at sample 6: softmaxCrossEntropy needs integer labels in \[0, 5\)/);
  } finally {
    await trainer.close();
  }
});

test('an op outside the supported set is refused by name before training starts', async () => {
  const model = decodeModel(readFileSync(join(FIXTURES, 'mlp.onnx')), 'mlp');
  const node = model.graph!.node!.find((n) => n.opType === 'Tanh')!;
  node.opType = 'Erf';
  const trainer = new OnnxTrainer({ model: encodeModel(model), loss: 'softmaxCrossEntropy', optimizer: { type: 'sgd', lr: 0.1 }, verbose: 0 });
  try {
    await trainer.init();
    assert.unreachable('accepted an Erf node');
  } catch (e) {
    assert.match((e as Error).message, /node "\/Tanh" uses op Erf, which shoal cannot train; supported ops: .*Gemm/);
    assert.is((e as { code?: string }).code, 'ERR_DATA');
  }
});

// Synthetic data for the fixture models (same for every engine).
const N = 320;
const rng = new Rng(11);
const mlpData: OnnxTrainData = {
  x: { x: { data: Float32Array.from({ length: N * 12 }, () => rng.u32() / 2 ** 31 - 1), dims: [N, 12] } },
  y: { data: Int32Array.from({ length: N }, () => rng.u32() % 5), dims: [N] },
};
const users = BigInt64Array.from({ length: N }, (_, k) => BigInt((k * 7919) % 50));
const items = BigInt64Array.from({ length: N }, (_, k) => BigInt((k * 104729 + 13) % 80));
const recData: OnnxTrainData = {
  x: { user: { data: users, dims: [N] }, item: { data: items, dims: [N] } },
  y: { data: Float32Array.from({ length: N }, (_, k) => ((Number(users[k]!) + Number(items[k]!)) % 3 === 0 ? 1 : 0)), dims: [N, 1] },
};
const cases = [
  { name: 'mlp', data: mlpData, loss: 'softmaxCrossEntropy' as const },
  { name: 'rec', data: recData, loss: 'bceWithLogits' as const },
];
const B = 16;
const STEPS = 20;

async function trainAll(name: string, data: OnnxTrainData, loss: LossKind, syncs: GradientSync[], batchSize: number) {
  const trainers = syncs.map((sync) => new OnnxTrainer({ model: join(FIXTURES, `${name}.onnx`), loss, optimizer: { type: 'adam', lr: 0.01 }, sync, verbose: 0, threads: 1 }));
  try {
    await Promise.all(trainers.map((t) => t.fit(data, { epochs: 1, batchSize, stepsPerEpoch: STEPS, seed: 3 })));
    return { weights: trainers.map((t) => t.weightsFlat()), sparseRows: trainers[0]!.stats.sparseRows };
  } finally {
    await Promise.all(trainers.map((t) => t.close()));
  }
}

async function psCluster(n: number) {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const sups = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: 2, numWorkers: n, mode: 'sync', timeoutMs: 20_000 });
  const syncs = await Promise.all(Array.from({ length: n }, (_, rank) => PsSync.connect({ rank, numWorkers: n, numServers: 2, store, transport: network.transport(), timeoutMs: 20_000 })));
  return { syncs, close: async () => (await Promise.all(syncs.map((s) => s.close())), await Promise.all(sups.map((s) => s.stop()))) };
}

const engines: Record<string, (n: number) => Promise<{ syncs: GradientSync[]; close: () => Promise<unknown> }>> = {
  ring: async (n) => {
    const syncs = (await memoryGroups(n, { timeoutMs: 20_000 })).map((g) => new RingSync(g));
    return { syncs, close: () => Promise.all(syncs.map((s) => s.close())) };
  },
  ps: psCluster,
  hybrid: async (n) => {
    const cl = await psCluster(n);
    const syncs = (await memoryGroups(n, { timeoutMs: 20_000 })).map((g, k) => new HybridSync(new RingSync(g), cl.syncs[k]!));
    return { syncs, close: async () => (await Promise.all(syncs.map((s) => s.close())), await cl.close()) };
  },
};

for (const c of cases) {
  const reference = trainAll(c.name, c.data, c.loss, [new LocalSync()], B);
  for (const [engine, make] of Object.entries(engines)) {
    for (const n of engine === 'ring' ? [2, 4] : [2]) {
      test(`${engine}: ${c.name}, ${n} workers with batch ${B / n} match 1 worker with batch ${B} after ${STEPS} Adam steps`, async () => {
        const ref = await reference;
        const cl = await make(n);
        try {
          const r = await trainAll(c.name, c.data, c.loss, cl.syncs, B / n);
          if (c.name === 'rec' && engine !== 'ring') assert.ok(r.sparseRows > 0 && r.sparseRows <= B / n * 2, `embedding rows sent row-sparse: ${r.sparseRows}`);
          for (let k = 0; k < n; k++) {
            const e = relErr(r.weights[k]!, ref.weights[0]!);
            assert.ok(e <= 1e-5, `rank ${k}: relative difference ${e}`);
          }
          const init = new OnnxTrainer({ model: join(FIXTURES, `${c.name}.onnx`), loss: c.loss, optimizer: { type: 'sgd', lr: 1 }, verbose: 0 });
          await init.gradients({ x: Object.fromEntries(Object.entries(c.data.x).map(([k, v]) => [k, { data: v.data.slice(0, v.data.length / N), dims: [1, ...v.dims.slice(1)] }])), y: { data: c.data.y!.data.slice(0, c.data.y!.data.length / N), dims: [1, ...c.data.y!.dims.slice(1)] } });
          assert.ok(relErr(init.weightsFlat(), ref.weights[0]!) > 1e-2, 'training moved the weights');
          await init.close();
        } finally {
          await cl.close();
        }
      });
    }
  }
}

test('Dropout masks are seeded per global sample: 2 ring workers equal 1 worker, and the seed matters', async () => {
  // The fixture MLP with Dropout(0.3) after its ReLU.
  const model = decodeModel(readFileSync(join(FIXTURES, 'mlp.onnx')), 'mlp');
  const g = model.graph!;
  const relu = g.node!.findIndex((n) => n.opType === 'Relu');
  const out = g.node![relu]!.output![0]!;
  g.node![relu]!.output = ['relu_pre'];
  g.node!.splice(relu + 1, 0, onnx.NodeProto.fromObject(makeNode('Dropout', ['relu_pre', 'drop_ratio'], [out], 'dropout')));
  g.initializer!.push(onnx.TensorProto.fromObject(makeTensor('drop_ratio', [], Float32Array.of(0.3))));
  const bytes = encodeModel(model);
  const trainWith = async (syncs: GradientSync[], seed: number) => {
    const ts = syncs.map((sync) => new OnnxTrainer({ model: bytes, loss: 'softmaxCrossEntropy', optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 }, sync, seed, verbose: 0 }));
    await Promise.all(ts.map((t) => t.fit(mlpData, { epochs: 1, batchSize: 16 / syncs.length, stepsPerEpoch: STEPS, seed: 3 })));
    const w = ts.map((t) => t.weightsFlat());
    await Promise.all(ts.map((t) => t.close()));
    return w;
  };
  const [ref] = await trainWith([new LocalSync()], 7);
  const syncs = (await memoryGroups(2, { timeoutMs: 20_000 })).map((x) => new RingSync(x));
  try {
    const ws = await trainWith(syncs, 7);
    for (const w of ws) assert.ok(relErr(w, ref!) <= 1e-5, `2 workers vs 1: ${relErr(w, ref!)}`);
  } finally {
    await Promise.all(syncs.map((x) => x.close()));
  }
  const [other] = await trainWith([new LocalSync()], 8);
  assert.ok(relErr(other!, ref!) > 1e-3, 'another seed draws other masks');
});

test('the exported model loads in onnxruntime and predicts what the trained weights compute', async () => {
  const trainer = new OnnxTrainer({ model: join(FIXTURES, 'mlp.onnx'), loss: 'softmaxCrossEntropy', optimizer: { type: 'adamw', lr: 0.01 }, verbose: 0 });
  try {
    const hist = await trainer.fit(mlpData, { epochs: 3, batchSize: 32 });
    assert.ok(hist[2]!.loss < hist[0]!.loss, `loss fell: ${hist.map((h) => h.loss.toFixed(4))}`);
    const w = trainer.weights();
    const exported = await OnnxModel.load(trainer.exportModel());
    try {
      const rows = 10;
      const x = (mlpData.x.x!.data as Float32Array).subarray(0, rows * 12);
      const out = (await exported.predict({ x: { data: x, dims: [rows, 12] } })).out!;
      // The MLP by hand with the trained weights: fc3(tanh(fc2(relu(fc1(x))))), Linear weights [out, in].
      const linear = (h: Float64Array, p: string, inD: number, outD: number) => {
        const W = w.get(`${p}.weight`)!;
        const bias = w.get(`${p}.bias`)!;
        const y = new Float64Array(rows * outD);
        for (let r = 0; r < rows; r++) for (let o = 0; o < outD; o++) {
          let s = bias[o]!;
          for (let i = 0; i < inD; i++) s += h[r * inD + i]! * W[o * inD + i]!;
          y[r * outD + o] = s;
        }
        return y;
      };
      const h1 = linear(Float64Array.from(x), 'fc1', 12, 16).map((v) => Math.max(0, v));
      const h2 = linear(h1, 'fc2', 16, 8).map(Math.tanh);
      const want = linear(h2, 'fc3', 8, 5);
      assert.ok(relErr(out.data as Float32Array, want) < 1e-5, `exported predictions differ: ${relErr(out.data as Float32Array, want)}`);
      const before = await OnnxModel.load(readFileSync(join(FIXTURES, 'mlp.onnx')));
      const old = (await before.predict({ x: { data: x, dims: [rows, 12] } })).out!;
      assert.ok(relErr(old.data as Float32Array, want) > 1e-2, 'the export carries the trained weights, not the initial ones');
      await before.close();
    } finally {
      await exported.close();
    }
  } finally {
    await trainer.close();
  }
});

test('evaluate: inference-mode loss and accuracy, the same on 2 ranks (sharded) as on 1, and equal to the training loss of an MLP', async () => {
  const one = new OnnxTrainer({ model: join(FIXTURES, 'mlp.onnx'), loss: 'softmaxCrossEntropy', optimizer: { type: 'sgd', lr: 0.1 }, verbose: 0 });
  await one.fit(mlpData, { epochs: 1, batchSize: 32 });
  const ev = await one.evaluate(mlpData);
  const { loss } = await one.gradients(mlpData);
  assert.ok(Math.abs(ev.loss - loss) <= 1e-5 * loss, `evaluate ${ev.loss} vs training-graph loss ${loss}`);
  assert.ok(ev.accuracy! > 0 && ev.accuracy! <= 1, `accuracy ${ev.accuracy}`);
  const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-eval-'));
  try {
    await one.saveModel(join(dir, 'trained.onnx'));
    const groups = await memoryGroups(2, { timeoutMs: 20_000 });
    const syncs = groups.map((g) => new RingSync(g));
    const two = syncs.map((sync) => new OnnxTrainer({ model: join(dir, 'trained.onnx'), loss: 'softmaxCrossEntropy', optimizer: { type: 'sgd', lr: 0.1 }, sync, verbose: 0 }));
    const evs = await Promise.all(two.map(async (t) => (await t.init(), t.evaluate(mlpData))));
    for (const e of evs) {
      assert.ok(Math.abs(e.loss - ev.loss) <= 1e-6 * ev.loss, `2 ranks: ${e.loss} vs ${ev.loss}`);
      assert.ok(Math.abs(e.accuracy! - ev.accuracy!) < 1e-12);
    }
    await Promise.all([...two.map((t) => t.close()), ...syncs.map((x) => x.close())]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await one.close();
  }
});

test('a run resumed from a checkpoint ends with the weights of an uninterrupted run (Adam state included)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-ckpt-'));
  const make = () => new OnnxTrainer({ model: join(FIXTURES, 'cnn.onnx'), loss: 'softmaxCrossEntropy', optimizer: { type: 'adam', lr: 0.01 }, verbose: 0 });
  const cnnData: OnnxTrainData = {
    x: { x: { data: Float32Array.from({ length: 64 * 100 }, () => rng.u32() / 2 ** 32), dims: [64, 1, 10, 10] } },
    y: { data: Int32Array.from({ length: 64 }, () => rng.u32() % 3), dims: [64] },
  };
  try {
    const whole = make();
    await whole.fit(cnnData, { epochs: 2, batchSize: 16 });
    const first = make();
    await first.fit(cnnData, { epochs: 1, batchSize: 16, checkpoint: { dir } });
    await first.close();
    const second = make();
    await second.fit(cnnData, { epochs: 2, batchSize: 16, checkpoint: { dir } });
    assert.equal(Array.from(second.weightsFlat()), Array.from(whole.weightsFlat()));
    await Promise.all([whole.close(), second.close()]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
