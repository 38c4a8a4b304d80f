import type * as tfjs from '@tensorflow/tfjs';
import { LocalSync, type GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import { loadCheckpoint, saveCheckpoint, type SavedArray } from './checkpoint.js';
import {
  disposeBatch,
  epochOrder,
  gatherBatch,
  isBatchSource,
  numSamples,
  rankBatchRows,
  stepsPerEpochFor,
  type Batch,
  type TrainData,
} from './data.js';
import { broadcastVariables, GradientBridge, type BridgeVariable } from './gradient-bridge.js';
import { resolveLoss, resolveMetric, type LossFn, type LossSpec, type Metric, type MetricSpec } from './losses.js';
import { fmtLogs, ProgressBar, type LogSink } from './progress.js';
import { setupTfjs, type Tf, type TfjsRuntime } from './runtime.js';

export interface TrainerOptions {
  /** The model, or a function building it (called once, after the tfjs backend is set up). */
  model: tfjs.LayersModel | ((tf: Tf) => tfjs.LayersModel);
  /** Builds the optimizer, e.g. `(tf) => tf.train.adam(1e-3)`. Every rank applies the same averaged gradients. */
  optimizer: (tf: Tf) => tfjs.Optimizer;
  loss: LossSpec;
  metrics?: MetricSpec[];
  /** The gradient engine (from `initWorker()`); default a one-worker `LocalSync`. Not closed by the trainer. */
  sync?: GradientSync;
  /** The tfjs runtime; default `setupTfjs()` (tfjs-node if installed, else wasm+SIMD, with shoal's kernels). */
  runtime?: TfjsRuntime;
  /**
   * Which variables go row-sparse: `auto` (default) = the tables of `Embedding` layers; or a list of tfjs
   * variable names; `off` = all dense.
   */
  sparse?: 'auto' | 'off' | string[];
  /**
   * Engine kinds that receive those variables row-sparse: default `['ps', 'hybrid']` (touched rows go to the
   * servers; the ring allreduces whole tables); add `'ring'` to allgather only the touched rows over the ring.
   */
  sparseEngines?: ReadonlyArray<GradientSync['kind']>;
  /** Where progress and logs go (default `process.stdout`). */
  output?: LogSink;
  /** 0 = silent, 1 = progress bar on rank 0 and rank-prefixed logs (default). */
  verbose?: 0 | 1;
}

export type Logs = Record<string, number>;

/** Private running scalars of tfjs optimizers that checkpoints carry (see `optimizerScalars`). */
const OPTIMIZER_SCALARS = ['accBeta1', 'accBeta2'] as const;

export interface Callbacks {
  onTrainBegin?(): void | Promise<void>;
  onEpochBegin?(epoch: number): void | Promise<void>;
  /** Local (this rank's) loss and metrics of the batch. */
  onBatchEnd?(step: number, logs: Logs): void | Promise<void>;
  /** Loss and metrics averaged over all ranks (and `val_*` with validation data). */
  onEpochEnd?(epoch: number, logs: Logs): void | Promise<void>;
  onTrainEnd?(history: History): void | Promise<void>;
}

export interface FitOptions {
  epochs: number;
  /** Per-worker batch size (the global batch is `batchSize * worldSize`). */
  batchSize: number;
  /** Cap on steps per epoch; required for a `BatchSource` when there is more than one worker. */
  stepsPerEpoch?: number;
  /** Shuffle in-memory data each epoch with a seed shared by all ranks (default true). */
  shuffle?: boolean;
  seed?: number;
  callbacks?: Callbacks | Callbacks[];
  validationData?: { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor };
  /**
   * Save a checkpoint (weights, optimizer state, epoch) to `dir` every `everyEpochs` epochs (default 1), from
   * rank 0, atomically; resume from the newest one there when `resume` (default true). With several hosts the
   * folder must be shared; `shoal run` workers share the local disk.
   */
  checkpoint?: { dir: string; everyEpochs?: number; keep?: number; resume?: boolean };
}

export interface EpochRecord extends Logs {
  epoch: number;
  seconds: number;
  samplesPerSec: number;
}
export interface History {
  epochs: EpochRecord[];
  /** Epoch training started at (> 0 after a resume). */
  startEpoch: number;
}

/**
 * Keras-like, data-parallel training of a tfjs LayersModel.
 *
 * ```ts
 * const { sync, close } = await initWorker();
 * const trainer = new Trainer({ model: buildModel, optimizer: (tf) => tf.train.adam(1e-3), loss: 'binaryCrossentropy', metrics: ['accuracy'], sync });
 * await trainer.fit({ x, y }, { epochs: 5, batchSize: 256 });
 * ```
 * Every rank runs the same calls in the same order (they are collective). Rank 0's initial weights are
 * broadcast before the first step; each step averages gradients over ranks, so all ranks keep identical weights.
 */
export class Trainer {
  private rt?: TfjsRuntime;
  private net?: tfjs.LayersModel;
  private opt?: tfjs.Optimizer;
  private bridge?: GradientBridge;
  private lossFn?: LossFn;
  private metricFns: Metric[] = [];
  private readonly sync: GradientSync;
  private readonly ownsSync: boolean;
  private readonly out: LogSink;
  private broadcastDone = false;
  private globalStep = 0;

  constructor(private readonly options: TrainerOptions) {
    if (!options || typeof options !== 'object') throw Errors.invalidArg('options', 'must be an object');
    if (typeof options.optimizer !== 'function') throw Errors.invalidArg('options.optimizer', 'must be a function returning a tf.Optimizer');
    if (options.model === undefined) throw Errors.invalidArg('options.model', 'is required');
    this.sync = options.sync ?? new LocalSync();
    this.ownsSync = options.sync === undefined;
    this.out = options.output ?? process.stdout;
  }

  get rank(): number {
    return this.sync.rank;
  }
  get size(): number {
    return this.sync.size;
  }
  /** The tfjs model (after the first `fit`/`evaluate`/`predict`/`init`). */
  get model(): tfjs.LayersModel {
    if (!this.net) throw Errors.state('Trainer.model is not built yet: call init() or fit() first');
    return this.net;
  }
  get optimizer(): tfjs.Optimizer {
    if (!this.opt) throw Errors.state('Trainer.optimizer is not built yet: call init() or fit() first');
    return this.opt;
  }
  get runtime(): TfjsRuntime {
    if (!this.rt) throw Errors.state('Trainer.runtime is not set up yet: call init() first');
    return this.rt;
  }
  /** Timings of the last step (compute / sync / apply ms, sparse rows). */
  get stepStats() {
    return this.bridge?.stats;
  }

  /** Write a line prefixed with this rank (verbose only). */
  log(message: string): void {
    if (this.options.verbose === 0) return;
    this.out.write(`[rank ${this.rank}] ${message}\n`);
  }

  /** Set up tfjs, build the model and optimizer. Idempotent; `fit` calls it. */
  async init(): Promise<void> {
    if (this.net) return;
    this.rt = this.options.runtime ?? (await setupTfjs());
    const tf = this.rt.tf;
    if (this.rank === 0) this.log(`${this.rt.describe()}; ${this.size} worker(s), ${this.size === 1 && this.sync instanceof LocalSync ? "local (no communication)" : this.sync.kind} engine`);
    this.net = typeof this.options.model === 'function' ? this.options.model(tf) : this.options.model;
    if (!this.net || !Array.isArray(this.net.trainableWeights)) throw Errors.invalidArg('options.model', 'must be (or return) a tf.LayersModel');
    this.opt = this.options.optimizer(tf);
    this.lossFn = resolveLoss(tf, this.options.loss);
    this.metricFns = (this.options.metrics ?? []).map((m) => resolveMetric(tf, m));
    const sparseSpec = this.options.sparse ?? 'auto';
    const embeddingVars = new Set<string>();
    if (sparseSpec === 'auto') {
      for (const layer of this.net.layers) {
        if (layer.getClassName() === 'Embedding') for (const w of layer.trainableWeights) embeddingVars.add((w.read() as tfjs.Variable).name);
      }
    }
    const vars: BridgeVariable[] = this.net.trainableWeights.map((w, i) => {
      const variable = w.read() as tfjs.Variable;
      const sparse = Array.isArray(sparseSpec) ? sparseSpec.includes(variable.name) || sparseSpec.includes(w.originalName) : embeddingVars.has(variable.name);
      return { variable, name: `w${i}/${w.originalName.split('/').pop()}`, label: variable.name, sparse };
    });
    this.bridge = new GradientBridge(tf, vars, this.sync, this.options.sparseEngines);
  }

  /** All model weights (trainable and not) as named arrays, in `model.weights` order. */
  private allVariables(): Array<{ name: string; variable: tfjs.Variable }> {
    return this.model.weights.map((w, i) => ({ name: `v${i}/${w.originalName.split('/').pop()}`, variable: w.read() as tfjs.Variable }));
  }

  /** A copy of every model weight, concatenated (for tests and equality checks). */
  weightsFlat(): Float32Array {
    const parts = this.model.weights.map((w) => w.read().dataSync() as Float32Array);
    const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }

  private async ensureBroadcast(): Promise<void> {
    if (this.broadcastDone) return;
    await broadcastVariables(this.runtime.tf, this.sync, this.allVariables());
    this.broadcastDone = true;
  }

  private async saveState(dir: string, epoch: number, keep: number): Promise<string> {
    const weights: SavedArray[] = this.model.weights.map((w) => ({
      name: w.originalName,
      shape: w.shape.map((d) => d ?? 0),
      data: Float32Array.from(w.read().dataSync()),
    }));
    const optimizer: SavedArray[] = [];
    for (const nt of await this.optimizer.getWeights()) {
      optimizer.push({ name: nt.name, shape: nt.tensor.shape, data: Float32Array.from(nt.tensor.dataSync()) });
    }
    return saveCheckpoint(dir, { epoch, step: this.globalStep, weights, optimizer, extra: { worldSize: this.size, optimizerScalars: this.optimizerScalars() } }, keep);
  }

  /**
   * Internal optimizer scalars `getWeights()` leaves out: Adam/Adamax keep beta1^t and beta2^t as running
   * products, and `setWeights` recomputes them with `pow`, which differs in the last bits. Saving them makes a
   * resumed run bit-identical to an uninterrupted one.
   */
  private optimizerScalars(): Record<string, number> {
    const out: Record<string, number> = {};
    const o = this.optimizer as unknown as Record<string, unknown>;
    for (const k of OPTIMIZER_SCALARS) {
      const v = o[k] as tfjs.Variable | undefined;
      if (v && typeof v === 'object' && typeof v.dataSync === 'function' && v.size === 1) out[k] = v.dataSync()[0]!;
    }
    return out;
  }

  private restoreOptimizerScalars(saved: Record<string, number> | undefined): void {
    if (!saved) return;
    const o = this.optimizer as unknown as Record<string, unknown>;
    for (const k of OPTIMIZER_SCALARS) {
      const v = o[k] as tfjs.Variable | undefined;
      if (saved[k] !== undefined && v && typeof v.assign === 'function') this.runtime.tf.tidy(() => v.assign(this.runtime.tf.scalar(saved[k]!)));
    }
  }

  /** Load the newest checkpoint in `dir` into the model and optimizer. Returns the epoch to resume at. */
  private async restoreState(dir: string): Promise<number> {
    const tf = this.runtime.tf;
    const state = await loadCheckpoint(dir);
    let epoch = 0;
    if (state) {
      const ws = this.model.weights;
      if (state.weights.length !== ws.length) throw Errors.data(dir, `checkpoint has ${state.weights.length} weights, the model has ${ws.length}`);
      ws.forEach((w, i) => {
        const s = state.weights[i]!;
        const shape = w.shape.map((d) => d ?? 0);
        if (s.shape.join(',') !== shape.join(',')) throw Errors.data(dir, `weight ${i} (${w.originalName}) has shape [${s.shape}] in the checkpoint, [${shape}] in the model`);
        tf.tidy(() => (w.read() as tfjs.Variable).assign(tf.tensor(s.data, shape, w.dtype)));
      });
      const named = state.optimizer.map((a) => ({ name: a.name, tensor: tf.tensor(a.data, a.shape) }));
      await this.optimizer.setWeights(named);
      for (const n of named) n.tensor.dispose();
      this.restoreOptimizerScalars(state.extra?.optimizerScalars as Record<string, number> | undefined);
      epoch = state.epoch;
      this.globalStep = state.step;
      this.log(`resumed from ${dir} at epoch ${epoch} (step ${state.step})`);
    }
    // Every rank must resume at the same epoch (a checkpoint folder only some ranks see would desynchronise them).
    const mean = (await this.sync.allreduceScalars(Float64Array.of(epoch)))[0]!;
    if (mean !== epoch) throw Errors.mismatch('resume epoch', `rank ${this.rank} found epoch ${epoch}, the mean over ranks is ${mean}: is ${dir} visible to every rank?`, { rank: this.rank });
    return epoch;
  }

  /** Run one step on `batch`; returns [loss, ...metrics] of this rank's batch. */
  private async trainStep(batch: Batch): Promise<number[]> {
    const tf = this.runtime.tf;
    const kept: tfjs.Scalar[] = [];
    const loss = await this.bridge!.step(() => {
      const pred = this.model.apply(batch.x, { training: true }) as tfjs.Tensor;
      for (const m of this.metricFns) kept.push(tf.keep(m.fn(batch.y, pred)));
      return this.lossFn!(batch.y, pred);
    }, this.optimizer);
    const values = [loss, ...kept.map((t) => t.dataSync()[0]!)];
    for (const t of kept) t.dispose();
    this.globalStep += 1;
    return values;
  }

  private names(prefix = ''): string[] {
    return [`${prefix}loss`, ...this.metricFns.map((m) => `${prefix}${m.name}`)];
  }

  /**
   * Train for `epochs` epochs. In-memory data is sharded so N workers with batch b follow exactly the path of
   * one worker with batch N*b (see `rankBatchRows`). Returns the per-epoch history (rank-averaged logs).
   */
  async fit(data: TrainData, options: FitOptions): Promise<History> {
    if (!Number.isInteger(options?.epochs) || options.epochs < 0) throw Errors.invalidArg('fit options.epochs', `must be a non-negative integer, got ${options?.epochs}`);
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw Errors.invalidArg('fit options.batchSize', `must be a positive integer, got ${options.batchSize}`);
    if (options.stepsPerEpoch !== undefined && (!Number.isInteger(options.stepsPerEpoch) || options.stepsPerEpoch < 1)) throw Errors.invalidArg('fit options.stepsPerEpoch', `must be a positive integer, got ${options.stepsPerEpoch}`);
    const source = isBatchSource(data);
    if (source && this.size > 1 && options.stepsPerEpoch === undefined) throw Errors.invalidArg('fit options.stepsPerEpoch', 'is required with a BatchSource and more than one worker (every rank must run the same number of steps)');
    await this.init();
    const tf = this.runtime.tf;
    const callbacks = options.callbacks === undefined ? [] : Array.isArray(options.callbacks) ? options.callbacks : [options.callbacks];
    const ckpt = options.checkpoint;
    let startEpoch = 0;
    if (ckpt && ckpt.resume !== false) startEpoch = await this.restoreState(ckpt.dir);
    await this.ensureBroadcast();
    const history: History = { epochs: [], startEpoch };
    const ctxBase = { rank: this.rank, size: this.size, batchSize: options.batchSize };
    const n = source ? 0 : numSamples(data, 'fit data');
    let steps = options.stepsPerEpoch ?? Infinity;
    if (!source) {
      const avail = stepsPerEpochFor(n, ctxBase);
      if (avail < 1) throw Errors.data('fit data', `${n} samples are fewer than one global batch (${options.batchSize} x ${this.size} workers)`);
      steps = Math.min(steps, avail);
    }
    const verbose = this.options.verbose !== 0 && this.rank === 0;
    for (const cb of callbacks) await cb.onTrainBegin?.();
    for (let epoch = startEpoch; epoch < options.epochs; epoch++) {
      for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
      if (verbose) this.out.write(`Epoch ${epoch + 1}/${options.epochs}\n`);
      const bar = verbose ? new ProgressBar(this.out, Number.isFinite(steps) ? steps : 0) : undefined;
      const sums = new Float64Array(this.metricFns.length + 2); // loss, metrics..., samples
      const t0 = performance.now();
      let step = 0;
      const runBatch = async (batch: Batch) => {
        const rows = batch.y.shape[0]!;
        let values: number[];
        try {
          values = await this.trainStep(batch);
        } finally {
          disposeBatch(batch);
        }
        values.forEach((v, i) => (sums[i]! += v * rows));
        sums[values.length]! += rows;
        step += 1;
        const local: Logs = {};
        this.names().forEach((k, i) => (local[k] = values[i]!));
        for (const cb of callbacks) await cb.onBatchEnd?.(step - 1, local);
        if (bar) {
          const running: Logs = {};
          this.names().forEach((k, i) => (running[k] = sums[i]! / sums[sums.length - 1]!));
          bar.update(step, running, sums[sums.length - 1]! * this.size);
        }
      };
      if (source) {
        const it = data.batches({ ...ctxBase, epoch });
        for await (const batch of it as AsyncIterable<Batch>) {
          if (step >= steps) {
            disposeBatch(batch);
            break;
          }
          await runBatch(batch);
        }
        if (Number.isFinite(steps) && step < steps) throw Errors.data('fit data', `rank ${this.rank}'s batch source ended after ${step} of ${steps} steps in epoch ${epoch}`, { rank: this.rank });
      } else {
        const order = epochOrder(n, epoch, options.shuffle ?? true, options.seed ?? 0);
        for (let s = 0; s < steps; s++) await runBatch(gatherBatch(tf, data, rankBatchRows(order, s, { ...ctxBase, epoch })));
      }
      // Rank-averaged epoch logs: samples-weighted sums over every rank.
      const reduced = await this.sync.allreduceScalars(sums);
      const logs: Logs = {};
      const total = reduced[reduced.length - 1]!;
      this.names().forEach((k, i) => (logs[k] = total > 0 ? reduced[i]! / total : NaN));
      if (options.validationData) Object.assign(logs, await this.evaluate(options.validationData, { batchSize: options.batchSize, prefix: 'val_' }));
      const seconds = (performance.now() - t0) / 1000;
      const samplesPerSec = (total * this.size) / seconds;
      if (bar) bar.end(step, logs, total * this.size);
      history.epochs.push({ ...logs, epoch, seconds, samplesPerSec });
      if (ckpt && this.rank === 0 && ((epoch + 1) % (ckpt.everyEpochs ?? 1) === 0 || epoch + 1 === options.epochs)) {
        await this.saveState(ckpt.dir, epoch + 1, ckpt.keep ?? 2);
      }
      for (const cb of callbacks) await cb.onEpochEnd?.(epoch, logs);
    }
    for (const cb of callbacks) await cb.onTrainEnd?.(history);
    return history;
  }

  /**
   * Loss and metrics over `data`, each rank scoring a contiguous shard; the result (averaged over all samples
   * of all ranks) is the same on every rank. Collective.
   */
  async evaluate(data: { x: tfjs.Tensor | tfjs.Tensor[]; y: tfjs.Tensor }, options: { batchSize?: number; prefix?: string } = {}): Promise<Logs> {
    await this.init();
    await this.ensureBroadcast();
    const tf = this.runtime.tf;
    const n = numSamples(data, 'evaluate data');
    const lo = Math.floor((n * this.rank) / this.size);
    const hi = Math.floor((n * (this.rank + 1)) / this.size);
    const bs = options.batchSize ?? 256;
    const sums = new Float64Array(this.metricFns.length + 2);
    for (let s = lo; s < hi; s += bs) {
      const rows = Int32Array.from({ length: Math.min(bs, hi - s) }, (_, i) => s + i);
      const batch = gatherBatch(tf, data, rows);
      try {
        const vals = tf.tidy(() => {
          const pred = this.model.apply(batch.x, { training: false }) as tfjs.Tensor;
          return [this.lossFn!(batch.y, pred), ...this.metricFns.map((m) => m.fn(batch.y, pred))].map((t) => t.dataSync()[0]!);
        });
        vals.forEach((v, i) => (sums[i]! += v * rows.length));
        sums[vals.length]! += rows.length;
      } finally {
        disposeBatch(batch);
      }
    }
    const reduced = await this.sync.allreduceScalars(sums);
    const total = reduced[reduced.length - 1]!;
    const logs: Logs = {};
    this.names(options.prefix).forEach((k, i) => (logs[k] = total > 0 ? reduced[i]! / total : NaN));
    if (this.options.verbose !== 0 && this.rank === 0 && !options.prefix) this.out.write(`evaluate: ${fmtLogs(logs)}\n`);
    return logs;
  }

  /** Model outputs for `x` on this rank (not collective). The caller owns the returned tensor. */
  async predict(x: tfjs.Tensor | tfjs.Tensor[], options: { batchSize?: number } = {}): Promise<tfjs.Tensor> {
    await this.init();
    return this.model.predict(x, { batchSize: options.batchSize ?? 256 }) as tfjs.Tensor;
  }

  /** Save a checkpoint now (rank 0 writes; other ranks return null). */
  async save(dir: string, epoch = 0): Promise<string | null> {
    await this.init();
    return this.rank === 0 ? this.saveState(dir, epoch, 2) : null;
  }

  /** Dispose the optimizer (and the LocalSync the trainer made). The model stays usable. */
  async close(): Promise<void> {
    this.opt?.dispose();
    if (this.ownsSync) await this.sync.close();
  }
}
