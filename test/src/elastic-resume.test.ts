/**
 * Issue #16, elastic on Spark, in one process: the Trainer's elastic loop over `worker.data()`-shaped data
 * (a TrainingData) with a durable commit store, as a stage of an elastic Spark job sees it. A run that fails at
 * step 13 and a restarted one that resumes from the folder's last commit (step 10, mid-epoch) end bit-identical to
 * a run without the failure; with no failure the elastic loop equals the plain Trainer loop exactly.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as tfjs from '@tensorflow/tfjs';
import { attachElastic, LocalSync } from '@shoal/backends';
import { JobAuth } from '@shoal/core';
import type { TrainingData } from '@shoal/datasets';
import { DirCommits, StageElastic } from '../../run/dist/elastic/commit-store.js';
import { setupTfjs, Trainer } from '@shoal/wrappers';

const ROWS = 96;
const BATCH = 8; // 12 steps per epoch

function data(): TrainingData {
  let s = 99;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from({ length: ROWS * 3 }, rnd);
  const y = Float32Array.from({ length: ROWS }, (_, i) => Math.sin(x[i * 3]!) - 0.4 * x[i * 3 + 1]! * x[i * 3 + 2]!);
  return {
    kind: 'shoal.training-data',
    features: ['a', 'b', 'c'],
    label: 'y',
    batchSize: BATCH,
    stepsPerEpoch: ROWS / BATCH,
    rows: ROWS,
    widths: { features: 3, label: 1 },
    validation: undefined,
    async *batches(epoch: number) {
      // each epoch a different (seeded) row order, as a shuffled source would give
      const order = Array.from({ length: ROWS }, (_, i) => (i * (5 + 2 * epoch)) % ROWS);
      for (let k = 0; k < ROWS / BATCH; k++) {
        const rows = order.slice(k * BATCH, (k + 1) * BATCH);
        yield { size: BATCH, columns: { features: Float32Array.from(rows.flatMap((r) => [...x.subarray(r * 3, r * 3 + 3)])), label: Float32Array.from(rows.map((r) => y[r]!)) }, widths: { features: 3, label: 1 } };
      }
    },
    async close() {},
  };
}

const model = (tf: typeof tfjs) =>
  tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 6, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }), tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) })] });

async function train(opts: { elastic: boolean; stage?: { n: number; commits: DirCommits }; failAt?: number }): Promise<{ weights: Float32Array; steps: number; epochs: number[] }> {
  const runtime = await setupTfjs();
  const sync = new LocalSync();
  if (opts.stage) attachElastic(sync, new StageElastic(opts.stage.n, opts.stage.commits, opts.stage.n > 0 ? [{ rank: 0, workerId: 0, reason: 'test' }] : []));
  const trainer = new Trainer({ model, optimizer: (t) => t.train.adam(0.02), loss: 'meanSquaredError', sync, runtime, verbose: 0, ...(opts.elastic ? { elastic: { commitEvery: 5 } } : {}) });
  try {
    const history = await trainer.fit(data(), {
      epochs: 3,
      callbacks: {
        onBatchEnd: async () => {
          if (trainer.globalStep === opts.failAt) throw new Error('lost at step 13');
        },
      },
    });
    return { weights: trainer.weightsFlat(), steps: trainer.globalStep, epochs: history.epochs.map((e) => e.epoch as number) };
  } finally {
    await trainer.close();
  }
}

test('the elastic loop over worker.data() equals the plain loop, weights bit for bit', async () => {
  const plain = await train({ elastic: false });
  const elastic = await train({ elastic: true });
  assert.is(elastic.steps, 36);
  assert.is(plain.steps, 36);
  assert.ok(plain.weights.every((v, i) => Object.is(v, elastic.weights[i])), 'the elastic loop changed the weights');
});

test('a failed stage and a restarted one that resumes from the durable commit equal a run without the failure', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-resume-'));
  try {
    const auth = JobAuth.generate('resume-job');
    const clean = await train({ elastic: true });
    const err = await train({ elastic: true, stage: { n: 0, commits: new DirCommits(dir, auth) }, failAt: 13 }).then(() => undefined, (e: unknown) => e);
    assert.match(String(err), /lost at step 13/);
    const resumed = await train({ elastic: true, stage: { n: 1, commits: new DirCommits(dir, auth) } });
    assert.is(resumed.steps, 36);
    // the history of the restarted stage covers every epoch (epoch 0 from the commit)
    assert.equal(resumed.epochs, [0, 1, 2]);
    assert.ok(clean.weights.every((v, i) => Object.is(v, resumed.weights[i])), 'the resumed run differs from the clean one');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
