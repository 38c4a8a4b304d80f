import type * as tfjs from '@tensorflow/tfjs';
import type { Callbacks, Tf, Trainer } from '@shoal/wrappers';

/** The models of the `train` bench, with deterministic synthetic data. */
export type BenchModel = 'rec' | 'mlp' | 'mlp64';

export const REC_USERS = 4000;
export const REC_ITEMS = 4000;

/** Recommender: user and item embeddings (32-dim), concatenated, dense 64 relu, sigmoid. */
export function recModel(tf: Tf): tfjs.LayersModel {
  const u = tf.input({ shape: [1], dtype: 'int32' });
  const i = tf.input({ shape: [1], dtype: 'int32' });
  const emb = (n: number, seed: number) => tf.layers.embedding({ inputDim: n, outputDim: 32, embeddingsInitializer: tf.initializers.randomUniform({ minval: -0.05, maxval: 0.05, seed }) });
  const eu = tf.layers.flatten().apply(emb(REC_USERS, 1).apply(u)) as tfjs.SymbolicTensor;
  const ei = tf.layers.flatten().apply(emb(REC_ITEMS, 2).apply(i)) as tfjs.SymbolicTensor;
  const h = tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(tf.layers.concatenate().apply([eu, ei])) as tfjs.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }).apply(h) as tfjs.SymbolicTensor;
  return tf.model({ inputs: [u, i], outputs: out });
}

/** MLP 784-512-256-10 (MNIST-shaped). */
export function mlpModel(tf: Tf): tfjs.LayersModel {
  const g = (seed: number) => tf.initializers.glorotUniform({ seed });
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: 512, activation: 'relu', kernelInitializer: g(1) }),
      tf.layers.dense({ units: 256, activation: 'relu', kernelInitializer: g(2) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: g(3) }),
    ],
  });
}

/** MLP 784-128-64-10: the Fashion-MNIST MLP a user tries first (batch 64, Adam). */
export function mlp64Model(tf: Tf): tfjs.LayersModel {
  const g = (seed: number) => tf.initializers.glorotUniform({ seed });
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: 128, activation: 'relu', kernelInitializer: g(1) }),
      tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: g(2) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: g(3) }),
    ],
  });
}

/** Per model: builder, loss, batch per worker and optimizer (as a user of that model would pick it). */
export const benchSpec = {
  rec: { build: recModel, loss: 'binaryCrossentropy' as const, batch: 1024, optimizer: (t: Tf) => t.train.sgd(0.01) },
  mlp: { build: mlpModel, loss: 'sparseCategoricalCrossentropy' as const, batch: 256, optimizer: (t: Tf) => t.train.sgd(0.01) },
  mlp64: { build: mlp64Model, loss: 'sparseCategoricalCrossentropy' as const, batch: 64, optimizer: (t: Tf) => t.train.adam(0.001) },
};

/** `n` synthetic samples for `model`, deterministic (the same on every rank). */
export function benchData(tf: Tf, model: BenchModel, n: number): { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor } {
  if (model === 'rec') {
    const users = Int32Array.from({ length: n }, (_, k) => (k * 7919) % REC_USERS);
    const items = Int32Array.from({ length: n }, (_, k) => (k * 104729 + 13) % REC_ITEMS);
    const y = Float32Array.from({ length: n }, (_, k) => ((users[k]! ^ items[k]!) & 1 ? 1 : 0));
    return { x: [tf.tensor2d(users, [n, 1], 'int32'), tf.tensor2d(items, [n, 1], 'int32')], y: tf.tensor2d(y, [n, 1]) };
  }
  if (model === 'mlp64') return teacherData(tf, n, 11);
  const x = tf.randomUniform([n, 784], 0, 1, 'float32', 11);
  const y = tf.tensor1d(Float32Array.from({ length: n }, (_, k) => k % 10));
  return { x, y };
}

/**
 * Fashion-MNIST-shaped data a model can learn (`mlp64`): inputs uniform in [0, 1)^784, the label the argmax of a
 * fixed random linear teacher applied to x - 0.5 (the same teacher for every `seed`, so held-out data from another
 * seed scores what was learnt).
 */
export function teacherData(tf: Tf, n: number, seed: number): { x: tfjs.Tensor; y: tfjs.Tensor } {
  return tf.tidy(() => {
    const x = tf.randomUniform([n, 784], 0, 1, 'float32', seed);
    const w = tf.randomNormal([784, 10], 0, 1, 'float32', 99);
    const y = tf.cast(tf.argMax(tf.matMul(tf.sub(x, 0.5), w), 1), 'float32');
    return { x, y };
  });
}

/**
 * Fit one epoch without shuffling and time the steps after `warmup`: wall seconds, CPU used (this process), the
 * Trainer's sync milliseconds summed over the timed steps, and per timed step its wall and sync milliseconds
 * (medians are robust to the spikes another process's load puts into a few steps). Shared by the in-process and
 * the launched rows.
 */
export async function timedFit(
  trainer: Trainer,
  data: { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor },
  batchSize: number,
  warmup: number,
  extraCallbacks: Callbacks[] = [],
  onTimingStart?: () => void,
): Promise<{ secs: number; cpu: NodeJS.CpuUsage; sleeps: number; syncMs: number; stepMs: number[]; stepSyncMs: number[] }> {
  let t0 = 0;
  let last = 0;
  let c0 = process.cpuUsage();
  let s0 = process.resourceUsage().voluntaryContextSwitches;
  let syncMs = 0;
  const stepMs: number[] = [];
  const stepSyncMs: number[] = [];
  await trainer.fit(data, {
    epochs: 1,
    batchSize,
    shuffle: false,
    callbacks: [
      ...extraCallbacks,
      {
        stopsOnBatch: false, // never sets stopTraining: no per-step stop agreement in the timed loop
        onBatchEnd: (s) => {
          const now = performance.now();
          if (s === warmup - 1) {
            t0 = now;
            c0 = process.cpuUsage();
            s0 = process.resourceUsage().voluntaryContextSwitches;
            onTimingStart?.();
          }
          if (s >= warmup) {
            const sync = trainer.stepStats!.syncMs;
            syncMs += sync;
            stepMs.push(now - last);
            stepSyncMs.push(sync);
          }
          last = now;
        },
      },
    ],
  });
  return { secs: (performance.now() - t0) / 1000, cpu: process.cpuUsage(c0), sleeps: process.resourceUsage().voluntaryContextSwitches - s0, syncMs, stepMs, stepSyncMs };
}

/** Median of a non-empty list (NaN when empty). */
export function medianOf(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
