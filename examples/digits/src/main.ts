/**
 * A small real data-parallel job: an MLP (64-128-64-10) on the 8x8 digits set, trained with shoal.
 *
 *   npx tsc -b && node run/dist/launcher/cli.js run -n 2 examples/digits/dist/main.js [--epochs 30]
 *
 * Options: `node examples/digits/dist/main.js --help` (the table below). It prints the test accuracy on rank 0 (> 0.9 after the default 30 epochs).
 */
import * as tfjs from '@tensorflow/tfjs';
import { writeFile } from 'node:fs/promises';
import { initWorker } from '@shoal/run';
import { exitCodeOf, formatCommandError, helpText, parseCommand, UsageError, type CommandSpec } from '@shoal/run/cli';
import { setupTfjs, Trainer, type Tf } from '@shoal/wrappers';
import { loadDigits, splitDigits } from './digits.js';

const COMMAND = {
  name: 'digits',
  synopsis: '[options]   (under `shoal run -n N examples/digits/dist/main.js [options]`, or alone)',
  description: 'An MLP on the 8x8 digits set; rank 0 prints the test accuracy.',
  options: {
    epochs: { type: 'string', arg: 'E', help: 'epochs (default 30)' },
    'batch-size': { type: 'string', arg: 'B', help: 'batch size per worker (default 32)' },
    lr: { type: 'string', arg: 'LR', help: 'learning rate (default 0.01)' },
    seed: { type: 'string', arg: 'S', help: 'init and shuffle seed (default 1)' },
    optimizer: { type: 'string', arg: 'adam|sgd', help: 'optimizer (default adam)' },
    steps: { type: 'string', arg: 'S', help: 'cap on steps per epoch' },
    'no-shuffle': { type: 'boolean', help: 'keep the sample order' },
    checkpoint: { type: 'string', arg: 'DIR', help: 'save each epoch, resume from the newest' },
    out: { type: 'string', arg: 'FILE', help: 'rank 0 writes the final weights as JSON (for tests)' },
    'fail-at': { type: 'string', arg: 'RANK:EPOCH', help: 'throw after that epoch (tests)' },
    'fail-at-step': { type: 'string', arg: 'RANK:STEP', help: 'throw mid-epoch (tests)' },
    'kill-at': { type: 'string', arg: 'RANK:EPOCH', help: 'SIGKILL itself after that epoch (tests)' },
  },
} as const satisfies CommandSpec;

let parsed: ReturnType<typeof parseCommand<typeof COMMAND.options>> | undefined;
const arg = (name: keyof typeof COMMAND.options, dflt?: string): string | undefined => {
  const v = parsed!.values[name];
  return typeof v === 'string' ? v : dflt;
};

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
  parsed = parseCommand(COMMAND, process.argv.slice(2));
  if (parsed.help) {
    process.stdout.write(`${helpText(COMMAND)}\n`);
    return;
  }
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
      shuffle: parsed.values['no-shuffle'] !== true,
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
// A mistake on the command line is one line (formatCommandError); a training failure prints its stack, which the
// launcher's failure report reads.
await main().catch((e) => {
  if (e instanceof UsageError) process.stderr.write(formatCommandError('digits', e));
  else console.error(e);
  process.exit(exitCodeOf(e));
});
