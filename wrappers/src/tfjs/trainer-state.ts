import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import { loadCheckpoint, saveCheckpoint, type SavedArray } from './checkpoint.js';

type Tf = typeof tfjs;

/** Where a run stands: what a checkpoint records beside weights and optimizer state. */
export interface RunPosition {
  /** Epoch index to (re)start in. */
  epoch: number;
  /** Steps already done in that epoch (0 at an epoch boundary). */
  epochStep: number;
  /** Optimizer steps taken over the whole run. */
  globalStep: number;
  /** The epoch's running sums (loss and metrics times rows, rows) at `epochStep`. */
  sums?: number[];
  learningRate?: number;
}

/** Private running scalars of tfjs optimizers that checkpoints carry (see `optimizerScalars`). */
const OPTIMIZER_SCALARS = ['accBeta1', 'accBeta2'] as const;

/**
 * Internal optimizer scalars `getWeights()` leaves out: Adam/Adamax keep beta1^t and beta2^t as running
 * products, and `setWeights` recomputes them with `pow`, which differs in the last bits. Saving them makes a
 * resumed run bit-identical to an uninterrupted one.
 */
export function optimizerScalars(opt: tfjs.Optimizer): Record<string, number> {
  const out: Record<string, number> = {};
  const o = opt as unknown as Record<string, unknown>;
  for (const k of OPTIMIZER_SCALARS) {
    const v = o[k] as tfjs.Variable | undefined;
    if (v && typeof v === 'object' && typeof v.dataSync === 'function' && v.size === 1) out[k] = v.dataSync()[0]!;
  }
  return out;
}

export function restoreOptimizerScalars(tf: Tf, opt: tfjs.Optimizer, saved: Record<string, number> | undefined): void {
  if (!saved) return;
  const o = opt as unknown as Record<string, unknown>;
  for (const k of OPTIMIZER_SCALARS) {
    const v = o[k] as tfjs.Variable | undefined;
    if (saved[k] !== undefined && v && typeof v.assign === 'function') tf.tidy(() => v.assign(tf.scalar(saved[k]!)));
  }
}

/** Write model weights, optimizer state and the run position to a checkpoint under `dir` (see `saveCheckpoint`). */
export async function saveTrainingState(dir: string, model: tfjs.LayersModel, opt: tfjs.Optimizer, pos: RunPosition, worldSize: number, keep: number): Promise<string> {
  const weights: SavedArray[] = model.weights.map((w) => ({ name: w.originalName, shape: w.shape.map((d) => d ?? 0), data: Float32Array.from(w.read().dataSync()) }));
  const optimizer: SavedArray[] = [];
  for (const nt of await opt.getWeights()) optimizer.push({ name: nt.name, shape: nt.tensor.shape, data: Float32Array.from(nt.tensor.dataSync()) });
  const extra = { worldSize, optimizerScalars: optimizerScalars(opt), epochStep: pos.epochStep, sums: pos.sums ?? [], learningRate: pos.learningRate };
  return saveCheckpoint(dir, { epoch: pos.epoch, step: pos.globalStep, weights, optimizer, extra }, keep);
}

/** Load the newest checkpoint in `dir` into `model` and `opt`; its position, or null when there is none. */
export async function loadTrainingState(tf: Tf, dir: string, model: tfjs.LayersModel, opt: tfjs.Optimizer): Promise<RunPosition | null> {
  const state = await loadCheckpoint(dir);
  if (!state) return null;
  const ws = model.weights;
  if (state.weights.length !== ws.length) throw Errors.data(dir, `checkpoint has ${state.weights.length} weights, the model has ${ws.length}`);
  ws.forEach((w, i) => {
    const s = state.weights[i]!;
    const shape = w.shape.map((d) => d ?? 0);
    if (s.shape.join(',') !== shape.join(',')) throw Errors.data(dir, `weight ${i} (${w.originalName}) has shape [${s.shape}] in the checkpoint, [${shape}] in the model`);
    tf.tidy(() => (w.read() as tfjs.Variable).assign(tf.tensor(s.data, shape, w.dtype)));
  });
  const named = state.optimizer.map((a) => ({ name: a.name, tensor: tf.tensor(a.data, a.shape) }));
  await opt.setWeights(named);
  for (const n of named) n.tensor.dispose();
  const extra = (state.extra ?? {}) as { optimizerScalars?: Record<string, number>; epochStep?: number; sums?: number[]; learningRate?: number };
  restoreOptimizerScalars(tf, opt, extra.optimizerScalars);
  return {
    epoch: state.epoch,
    epochStep: extra.epochStep ?? 0,
    globalStep: state.step,
    ...(extra.sums && extra.sums.length ? { sums: extra.sums } : {}),
    ...(typeof extra.learningRate === 'number' ? { learningRate: extra.learningRate } : {}),
  };
}
