/**
 * The worker of the elastic tests (test/src/elastic.test.ts): a small regression MLP trained with
 * `Trainer({ elastic })` on seeded in-memory data under `shoal run --elastic`. Not a test file itself.
 *
 * Environment: OUT_DIR (each worker writes worker-<id>.json there at the end: weights, generation, changes,
 * commits, steps); KILL_WORKER / KILL_STEP (that worker SIGKILLs itself right after that optimizer step);
 * KILL_SIGNAL (default SIGKILL; SIGSTOP hangs it instead); COMMIT_EVERY (default 10); EPOCHS (default 2); STEP_DELAY_MS (a pause after each step, so a replacement has
 * time to start while the others train); BATCH_POLICY (per-worker|global); PID_DIR (each worker records its pid).
 *
 * `node elastic-worker.js --reference SCHEDULE`: no launcher; one process follows a membership schedule
 * (`0:3,20:2` = 3 workers from step 0, 2 from step 20) with the global batch of each, as plain SGD over the same
 * samples, and prints its weights as JSON: the reference the elastic run must match.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type * as tfjs from '@tensorflow/tfjs';
import { initWorker } from '@shoal/run';
import { elasticBatchRows, epochOrder, setupTfjs, Trainer } from '@shoal/wrappers';
import { elasticModel } from './elastic-model.js';

const N = 1200;
const BATCH = 10;
const LR = 0.05;
const env = process.env;
const epochs = Number(env.EPOCHS ?? '2');
const { values: a } = parseArgs({ options: { reference: { type: 'string' } } });

function dataset(tf: typeof tfjs): { x: tfjs.Tensor2D; y: tfjs.Tensor2D } {
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const xs = new Float32Array(N * 4).map(() => rnd());
  const ys = new Float32Array(N).map((_, i) => Math.sin(xs[i * 4]!) + 0.5 * xs[i * 4 + 1]! * xs[i * 4 + 2]! - 0.3 * xs[i * 4 + 3]!);
  return { x: tf.tensor2d(xs, [N, 4]), y: tf.tensor2d(ys, [N, 1]) };
}

if (a.reference !== undefined) {
  // schedule: [[fromStep, workers], ...]
  const schedule = a.reference.split(',').map((p) => p.split(':').map(Number) as [number, number]);
  const tf = (await setupTfjs()).tf;
  const net = elasticModel(tf);
  const { x, y } = dataset(tf);
  const opt = tf.train.sgd(LR);
  let step = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const order = epochOrder(N, epoch, true, 0);
    let sample = 0;
    for (;;) {
      const workers = [...schedule].reverse().find(([from]) => step >= from)![1];
      // BATCH_POLICY=global: the first membership's global batch throughout, split over whoever is there
      const g = env.BATCH_POLICY === 'global' ? BATCH * schedule[0]![1] : BATCH * workers;
      if (sample + g > N) break;
      // the mean over the workers of each worker's mean loss: what the ring's averaged gradients follow
      const shards = Array.from({ length: workers }, (_, r) => elasticBatchRows(order, sample, g, r, workers));
      opt.minimize(() => {
        const losses = shards.map((rows) => {
          const idx = tf.tensor1d(rows, 'int32');
          const pred = net.apply(tf.gather(x, idx), { training: true }) as tfjs.Tensor;
          return tf.losses.meanSquaredError(tf.gather(y, idx), pred);
        });
        return tf.div(tf.addN(losses), workers) as tfjs.Scalar;
      });
      sample += g;
      step += 1;
    }
  }
  const w = net.weights.flatMap((v) => Array.from(v.read().dataSync()));
  process.stdout.write(`${JSON.stringify({ steps: step, weights: w })}\n`);
  process.exit(0);
}

const worker = await initWorker();
const id = worker.options.elastic?.workerId ?? worker.options.rank;
if (env.PID_DIR) writeFileSync(join(env.PID_DIR, `pid-${id}`), String(process.pid));
const killStep = env.KILL_WORKER !== undefined && Number(env.KILL_WORKER) === id ? Number(env.KILL_STEP) : -1;
const delay = Number(env.STEP_DELAY_MS ?? '0');
const changes: unknown[] = [];
const runtime = await setupTfjs();
const tf = runtime.tf;
const { x, y } = dataset(tf);
const trainer = new Trainer({
  model: elasticModel,
  optimizer: (t) => t.train.sgd(LR),
  loss: 'meanSquaredError',
  sync: worker.sync,
  runtime,
  verbose: 1,
  elastic: {
    commitEvery: Number(env.COMMIT_EVERY ?? '10'),
    ...(env.BATCH_POLICY ? { batchPolicy: env.BATCH_POLICY as 'global' } : {}),
    onMembershipChange: ({ generation, workers, rank, lost, joined, trainer: t }) => void changes.push({ generation, workers, rank, lost, joined, step: t.globalStep }),
  },
});
const history = await trainer.fit(x, y, {
  epochs,
  batchSize: BATCH,
  callbacks: {
    onBatchEnd: async () => {
      if (trainer.globalStep === killStep) process.kill(process.pid, (env.KILL_SIGNAL ?? 'SIGKILL') as NodeJS.Signals);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    },
  },
});
if (env.OUT_DIR) {
  writeFileSync(
    join(env.OUT_DIR, `worker-${id}.json`),
    JSON.stringify({ id, rank: worker.sync.rank, size: worker.sync.size, steps: trainer.globalStep, commits: trainer.elasticState?.commits, changes, loss: history.epochs.map((e) => e.loss), weights: Array.from(trainer.weightsFlat()) }),
  );
}
await trainer.close();
await worker.close();
