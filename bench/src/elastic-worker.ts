/**
 * Worker of the faults bench's elastic part (`bench faults --part elastic`): an MLP (64-256-256-10, Adam, ~85k
 * weights, ~255k floats of state with the optimizer slots) trained with `Trainer({ elastic: { commitEvery } })`
 * under `shoal run --elastic` on seeded data, one epoch of $STEPS global steps. Rank 0 writes
 * $PROGRESS_DIR/result.json: each step's end time and global step, the commit and agreement times; $KILL_WORKER
 * SIGKILLs itself after step $KILL_STEP, writing the time first ($PROGRESS_DIR/killed-at).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initWorker } from '@shoal/run';
import { setupTfjs, Trainer } from '@shoal/wrappers';

const env = process.env;
const dir = env.PROGRESS_DIR!;
const steps = Number(env.STEPS ?? '200');
const commitEvery = Number(env.COMMIT_EVERY ?? '10');
const BATCH = 32;
const worker = await initWorker();
const id = worker.options.elastic?.workerId ?? worker.options.rank;
const killStep = env.KILL_WORKER !== undefined && Number(env.KILL_WORKER) === id ? Number(env.KILL_STEP) : -1;
const runtime = await setupTfjs();
const tf = runtime.tf;
const n = steps * BATCH * worker.sync.size;
let s = 7;
const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const x = tf.tensor2d(new Float32Array(n * 64).map(() => rnd()), [n, 64]);
const y = tf.tensor1d(Int32Array.from({ length: n }, (_, i) => i % 10), 'int32');
const trainer = new Trainer({
  model: (t) =>
    t.sequential({
      layers: [
        t.layers.dense({ inputShape: [64], units: 256, activation: 'relu', kernelInitializer: t.initializers.glorotUniform({ seed: 1 }) }),
        t.layers.dense({ units: 256, activation: 'relu', kernelInitializer: t.initializers.glorotUniform({ seed: 2 }) }),
        t.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: t.initializers.glorotUniform({ seed: 3 }) }),
      ],
    }),
  optimizer: (t) => t.train.adam(1e-3),
  loss: 'sparseCategoricalCrossentropy',
  sync: worker.sync,
  runtime,
  verbose: 0,
  elastic: { commitEvery },
});
const times: Array<[number, number]> = [];
await trainer.fit(x, y, {
  epochs: 1,
  batchSize: BATCH,
  callbacks: {
    onBatchEnd: () => {
      times.push([trainer.globalStep, Date.now()]);
      if (trainer.globalStep === killStep) {
        writeFileSync(join(dir, 'killed-at'), String(Date.now()));
        process.kill(process.pid, 'SIGKILL');
      }
    },
  },
});
const st = trainer.elasticState!;
if (worker.sync.rank === 0) {
  writeFileSync(join(dir, 'result.json'), JSON.stringify({ times, commits: st.commits, commitMs: st.commitMs, agreeMs: st.agreeMs, params: trainer.model.countParams(), size: worker.sync.size }));
}
await trainer.close();
await worker.close();
