/**
 * The worker of the elastic Spark test (python/tests/test_elastic.py): a small regression MLP trained with Adam by
 * `Trainer({ elastic: { commitEvery } })` on this rank's Spark partition (`worker.data()`), under
 * `shoal_spark.run(elastic=True)`. Not a test file itself.
 *
 * Columns: x0..x3 (features), y (label), id (the row's number: this worker strips it from the features and
 * writes, per stage and rank, the ids of the rows it trains on in their order, so the reference can follow the
 * same batches). Environment: OUT_DIR (ids-s<stage>-r<rank>.json go there); BATCH (rows per worker and step);
 * EPOCHS; COMMIT_EVERY; PAUSE_FILE and PAUSE_STEP (in stage 0, after that optimizer step, rank 0 writes the file
 * and every rank waits there up to 60 s: the test kills an executor meanwhile, at a known step); KILL_STEP (rank 0
 * SIGKILLs itself after that step, in every stage, or only in stage KILL_STAGE).
 *
 * Rank 0's SHOAL_RESULT: { stage, workers, steps, changes, history, weights }.
 *
 * `node spark-elastic-worker.js --reference FILE`: one process, no Spark. FILE (JSON) holds the data (`x`, `y` by
 * id), BATCH, EPOCHS and the stages ({ ids: [rank's ids in order], until: global step the next stage resumed at
 * }); it runs Adam over each step's batches of every rank (the mean of the ranks' mean losses, what the ring's
 * averaged gradients follow), the interrupted epoch going on after the committed number of steps of the new
 * layout, and prints { steps, weights }.
 */
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type * as tfjs from '@tensorflow/tfjs';
import { initWorker } from '@shoal/run';
import { setupTfjs, Trainer, type BatchSource } from '@shoal/wrappers';
import { elasticModel } from './elastic-model.js';

const env = process.env;
const LR = 0.01;
const { values: a } = parseArgs({ options: { reference: { type: 'string' } } });


if (a.reference !== undefined) {
  const ref = JSON.parse(readFileSync(a.reference, 'utf8')) as { x: number[][]; y: number[]; batch: number; epochs: number; stages: Array<{ ids: number[][]; until?: number }> };
  const tf = (await setupTfjs()).tf;
  const net = elasticModel(tf);
  const opt = tf.train.adam(LR);
  const B = ref.batch;
  let step = 0;
  let epoch = 0;
  let epochStep = 0;
  for (const stage of ref.stages) {
    const steps = Math.min(...stage.ids.map((ids) => Math.floor(ids.length / B)));
    while (epoch < ref.epochs && (stage.until === undefined || step < stage.until)) {
      if (epochStep >= steps) {
        epoch += 1;
        epochStep = 0;
        continue;
      }
      const batches = stage.ids.map((ids) => ids.slice(epochStep * B, (epochStep + 1) * B));
      opt.minimize(() => {
        const losses = batches.map((rows) => {
          const x = tf.tensor2d(rows.map((i) => ref.x[i]!), [rows.length, 4], 'float32');
          const y = tf.tensor1d(rows.map((i) => ref.y[i]!), 'float32');
          const pred = (net.apply(x, { training: true }) as tfjs.Tensor).reshape([rows.length]);
          return tf.losses.meanSquaredError(y, pred);
        });
        return tf.div(tf.addN(losses), batches.length) as tfjs.Scalar;
      });
      step += 1;
      epochStep += 1;
      if (epochStep >= steps && stage.until !== undefined && step === stage.until) {
        // the epoch-end commit: the next stage starts the next epoch
        epoch += 1;
        epochStep = 0;
      }
    }
  }
  const w = net.weights.flatMap((v) => Array.from(v.read().dataSync()));
  process.stdout.write(`${JSON.stringify({ steps: step, weights: w })}\n`);
  process.exit(0);
}

const worker = await initWorker();
const stage = worker.options.elasticStage?.stage ?? 0;
const rank = worker.sync.rank;
const B = Number(env.BATCH ?? '20');
const data = await worker.data({ features: ['x0', 'x1', 'x2', 'x3', 'id'], label: 'y', batchSize: B });
const runtime = await setupTfjs();
const tf = runtime.tf;

/** The batches without the id column; the ids of epoch 0 in order (no shuffle: every epoch has the same order). */
const source: BatchSource = {
  async *batches(ctx) {
    for await (const b of data.batches(ctx.epoch)) {
      const f = b.columns.features as Float32Array;
      const x = new Float32Array(b.size * 4);
      for (let r = 0; r < b.size; r++) x.set(f.subarray(r * 5, r * 5 + 4), r * 4);
      yield { x: tf.tensor2d(x, [b.size, 4]), y: tf.tensor1d(b.columns.label as Float32Array) };
    }
  },
};
const ids: number[] = [];
for await (const b of data.batches(0)) for (let r = 0; r < b.size; r++) ids.push((b.columns.features as Float32Array)[r * 5 + 4]!);
if (env.OUT_DIR) writeFileSync(join(env.OUT_DIR, `ids-s${stage}-r${rank}.json`), JSON.stringify(ids));

const pauseStep = stage === 0 && env.PAUSE_STEP ? Number(env.PAUSE_STEP) : -1;
const killStep = env.KILL_STEP && (env.KILL_STAGE === undefined || Number(env.KILL_STAGE) === stage) ? Number(env.KILL_STEP) : -1;
const changes: unknown[] = [];
const trainer = new Trainer({
  model: elasticModel,
  optimizer: (t) => t.train.adam(LR),
  loss: (y, p) => tf.losses.meanSquaredError(y, p.reshape(y.shape)),
  sync: worker.sync,
  runtime,
  verbose: 0,
  elastic: {
    commitEvery: Number(env.COMMIT_EVERY ?? '5'),
    onMembershipChange: ({ generation, workers, lost, trainer: t }) => void changes.push({ generation, workers, lost, step: t.globalStep }),
  },
});
const history = await trainer.fit(source, {
  epochs: Number(env.EPOCHS ?? '3'),
  batchSize: B,
  stepsPerEpoch: data.stepsPerEpoch,
  callbacks: {
    onBatchEnd: async () => {
      if (trainer.globalStep === killStep && rank === 0) process.kill(process.pid, 'SIGKILL');
      if (trainer.globalStep === pauseStep) {
        if (rank === 0) writeFileSync(env.PAUSE_FILE!, String(trainer.globalStep));
        await new Promise((r) => setTimeout(r, 60_000));
      }
    },
  },
});
worker.result({ stage, workers: worker.sync.size, steps: trainer.globalStep, changes, history, weights: Array.from(trainer.weightsFlat()) });
await trainer.close();
await worker.close();
