import type * as tfjs from '@tensorflow/tfjs';
import { jobTelemetryOf, LocalSync, PsSync, type GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';
import type { TrainingData } from '@shoal/datasets';
import type { Callbacks, CallbackTrainer, EpochRecord, History, Logs } from './callbacks.js';

export type { EpochRecord, History } from './callbacks.js';
import { disposeBatch, epochOrder, gatherBatch, isBatchSource, numSamples, rankBatchRows, scoreRows, stepsPerEpochFor, tracedBatches, type Batch, type TrainData } from './data.js';
import { isTensor, planFit, type FitOptions, type FitPlan, type TensorData } from './fit-options.js';
import { broadcastVariables, GradientBridge, type BridgeVariable } from './gradient-bridge.js';
import { adviceLine, SyncSchedule, syncModeOf } from './sync-schedule.js';
import { resolveLoss, resolveMetric, resolveOptimizer, type LossFn, type LossSpec, type Metric, type MetricSpec, type OptimizerSpec } from './losses.js';
import { fmtLogs, ProgressBar, type LogSink } from './progress.js';
import { setupTfjs, type Tf, type TfjsRuntime } from './runtime.js';
import { getLearningRate, setLearningRate } from './schedules.js';
import { TensorBoardCallback } from './tensorboard/tensorboard.js';
import { checkElasticOptions, elasticFit, ElasticState, type ElasticHost, type ElasticOptions } from './elastic.js';
import { loadTrainingState, saveTrainingState, type RunPosition } from './trainer-state.js';
import { traceIf } from '@shoal/core/telemetry';

export type { Callbacks, CallbackTrainer, Logs } from './callbacks.js';
export type { CheckpointOptions, FitOptions, ValidationData } from './fit-options.js';

export interface TrainerOptions {
  /** The model, or a function building it (called once, after the tfjs backend is set up). */
  model: tfjs.LayersModel | ((tf: Tf) => tfjs.LayersModel);
  /**
   * The optimizer: a name tfjs `compile` accepts (`'adam'`, `'sgd'`, `'rmsprop'`, ... with tfjs' defaults), a
   * `tf.Optimizer`, or a function building one, e.g. `(tf) => tf.train.adam(1e-3)`. Every rank applies the same
   * averaged gradients.
   */
  optimizer: OptimizerSpec;
  /** A loss name tfjs `compile` accepts (`'binaryCrossentropy'`, `'mse'`, ...) or `(yTrue, yPred) => scalar`. */
  loss: LossSpec;
  /** Metric names tfjs `compile` accepts (`'accuracy'`, `'acc'`, `'mae'`, ...) or `{ name, fn }`. */
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
  /** Local SGD: average weights and optimizer state every this many steps, each rank stepping alone between (default 1). */
  syncEvery?: number;
  /** Gradient accumulation: this many batches make one optimizer step and one sync (default 1). See `SyncScheduleOptions`. */
  accumulateSteps?: number;
  /** Log one line on rank 0 at the end of `fit` naming these options when sync took over 25 % of the steps (default true). */
  advice?: boolean;
  /**
   * Elastic training under `shoal run --elastic`: commit the state in memory every `commitEvery` steps, survive
   * lost workers and take in new ones (see `ElasticOptions`, ./elastic.ts). `fit` then takes in-memory data.
   * Under `shoal_spark.run(elastic=True)` rank 0 also hands each commit to the driver, a restarted stage starts
   * from the last one, and `fit` takes `worker.data()`.
   */
  elastic?: ElasticOptions;
}
const TRAINER_KEYS = ['model', 'optimizer', 'loss', 'metrics', 'sync', 'runtime', 'sparse', 'sparseEngines', 'output', 'verbose', 'syncEvery', 'accumulateSteps', 'advice', 'elastic'];

/** tfjs' own callback objects (`tf.callbacks.earlyStopping`) take the model and params this way. */
interface TfjsCallbackHooks {
  setModel?(model: tfjs.LayersModel): void;
  setParams?(params: Record<string, unknown>): void;
}

/**
 * Keras-like, data-parallel training of a tfjs LayersModel.
 *
 * ```ts
 * const { sync, close } = await initWorker();
 * const trainer = new Trainer({ model: buildModel, optimizer: 'adam', loss: 'binaryCrossentropy', metrics: ['acc'], sync });
 * await trainer.fit(x, y, { epochs: 5, batchSize: 256, validationSplit: 0.1 });
 * ```
 * Every rank runs the same calls in the same order (they are collective). Rank 0's initial weights are
 * broadcast before the first step; each step averages gradients over ranks, so all ranks keep identical weights.
 */
export class Trainer implements CallbackTrainer {
  private rt?: TfjsRuntime;
  private net?: tfjs.LayersModel;
  private opt?: tfjs.Optimizer;
  private bridge?: GradientBridge;
  private schedule?: SyncSchedule;
  private lossFn?: LossFn;
  private metricFns: Metric[] = [];
  private readonly sync: GradientSync;
  private readonly ownsSync: boolean;
  private readonly out: LogSink;
  private broadcastDone = false;
  private step_ = 0;
  private lastEpoch_?: EpochRecord;
  /** The job's timeline (`shoal run --timeline`, from the engine's telemetry) and the Trainer's lane on it. */
  private readonly trace?: { timeline: Timeline; lane: TimelineLane };

  constructor(private readonly options: TrainerOptions) {
    if (!options || typeof options !== 'object') throw Errors.invalidArg('options', 'must be an object');
    for (const k of Object.keys(options)) if (!TRAINER_KEYS.includes(k) && (options as unknown as Record<string, unknown>)[k] !== undefined) throw Errors.invalidArg(`options.${k}`, `is not a Trainer option (known: ${TRAINER_KEYS.join(', ')})`);
    if (options.optimizer === undefined || options.optimizer === null) throw Errors.invalidArg('options.optimizer', 'is required: a name such as \'adam\', a tf.Optimizer or a function returning one');
    if (options.model === undefined) throw Errors.invalidArg('options.model', 'is required');
    if (options.elastic !== undefined) {
      checkElasticOptions(options.elastic);
      const other = (['syncEvery', 'accumulateSteps'] as const).find((k) => (options[k] ?? 1) > 1);
      if (other !== undefined) throw Errors.invalidArg(`options.${other}`, 'does not go with options.elastic yet: elastic commits are taken where every rank holds the same state, after each synced step');
    }
    this.sync = options.sync ?? new LocalSync();
    this.ownsSync = options.sync === undefined;
    if (options.advice !== undefined && typeof options.advice !== 'boolean') throw Errors.invalidArg('options.advice', `must be true or false, got ${JSON.stringify(options.advice)}`);
    syncModeOf(options, this.sync); // checked here, before any model is built
    this.out = options.output ?? process.stdout;
    const timeline = jobTelemetryOf(this.sync)?.timeline;
    if (timeline) this.trace = { timeline, lane: timeline.lane('step') };
  }

  /** `fn` as a span on the `step` lane when the job records a timeline. */
  private traced<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return traceIf(this.trace, name, fn);
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
  /** Optimizer steps taken so far over the whole run (restored on resume). */
  get globalStep(): number {
    return this.step_;
  }
  /** The optimizer's learning rate; a new value applies from the next step. Set it alike on every rank. */
  get learningRate(): number {
    return getLearningRate(this.optimizer);
  }
  set learningRate(lr: number) {
    setLearningRate(this.optimizer, lr);
  }
  /** The last epoch's record (rank-averaged logs, seconds, samples/s), set before `onEpochEnd`. */
  get lastEpoch(): EpochRecord | undefined {
    return this.lastEpoch_;
  }
  /** Bytes this rank's engine sent and received so far. */
  syncStats(): { bytesSent: number; bytesReceived: number; ops: number } {
    return this.sync.stats();
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
    if (this.rank === 0) this.log(`${this.rt.describe()}; ${this.size} worker(s), ${this.size === 1 && this.sync instanceof LocalSync ? 'local (no communication)' : this.sync instanceof PsSync && this.sync.mode === 'async' ? 'ps (async)' : this.sync.kind} engine`);
    const net = typeof this.options.model === 'function' ? this.options.model(tf) : this.options.model;
    if (!net || !Array.isArray(net.trainableWeights)) throw Errors.invalidArg('options.model', 'must be (or return) a tf.LayersModel');
    // A Sequential builds its inner model (which holds `stopTraining`) lazily, in compile/fit/predict: build it now
    // so callbacks can set `model.stopTraining` (same layers, same weights).
    if (net instanceof tf.Sequential && (net as unknown as { model?: unknown }).model == null && net.inputs.length > 0) net.build();
    this.opt = resolveOptimizer(tf, this.options.optimizer);
    this.lossFn = resolveLoss(tf, this.options.loss);
    this.metricFns = (this.options.metrics ?? []).map((m) => resolveMetric(tf, m, this.options.loss));
    this.net = net;
    const sparseSpec = this.options.sparse ?? 'auto';
    const embeddingVars = new Set<string>();
    if (sparseSpec === 'auto') {
      for (const layer of net.layers) {
        if (layer.getClassName() === 'Embedding') for (const w of layer.trainableWeights) embeddingVars.add((w.read() as tfjs.Variable).name);
      }
    }
    const vars: BridgeVariable[] = net.trainableWeights.map((w, i) => {
      const variable = w.read() as tfjs.Variable;
      const sparse = Array.isArray(sparseSpec) ? sparseSpec.includes(variable.name) || sparseSpec.includes(w.originalName) : embeddingVars.has(variable.name);
      return { variable, name: `w${i}/${w.originalName.split('/').pop()}`, label: variable.name, sparse };
    });
    this.bridge = new GradientBridge(tf, vars, this.sync, this.options.sparseEngines, undefined, this.trace?.timeline);
    this.schedule = new SyncSchedule(tf, syncModeOf(this.options, this.sync), this.bridge, this.sync, () => this.allVariables(), this.trace);
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

  private position(epoch: number, epochStep: number, sums?: Float64Array): RunPosition {
    return { epoch, epochStep, globalStep: this.step_, learningRate: this.learningRate, ...(sums ? { sums: Array.from(sums) } : {}) };
  }

  /**
   * Load the newest checkpoint in `dir` (if any) and agree on the position with every rank (a folder only some
   * ranks see would desynchronise them). Collective.
   */
  private async resume(dir: string): Promise<RunPosition | null> {
    const pos = await loadTrainingState(this.runtime.tf, dir, this.model, this.optimizer);
    if (pos) {
      this.step_ = pos.globalStep;
      if (pos.learningRate !== undefined) this.learningRate = pos.learningRate;
      this.log(`resumed from ${dir} at epoch ${pos.epoch}${pos.epochStep ? `, step ${pos.epochStep} of it` : ''} (step ${pos.globalStep})`);
    }
    const mine = pos ? pos.globalStep + 1 : 0;
    const mean = (await this.sync.allreduceScalars(Float64Array.of(mine)))[0]!;
    if (mean !== mine) throw Errors.mismatch('resume step', `rank ${this.rank} found ${pos ? `step ${pos.globalStep}` : 'no checkpoint'} in ${dir}, the ranks disagree: is ${dir} visible to every rank?`, { rank: this.rank });
    return pos;
  }

  /** Run one step on `batch` (a micro-batch with `accumulateSteps`); returns [loss, ...metrics] of this rank's batch. */
  private async trainStep(batch: Batch): Promise<number[]> {
    const tf = this.runtime.tf;
    const kept: tfjs.Scalar[] = [];
    const lossFn = () => {
      const pred = this.model.apply(batch.x, { training: true }) as tfjs.Tensor;
      for (const m of this.metricFns) kept.push(tf.keep(m.fn(batch.y, pred)));
      return this.lossFn!(batch.y, pred);
    };
    const { loss, stepped } = await this.schedule!.step(lossFn, this.optimizer, batch.y.shape[0]!);
    const values = [loss, ...kept.map((t) => t.dataSync()[0]!)];
    for (const t of kept) t.dispose();
    if (stepped) this.step_ += 1;
    return values;
  }

  private names(prefix = ''): string[] {
    return [`${prefix}loss`, ...this.metricFns.map((m) => `${prefix}${m.name}`)];
  }

  /** `model.stopTraining`; false for a Sequential whose input shape is still unknown (tfjs cannot hold it yet). */
  private stopRequested(): boolean {
    try {
      return this.model.stopTraining;
    } catch {
      return false;
    }
  }

  /** True on every rank when `model.stopTraining` is set on any rank. Collective. */
  private async agreeStop(): Promise<boolean> {
    const r = await this.sync.allreduceScalars(Float64Array.of(this.stopRequested() ? 1 : 0));
    return r[0]! > 0;
  }

  /**
   * Train, Keras style: `fit(x, y, options)` or `fit({ x, y } | batchSource, options)`. In-memory data is sharded
   * so N workers with batch b follow exactly the path of one worker with batch N*b (see `rankBatchRows`).
   * Returns the per-epoch history (rank-averaged logs, identical on every rank). Collective.
   */
  async fit(x: tfjs.Tensor | tfjs.Tensor[], y: tfjs.Tensor, options?: FitOptions): Promise<History>;
  async fit(data: TrainData, options?: FitOptions): Promise<History>;
  /** `fit(await worker.data({ features, label }), { epochs })`: steps per epoch and batch size come from the data. */
  async fit(data: TrainingData, options?: FitOptions): Promise<History>;
  async fit(a: tfjs.Tensor | tfjs.Tensor[] | TrainData | TrainingData, b?: tfjs.Tensor | FitOptions, c?: FitOptions): Promise<History> {
    await this.init();
    const plan = planFit(this.runtime.tf, a, b, c);
    const callbacks: Callbacks[] = plan.options.callbacks === undefined ? [] : Array.isArray(plan.options.callbacks) ? [...plan.options.callbacks] : [plan.options.callbacks];
    const telemetry = jobTelemetryOf(this.sync);
    if (telemetry?.logdir && !callbacks.some((cb) => cb instanceof TensorBoardCallback)) callbacks.push(new TensorBoardCallback(telemetry.logdir));
    try {
      if (this.options.elastic !== undefined) return await this.runElasticFit(plan, callbacks, this.options.elastic);
      return await this.runFit(plan, callbacks);
    } finally {
      for (const t of plan.owned) t.dispose();
      // Event files are flushed and closed on failure too (onTrainEnd does it on success).
      await Promise.all(callbacks.map((cb) => (cb instanceof TensorBoardCallback ? cb.close().catch(() => {}) : undefined)));
    }
  }

  /** The elastic state of the last elastic `fit` (its commits), for reports and tests. */
  elasticState?: ElasticState;

  /** `fit` with `options.elastic`: the loop of ./elastic.ts over this trainer's model, optimizer and steps. */
  private async runElasticFit(plan: FitPlan, callbacks: Callbacks[], opts: ElasticOptions): Promise<History> {
    const self = this;
    const host: ElasticHost = {
      tf: this.runtime.tf,
      sync: this.sync,
      get rank() { return self.rank; },
      get size() { return self.size; },
      get model() { return self.model; },
      get optimizer() { return self.optimizer; },
      get learningRate() { return self.learningRate; },
      set learningRate(lr: number) { self.learningRate = lr; },
      get globalStep() { return self.step_; },
      setGlobalStep: (s) => void (this.step_ = s),
      trainStep: (b) => this.trainStep(b),
      names: (p) => this.names(p),
      evaluate: (d, o) => this.evaluate(d, o),
      log: (m) => this.log(m),
    };
    // The elastic loop broadcasts rank 0's whole state (weights and optimizer) itself.
    this.broadcastDone = true;
    for (const cb of callbacks) {
      cb.setTrainer?.(this);
      (cb as TfjsCallbackHooks).setModel?.(this.model);
    }
    this.elasticState = new ElasticState();
    return elasticFit(host, plan, callbacks, opts, this.elasticState);
  }

  private async runFit(plan: FitPlan, callbacks: Callbacks[]): Promise<History> {
    const { data, epochs, batchSize, options } = plan;
    const tf = this.runtime.tf;
    const source = isBatchSource(data);
    if (source && this.size > 1 && options.stepsPerEpoch === undefined) throw Errors.invalidArg('fit options.stepsPerEpoch', 'is required with a BatchSource and more than one worker (every rank must run the same number of steps)');
    const ckpt = options.checkpoint;
    let pos: RunPosition = { epoch: options.initialEpoch ?? 0, epochStep: 0, globalStep: this.step_ };
    if (ckpt && ckpt.resume !== false) pos = (await this.resume(ckpt.dir)) ?? pos;
    await this.ensureBroadcast();
    const n = source ? 0 : numSamples(data, 'fit data');
    const ctxBase = { rank: this.rank, size: this.size, batchSize };
    let steps = options.stepsPerEpoch ?? Infinity;
    if (!source) {
      const avail = stepsPerEpochFor(n, ctxBase);
      if (avail < 1) throw Errors.data('fit data', `${n} samples are fewer than one global batch (${batchSize} x ${this.size} workers)`);
      steps = Math.min(steps, avail);
    }
    const verbose = (options.verbose ?? this.options.verbose ?? 1) !== 0 && this.rank === 0;
    const history: History = { epochs: [], startEpoch: pos.epoch, stopped: false };
    const names = this.names();
    // A stop requested in a batch hook is agreed after every step (one scalar allreduce, which also carries the
    // batch logs for onGlobalBatchEnd); shoal's own callbacks declare they never stop mid-epoch.
    const perStep = callbacks.some((cb) => cb.onGlobalBatchEnd || ((cb.onBatchBegin || cb.onBatchEnd) && cb.stopsOnBatch !== false));
    if (this.stopRequested()) this.model.stopTraining = false;
    for (const cb of callbacks) {
      cb.setTrainer?.(this);
      (cb as TfjsCallbackHooks).setModel?.(this.model);
      (cb as TfjsCallbackHooks).setParams?.({ epochs, initialEpoch: pos.epoch, samples: n, steps: Number.isFinite(steps) ? steps : null, batchSize, verbose: verbose ? 1 : 0, doValidation: plan.validation !== undefined, metrics: [...names, ...(plan.validation ? this.names('val_') : [])] });
    }
    for (const cb of callbacks) await cb.onTrainBegin?.();
    let lastSave = performance.now();
    let lastSaveStep = this.step_;
    // A step checkpoint falls due when the step count passes a multiple of everySteps; written at the next sync.
    const stepsDue = () => ckpt?.everySteps !== undefined && Math.floor(this.step_ / ckpt.everySteps) > Math.floor(lastSaveStep / ckpt.everySteps);
    const schedule = this.schedule!;
    schedule.beginFit();
    let stepMsTotal = 0;
    const saveEvery = async (epoch: number, epochStep: number, sums: Float64Array) => {
      if (!ckpt || this.rank !== 0 || epochStep >= steps || !schedule.atSync) return;
      const bySteps = stepsDue();
      const bySeconds = ckpt.everySeconds !== undefined && performance.now() - lastSave >= ckpt.everySeconds * 1000;
      if (!bySteps && !bySeconds) return;
      await this.traced('checkpoint', () => saveTrainingState(ckpt.dir, this.model, this.optimizer, this.position(epoch, epochStep, sums), this.size, ckpt.keep ?? 2));
      lastSave = performance.now();
      lastSaveStep = this.step_;
    };
    let stop = false;
    for (let epoch = pos.epoch; epoch < epochs && !stop; epoch++) {
      for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
      if (verbose) this.out.write(`Epoch ${epoch + 1}/${epochs}\n`);
      const bar = verbose ? new ProgressBar(this.out, Number.isFinite(steps) ? steps : 0) : undefined;
      const sums = new Float64Array(this.metricFns.length + 2); // loss, metrics..., samples
      const resumeHere = epoch === pos.epoch ? pos.epochStep : 0;
      if (resumeHere > 0 && pos.sums?.length === sums.length) sums.set(pos.sums);
      const t0 = performance.now();
      let step = resumeHere;
      const runBatch = async (batch: Batch) => {
        const rows = batch.y.shape[0]!;
        let values: number[];
        try {
          for (const cb of callbacks) await cb.onBatchBegin?.(step);
          const ts = performance.now();
          values = await this.traced('step', () => this.trainStep(batch));
          stepMsTotal += performance.now() - ts;
        } finally {
          disposeBatch(batch);
        }
        values.forEach((v, i) => (sums[i]! += v * rows));
        sums[values.length]! += rows;
        step += 1;
        const local: Logs = {};
        names.forEach((k, i) => (local[k] = values[i]!));
        for (const cb of callbacks) await cb.onBatchEnd?.(step - 1, local);
        if (perStep) {
          const r = await this.sync.allreduceScalars(Float64Array.from([...values.map((v) => v * rows), rows, this.stopRequested() ? 1 : 0]));
          stop = r[r.length - 1]! > 0;
          const global: Logs = {};
          names.forEach((k, i) => (global[k] = r[i]! / r[values.length]!));
          for (const cb of callbacks) await cb.onGlobalBatchEnd?.(step - 1, global);
        }
        if (bar) {
          const running: Logs = {};
          names.forEach((k, i) => (running[k] = sums[i]! / sums[sums.length - 1]!));
          bar.update(step, running, sums[sums.length - 1]! * this.size);
        }
        if (!stop) await saveEvery(epoch, step, sums);
      };
      if (source) {
        const it = data.batches({ ...ctxBase, epoch });
        let skip = resumeHere;
        for await (const batch of this.trace ? tracedBatches(it as AsyncIterable<Batch>, this.trace) : (it as AsyncIterable<Batch>)) {
          if (skip > 0) {
            skip -= 1;
            disposeBatch(batch);
            continue;
          }
          if (step >= steps || stop) {
            disposeBatch(batch);
            break;
          }
          await runBatch(batch);
        }
        if (Number.isFinite(steps) && step < steps && !stop) throw Errors.data('fit data', `rank ${this.rank}'s batch source ended after ${step} of ${steps} steps in epoch ${epoch}`, { rank: this.rank });
      } else {
        const order = epochOrder(n, epoch, options.shuffle ?? true, options.seed ?? 0);
        const tr = this.trace;
        for (let s = resumeHere; s < steps && !stop; s++) {
          const t0 = tr?.timeline.now();
          const batch = gatherBatch(tf, data, rankBatchRows(order, s, { ...ctxBase, epoch }));
          if (tr) tr.timeline.span(tr.lane, 'data', t0!);
          await runBatch(batch);
        }
      }
      const tf0 = performance.now(); // epochs end at a sync (collective: a pending accumulation applied, local steps averaged)
      if (await schedule.flush(this.optimizer)) this.step_ += 1;
      stepMsTotal += performance.now() - tf0;
      // Rank-averaged epoch logs: samples-weighted sums over every rank.
      const reduced = await this.sync.allreduceScalars(sums);
      const logs: Logs = {};
      const total = reduced[reduced.length - 1]!;
      names.forEach((k, i) => (logs[k] = total > 0 ? reduced[i]! / total : NaN));
      if (plan.validation && (epoch + 1) % (options.validationFreq ?? 1) === 0) {
        Object.assign(logs, await this.traced('validate', () => this.evaluate(plan.validation!, { batchSize: options.validationBatchSize ?? batchSize, prefix: 'val_', ...(plan.validationLocal ? { local: true } : {}) })));
      }
      const seconds = (performance.now() - t0) / 1000;
      const samplesPerSec = (total * this.size) / seconds;
      if (bar) bar.end(step, logs, total * this.size);
      this.lastEpoch_ = { ...logs, epoch, seconds, samplesPerSec, learningRate: this.learningRate };
      history.epochs.push(this.lastEpoch_);
      // An epoch-end save also stands in for a step or time checkpoint falling due at the epoch's last step.
      const secondsDue = ckpt?.everySeconds !== undefined && performance.now() - lastSave >= ckpt.everySeconds * 1000;
      if (ckpt && this.rank === 0 && ((epoch + 1) % (ckpt.everyEpochs ?? 1) === 0 || epoch + 1 === epochs || stop || stepsDue() || secondsDue)) {
        await this.traced('checkpoint', () => saveTrainingState(ckpt.dir, this.model, this.optimizer, this.position(epoch + 1, 0), this.size, ckpt.keep ?? 2));
        lastSave = performance.now();
        lastSaveStep = this.step_;
      }
      for (const cb of callbacks) await cb.onEpochEnd?.(epoch, { ...logs });
      stop = (await this.agreeStop()) || stop;
      if (stop && epoch + 1 < epochs) history.stopped = true;
    }
    for (const cb of callbacks) await cb.onTrainEnd?.(history);
    const advice = this.size > 1 && this.rank === 0 && this.options.advice !== false && adviceLine(schedule, stepMsTotal, this.options);
    if (advice) this.log(advice);
    return history;
  }

  /**
   * Loss and metrics over `data`, each rank scoring a contiguous shard; the result (averaged over all samples
   * of all ranks) is the same on every rank. `evaluate(x, y, options)` or `evaluate({ x, y }, options)`.
   * Collective.
   */
  async evaluate(x: tfjs.Tensor | tfjs.Tensor[], y: tfjs.Tensor, options?: { batchSize?: number }): Promise<Logs>;
  /** `local`: `data` is this rank's own share (scored whole), not the same data on every rank (split by rank). */
  async evaluate(data: TensorData, options?: { batchSize?: number; prefix?: string; local?: boolean }): Promise<Logs>;
  async evaluate(a: tfjs.Tensor | tfjs.Tensor[] | TensorData, b?: tfjs.Tensor | { batchSize?: number; prefix?: string; local?: boolean }, c?: { batchSize?: number }): Promise<Logs> {
    const tensors = isTensor(a) || Array.isArray(a);
    const data: TensorData = tensors ? { x: a as tfjs.Tensor | tfjs.Tensor[], y: b as tfjs.Tensor } : (a as TensorData);
    const options = ((tensors ? c : b) ?? {}) as { batchSize?: number; prefix?: string; local?: boolean };
    if (tensors && !isTensor(b)) throw Errors.invalidArg('evaluate(x, y, options)', 'y must be a tf.Tensor');
    for (const k of Object.keys(options)) if (k !== 'batchSize' && k !== 'prefix' && k !== 'local') throw Errors.invalidArg(`evaluate options.${k}`, 'is not supported (known: batchSize)');
    await this.init();
    await this.ensureBroadcast();
    const tf = this.runtime.tf;
    const n = numSamples(data, 'evaluate data');
    const lo = options.local ? 0 : Math.floor((n * this.rank) / this.size);
    const hi = options.local ? n : Math.floor((n * (this.rank + 1)) / this.size);
    const sums = scoreRows(tf, this.model, this.lossFn!, this.metricFns, data, lo, hi, options.batchSize ?? 256);
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

  /**
   * Save the model in the tfjs Layers format (`model.json` + `weights.bin`), as `model.save` does: `file://DIR`
   * works on Node without tfjs-node; `tf.loadLayersModel('file://DIR/model.json')` reads it back. Rank 0
   * writes (all ranks hold the same weights); other ranks return null. Not collective.
   */
  async save(url: string | tfjs.io.IOHandler): Promise<tfjs.io.SaveResult | null> {
    await this.init();
    if (this.rank !== 0) return null;
    return this.model.save(url);
  }

  /** Write a resumable checkpoint (weights, optimizer state, step) to `dir` now; rank 0 writes, others get null. */
  async checkpoint(dir: string, epoch = 0): Promise<string | null> {
    await this.init();
    return this.rank === 0 ? saveTrainingState(dir, this.model, this.optimizer, this.position(epoch, 0), this.size, 2) : null;
  }

  /** Dispose the optimizer (and the LocalSync the trainer made). The model stays usable. */
  async close(): Promise<void> {
    this.opt?.dispose();
    if (this.ownsSync) await this.sync.close();
  }
}

