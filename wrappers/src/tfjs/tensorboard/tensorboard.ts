import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Errors } from '@shoal/core';
import type { Callbacks, CallbackTrainer, Logs } from '../callbacks.js';
import { EventFileWriter } from '@shoal/core/telemetry';
import { SystemSampler, type SystemSample } from './system-metrics.js';

export interface TensorBoardOptions {
  /** `epoch` (default): scalars once per epoch; `batch`: also every step (rank-averaged, one small allreduce per step). */
  updateFreq?: 'batch' | 'epoch';
  /** One run per rank (`rank-<r>`): step, compute and sync time, bytes sent, system metrics (default true). */
  perRank?: boolean;
  /** Sample RSS, CPU and event-loop delay into each rank's run every this many ms (default 10000; 0 = off). */
  systemIntervalMs?: number;
  /** Write buffered events at least this often (default 2000 ms). */
  flushMs?: number;
}
const KEYS = ['updateFreq', 'perRank', 'systemIntervalMs', 'flushMs'];

/**
 * TensorBoard logging for the Trainer, named and shaped like tfjs-node's `tf.node.tensorBoard(logdir, args)`:
 * rank 0 writes the rank-averaged logs to `<logdir>/train` (`epoch_loss`, `epoch_<metric>`,
 * `epoch_learning_rate`, `epoch_samples_per_sec`; `batch_*` with `updateFreq: 'batch'`) and `val_*` to
 * `<logdir>/val` (`epoch_loss`, ...). With `perRank`, every rank writes `<logdir>/rank-<r>`: step time, compute,
 * sync and apply time, bytes sent by its engine, and system metrics (`system/*`, step = seconds since start).
 * Epoch scalars use step = epoch number (1-based), batch scalars the global step, so a resumed run continues
 * its curves. Events are buffered and written off the training loop (see `EventFileWriter`).
 */
export class TensorBoardCallback implements Callbacks {
  readonly stopsOnBatch = false;
  readonly updateFreq: 'batch' | 'epoch';
  /** Defined only with `updateFreq: 'batch'` (its presence asks the trainer for rank-averaged batch logs). */
  onGlobalBatchEnd?: (step: number, logs: Logs) => void;
  private trainer?: CallbackTrainer;
  private writers = new Map<string, EventFileWriter>();
  private sampler?: SystemSampler;
  private batchT0 = 0;
  private acc = { n: 0, stepMs: 0, computeMs: 0, syncMs: 0, applyMs: 0 };
  private readonly perRank: boolean;
  private readonly systemIntervalMs: number;

  constructor(
    readonly logdir: string,
    private readonly options: TensorBoardOptions = {},
  ) {
    if (typeof logdir !== 'string' || logdir === '') throw Errors.invalidArg('tensorBoard logdir', `must be a folder path, got ${JSON.stringify(logdir)}`);
    for (const k of Object.keys(options)) {
      if (k === 'histogramFreq') throw Errors.invalidArg('tensorBoard option histogramFreq', 'is not supported by shoal (scalars only)');
      if (!KEYS.includes(k)) throw Errors.invalidArg(`tensorBoard option ${k}`, `is not supported (known: ${KEYS.join(', ')})`);
    }
    const freq = options.updateFreq ?? 'epoch';
    if (freq !== 'batch' && freq !== 'epoch') throw Errors.invalidArg('tensorBoard updateFreq', `must be 'batch' or 'epoch', got ${JSON.stringify(freq)}`);
    this.updateFreq = freq;
    this.perRank = options.perRank ?? true;
    this.systemIntervalMs = options.systemIntervalMs ?? 10_000;
    if (!(this.systemIntervalMs >= 0)) throw Errors.invalidArg('tensorBoard systemIntervalMs', `must be >= 0, got ${this.systemIntervalMs}`);
    if (freq === 'batch') this.onGlobalBatchEnd = (_step, logs) => this.writeBatch(logs);
  }

  private writer(run: string): EventFileWriter {
    let w = this.writers.get(run);
    if (!w) {
      w = new EventFileWriter(join(this.logdir, run), this.options.flushMs === undefined ? {} : { flushMs: this.options.flushMs });
      this.writers.set(run, w);
    }
    return w;
  }

  private get rankRun(): string {
    return `rank-${this.trainer!.rank}`;
  }

  setTrainer(trainer: CallbackTrainer): void {
    this.trainer = trainer;
  }

  onTrainBegin(): void {
    if (!this.trainer) throw Errors.state('tensorBoard callback used without a Trainer');
    // Fail at the start, naming the folder, rather than when the first buffered events are written.
    try {
      mkdirSync(this.logdir, { recursive: true });
    } catch (e) {
      throw Errors.config('tensorBoard logdir', `${this.logdir} cannot be created: ${(e as Error).message}`);
    }
    if (this.perRank && this.systemIntervalMs > 0 && !this.sampler) {
      this.sampler = new SystemSampler((s) => this.writeSystem(s), this.systemIntervalMs);
      this.sampler.start();
    }
  }

  onBatchBegin(): void {
    this.batchT0 = performance.now();
  }

  onBatchEnd(): void {
    if (!this.perRank) return;
    const t = this.trainer!;
    const stepMs = performance.now() - this.batchT0;
    const st = t.stepStats;
    if (this.updateFreq === 'batch') {
      const v: Array<[string, number]> = [['batch_step_time_ms', stepMs], ['batch_bytes_sent', t.syncStats().bytesSent]];
      if (st) v.push(['batch_compute_ms', st.computeMs], ['batch_sync_ms', st.syncMs], ['batch_apply_ms', st.applyMs]);
      this.writer(this.rankRun).scalars(t.globalStep, v);
    }
    const a = this.acc;
    a.n += 1;
    a.stepMs += stepMs;
    if (st) {
      a.computeMs += st.computeMs;
      a.syncMs += st.syncMs;
      a.applyMs += st.applyMs;
    }
  }

  private writeBatch(logs: Logs): void {
    const t = this.trainer!;
    if (t.rank !== 0) return;
    this.writer('train').scalars(t.globalStep, [...Object.entries(logs).map(([k, v]) => [`batch_${k}`, v] as [string, number]), ['batch_learning_rate', t.learningRate]]);
  }

  onEpochEnd(epoch: number, logs: Logs): void {
    const t = this.trainer!;
    const step = epoch + 1;
    if (t.rank === 0) {
      const train: Array<[string, number]> = [];
      const val: Array<[string, number]> = [];
      for (const [k, v] of Object.entries(logs)) (k.startsWith('val_') ? val : train).push([`epoch_${k.startsWith('val_') ? k.slice(4) : k}`, v]);
      train.push(['epoch_learning_rate', t.learningRate]);
      if (t.lastEpoch) train.push(['epoch_samples_per_sec', t.lastEpoch.samplesPerSec]);
      this.writer('train').scalars(step, train);
      if (val.length) this.writer('val').scalars(step, val);
    }
    if (this.perRank) {
      const a = this.acc;
      if (a.n > 0) {
        this.writer(this.rankRun).scalars(step, [
          ['epoch_step_time_ms', a.stepMs / a.n],
          ['epoch_compute_ms', a.computeMs / a.n],
          ['epoch_sync_ms', a.syncMs / a.n],
          ['epoch_apply_ms', a.applyMs / a.n],
          ['epoch_bytes_sent', t.syncStats().bytesSent],
        ]);
      }
      this.acc = { n: 0, stepMs: 0, computeMs: 0, syncMs: 0, applyMs: 0 };
    }
  }

  private writeSystem(s: SystemSample): void {
    this.writer(this.rankRun).scalars(Math.round(s.elapsedSeconds), [
      ['system/rss_mib', s.rssMiB],
      ['system/heap_used_mib', s.heapUsedMiB],
      ['system/cpu_percent', s.cpuPercent],
      ['system/event_loop_delay_p50_ms', s.eventLoopDelayP50Ms],
      ['system/event_loop_delay_p99_ms', s.eventLoopDelayP99Ms],
      ['system/event_loop_delay_max_ms', s.eventLoopDelayMaxMs],
    ]);
  }

  async onTrainEnd(): Promise<void> {
    await this.close();
  }

  /** Take a last system sample, write everything buffered and close the files. Idempotent; the trainer calls it on failure too. */
  async close(): Promise<void> {
    if (this.sampler) {
      this.sampler.sample();
      this.sampler.stop();
      this.sampler = undefined;
    }
    const ws = [...this.writers.values()];
    this.writers.clear();
    await Promise.all(ws.map((w) => w.close()));
  }
}

/** tfjs-node's `tf.node.tensorBoard(logdir, { updateFreq })` for the shoal Trainer (see `TensorBoardCallback`). */
export function tensorBoard(logdir = './logs', options: TensorBoardOptions = {}): TensorBoardCallback {
  return new TensorBoardCallback(logdir, options);
}
