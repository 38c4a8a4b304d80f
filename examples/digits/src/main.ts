/**
 * A small real data-parallel job: an MLP (64-128-64-10) on the 8x8 digits set, trained with shoal.
 *
 *   npx tsc -b && node run/dist/launcher/cli.js run -n 2 examples/digits/dist/main.js [--epochs 30]
 *
 * Options: --epochs E (default 30), --batch-size B per worker (default 32), --lr (default 0.01),
 * --checkpoint DIR (save each epoch, resume from the newest), --fail-at RANK:EPOCH (throw after that epoch), --fail-at-step RANK:STEP (throw mid-epoch),
 * --kill-at RANK:EPOCH (SIGKILL itself after that epoch: a crash with no cleanup),
 * --out FILE (rank 0 writes the final weights as JSON, for tests), --seed S (init and shuffle seed),
 * --optimizer adam|sgd (default adam), --steps S (cap on steps per epoch), --no-shuffle.
 * It prints the test accuracy on rank 0 (> 0.9 after the default 30 epochs).
 */
import * as tfjs from '@tensorflow/tfjs';
import { writeFile } from 'node:fs/promises';
import { initWorker } from '@shoal/run';
import { setupTfjs, Trainer, type Tf } from '@shoal/wrappers';
import { loadDigits, splitDigits } from './digits.js';

function arg(name: string, dflt?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

export function buildModel(tf: Tf, seed = 1): tfjs.LayersModel {
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed * 100 + k });
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [64], units: 128, activation: 'relu', kernelInitializer: init(1) }),
      tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: init(2) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(3) }),
    ],
  });
}

async function main() {
  const epochs = Number(arg('epochs', '30'));
  const batchSize = Number(arg('batch-size', '32'));
  const lr = Number(arg('lr', '0.01'));
  const seed = Number(arg('seed', '1'));
  const failAt = arg('fail-at');
  const failAtStep = arg('fail-at-step');
  const worker = await initWorker();
  try {
    const rt = await setupTfjs();
    const tf = rt.tf;
    const { train, test } = splitDigits(await loadDigits());
    const data = { x: tf.tensor2d(train.pixels, [train.n, 64]), y: tf.tensor1d(train.labels, 'float32') };
    const testData = { x: tf.tensor2d(test.pixels, [test.n, 64]), y: tf.tensor1d(test.labels, 'float32') };
    const trainer = new Trainer({
      model: (t) => buildModel(t, seed),
      optimizer: (t) => (arg('optimizer', 'adam') === 'sgd' ? t.train.sgd(lr) : t.train.adam(lr)),
      loss: 'sparseCategoricalCrossentropy',
      metrics: ['accuracy'],
      sync: worker.sync,
      runtime: rt,
    });
    const ckptDir = arg('checkpoint');
    await trainer.fit(data, {
      epochs,
      batchSize,
      seed,
      shuffle: !process.argv.includes('--no-shuffle'),
      ...(arg('steps') ? { stepsPerEpoch: Number(arg('steps')) } : {}),
      ...(ckptDir ? { checkpoint: { dir: ckptDir } } : {}),
      callbacks: {
        onBatchEnd: (step) => {
          if (failAtStep && failAtStep === `${worker.options.rank}:${step}`) throw new Error(`injected failure on rank ${worker.options.rank} at step ${step}`);
        },
        onEpochEnd: (epoch) => {
          if (arg('kill-at') === `${worker.options.rank}:${epoch}`) process.kill(process.pid, 'SIGKILL');
          if (failAt && failAt === `${worker.options.rank}:${epoch}`) throw new Error(`injected failure on rank ${worker.options.rank} at epoch ${epoch}`);
        },
      },
    });
    const logs = await trainer.evaluate(testData, { batchSize: 256 });
    if (worker.options.rank === 0) {
      process.stdout.write(`test accuracy: ${logs.accuracy!.toFixed(4)} (${test.n} images, ${worker.options.worldSize} worker(s))\n`);
      const out = arg('out');
      if (out) await writeFile(out, JSON.stringify({ accuracy: logs.accuracy, weights: Array.from(trainer.weightsFlat()) }));
    }
    await trainer.close();
  } finally {
    await worker.close();
  }
}

// Report and exit here: tfjs-backend-wasm's own uncaughtException handler would rethrow and exit with code 7.
await main().catch((e) => {
  console.error(e);
  process.exit(1);
});
