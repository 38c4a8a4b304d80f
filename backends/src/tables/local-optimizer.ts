import { Errors, loadKernels, type FloatArray, type ReduceKernels } from '@shoal/core';
import { adagradUpdater, adamUpdater, sgdUpdater, type ServerUpdater, type UpdaterSpec } from '../ps/updaters.js';

/** The built-in optimizers (`UpdaterSpec` without `module`), run on the worker instead of a server. */
export type OptimizerSpec = Exclude<UpdaterSpec, { type: 'module' | 'assign' | 'add' }>;

/** One parameter's optimizer state (moments, per-row counts) and its update count, as a checkpoint holds it. */
export interface ParameterState {
  state: Record<string, FloatArray>;
  step: number;
}

/**
 * The parameter servers' optimizers (`adamUpdater`, `adagradUpdater`, `sgdUpdater`) applied in this process, one
 * state per named parameter: the same rule and native kernels a server runs on a key, so a parameter stepped
 * here and one stepped on the servers follow the same path. Row-sparse steps are lazy (only the given rows and
 * their moments move); Adam with `rowStep` corrects each row's bias by its own update count.
 *
 *   const opt = new LocalOptimizer({ type: 'adam', lr: 0.01, rowStep: true });
 *   opt.step('dense1/kernel', w, g);                        // dense: w.length gradient values
 *   opt.step('user_embedding', table, rows, ids, rowSize);  // ids sorted and unique, rows packed in ids order
 *
 * `grad` is read only. Not thread-safe (one caller at a time, as everything on the event loop).
 */
export class LocalOptimizer {
  private readonly updater: ServerUpdater;
  private readonly kernels: ReduceKernels;
  private readonly state = new Map<string, { state: Record<string, FloatArray>; step: number }>();

  constructor(readonly spec: OptimizerSpec, kernels: ReduceKernels = loadKernels()) {
    switch (spec.type) {
      case 'adam': this.updater = adamUpdater(spec); break;
      case 'adagrad': this.updater = adagradUpdater(spec); break;
      case 'sgd': this.updater = sgdUpdater(spec); break;
      default: throw Errors.invalidArg('optimizer.type', `must be adam|adagrad|sgd, got ${JSON.stringify((spec as { type: unknown }).type)}`);
    }
    this.kernels = kernels;
  }

  /**
   * One update of parameter `name` (`weights`, changed in place) with `grad`: dense when `rowIds` is absent
   * (`grad.length === weights.length`), else row-sparse (`rowIds.length * rowSize` values).
   */
  step(name: string, weights: Float32Array, grad: Float32Array, rowIds?: Int32Array, rowSize?: number): void {
    if (rowIds === undefined ? grad.length !== weights.length : !(rowSize! > 0 && grad.length === rowIds.length * rowSize! && weights.length % rowSize! === 0)) {
      throw Errors.invalidArg(`gradient of ${name}`, rowIds === undefined ? `has ${grad.length} values, the parameter ${weights.length}` : `must have ids.length * rowSize = ${rowIds.length * (rowSize ?? 0)} values, got ${grad.length}`);
    }
    let s = this.state.get(name);
    if (s === undefined) this.state.set(name, (s = { state: {}, step: 0 }));
    // The updaters may use `grad` as scratch unless they declare readOnlyGrad: copy it then.
    const g = this.updater.readOnlyGrad ? grad : Float32Array.from(grad);
    this.updater({ key: name, weights, grad: g, ...(rowIds ? { rowIds, rowSize: rowSize! } : {}), state: s.state, step: s.step, kernels: this.kernels });
    s.step++;
  }

  /** Bytes of optimizer state held for `name` (all parameters without it). */
  stateBytes(name?: string): number {
    let b = 0;
    for (const [k, s] of this.state) if (name === undefined || k === name) for (const a of Object.values(s.state)) b += a.byteLength;
    return b;
  }

  /** A copy of every parameter's state (a checkpoint; `importState` puts it back, so the next steps are exact). */
  exportState(): Record<string, ParameterState> {
    const out: Record<string, ParameterState> = {};
    for (const [k, s] of this.state) out[k] = { step: s.step, state: Object.fromEntries(Object.entries(s.state).map(([n, a]) => [n, a.slice()])) };
    return out;
  }

  /** Replace every parameter's state by a copy of `saved` (from `exportState`). */
  importState(saved: Readonly<Record<string, ParameterState>>): void {
    this.state.clear();
    for (const [k, s] of Object.entries(saved)) {
      if (!(Number.isInteger(s.step) && s.step >= 0)) throw Errors.invalidArg(`optimizer state of ${k}`, `needs a step count >= 0, got ${s.step}`);
      this.state.set(k, { step: s.step, state: Object.fromEntries(Object.entries(s.state).map(([n, a]) => [n, a.slice()])) });
    }
  }

  /** Forget the state of `name` (all parameters without it): the next step starts from zero moments. */
  reset(name?: string): void {
    if (name === undefined) this.state.clear();
    else this.state.delete(name);
  }
}
