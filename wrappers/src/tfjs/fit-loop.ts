import { Errors } from '@shoal/core';
import type { Callbacks, CallbackTrainer, History, Logs } from './callbacks.js';
import { disposeBatch, epochOrder, gatherBatch, isBatchSource, numSamples, rankBatchRows, stepsPerEpochFor, tracedBatches, type Batch, type BatchContext } from './data.js';
import { FitCheckpoints, resumeRun } from './fit-checkpoint.js';
import { attachCallbacks, type FitHost } from './fit-host.js';
import type { FitPlan } from './fit-options.js';
import { ProgressBar } from './progress.js';
import type { RunPosition } from './trainer-state.js';

/** How the epochs of one `fit` ended: where the history is, and the step time `adviceLine` weighs sync against. */
export interface FitResult {
  history: History;
  stepMsTotal: number;
}

/**
 * The Trainer's `fit` loop (not elastic): resume from a checkpoint, then per epoch the batches (from a
 * `BatchSource`, or this rank's rows of the in-memory data), the sync at the epoch's end, the rank-averaged logs,
 * validation, checkpoints and the callbacks, with an agreed stop. Collective: every rank runs it alike.
 * `onEpoch` receives each epoch's record as the Trainer's `lastEpoch`, before `onEpochEnd`.
 */
export async function runFitLoop(host: FitHost, trainer: CallbackTrainer, plan: FitPlan, callbacks: Callbacks[], onEpoch: (rec: History['epochs'][number]) => void, ensureBroadcast: () => Promise<void>): Promise<FitResult> {
  const { data, options } = plan;
  if (isBatchSource(data) && host.size > 1 && options.stepsPerEpoch === undefined) throw Errors.invalidArg('fit options.stepsPerEpoch', 'is required with a BatchSource and more than one worker (every rank must run the same number of steps)');
  const ckpt = options.checkpoint;
  let pos: RunPosition = { epoch: options.initialEpoch ?? 0, epochStep: 0, globalStep: host.globalStep };
  if (ckpt && ckpt.resume !== false) pos = (await resumeRun(host, ckpt.dir)) ?? pos;
  await ensureBroadcast();
  const loop = new FitLoop(host, plan, callbacks, pos, onEpoch);
  return loop.run(trainer);
}

class FitLoop {
  private readonly source: boolean;
  /** Samples of in-memory data (0 with a batch source). */
  private readonly n: number;
  private readonly ctxBase: Omit<BatchContext, 'epoch'>;
  /** Steps per epoch (Infinity: a batch source without `stepsPerEpoch`, one rank). */
  private readonly steps: number;
  private readonly verbose: boolean;
  private readonly names: string[];
  /** A stop requested in a batch hook is agreed after every step (one scalar allreduce, which also carries the
   * batch logs for onGlobalBatchEnd); shoal's own callbacks declare they never stop mid-epoch. */
  private readonly perStep: boolean;
  private checkpoints?: FitCheckpoints;
  private readonly history: History;
  private stop = false;
  private stepMsTotal = 0;

  constructor(
    private readonly host: FitHost,
    private readonly plan: FitPlan,
    private readonly callbacks: Callbacks[],
    private readonly pos: RunPosition,
    private readonly onEpoch: (rec: History['epochs'][number]) => void,
  ) {
    const { data, batchSize, options } = plan;
    this.source = isBatchSource(data);
    this.n = isBatchSource(data) ? 0 : numSamples(data, 'fit data');
    this.ctxBase = { rank: host.rank, size: host.size, batchSize };
    let steps = options.stepsPerEpoch ?? Infinity;
    if (!this.source) {
      const avail = stepsPerEpochFor(this.n, this.ctxBase);
      if (avail < 1) throw Errors.data('fit data', `${this.n} samples are fewer than one global batch (${batchSize} x ${host.size} workers)`);
      steps = Math.min(steps, avail);
    }
    this.steps = steps;
    this.verbose = (options.verbose ?? host.verbose ?? 1) !== 0 && host.rank === 0;
    this.history = { epochs: [], startEpoch: pos.epoch, stopped: false };
    this.names = host.names();
    this.perStep = callbacks.some((cb) => cb.onGlobalBatchEnd || ((cb.onBatchBegin || cb.onBatchEnd) && cb.stopsOnBatch !== false));
  }

  async run(trainer: CallbackTrainer): Promise<FitResult> {
    const { host, plan, callbacks, pos, steps } = this;
    if (host.stopRequested()) host.model.stopTraining = false;
    attachCallbacks(callbacks, trainer, host.model, { epochs: plan.epochs, initialEpoch: pos.epoch, samples: this.n, steps: Number.isFinite(steps) ? steps : null, batchSize: plan.batchSize, verbose: this.verbose ? 1 : 0, doValidation: plan.validation !== undefined, metrics: [...this.names, ...(plan.validation ? host.names('val_') : [])] });
    for (const cb of callbacks) await cb.onTrainBegin?.();
    if (plan.options.checkpoint) this.checkpoints = new FitCheckpoints(host, plan.options.checkpoint);
    host.schedule.beginFit();
    for (let epoch = pos.epoch; epoch < plan.epochs && !this.stop; epoch++) await this.epoch(epoch);
    for (const cb of callbacks) await cb.onTrainEnd?.(this.history);
    return { history: this.history, stepMsTotal: this.stepMsTotal };
  }

  private async epoch(epoch: number): Promise<void> {
    const { host, plan, callbacks, pos, steps } = this;
    for (const cb of callbacks) await cb.onEpochBegin?.(epoch);
    if (this.verbose) host.out.write(`Epoch ${epoch + 1}/${plan.epochs}\n`);
    const bar = this.verbose ? new ProgressBar(host.out, Number.isFinite(steps) ? steps : 0) : undefined;
    const sums = new Float64Array(host.metricFns.length + 2); // loss, metrics..., samples
    const resumeHere = epoch === pos.epoch ? pos.epochStep : 0;
    if (resumeHere > 0 && pos.sums?.length === sums.length) sums.set(pos.sums);
    const t0 = performance.now();
    const state = { epoch, step: resumeHere, sums, bar };
    if (this.source) await this.sourceBatches(state, resumeHere);
    else await this.memoryBatches(state, resumeHere);
    const step = state.step;
    const tf0 = performance.now(); // epochs end at a sync (collective: a pending accumulation applied, local steps averaged)
    if (await host.schedule.flush(host.optimizer)) host.setGlobalStep(host.globalStep + 1);
    this.stepMsTotal += performance.now() - tf0;
    // Rank-averaged epoch logs: samples-weighted sums over every rank.
    const reduced = await host.sync.allreduceScalars(sums);
    const logs: Logs = {};
    const total = reduced[reduced.length - 1]!;
    this.names.forEach((k, i) => (logs[k] = total > 0 ? reduced[i]! / total : NaN));
    const options = plan.options;
    if (plan.validation && (epoch + 1) % (options.validationFreq ?? 1) === 0) {
      Object.assign(logs, await host.traced('validate', () => host.evaluate(plan.validation!, { batchSize: options.validationBatchSize ?? plan.batchSize, prefix: 'val_', ...(plan.validationLocal ? { local: true } : {}) })));
    }
    const seconds = (performance.now() - t0) / 1000;
    const samplesPerSec = (total * host.size) / seconds;
    if (bar) bar.end(step, logs, total * host.size);
    const record = { ...logs, epoch, seconds, samplesPerSec, learningRate: host.learningRate };
    this.onEpoch(record);
    this.history.epochs.push(record);
    await this.checkpoints?.atEpochEnd(epoch, plan.epochs, this.stop);
    for (const cb of callbacks) await cb.onEpochEnd?.(epoch, { ...logs });
    this.stop = (await this.agreeStop()) || this.stop;
    if (this.stop && epoch + 1 < plan.epochs) this.history.stopped = true;
  }

  /** The epoch's batches from a `BatchSource`, skipping the ones a resumed run already did. */
  private async sourceBatches(state: EpochState, resumeHere: number): Promise<void> {
    const { host, steps } = this;
    const data = this.plan.data;
    if (!isBatchSource(data)) return;
    const it = data.batches({ ...this.ctxBase, epoch: state.epoch });
    let skip = resumeHere;
    for await (const batch of host.trace ? tracedBatches(it as AsyncIterable<Batch>, host.trace) : (it as AsyncIterable<Batch>)) {
      if (skip > 0) {
        skip -= 1;
        disposeBatch(batch);
        continue;
      }
      if (state.step >= steps || this.stop) {
        disposeBatch(batch);
        break;
      }
      await this.runBatch(state, batch);
    }
    if (Number.isFinite(steps) && state.step < steps && !this.stop) throw Errors.data('fit data', `rank ${host.rank}'s batch source ended after ${state.step} of ${steps} steps in epoch ${state.epoch}`, { rank: host.rank });
  }

  /** The epoch's batches of in-memory data: this rank's rows of each global batch, in the epoch's order. */
  private async memoryBatches(state: EpochState, resumeHere: number): Promise<void> {
    const { host, plan } = this;
    const data = plan.data;
    if (isBatchSource(data)) return;
    const order = epochOrder(this.n, state.epoch, plan.options.shuffle ?? true, plan.options.seed ?? 0);
    const tr = host.trace;
    for (let s = resumeHere; s < this.steps && !this.stop; s++) {
      const t0 = tr?.timeline.now();
      const batch = gatherBatch(host.tf, data, rankBatchRows(order, s, { ...this.ctxBase, epoch: state.epoch }));
      if (tr) tr.timeline.span(tr.lane, 'data', t0!);
      await this.runBatch(state, batch);
    }
  }

  /** One step on `batch` with its callbacks, the running sums, the progress bar and a due checkpoint. */
  private async runBatch(state: EpochState, batch: Batch): Promise<void> {
    const { host, callbacks, names } = this;
    const { sums, bar } = state;
    const rows = batch.y.shape[0]!;
    let values: number[];
    try {
      for (const cb of callbacks) await cb.onBatchBegin?.(state.step);
      const ts = performance.now();
      values = await host.traced('step', () => host.trainStep(batch));
      this.stepMsTotal += performance.now() - ts;
    } finally {
      disposeBatch(batch);
    }
    values.forEach((v, i) => (sums[i]! += v * rows));
    sums[values.length]! += rows;
    state.step += 1;
    const step = state.step;
    const local: Logs = {};
    names.forEach((k, i) => (local[k] = values[i]!));
    for (const cb of callbacks) await cb.onBatchEnd?.(step - 1, local);
    if (this.perStep) {
      const r = await host.sync.allreduceScalars(Float64Array.from([...values.map((v) => v * rows), rows, host.stopRequested() ? 1 : 0]));
      this.stop = r[r.length - 1]! > 0;
      const global: Logs = {};
      names.forEach((k, i) => (global[k] = r[i]! / r[values.length]!));
      for (const cb of callbacks) await cb.onGlobalBatchEnd?.(step - 1, global);
    }
    if (bar) {
      const running: Logs = {};
      names.forEach((k, i) => (running[k] = sums[i]! / sums[sums.length - 1]!));
      bar.update(step, running, sums[sums.length - 1]! * host.size);
    }
    if (!this.stop) await this.checkpoints?.afterStep(state.epoch, step, this.steps, sums);
  }

  /** True on every rank when `model.stopTraining` is set on any rank. Collective. */
  private async agreeStop(): Promise<boolean> {
    const r = await this.host.sync.allreduceScalars(Float64Array.of(this.host.stopRequested() ? 1 : 0));
    return r[0]! > 0;
  }
}

/** One epoch's progress, shared by its batch loop and each step. */
interface EpochState {
  readonly epoch: number;
  /** Steps done in this epoch (counting those a resumed run skips). */
  step: number;
  /** Running sums: loss and metrics times rows, then rows. */
  readonly sums: Float64Array;
  readonly bar?: ProgressBar;
}
