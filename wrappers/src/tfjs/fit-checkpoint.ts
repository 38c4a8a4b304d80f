import { Errors } from '@shoal/core';
import type { CheckpointOptions } from './fit-options.js';
import type { FitHost } from './fit-host.js';
import { loadTrainingState, saveTrainingState, type RunPosition } from './trainer-state.js';

/** Where the run stands now, as a checkpoint records it. */
export function runPosition(host: FitHost, epoch: number, epochStep: number, sums?: Float64Array): RunPosition {
  return { epoch, epochStep, globalStep: host.globalStep, learningRate: host.learningRate, ...(sums ? { sums: Array.from(sums) } : {}) };
}

/**
 * Load the newest checkpoint in `dir` (if any) into the host's model and optimizer and agree on the position with
 * every rank (a folder only some ranks see would desynchronise them). Collective.
 */
export async function resumeRun(host: FitHost, dir: string): Promise<RunPosition | null> {
  const pos = await loadTrainingState(host.tf, dir, host.model, host.optimizer);
  if (pos) {
    host.setGlobalStep(pos.globalStep);
    if (pos.learningRate !== undefined) host.learningRate = pos.learningRate;
    host.log(`resumed from ${dir} at epoch ${pos.epoch}${pos.epochStep ? `, step ${pos.epochStep} of it` : ''} (step ${pos.globalStep})`);
  }
  const mine = pos ? pos.globalStep + 1 : 0;
  const mean = (await host.sync.allreduceScalars(Float64Array.of(mine)))[0]!;
  if (mean !== mine) throw Errors.mismatch('resume step', `rank ${host.rank} found ${pos ? `step ${pos.globalStep}` : 'no checkpoint'} in ${dir}, the ranks disagree: is ${dir} visible to every rank?`, { rank: host.rank });
  return pos;
}

/**
 * When a `fit` writes its checkpoints (`FitOptions.checkpoint`): every `everySteps` optimizer steps or
 * `everySeconds` (at the next sync, mid-epoch), and at the end of every `everyEpochs`-th epoch, of the last one and
 * of a stopped run. Rank 0 writes; the other ranks hold the same state.
 */
export class FitCheckpoints {
  private lastSave = performance.now();
  private lastSaveStep: number;

  constructor(private readonly host: FitHost, private readonly ckpt: CheckpointOptions) {
    this.lastSaveStep = host.globalStep;
  }

  /** A step checkpoint falls due when the step count passes a multiple of everySteps; written at the next sync. */
  private stepsDue(): boolean {
    const every = this.ckpt.everySteps;
    return every !== undefined && Math.floor(this.host.globalStep / every) > Math.floor(this.lastSaveStep / every);
  }

  private secondsDue(): boolean {
    return this.ckpt.everySeconds !== undefined && performance.now() - this.lastSave >= this.ckpt.everySeconds * 1000;
  }

  /** After step `epochStep` of `steps` in `epoch` (the epoch's running `sums`): save if a step or time checkpoint is due. */
  async afterStep(epoch: number, epochStep: number, steps: number, sums: Float64Array): Promise<void> {
    if (this.host.rank !== 0 || epochStep >= steps || !this.host.schedule.atSync) return;
    if (!this.stepsDue() && !this.secondsDue()) return;
    await this.save(runPosition(this.host, epoch, epochStep, sums));
  }

  /** At the end of `epoch` (of `epochs`): save if due. An epoch-end save also stands in for a step or time checkpoint falling due at the epoch's last step. */
  async atEpochEnd(epoch: number, epochs: number, stopping: boolean): Promise<void> {
    if (this.host.rank !== 0) return;
    const secondsDue = this.secondsDue();
    if ((epoch + 1) % (this.ckpt.everyEpochs ?? 1) === 0 || epoch + 1 === epochs || stopping || this.stepsDue() || secondsDue) {
      await this.save(runPosition(this.host, epoch + 1, 0));
    }
  }

  private async save(pos: RunPosition): Promise<void> {
    const { host, ckpt } = this;
    await host.traced('checkpoint', () => saveTrainingState(ckpt.dir, host.model, host.optimizer, pos, host.size, ckpt.keep ?? 2));
    this.lastSave = performance.now();
    this.lastSaveStep = host.globalStep;
  }
}
