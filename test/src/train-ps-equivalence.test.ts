import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type * as tfjs from '@tensorflow/tfjs';
import { HybridSync, LocalSync, PsSync, RingSync, startPsServers, type GradientSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { isShoalError, MemoryNetwork, MemoryStore } from '@shoal/core';
import { setupTfjs, Trainer, type Tf } from '@shoal/wrappers';
import { digitsTensors, maxRelDiff, mlp } from './train-helpers.js';

// Sync SGD, fixed data order, over the parameter-server engine (and the hybrid): N workers with batch B/N must
// match 1 worker with batch B. The embedding model's tables go whole through the same-host staging buffers by
// default (`capabilities.sparseAsDenseBytes`), and row-sparse (only touched rows) with `sparseEngines: ['ps']`.
const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const STEPS = 20;
const B = 64;
const USERS = 300;
const ITEMS = 500;

/** Recommender-shaped: user and item embeddings (16-dim), concatenated, dense 32, sigmoid. */
function recModel(t: Tf): tfjs.LayersModel {
  const u = t.input({ shape: [1], dtype: 'int32' });
  const i = t.input({ shape: [1], dtype: 'int32' });
  const eu = t.layers.flatten().apply(t.layers.embedding({ inputDim: USERS, outputDim: 16, embeddingsInitializer: t.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: 1 }) }).apply(u)) as tfjs.SymbolicTensor;
  const ei = t.layers.flatten().apply(t.layers.embedding({ inputDim: ITEMS, outputDim: 16, embeddingsInitializer: t.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: 2 }) }).apply(i)) as tfjs.SymbolicTensor;
  const h = t.layers.dense({ units: 32, activation: 'relu', kernelInitializer: t.initializers.glorotUniform({ seed: 3 }) }).apply(t.layers.concatenate().apply([eu, ei])) as tfjs.SymbolicTensor;
  const out = t.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: t.initializers.glorotUniform({ seed: 4 }) }).apply(h) as tfjs.SymbolicTensor;
  return t.model({ inputs: [u, i], outputs: out });
}

const N = B * STEPS;
const users = Int32Array.from({ length: N }, (_, k) => (k * 7919) % USERS);
const items = Int32Array.from({ length: N }, (_, k) => (k * 104729 + 13) % ITEMS);
const recData = {
  x: [tf.tensor2d(users, [N, 1], 'int32'), tf.tensor2d(items, [N, 1], 'int32')],
  y: tf.tensor2d(Float32Array.from({ length: N }, (_, k) => ((users[k]! + items[k]!) % 3 === 0 ? 1 : 0)), [N, 1]),
};
const digits = digitsTensors(tf, B * STEPS);

type Case = { name: string; model: (t: Tf) => tfjs.LayersModel; data: { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor }; loss: 'binaryCrossentropy' | 'sparseCategoricalCrossentropy' };
const cases: Case[] = [
  { name: 'embedding model', model: recModel, data: recData, loss: 'binaryCrossentropy' },
  { name: 'mlp', model: (t) => mlp(t, 7), data: digits, loss: 'sparseCategoricalCrossentropy' },
];

async function train(c: Case, syncs: GradientSync[], batchSize: number, sparseEngines?: Array<GradientSync['kind']>) {
  const trainers = syncs.map((sync) => new Trainer({ model: c.model, optimizer: (t) => t.train.sgd(0.3), loss: c.loss, sync, runtime: rt, verbose: 0, ...(sparseEngines ? { sparseEngines } : {}) }));
  await Promise.all(trainers.map((t) => t.fit(c.data, { epochs: 1, batchSize, stepsPerEpoch: STEPS, shuffle: true, seed: 5 })));
  const sparseRows = trainers[0]!.stepStats!.sparseRows;
  return { weights: trainers.map((t) => t.weightsFlat()), sparseRows };
}

async function psCluster(n: number, servers: number) {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const sups = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: servers, numWorkers: n, mode: 'sync', timeoutMs: 20_000 });
  const syncs = await Promise.all(
    Array.from({ length: n }, (_, rank) => PsSync.connect({ rank, numWorkers: n, numServers: servers, store, transport: network.transport(), timeoutMs: 20_000 })),
  );
  return { syncs, close: async () => (await Promise.all(syncs.map((s) => s.close())), await Promise.all(sups.map((s) => s.stop()))) };
}

for (const c of cases) {
  const reference = await train(c, [new LocalSync()], B);
  for (const [n, rows] of [[2, false], [4, false], [2, true], [4, true]] as const) {
    if (rows && c.name !== 'embedding model') continue;
    test(`ps (2 servers)${rows ? ', tables row-sparse' : ''}, ${c.name}: ${n} workers with batch ${B / n} match 1 worker with batch ${B} after ${STEPS} SGD steps`, async () => {
      const cl = await psCluster(n, 2);
      try {
        const r = await train(c, cl.syncs, B / n, rows ? ['ps'] : undefined);
        if (c.name === 'embedding model' && rows) assert.ok(r.sparseRows > 0 && r.sparseRows < USERS + ITEMS, `sparse rows sent: ${r.sparseRows}`);
        if (c.name === 'embedding model' && !rows) assert.is(r.sparseRows, 0, 'tables went whole (same host, shared memory)');
        for (let k = 0; k < n; k++) {
          const d = maxRelDiff(r.weights[k]!, reference.weights[0]!);
          assert.ok(d <= 1e-5, `rank ${k}: max relative difference ${d}`);
        }
      } finally {
        await cl.close();
      }
    });
  }
  test(`ring with row-sparse embeddings (sparseEngines: ring), ${c.name}: 2 workers match 1 worker`, async () => {
    const groups = await memoryGroups(2, { timeoutMs: 20_000 });
    const syncs = groups.map((g) => new RingSync(g));
    try {
      const r = await train(c, syncs, B / 2, ['ring']);
      if (c.name === 'embedding model') assert.ok(r.sparseRows > 0, 'rows went sparse');
      for (let k = 0; k < 2; k++) {
        const d = maxRelDiff(r.weights[k]!, reference.weights[0]!);
        assert.ok(d <= 1e-5, `rank ${k}: max relative difference ${d}`);
      }
    } finally {
      await Promise.all(syncs.map((s) => s.close()));
    }
  });

  test(`hybrid (ring dense + ps sparse), ${c.name}: 2 workers match 1 worker`, async () => {
    const cl = await psCluster(2, 1);
    const groups = await memoryGroups(2, { timeoutMs: 20_000 });
    const syncs = groups.map((g, k) => new HybridSync(new RingSync(g), cl.syncs[k]!));
    try {
      const r = await train(c, syncs, B / 2);
      for (let k = 0; k < 2; k++) {
        const d = maxRelDiff(r.weights[k]!, reference.weights[0]!);
        assert.ok(d <= 1e-5, `rank ${k}: max relative difference ${d}`);
      }
    } finally {
      await Promise.all(groups.map((g) => g.close()));
      await cl.close();
    }
  });
}

// The ps and hybrid engines run a step's row-sparse and dense collectives concurrently: a NaN on one rank must
// still fail every rank with ERR_NAN (no hang, no rank left in a collective), for either engine.
for (const engine of ['ps', 'hybrid'] as const) {
  test(`${engine}: a NaN loss on one rank of the embedding model fails every rank with ERR_NAN (overlapped collectives)`, async () => {
    const cl = await psCluster(2, engine === 'ps' ? 2 : 1);
    const groups = engine === 'hybrid' ? await memoryGroups(2, { timeoutMs: 20_000 }) : [];
    const syncs: GradientSync[] = engine === 'ps' ? cl.syncs : groups.map((g, k) => new HybridSync(new RingSync(g), cl.syncs[k]!));
    try {
      const t0 = Date.now();
      const results = await Promise.allSettled(
        syncs.map((sync) =>
          new Trainer({
            model: recModel,
            optimizer: (t) => t.train.sgd(0.3),
            loss: (y, p) => {
              const bce = tf.metrics.binaryCrossentropy(y, p).mean();
              return (sync.rank === 1 ? bce.mul(tf.sqrt(tf.scalar(-1))) : bce) as never;
            },
            sync,
            runtime: rt,
            verbose: 0,
          }).fit(recData, { epochs: 1, batchSize: 16, stepsPerEpoch: 3 }),
        ),
      );
      assert.ok(Date.now() - t0 < 10_000, 'failed fast, not by timeout');
      for (const [r, res] of results.entries()) {
        assert.is(res.status, 'rejected', `rank ${r}`);
        const e = (res as PromiseRejectedResult).reason as Error;
        assert.ok(isShoalError(e, 'ERR_NAN'), `rank ${r}: ${e}`);
      }
    } finally {
      await Promise.all(groups.map((g) => g.close()));
      await cl.close();
    }
  });
}

test.run();
