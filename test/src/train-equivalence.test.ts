import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LocalSync, RingSync, type GradientSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { setupTfjs, Trainer } from '@shoal/wrappers';
import { isShoalError } from '@shoal/core';
import { digitsTensors, maxRelDiff, mlp } from './train-helpers.js';

// Sync SGD, fixed data order: N workers with per-worker batch B/N must follow the path of 1 worker with batch B.
const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const data = digitsTensors(tf, 1280);
const B = 64;
const STEPS = 20;

async function trainOn(syncs: GradientSync[], batchSize: number): Promise<Float32Array[]> {
  const trainers = syncs.map(
    (sync) =>
      new Trainer({ model: (t) => mlp(t, sync.rank === 0 ? 7 : 100 + sync.rank), optimizer: (t) => t.train.sgd(0.2), loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'], sync, runtime: rt, verbose: 0 }),
  );
  // Ranks > 0 start from different weights: the broadcast of rank 0's must make them equal.
  await Promise.all(trainers.map((t) => t.fit(data, { epochs: 1, batchSize, stepsPerEpoch: STEPS, shuffle: true, seed: 3 })));
  return trainers.map((t) => t.weightsFlat());
}

const reference = await trainOn([new LocalSync()], B);

for (const n of [2, 4]) {
  test(`ring, ${n} in-process workers with batch ${B / n} match 1 worker with batch ${B} after ${STEPS} SGD steps`, async () => {
    const groups = await memoryGroups(n, { timeoutMs: 20_000 });
    const syncs = groups.map((g) => new RingSync(g));
    try {
      const ws = await trainOn(syncs, B / n);
      for (let r = 0; r < n; r++) {
        const d = maxRelDiff(ws[r]!, reference[0]!);
        assert.ok(d <= 1e-5, `rank ${r}: max relative difference ${d}`);
      }
      // The weights did move (the comparison is not between two initial states).
      const init = mlp(tf, 7).getWeights().map((w) => Array.from(w.dataSync())).flat();
      assert.ok(maxRelDiff(ws[0]!, Float32Array.from(init)) > 1e-2, 'training changed the weights');
    } finally {
      await Promise.all(syncs.map((s) => s.close()));
    }
  });
}

test('a NaN gradient on one rank fails every rank with ERR_NAN naming the variable (no hang)', async () => {
  const groups = await memoryGroups(2, { timeoutMs: 20_000 });
  const syncs = groups.map((g) => new RingSync(g));
  try {
    const t0 = Date.now();
    const results = await Promise.allSettled(
      syncs.map((sync) => {
        const trainer = new Trainer({
          model: (t) => mlp(t, 7),
          optimizer: (t) => t.train.sgd(0.1),
          // Rank 1's loss has a NaN factor: only its gradients are non-finite.
          loss: (y, p) => {
            const ce = tf.metrics.categoricalCrossentropy(tf.oneHot(tf.cast(y, 'int32') as never, 10), p).mean();
            return (sync.rank === 1 ? ce.mul(tf.sqrt(tf.scalar(-1))) : ce) as never;
          },
          sync,
          runtime: rt,
          verbose: 0,
        });
        return trainer.fit(data, { epochs: 1, batchSize: 16, stepsPerEpoch: 3 });
      }),
    );
    assert.ok(Date.now() - t0 < 10_000, 'failed fast, not by timeout');
    for (const [r, res] of results.entries()) {
      assert.is(res.status, 'rejected', `rank ${r}`);
      const e = (res as PromiseRejectedResult).reason;
      assert.ok(isShoalError(e, 'ERR_NAN'), `rank ${r}: ${e}`);
      assert.match(e.message, /the gradient of dense_Dense\d+\/(kernel|bias)/);
      if (r === 0) assert.match(e.message, /on another rank/);
    }
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

test.run();
