import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Errors, type FloatArray, type ModuleRef, type ReduceKernels } from '@shoal/core';

/**
 * The server's update rule (ps-lite's `ReqHandle`, MXNet's `updater`): a replaceable callback that folds the
 * merged gradient of a round (sync) or one worker's gradient (async) into the stored weights.
 *
 * `weights` is the server's whole slice of the key; `grad` is either the same length (dense) or, for a row-sparse
 * update, `rowIds.length * rowSize` packed rows where row i updates weights row `rowIds[i]` (local row numbers,
 * sorted, unique). `state` is per-key optimizer state the updater may fill (it is checkpointed with the key).
 * Updaters run on the server's thread, one at a time per key.
 */
export interface UpdateContext {
  key: string;
  weights: FloatArray;
  /**
   * Scratch the updater may overwrite: the server's, reused for the next update, so the updater must not keep a
   * reference to it.
   */
  grad: FloatArray;
  /** Local row numbers for a row-sparse update; undefined for a dense one. */
  rowIds?: Int32Array;
  rowSize?: number;
  /** Optimizer state of this key, created on first use. */
  state: Record<string, FloatArray>;
  /** Updates applied to this key before this one. */
  step: number;
  /** Native (or JS) element-wise kernels: `reduce('sum', dst, src)`, `scale(a, f)`. */
  kernels: ReduceKernels;
}
export type ServerUpdater = ((ctx: UpdateContext) => void) & {
  /**
   * Set on element-wise rules (each weight's update reads only its own gradient, weight and state entries): the
   * names of the per-key state arrays it uses (created full-size by the server before the first update). The
   * server then runs a dense update in cache-sized chunks, each call seeing `weights`, `grad` and `state` as
   * matching views of one chunk, and sums the workers' gradients chunk by chunk in the same pass.
   */
  elementwiseState?: readonly string[];
  /**
   * Set on linear rules: the update is `w = sum of gradients` (`assign`) or `w += factor * sum` computed as
   * `kernels.sumUpdate` does (scale the sum, then add). The server then runs the sum, the update and the copies
   * to waiting workers as one native pass (`ReduceKernels.sumUpdate`), with the same result bit for bit.
   */
  linear?: { axpy: false } | { axpy: true; factor: number };
  /** Set on rules that only read `grad` (the server may then pass it arrays it still needs). */
  readOnlyGrad?: boolean;
};

/** Mark `fn` element-wise with per-key state arrays `state` (see `ServerUpdater.elementwiseState`). */
export function elementwise(fn: (ctx: UpdateContext) => void, state: readonly string[] = []): ServerUpdater {
  return Object.assign(fn, { elementwiseState: state });
}

/** Serialisable choice of updater (servers run in other processes). */
export type UpdaterSpec =
  | { type: 'assign' }
  | { type: 'add'; lr?: number }
  | { type: 'sgd'; lr: number; momentum?: number; wd?: number; rescale?: number }
  | { type: 'adam'; lr: number; beta1?: number; beta2?: number; eps?: number; wd?: number; rescale?: number; rowStep?: boolean }
  | { type: 'adagrad'; lr: number; eps?: number; wd?: number; rescale?: number }
  /** `import(module)[export](...args)` must return a ServerUpdater. */
  | { type: 'module'; ref: ModuleRef };

/**
 * Call `fn(wOff, gOff, len)` for each contiguous run the update touches: the whole slice for a dense update,
 * each row for a row-sparse one.
 */
export function forEachRun(ctx: UpdateContext, fn: (wOff: number, gOff: number, len: number) => void): void {
  if (!ctx.rowIds) return fn(0, 0, ctx.weights.length);
  const rs = ctx.rowSize!;
  for (let i = 0; i < ctx.rowIds.length; i++) fn(ctx.rowIds[i]! * rs, i * rs, rs);
}

function stateOf(ctx: UpdateContext, name: string): FloatArray {
  let s = ctx.state[name];
  if (!s) {
    s = ctx.weights instanceof Float64Array ? new Float64Array(ctx.weights.length) : new Float32Array(ctx.weights.length);
    ctx.state[name] = s;
  }
  return s;
}

/** `w = sum of pushes` (MXNet with no updater): the stored value is the merged gradient. */
export const assignUpdater: ServerUpdater = Object.assign(
  elementwise((ctx) => {
    const { weights: w, grad: g } = ctx;
    forEachRun(ctx, (wo, go, n) => w.set(g.subarray(go, go + n), wo));
  }),
  { linear: { axpy: false } as const, readOnlyGrad: true },
);

/** `w += lr * g` (MXNet's dist_sync test updater). Scales `grad` in place, then adds it with the kernels. */
export function addUpdater(lr = 1): ServerUpdater {
  const u = elementwise((ctx) => {
    const { weights: w, grad: g, kernels: k } = ctx;
    if (lr !== 1) k.scale(g, lr);
    forEachRun(ctx, (wo, go, n) => k.reduce('sum', w.subarray(wo, wo + n), g.subarray(go, go + n)));
  });
  // scaling by 1 is exact, so sumUpdate's unconditional scale gives the same result
  return Object.assign(u, { linear: { axpy: true, factor: lr } as const });
}

/** SGD with momentum: `m = mu*m - lr*(rescale*g + wd*w); w += m` (plain SGD when momentum is 0). */
export function sgdUpdater(o: { lr: number; momentum?: number; wd?: number; rescale?: number }): ServerUpdater {
  const mu = o.momentum ?? 0;
  const wd = o.wd ?? 0;
  const rs = o.rescale ?? 1;
  const u = elementwise((ctx) => {
    const { weights: w, grad: g } = ctx;
    if (mu === 0 && wd === 0) {
      // plain SGD: w += (-lr * rescale) * g with the kernels (g is scratch)
      ctx.kernels.scale(g, -o.lr * rs);
      forEachRun(ctx, (wo, go, n) => ctx.kernels.reduce('sum', w.subarray(wo, wo + n), g.subarray(go, go + n)));
      return;
    }
    ctx.kernels.optimize({ kind: 'sgd', w, g, momentum: mu === 0 ? null : stateOf(ctx, 'momentum'), rows: ctx.rowIds, rowSize: ctx.rowSize, lr: o.lr, mu, wd, rescale: rs });
  }, mu === 0 ? [] : ['momentum']);
  return mu === 0 && wd === 0 ? Object.assign(u, { linear: { axpy: true, factor: -o.lr * rs } as const }) : Object.assign(u, { readOnlyGrad: true });
}

/**
 * Adam (bias-corrected); for row-sparse keys only the touched rows' moments move (lazy Adam). The bias
 * correction counts the key's updates (MXNet's lazy_update), or with `rowStep` each row's own updates (state
 * `rowStep`, one count per row): a row first touched late then takes a first step of about `lr`, as with a
 * per-row optimizer on the worker.
 */
export function adamUpdater(o: { lr: number; beta1?: number; beta2?: number; eps?: number; wd?: number; rescale?: number; rowStep?: boolean }): ServerUpdater {
  const b1 = o.beta1 ?? 0.9;
  const b2 = o.beta2 ?? 0.999;
  const eps = o.eps ?? 1e-8;
  const wd = o.wd ?? 0;
  const rs = o.rescale ?? 1;
  const lrAt: number[] = [];
  const u = elementwise((ctx) => {
    const { weights: w, grad: g } = ctx;
    const t = ctx.step + 1;
    const lrKey = (o.lr * Math.sqrt(1 - b2 ** t)) / (1 - b1 ** t);
    let lrRows: Float64Array | undefined;
    if (o.rowStep && ctx.rowIds) {
      let rowT = ctx.state.rowStep ?? null;
      if (!rowT) rowT = ctx.state.rowStep = new Float64Array(ctx.weights.length / ctx.rowSize!);
      lrRows = new Float64Array(ctx.rowIds.length);
      for (let i = 0; i < ctx.rowIds.length; i++) {
        const tr = ++rowT[ctx.rowIds[i]!]!;
        // the step size of a row's tr-th update, computed once per tr (the same expression: the same value)
        let lrT = lrAt[tr];
        if (lrT === undefined) lrT = lrAt[tr] = (o.lr * Math.sqrt(1 - b2 ** tr)) / (1 - b1 ** tr);
        lrRows[i] = lrT;
      }
    }
    ctx.kernels.optimize({ kind: 'adam', w, g, m: stateOf(ctx, 'm'), v: stateOf(ctx, 'v'), rows: ctx.rowIds, rowSize: ctx.rowSize, lrRows, lr: lrKey, beta1: b1, beta2: b2, eps, wd, rescale: rs });
  }, ['m', 'v']);
  return Object.assign(u, { readOnlyGrad: true });
}

/** Adagrad: `h += g^2; w -= lr * g / (sqrt(h) + eps)`; the usual choice for sparse embedding rows. */
export function adagradUpdater(o: { lr: number; eps?: number; wd?: number; rescale?: number }): ServerUpdater {
  const eps = o.eps ?? 1e-7;
  const wd = o.wd ?? 0;
  const rs = o.rescale ?? 1;
  const u = elementwise((ctx) => {
    const { weights: w, grad: g } = ctx;
    ctx.kernels.optimize({ kind: 'adagrad', w, g, history: stateOf(ctx, 'history'), rows: ctx.rowIds, rowSize: ctx.rowSize, lr: o.lr, eps, wd, rescale: rs });
  }, ['history']);
  return Object.assign(u, { readOnlyGrad: true });
}

/** Build the updater a spec names. Throws RangeError on an unknown type. */
export async function createUpdater(spec: UpdaterSpec): Promise<ServerUpdater> {
  switch (spec.type) {
    case 'assign':
      return assignUpdater;
    case 'add':
      return addUpdater(spec.lr ?? 1);
    case 'sgd':
      return sgdUpdater(spec);
    case 'adam':
      return adamUpdater(spec);
    case 'adagrad':
      return adagradUpdater(spec);
    case 'module': {
      const mod = (await import(isAbsolute(spec.ref.module) ? pathToFileURL(spec.ref.module).href : spec.ref.module)) as Record<string, unknown>;
      const fac = mod[spec.ref.export];
      if (typeof fac !== 'function') throw Errors.config('updater', `${spec.ref.module}.${spec.ref.export} is not a function`);
      const f = await (fac as (...a: unknown[]) => unknown)(...(spec.ref.args ?? []));
      if (typeof f !== 'function') throw Errors.config('updater', `${spec.ref.module}.${spec.ref.export}() did not return a function`);
      return f as ServerUpdater;
    }
    default:
      throw Errors.invalidArg('updater.type', `must be assign|add|sgd|adam|adagrad|module, got ${JSON.stringify((spec as { type: unknown }).type)}`);
  }
}
