/**
 * `npm run bench -- onnx [--steps 30] [--warmup 5] [--threads 1] [--no-anchor] [--out FILE]`
 *
 * Training step time of shoal's ONNX path (OnnxTrainer: generated backward graph run by onnxruntime-node)
 * against tfjs-wasm with shoal's kernels (the tfjs Trainer) and a plain PyTorch CPU loop with the same thread
 * count, on the models of `anchors/onnx_torch.py` (MLP 784-512-256-10 batch 128, a small CNN batch 64, the
 * embedding recommender batch 1024). The anchor script exports the ONNX files shoal trains, so the three
 * frameworks train the same architectures. Also 2 in-process workers over the memory ring for ONNX and tfjs.
 * Writes bench/results/onnx.json (format in bench/README.md).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import type * as tfjs from '@tensorflow/tfjs';
import { memoryGroups } from '@shoal/backends/testing';
import { LocalSync, RingSync, type GradientSync } from '@shoal/backends';
import { OnnxTrainer, setupTfjs, Trainer, type OnnxTrainData, type Tf, type TfjsRuntime } from '@shoal/wrappers';
import { medianOf } from './train-models.js';

type Name = 'mlp' | 'cnn' | 'rec';
const BATCH: Record<Name, number> = { mlp: 128, cnn: 64, rec: 1024 };
const RESULTS = fileURLToPath(new URL('../results/onnx.json', import.meta.url));
const ANCHOR = fileURLToPath(new URL('../anchors/onnx_torch.py', import.meta.url));

/** Synthetic data (as the anchor's): MLP/CNN inputs uniform [0,1), label k % 10; rec as in the train bench. */
function data(name: Name, n: number): { onnx: OnnxTrainData; tf: (tf: Tf) => { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor } } {
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
function tfModel(tf: Tf, name: Name): tfjs.LayersModel {
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

interface Row {
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
  first_loss?: number;
  last_loss?: number;
}

async function onnxRun(file: string, name: Name, syncs: GradientSync[], steps: number, warmup: number, threads: number): Promise<Omit<Row, 'model' | 'framework'>> {
  const b = BATCH[name];
  const d = data(name, b * syncs.length * (steps + warmup)).onnx;
  const trainers = syncs.map((sync) => new OnnxTrainer({ model: file, loss: name === 'rec' ? 'bceWithLogits' : 'softmaxCrossEntropy', optimizer: { type: 'sgd', lr: 0.01 }, sync, threads, verbose: 0 }));
  const slice = (s: number, r: number): OnnxTrainData => {
    const at = (s * syncs.length + r) * b;
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
  return { workers: syncs.length, batch_per_worker: b, steps, step_ms: ms, cpu_ms_per_step: (cpu.user + cpu.system) / 1000 / steps, samples_per_sec: (b * syncs.length * 1000) / ms, threads, first_loss: losses[0], last_loss: losses[losses.length - 1] };
}

async function tfjsRun(rt: TfjsRuntime, name: Name, syncs: GradientSync[], steps: number, warmup: number): Promise<Omit<Row, 'model' | 'framework'>> {
  const b = BATCH[name];
  const d = data(name, b * syncs.length * (steps + warmup)).tf(rt.tf);
  const loss = name === 'rec' ? ((y: tfjs.Tensor, p: tfjs.Tensor) => rt.tf.losses.sigmoidCrossEntropy(y, p) as tfjs.Scalar) : ((y: tfjs.Tensor, p: tfjs.Tensor) => rt.tf.losses.softmaxCrossEntropy(rt.tf.oneHot(rt.tf.cast(y, 'int32') as tfjs.Tensor1D, 10), p) as tfjs.Scalar);
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
            if (r !== 0) return;
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
  return { workers: syncs.length, batch_per_worker: b, steps, step_ms: ms, cpu_ms_per_step: (cpu.user + cpu.system) / 1000 / steps, samples_per_sec: (b * syncs.length * 1000) / ms, threads: 1 };
}

async function ring(n: number): Promise<GradientSync[]> {
  if (n === 1) return [new LocalSync()];
  return (await memoryGroups(n, { timeoutMs: 60_000 })).map((g) => new RingSync(g));
}

export const command = {
  name: 'bench onnx',
  synopsis: '[options]',
  description: 'ONNX training step time and 2-worker samples/s against tfjs-wasm and PyTorch CPU',
  options: {
    'steps': { type: 'string', arg: 'N', help: 'timed steps (default 30)' },
    'warmup': { type: 'string', arg: 'N', help: 'warm-up steps (default 5)' },
    'threads': { type: 'string', arg: 'N', help: 'threads for ORT and PyTorch (default 1)' },
    'no-anchor': { type: 'boolean', help: 'drop the PyTorch timings' },
    'out': { type: 'string', arg: 'FILE', help: `results file (default ${RESULTS})` },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommand(command, args).values;
  const o = { ...parsed, 'no-anchor': parsed['no-anchor'] ?? false, out: parsed['out'] ?? RESULTS };
  const steps = Number(parsed['steps'] ?? '30');
  const warmup = Number(parsed['warmup'] ?? '5');
  const threads = Number(parsed['threads'] ?? '1');
  const started = new Date().toISOString();
  const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-bench-'));
  const rows: Row[] = [];
  const errors: string[] = [];
  try {
    // The anchor exports the models (so it must run even with --no-anchor, only its timings are then dropped).
    console.log(`onnx bench: ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}; exporting models and timing PyTorch (${threads} thread(s))`);
    const out = execFileSync('/usr/bin/python3', [ANCHOR, '--export', dir, '--threads', String(threads), '--steps', String(steps), '--warmup', String(warmup)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 600_000 });
    const torch = JSON.parse(out.trim().split('\n').pop()!) as { torch: string; models: Record<Name, { batch: number; step_ms: number; cpu_ms_per_step: number; samples_per_sec: number }> };
    for (const [m, r] of Object.entries(torch.models)) console.log(`  ${m} torch x1: ${r.step_ms.toFixed(2)} ms/step (${r.cpu_ms_per_step.toFixed(2)} CPU ms)`);
    if (!o['no-anchor']) for (const [m, r] of Object.entries(torch.models)) rows.push({ model: m as Name, framework: 'torch', workers: 1, batch_per_worker: r.batch, steps, step_ms: r.step_ms, cpu_ms_per_step: r.cpu_ms_per_step, samples_per_sec: r.samples_per_sec, threads });
    const rt = await setupTfjs({ backend: 'wasm' });
    for (const name of ['mlp', 'cnn', 'rec'] as Name[]) {
      for (const workers of [1, 2]) {
        const attempt = async (framework: Row['framework'], go: () => Promise<Omit<Row, 'model' | 'framework'>>) => {
          try {
            const r: Row = { model: name, framework, ...(await go()) };
            rows.push(r);
            console.log(`  ${name} ${framework} x${workers}: ${r.step_ms.toFixed(2)} ms/step (${r.cpu_ms_per_step.toFixed(2)} CPU ms), ${Math.round(r.samples_per_sec)} samples/s`);
          } catch (e) {
            errors.push(`${framework} ${name} x${workers}: ${(e as Error).message}`);
            console.log(`  ${name} ${framework} x${workers}: failed: ${(e as Error).message}`);
          }
        };
        await attempt('onnx', async () => onnxRun(join(dir, `${name}.onnx`), name, await ring(workers), steps, warmup, threads));
        await attempt('tfjs-wasm', async () => tfjsRun(rt, name, await ring(workers), steps, warmup));
      }
    }
    const ratios: Record<string, number> = {};
    const find = (m: Name, f: Row['framework'], w: number) => rows.find((r) => r.model === m && r.framework === f && r.workers === w);
    for (const m of ['mlp', 'cnn', 'rec'] as Name[]) {
      const on = find(m, 'onnx', 1);
      const tf = find(m, 'tfjs-wasm', 1);
      const pt = find(m, 'torch', 1);
      if (on && tf) ratios[`${m}_onnx_vs_tfjs`] = tf.step_ms / on.step_ms;
      if (on && pt) ratios[`${m}_onnx_vs_torch`] = pt.step_ms / on.step_ms;
      if (on && tf) ratios[`${m}_onnx_vs_tfjs_cpu`] = tf.cpu_ms_per_step / on.cpu_ms_per_step;
      if (on && pt) ratios[`${m}_onnx_vs_torch_cpu`] = pt.cpu_ms_per_step / on.cpu_ms_per_step;
      const on2 = find(m, 'onnx', 2);
      if (on && on2) ratios[`${m}_onnx_2v1`] = on2.samples_per_sec / on.samples_per_sec;
    }
    const result = { suite: 'onnx', version: 1, started, host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, torch: torch.torch, tfjs: rt.describe(), rows, ratios, errors };
    mkdirSync(join(o.out!, '..'), { recursive: true });
    writeFileSync(o.out!, `${JSON.stringify(result, null, 1)}\n`);
    console.log(`ratios (> 1: ONNX faster): ${JSON.stringify(ratios)}`);
    if (errors.length) console.log(`errors: ${errors.join('; ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
