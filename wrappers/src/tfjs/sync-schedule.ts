import type * as tfjs from '@tensorflow/tfjs';
import { PsSync, type DenseTensor, type GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';
import type { GradientBridge } from './gradient-bridge.js';
import { traceIf } from '@shoal/core/telemetry';

type Tf = typeof tfjs;

/**
 * When the ranks exchange: the Trainer options Horovod's `backward_passes_per_step` and local SGD users know.
 * - `accumulateSteps: K`: gradient accumulation. Each batch is a micro-batch: its gradient is added to an
 *   accumulator; every K micro-batches the rows-weighted mean is averaged over the ranks (one sync) and applied
 *   (one optimizer step). K micro-batches of b rows step like one batch of K*b rows, with the memory of b.
 * - `syncEvery: K`: local SGD. Every rank applies its own gradient each step, nothing exchanged; every K steps
 *   the ranks average their weights and their optimizer's state (Adam's moments), so after each sync every rank
 *   holds the same model and the same optimizer (a checkpoint taken then resumes exactly).
 * Both end every epoch with a sync (a pending accumulation is applied, the weights averaged), so epochs end with
 * identical weights on every rank; mid-epoch checkpoints are written only at syncs.
 */
export interface SyncScheduleOptions {
  /** Average weights every this many local steps (local SGD); default 1 = average gradients every step. */
  syncEvery?: number;
  /** Micro-batches whose rows-weighted mean gradient makes one optimizer step and one sync; default 1. */
  accumulateSteps?: number;
}

export type SyncMode = { kind: 'every-step' } | { kind: 'accumulate'; k: number } | { kind: 'local-sgd'; k: number } | { kind: 'async-ps'; ps: PsSync };

/** Check the options and choose the mode (one clear ERR_INVALID_ARG per mistake). */
export function syncModeOf(o: SyncScheduleOptions, sync: GradientSync): SyncMode {
  for (const k of ['syncEvery', 'accumulateSteps'] as const) {
    const v = o[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw Errors.invalidArg(`options.${k}`, `must be a positive integer, got ${JSON.stringify(v)}`);
  }
  const every = o.syncEvery ?? 1;
  const acc = o.accumulateSteps ?? 1;
  if (every > 1 && acc > 1) throw Errors.invalidArg('options.syncEvery', `and options.accumulateSteps are exclusive (got ${every} and ${acc}): local SGD already steps on each batch between syncs`);
  if (sync instanceof PsSync && sync.mode === 'async') {
    if (every > 1 || acc > 1) throw Errors.invalidArg(every > 1 ? 'options.syncEvery' : 'options.accumulateSteps', 'does not apply to async ps servers (shoal run --ps-mode async): the workers already exchange without waiting for each other');
    return { kind: 'async-ps', ps: sync };
  }
  if (acc > 1) return { kind: 'accumulate', k: acc };
  if (every > 1 && sync.size > 1) return { kind: 'local-sgd', k: every };
  return { kind: 'every-step' };
}

/**
 * Runs the Trainer's steps under a `SyncMode`. `step` is one batch; `flush` (collective) completes what is
 * pending at the end of an epoch. `atSync` is true when nothing is pending (the ranks hold identical weights and
 * optimizer state): the only points where a checkpoint is exact.
 */
export class SyncSchedule {
  /** Micro-batches accumulated, or local steps taken, since the last sync (0: the ranks agree). */
  private pending = 0;
  /** Sync milliseconds since `beginFit` (gradient or weight averaging, or the async push/pull). */
  syncMsTotal = 0;
  private pushed?: { deltas: DenseTensor[]; params: DenseTensor[]; flat: Float32Array; delta: Float32Array };

  constructor(
    private readonly tf: Tf,
    readonly mode: SyncMode,
    private readonly bridge: GradientBridge,
    private readonly sync: GradientSync,
    /** Every model weight (trainable or not), for local SGD's averages and the async pulls. */
    private readonly modelVariables: () => ReadonlyArray<{ name: string; variable: tfjs.Variable }>,
    /** When the job records a timeline: its `step` lane gets `average` (local SGD) and `push-pull` (async) spans. */
    private readonly trace?: { timeline: Timeline; lane: TimelineLane },
  ) {}

  private traced<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return traceIf(this.trace, name, fn);
  }

  get atSync(): boolean {
    return this.pending === 0;
  }

  /**
   * A `fit` starts: totals from zero, and micro-batches a failed `fit` accumulated are dropped (local SGD's
   * pending steps stay: the next average reconciles the ranks).
   */
  beginFit(): void {
    this.syncMsTotal = 0;
    if (this.mode.kind === 'accumulate' && this.pending > 0) {
      this.bridge.dropAccumulated();
      this.pending = 0;
    }
  }

  /** One batch of `rows` rows; returns the local loss and whether an optimizer step was taken. */
  async step(lossFn: () => tfjs.Scalar, optimizer: tfjs.Optimizer, rows: number): Promise<{ loss: number; stepped: boolean }> {
    const m = this.mode;
    switch (m.kind) {
      case 'every-step': {
        const loss = await this.bridge.step(lossFn, optimizer);
        this.syncMsTotal += this.bridge.stats.syncMs;
        return { loss, stepped: true };
      }
      case 'accumulate': {
        const loss = this.bridge.accumulate(lossFn, rows);
        this.pending += 1;
        if (this.pending < m.k) return { loss, stepped: false };
        await this.applyAccumulated(optimizer);
        return { loss, stepped: true };
      }
      case 'local-sgd': {
        const loss = this.bridge.stepLocal(lossFn, optimizer, this.sync.rank);
        this.pending += 1;
        if (this.pending >= m.k) await this.traced('average', () => this.average(optimizer));
        return { loss, stepped: true };
      }
      case 'async-ps': {
        const loss = await this.stepAsync(lossFn, optimizer, m.ps);
        return { loss, stepped: true };
      }
    }
  }

  /** End of an epoch (collective): apply a pending accumulation, average pending local steps, or (async) agree on the servers' weights. Returns whether an optimizer step was taken. */
  async flush(optimizer: tfjs.Optimizer): Promise<boolean> {
    const m = this.mode;
    if (m.kind === 'accumulate' && this.pending > 0) {
      await this.applyAccumulated(optimizer);
      return true;
    }
    if (m.kind === 'local-sgd' && this.pending > 0) await this.traced('average', () => this.average(optimizer));
    if (m.kind === 'async-ps' && this.pushed) {
      // Every rank's pushes are acknowledged before the barrier, so the pull after it reads the same weights on every rank.
      const t0 = performance.now();
      await m.ps.barrier();
      await m.ps.kv.pull(this.pushed.params.map((p) => `w:${p.name}`), this.pushed.params.map((p) => p.data));
      this.assignFlat(this.pushed.flat);
      this.syncMsTotal += performance.now() - t0;
    }
    return false;
  }

  private async applyAccumulated(optimizer: tfjs.Optimizer): Promise<void> {
    await this.bridge.applyAccumulated(optimizer);
    this.syncMsTotal += this.bridge.stats.syncMs;
    this.pending = 0;
  }

  /**
   * Local SGD's sync: the mean over the ranks of every model weight and every float variable of the optimizer's
   * state, assigned in place (not through `setWeights`, which recomputes Adam's beta powers in other bits).
   */
  private async average(optimizer: tfjs.Optimizer): Promise<void> {
    const tf = this.tf;
    const t0 = performance.now();
    const named = await optimizer.getWeights();
    const state = named.filter((n) => n.tensor.dtype === 'float32' && typeof (n.tensor as tfjs.Variable).assign === 'function');
    const vars = [...this.modelVariables().map((v) => v.variable), ...state.map((n) => n.tensor as tfjs.Variable)];
    const tensors: DenseTensor[] = vars.map((v, i) => ({ name: `a${i}`, shape: v.shape, data: Float32Array.from(v.dataSync() as Float32Array) }));
    for (const n of named) if (!state.includes(n)) n.tensor.dispose(); // `iterations`: a fresh scalar, equal on every rank
    await this.sync.allreduceMean(tensors);
    vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(tensors[i]!.data, v.shape, 'float32'))));
    this.pending = 0;
    const ms = performance.now() - t0;
    this.syncMsTotal += ms;
    this.bridge.stats.syncMs = ms;
  }

  /**
   * Async ps step: apply this rank's gradient with the local optimizer, push the change of every weight divided
   * by the worker count (the servers add it on arrival), pull the servers' weights. With staleness 0 and SGD
   * that is the sync step (the mean of the ranks' updates) in another summation order; otherwise each weight
   * read may miss the last `staleness` updates of the other ranks.
   */
  private async stepAsync(lossFn: () => tfjs.Scalar, optimizer: tfjs.Optimizer, ps: PsSync): Promise<number> {
    const vars = this.modelVariables();
    if (!this.pushed) {
      const sizes = vars.map((v) => v.variable.size);
      const total = sizes.reduce((a, b) => a + b, 0);
      const flat = new Float32Array(total);
      const delta = new Float32Array(total);
      const params: DenseTensor[] = [];
      const deltas: DenseTensor[] = [];
      let off = 0;
      vars.forEach((v, i) => {
        params.push({ name: v.name, shape: v.variable.shape, data: flat.subarray(off, off + sizes[i]!) });
        deltas.push({ name: v.name, shape: v.variable.shape, data: delta.subarray(off, off + sizes[i]!) });
        off += sizes[i]!;
      });
      this.pushed = { deltas, params, flat, delta };
      this.readFlat(flat);
      // The servers own the weights from here: rank 0's values (every rank holds them after the broadcast).
      await ps.initWeights(params, { type: 'add', lr: 1 });
    }
    const { flat, delta, deltas, params } = this.pushed;
    const loss = this.bridge.stepLocal(lossFn, optimizer, this.sync.rank);
    const t0 = performance.now();
    this.readFlat(delta);
    const inv = 1 / this.sync.size;
    for (let i = 0; i < delta.length; i++) delta[i] = (delta[i]! - flat[i]!) * inv;
    await this.traced('push-pull', () => ps.pushGradsPullWeights(deltas, params));
    this.assignFlat(flat);
    const ms = performance.now() - t0;
    this.syncMsTotal += ms;
    this.bridge.stats.syncMs = ms;
    return loss;
  }

  private readFlat(into: Float32Array): void {
    let off = 0;
    for (const v of this.modelVariables()) {
      const d = v.variable.dataSync() as Float32Array;
      into.set(d, off);
      off += d.length;
    }
  }

  private assignFlat(from: Float32Array): void {
    const tf = this.tf;
    let off = 0;
    for (const v of this.modelVariables()) {
      const n = v.variable.size;
      const part = from.subarray(off, off + n);
      tf.tidy(() => v.variable.assign(tf.tensor(part, v.variable.shape, 'float32')));
      off += n;
    }
  }
}

/** `fit` advises when synchronisation takes more than this share of the training steps' time. */
export const ADVICE_SYNC_SHARE = 0.25;

/**
 * The line `fit` logs on rank 0 when sync took more than `ADVICE_SYNC_SHARE` of the steps' time (wall time of
 * the steps and epoch-end syncs, `stepMsTotal`); undefined otherwise. Names the options not in use yet.
 */
export function adviceLine(s: SyncSchedule, stepMsTotal: number, o: SyncScheduleOptions): string | undefined {
  const share = stepMsTotal > 0 ? s.syncMsTotal / stepMsTotal : 0;
  if (!(share > ADVICE_SYNC_SHARE)) return undefined;
  const m = s.mode;
  // Ordered by what paid in the train bench's mlp64 rows (bench/results/train.json, wrappers/README.md).
  const tips: string[] = [];
  if (m.kind === 'every-step') tips.push('accumulateSteps: 4 (one sync per 4 batches)');
  if (m.kind === 'accumulate') tips.push(`accumulateSteps above ${o.accumulateSteps}`);
  if (m.kind !== 'async-ps') tips.push('shoal run --backend ps --ps-mode async --staleness 2 (workers stop waiting for each other)');
  if (m.kind === 'every-step') tips.push('syncEvery: 4 (local SGD: average the weights every 4 steps)');
  if (m.kind === 'local-sgd') tips.push(`syncEvery above ${o.syncEvery}`);
  tips.push('a larger batchSize');
  return `sync took ${Math.round(share * 100)}% of the training time (${(s.syncMsTotal / 1000).toFixed(1)} of ${(stepMsTotal / 1000).toFixed(1)} s); to cut it try ${tips.join(', ')}. Trainer option advice: false hides this line.`;
}
