import { join } from 'node:path';
import { EventFileWriter, SystemSampler } from '@shoal/wrappers';
import type { EpochStats } from './train.js';

/**
 * One training run's TensorBoard logs (`--logdir`), written by rank 0 with the wrappers' event-file writer in the
 * layout and tag names of the Trainer's `tensorBoard()` callback: `<dir>/train` (`batch_loss` every 10 steps at
 * the global step; per epoch `epoch_loss`, `epoch_samples_per_sec`, `epoch_learning_rate`, and the step's
 * compute / sync / apply time), `<dir>/val` (`epoch_hr10`: HR@10 on the evaluation baskets, when evaluated) and
 * `<dir>/rank-0` (`system/*`: RSS, CPU, event-loop delay every 10 s). Epoch scalars use step = epoch (1-based).
 * Writing only buffers; the files are appended off the training loop.
 */
export class RunLog {
  private readonly train: EventFileWriter;
  private readonly val: EventFileWriter;
  private readonly system: EventFileWriter;
  private readonly sampler: SystemSampler;

  constructor(readonly dir: string, private readonly lr: number) {
    this.train = new EventFileWriter(join(dir, 'train'));
    this.val = new EventFileWriter(join(dir, 'val'));
    this.system = new EventFileWriter(join(dir, 'rank-0'));
    this.sampler = new SystemSampler((s) => this.system.scalars(Math.round(s.elapsedSeconds), [
      ['system/rss_mib', s.rssMiB], ['system/cpu_percent', s.cpuPercent], ['system/event_loop_delay_p99_ms', s.eventLoopDelayP99Ms],
    ]), 10_000);
    this.sampler.start();
  }

  /** After global step `step` (1-based) with the epoch's running mean loss. */
  onStep(step: number, loss: number): void {
    if (step % 10 === 0) this.train.scalars(step, [['batch_loss', loss]]);
  }

  onEpoch(e: EpochStats): void {
    this.train.scalars(e.epoch, [
      ['epoch_loss', e.loss], ['epoch_samples_per_sec', e.samplesPerSec], ['epoch_learning_rate', this.lr],
      ['epoch_compute_ms', (e.computeSeconds * 1000) / e.steps], ['epoch_sync_ms', (e.syncSeconds * 1000) / e.steps], ['epoch_apply_ms', (e.applySeconds * 1000) / e.steps],
    ]);
    if (e.evalHr !== null) this.val.scalars(e.epoch, [['epoch_hr10', e.evalHr]]);
  }

  /** Write everything and close the files (idempotent). */
  async close(): Promise<void> {
    this.sampler.sample();
    this.sampler.stop();
    await Promise.all([this.train.close(), this.val.close(), this.system.close()]);
  }
}
