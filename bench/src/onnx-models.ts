/**
 * The models and synthetic data of the `onnx` bench, shared by the bench process and its launched workers: the
 * ONNX files come from `anchors/onnx_torch.py` (torch.onnx.export), the tfjs layers models mirror them.
 */
import type * as tfjs from '@tensorflow/tfjs';
import type { GradientSync } from '@shoal/backends';
import { OnnxTrainer, Trainer, type OnnxTrainData, type Tf, type TfjsRuntime } from '@shoal/wrappers';
import { medianOf } from './train-models.js';

export type Name = 'mlp' | 'cnn' | 'rec';
export const BATCH: Record<Name, number> = { mlp: 128, cnn: 64, rec: 1024 };

/** Synthetic data (as the anchor's): MLP/CNN inputs uniform [0,1), label k % 10; rec as in the train bench. */
export function data(name: Name, n: number): { onnx: OnnxTrainData; tf: (tf: Tf) => { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor } } {
  if (name === 'rec') {
    const u = Int32Array.from({ length: n }, (_, k) => (k * 7919) % 4000);
    const i = Int32Array.from({ length: n }, (_, k) => (k * 104729 + 13) % 4000);
    const y = Float32Array.from({ length: n }, (_, k) => ((u[k]! ^ i[k]!) & 1 ? 1 : 0));
    return {
      onnx: { x: { user: { data: BigInt64Array.from(u, BigInt), dims: [n] }, item: { data: BigInt64Array.from(i, BigInt), dims: [n] } }, y: { data: y, dims: [n, 1] } },
      tf: (tf) => ({ x: [tf.tensor2d(u, [n, 1], 'int32'), tf.tensor2d(i, [n, 1], 'int32')], y: tf.tensor2d(y, [n, 1]) }),
    };
  }
  const row = 784;
  let s = 11;
  const x = Float32Array.from({ length: n * row }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32));
  const y = Int32Array.from({ length: n }, (_, k) => k % 10);
  const dims = name === 'mlp' ? [n, 784] : [n, 1, 28, 28];
  return {
    onnx: { x: { x: { data: x, dims } }, y: { data: y, dims: [n] } },
    tf: (tf) => ({ x: name === 'mlp' ? tf.tensor2d(x, [n, 784]) : tf.tensor4d(x, [n, 28, 28, 1]), y: tf.tensor1d(Float32Array.from(y)) }),
  };
}

/** The same architectures in tfjs layers (the CNN channels-last: tfjs-wasm convolves NHWC). */
export function tfModel(tf: Tf, name: Name): tfjs.LayersModel {
  if (name === 'mlp') {
    return tf.sequential({ layers: [tf.layers.dense({ inputShape: [784], units: 512, activation: 'relu' }), tf.layers.dense({ units: 256, activation: 'relu' }), tf.layers.dense({ units: 10 })] });
  }
  if (name === 'cnn') {
    return tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 8, kernelSize: 3, padding: 'same', activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.conv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'relu' }),
        tf.layers.maxPooling2d({ poolSize: 2 }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 10 }),
      ],
    });
  }
  const u = tf.input({ shape: [1], dtype: 'int32' });
  const i = tf.input({ shape: [1], dtype: 'int32' });
  const eu = tf.layers.flatten().apply(tf.layers.embedding({ inputDim: 4000, outputDim: 32 }).apply(u)) as tfjs.SymbolicTensor;
  const ei = tf.layers.flatten().apply(tf.layers.embedding({ inputDim: 4000, outputDim: 32 }).apply(i)) as tfjs.SymbolicTensor;
  const h = tf.layers.dense({ units: 64, activation: 'relu' }).apply(tf.layers.concatenate().apply([eu, ei])) as tfjs.SymbolicTensor;
  return tf.model({ inputs: [u, i], outputs: tf.layers.dense({ units: 1 }).apply(h) as tfjs.SymbolicTensor });
}

/** The loss of each model for the tfjs Trainer (logits in, as the ONNX models output). */
export function tfLoss(tf: Tf, name: Name): (y: tfjs.Tensor, p: tfjs.Tensor) => tfjs.Scalar {
  return name === 'rec' ? (y, p) => tf.losses.sigmoidCrossEntropy(y, p) as tfjs.Scalar : (y, p) => tf.losses.softmaxCrossEntropy(tf.oneHot(tf.cast(y, 'int32') as tfjs.Tensor1D, 10), p) as tfjs.Scalar;
}
export const onnxLoss = (name: Name) => (name === 'rec' ? 'bceWithLogits' : 'softmaxCrossEntropy') as 'bceWithLogits' | 'softmaxCrossEntropy';

export interface Row {
  model: Name;
  framework: 'onnx' | 'tfjs-wasm' | 'torch';
  workers: number;
  batch_per_worker: number;
  steps: number;
  step_ms: number;
  /** Process CPU time (all threads) per step over the timed steps: robust to other processes' load. */
  cpu_ms_per_step: number;
  samples_per_sec: number;
  threads: number;
  /** Set on rows of `shoal run` jobs (separate processes). */
  processes?: number;
  first_loss?: number;
  last_loss?: number;
}

export async function onnxRun(file: string, name: Name, syncs: GradientSync[], steps: number, warmup: number, threads: number): Promise<Omit<Row, 'model' | 'framework'>> {
  const b = BATCH[name];
  const size = syncs[0]!.size;
  const d = data(name, b * size * (steps + warmup)).onnx;
  const trainers = syncs.map((sync) => new OnnxTrainer({ model: file, loss: onnxLoss(name), optimizer: { type: 'sgd', lr: 0.01 }, sync, threads, verbose: 0 }));
  const slice = (s: number, r: number): OnnxTrainData => {
    const at = (s * size + syncs[r]!.rank) * b;
    const x: OnnxTrainData['x'] = {};
    for (const [k, v] of Object.entries(d.x)) {
      const row = v.data.length / v.dims[0]!;
      x[k] = { data: v.data.subarray(at * row, (at + b) * row), dims: [b, ...v.dims.slice(1)] };
    }
    const yr = d.y!.data.length / d.y!.dims[0]!;
    return { x, y: { data: d.y!.data.subarray(at * yr, (at + b) * yr), dims: [b, ...d.y!.dims.slice(1)] } };
  };
  const times: number[] = [];
  const losses: number[] = [];
  let c0 = process.cpuUsage();
  for (let s = 0; s < warmup + steps; s++) {
    if (s === warmup) c0 = process.cpuUsage();
    const t0 = performance.now();
    const l = await Promise.all(trainers.map((t, r) => t.trainOnBatch(slice(s, r))));
    if (s >= warmup) times.push(performance.now() - t0);
    losses.push(l[0]!);
  }
  const cpu = process.cpuUsage(c0);
  await Promise.all(trainers.map((t) => t.close()));
  const ms = medianOf(times);
  return { workers: size, batch_per_worker: b, steps, step_ms: ms, cpu_ms_per_step: (cpu.user + cpu.system) / 1000 / steps, samples_per_sec: (b * size * 1000) / ms, threads, first_loss: losses[0], last_loss: losses[losses.length - 1] };
}

export async function tfjsRun(rt: TfjsRuntime, name: Name, syncs: GradientSync[], steps: number, warmup: number): Promise<Omit<Row, 'model' | 'framework'>> {
  const b = BATCH[name];
  const size = syncs[0]!.size;
  const d = data(name, b * size * (steps + warmup)).tf(rt.tf);
  const loss = tfLoss(rt.tf, name);
  const trainers = syncs.map((sync) => new Trainer({ model: (tf) => tfModel(tf, name), optimizer: (tf) => tf.train.sgd(0.01), loss, sync, runtime: rt, verbose: 0 }));
  const times: number[] = [];
  let last = 0;
  let c0 = process.cpuUsage();
  await Promise.all(
    trainers.map((t, r) =>
      t.fit(d, {
        epochs: 1,
        batchSize: b,
        shuffle: false,
        stepsPerEpoch: steps + warmup,
        callbacks: {
          onBatchEnd: (s) => {
            if (syncs[r]!.rank !== 0) return;
            const now = performance.now();
            if (s >= warmup) times.push(now - last);
            if (s === warmup - 1) c0 = process.cpuUsage();
            last = now;
          },
        },
      }),
    ),
  );
  const cpu = process.cpuUsage(c0);
  await Promise.all(trainers.map((t) => t.close()));
  for (const t of Array.isArray(d.x) ? d.x : [d.x]) t.dispose();
  d.y.dispose();
  const ms = medianOf(times);
  return { workers: size, batch_per_worker: b, steps, step_ms: ms, cpu_ms_per_step: (cpu.user + cpu.system) / 1000 / steps, samples_per_sec: (b * size * 1000) / ms, threads: 1 };
}

