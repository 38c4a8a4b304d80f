/**
 * The worker `shoal_spark.fit` and `shoal run --data DIR` both run, unchanged (python/tests/test_fit.py,
 * test/src/worker-data.test.ts): the digits MLP over the `pixels` array column (Spark: `vector_to_array` of an ML
 * vector) and `label`, whatever launched it. Not a test file itself.
 *
 *   node test/dist/fit-worker.js [--epochs 3] [--save DIR] [--batch-size 32]
 *
 * Rank 0's SHOAL_RESULT: { history, model, steps, rows, validationRows, weightsSum, weights, tls } (`tls`: the
 * fingerprint of the job's TLS certificate this rank's connections pinned, or null without `--tls`).
 */
import { parseArgs } from 'node:util';
import { initWorker } from '@shoal/run';
import { Trainer } from '@shoal/wrappers';

const { values: a } = parseArgs({ options: { epochs: { type: 'string', default: '3' }, save: { type: 'string' }, 'batch-size': { type: 'string', default: '32' } } });

const worker = await initWorker();
const data = await worker.data({ features: ['pixels'], label: 'label', batchSize: Number(a['batch-size']) });
const trainer = new Trainer({
  model: (tf) =>
    tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [data.widths.features], units: 32, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
        tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
      ],
    }),
  optimizer: (tf) => tf.train.sgd(0.1),
  loss: 'sparseCategoricalCrossentropy',
  metrics: ['accuracy'],
  sync: worker.sync,
  verbose: 0,
});
const history = await trainer.fit(data, { epochs: Number(a.epochs) });
if (a.save && worker.options.rank === 0) await trainer.save(`file://${a.save}`);
const weights = Array.from(trainer.weightsFlat());
worker.result({
  history,
  model: a.save ?? null,
  steps: data.stepsPerEpoch,
  rows: data.rows,
  validationRows: data.validation?.rows ?? null,
  weightsSum: weights.reduce((s, w) => s + w, 0),
  weights,
  tls: worker.options.auth.tls?.fingerprint ?? null,
});
await trainer.close();
await worker.close();
