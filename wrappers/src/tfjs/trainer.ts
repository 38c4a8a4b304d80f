import type * as tfjs from '@tensorflow/tfjs';
import { jobTelemetryOf, LocalSync, PsSync, type GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';
import type { TrainingData } from '@shoal/datasets';
import type { Callbacks, CallbackTrainer, EpochRecord, History, Logs } from './callbacks.js';

export type { EpochRecord, History } from './callbacks.js';
import type { Batch, TrainData } from './data.js';
import { evaluateArgs, evaluateOnRanks, type EvaluateOptions } from './evaluation.js';
import { runPosition } from './fit-checkpoint.js';
import { attachCallbacks, type FitHost } from './fit-host.js';
import { runFitLoop } from './fit-loop.js';
import { planFit, type FitOptions, type FitPlan, type TensorData } from './fit-options.js';
import { broadcastVariables, GradientBridge, type BridgeVariable } from './gradient-bridge.js';
import { adviceLine, SyncSchedule, syncModeOf } from './sync-schedule.js';
import { resolveLoss, resolveMetric, resolveOptimizer, type LossFn, type LossSpec, type Metric, type MetricSpec, type OptimizerSpec } from './losses.js';
import type { LogSink } from './progress.js';
import { setupTfjs, type Tf, type TfjsRuntime } from './runtime.js';
import { getLearningRate, setLearningRate } from './schedules.js';
import { TensorBoardCallback } from './tensorboard/tensorboard.js';
import { checkElasticOptions, elasticFit, ElasticState, type ElasticOptions } from './elastic.js';
import { saveTrainingState } from './trainer-state.js';
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

  private host_?: FitHost;
  /** This trainer as the fit loop, checkpoints, evaluation and the elastic loop see it (after `init`). */
  private fitHost(): FitHost {
    if (this.host_) return this.host_;
    const self = this;
    this.host_ = {
      tf: this.runtime.tf,
      sync: this.sync,
      schedule: this.schedule!,
      metricFns: this.metricFns,
      lossFn: this.lossFn!,
      out: this.out,
      verbose: this.options.verbose,
      trace: this.trace,
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
      traced: (name, fn) => this.traced(name, fn),
      stopRequested: () => this.stopRequested(),
    };
    return this.host_;
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
    // The elastic loop broadcasts rank 0's whole state (weights and optimizer) itself.
    this.broadcastDone = true;
    attachCallbacks(callbacks, this, this.model);
    this.elasticState = new ElasticState();
    return elasticFit(this.fitHost(), plan, callbacks, opts, this.elasticState);
  }

  /** `fit` without `options.elastic`: the loop of ./fit-loop.ts, then the advice line on rank 0. */
  private async runFit(plan: FitPlan, callbacks: Callbacks[]): Promise<History> {
    const { history, stepMsTotal } = await runFitLoop(this.fitHost(), this, plan, callbacks, (rec) => (this.lastEpoch_ = rec), () => this.ensureBroadcast());
    const advice = this.size > 1 && this.rank === 0 && this.options.advice !== false && adviceLine(this.schedule!, stepMsTotal, this.options);
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
  async evaluate(a: tfjs.Tensor | tfjs.Tensor[] | TensorData, b?: tfjs.Tensor | EvaluateOptions, c?: { batchSize?: number }): Promise<Logs> {
    const { data, options } = evaluateArgs(a, b, c);
    await this.init();
    await this.ensureBroadcast();
    return evaluateOnRanks(this.fitHost(), data, options);
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
    return this.rank === 0 ? saveTrainingState(dir, this.model, this.optimizer, runPosition(this.fitHost(), epoch, 0), this.size, 2) : null;
  }

  /** Dispose the optimizer (and the LocalSync the trainer made). The model stays usable. */
  async close(): Promise<void> {
    this.opt?.dispose();
    if (this.ownsSync) await this.sync.close();
  }
}

