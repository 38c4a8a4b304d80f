import type * as tfjs from '@tensorflow/tfjs';
import type { DenseTensor, GradientSync, RowSparseTensor } from '@shoal/backends';
import { Errors, isShoalError, loadKernels, type ReduceKernels } from '@shoal/core';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';
import { settleAll } from '@shoal/core/util';

type Tf = typeof tfjs;

/** One trainable variable as the bridge sees it. */
export interface BridgeVariable {
  /** The tfjs variable (`layerVariable.read()` for layers models). */
  readonly variable: tfjs.Variable;
  /** Wire name, identical on every rank (e.g. `w3/kernel`). */
  readonly name: string;
  /** Human name for errors (the tfjs variable name, e.g. `dense_Dense2/kernel`). */
  readonly label: string;
  /** Send this variable's gradient row-sparse (an embedding table `[rows, dim]`). */
  readonly sparse: boolean;
}

export interface BridgeStats {
  /** Wall time of the last step's phases, milliseconds. */
  computeMs: number;
  syncMs: number;
  applyMs: number;
  /** Rows sent row-sparse in the last step (all sparse variables). */
  sparseRows: number;
}

/**
 * Data-parallel step for tfjs: gradients of one batch -> one flat Float32Array -> `GradientSync` -> averaged
 * gradients applied with `optimizer.applyGradients`.
 *
 * Buffers: the bridge owns one flat Float32Array holding every gradient (allocated once, reused every step);
 * the `DenseTensor`s handed to the engine are views into it. Sparse variables (embedding tables) take the
 * row-sparse path when the engine has `sparseAllreduceMean` (and its kind is in `sparseEngines`): the rows with a non-zero
 * gradient (exactly the rows the batch's ids touched, less any whose gradient is exactly zero, which add
 * nothing) cross the wire; the merged mean is scattered back into the dense slot.
 *
 * Preconditions: every rank builds the same variables in the same order; steps are collective.
 */
export class GradientBridge {
  readonly stats: BridgeStats = { computeMs: 0, syncMs: 0, applyMs: 0, sparseRows: 0 };
  private readonly flat: Float32Array;
  private readonly offsets: number[] = [];
  private readonly dense: DenseTensor[] = [];
  /**
   * The sparse variables grouped by row size: each group goes through one `sparseAllreduceMean` call as one
   * table (the variables' rows stacked, in variable order), so a step costs one row-sparse collective (on ps: one
   * agreement and one push/pull round) per row size instead of one per table.
   */
  private readonly sparseGroups: { name: string; rowSize: number; vars: number[]; firstRow: number[]; numRows: number }[] = [];
  private readonly useSparse: boolean;
  private readonly kernels: ReduceKernels;
  /** Gradient accumulation: rows-weighted sum of the micro-batches' gradients, their rows, their compute time. */
  private acc?: Float32Array;
  private accRows = 0;
  private accComputeMs = 0;
  /** When tracing: the timeline and its `step` lane (compute, sync, apply spans). */
  private readonly trace?: { timeline: Timeline; lane: TimelineLane };

  /**
   * `sparseEngines`: engine kinds that get the sparse variables row-sparse when they implement
   * `sparseAllreduceMean` (default: the engines whose `capabilities.rowSparse` is `servers`, i.e. ps and hybrid,
   * where touched rows go to the servers, except tables within the engine's `capabilities.sparseAsDenseBytes`,
   * which go whole; list `ring` too to allgather touched rows over the ring instead of allreducing whole tables,
   * fewer bytes when batches touch a small part of big tables; a list sends every table of those engines
   * row-sparse).
   * `timeline`: record each step's `compute`, `sync` and `apply` on its `step` lane (not owned).
   */
  constructor(
    private readonly tf: Tf,
    readonly variables: readonly BridgeVariable[],
    private readonly sync: GradientSync,
    sparseEngines?: ReadonlyArray<GradientSync['kind']>,
    kernels: ReduceKernels = loadKernels(),
    timeline?: Timeline,
  ) {
    this.kernels = kernels;
    if (timeline) this.trace = { timeline, lane: timeline.lane('step') };
    // One rank has nothing to exchange: keep its tables dense (no row extraction and scatter-back).
    const wanted = sparseEngines === undefined ? sync.capabilities.rowSparse === 'servers' : sparseEngines.includes(sync.kind);
    // By default, tables the engine moves more cheaply whole (same on every rank) stay dense.
    const wholeUpTo = sparseEngines === undefined ? (sync.capabilities.sparseAsDenseBytes ?? 0) : 0;
    this.useSparse = sync.size > 1 && wanted && typeof sync.sparseAllreduceMean === 'function';
    let total = 0;
    for (const v of variables) {
      this.offsets.push(total);
      total += v.variable.size;
    }
    this.flat = new Float32Array(total);
    const sparseIdx: number[] = [];
    variables.forEach((v, i) => {
      const view = this.flat.subarray(this.offsets[i], this.offsets[i]! + v.variable.size);
      if (this.useSparse && v.sparse && v.variable.shape.length === 2 && v.variable.size * 4 > wholeUpTo) sparseIdx.push(i);
      else this.dense.push({ name: v.name, shape: v.variable.shape, data: view });
    });
    for (const i of sparseIdx) {
      const [numRows, rowSize] = variables[i]!.variable.shape as [number, number];
      let g = this.sparseGroups.find((x) => x.rowSize === rowSize);
      if (!g) {
        g = { name: '', rowSize, vars: [], firstRow: [], numRows: 0 };
        this.sparseGroups.push(g);
      }
      g.vars.push(i);
      g.firstRow.push(g.numRows);
      g.numRows += numRows;
    }
    for (const g of this.sparseGroups) g.name = g.vars.length === 1 ? variables[g.vars[0]!]!.name : g.vars.map((i) => variables[i]!.name).join('+');
  }

  /** Number of float32 values in one step's gradients. */
  get numValues(): number {
    return this.flat.length;
  }

  private view(i: number): Float32Array {
    return this.flat.subarray(this.offsets[i], this.offsets[i]! + this.variables[i]!.variable.size);
  }

  /**
   * Run one synchronous data-parallel step: `lossFn` (the local batch's mean loss, built from the variables)
   * is differentiated, gradients are averaged over all ranks and applied by `optimizer`. Returns the local
   * loss. Throws ERR_NAN naming the variable on every rank if any rank's gradient is not finite (the ranks stay
   * in step: nobody is left waiting in a collective).
   */
  async step(lossFn: () => tfjs.Scalar, optimizer: tfjs.Optimizer, rank = this.sync.rank): Promise<number> {
    if (this.sync.size === 1) return this.stepLocal(lossFn, optimizer, rank);
    const t0 = performance.now();
    const loss = this.compute(lossFn);
    await this.syncApply(optimizer, rank, performance.now() - t0);
    return loss;
  }

  /**
   * Gradient accumulation, one micro-batch: add `rows` times the gradient of `lossFn` (the micro-batch's mean
   * loss) to the accumulator; nothing is exchanged or applied. Returns the local loss. `applyAccumulated` then
   * applies the rows-weighted mean, which is the gradient of the mean loss over all the micro-batches' rows.
   */
  accumulate(lossFn: () => tfjs.Scalar, rows: number): number {
    const t0 = performance.now();
    this.acc ??= new Float32Array(this.flat.length);
    const loss = this.compute(lossFn, rows);
    this.accRows += rows;
    const ms = performance.now() - t0;
    this.accComputeMs += ms;
    Object.assign(this.stats, { computeMs: ms, syncMs: 0, applyMs: 0, sparseRows: 0 }); // this micro-batch's
    return loss;
  }

  /** Forget the accumulated micro-batches (a `fit` that failed mid-accumulation left them). */
  dropAccumulated(): void {
    this.acc?.fill(0);
    this.accRows = 0;
    this.accComputeMs = 0;
  }

  /**
   * Average the accumulated gradient over its rows and over the ranks (one collective for all the micro-batches)
   * and apply it. Collective. Checks for NaN/Inf as `step` does.
   */
  async applyAccumulated(optimizer: tfjs.Optimizer, rank = this.sync.rank): Promise<void> {
    if (!this.acc || this.accRows === 0) throw Errors.state('GradientBridge.applyAccumulated: no micro-batch accumulated');
    this.flat.set(this.acc);
    this.kernels.scale(this.flat, 1 / this.accRows);
    this.acc.fill(0);
    this.accRows = 0;
    const computeMs = this.accComputeMs;
    this.accComputeMs = 0;
    await this.syncApply(optimizer, rank, computeMs);
  }

  /**
   * The gradients of `lossFn` into the flat buffer, or (with `weight`) added times `weight` into the
   * accumulator. Variables the loss does not depend on get zeros. Returns the loss.
   */
  private compute(lossFn: () => tfjs.Scalar, weight?: number): number {
    const tf = this.tf;
    const varList = this.variables.map((v) => v.variable);
    const { value, grads } = tf.variableGrads(lossFn, varList);
    try {
      const loss = value.dataSync()[0]!;
      this.variables.forEach((v, i) => {
        const g = grads[v.variable.name];
        if (weight === undefined) {
          const dst = this.view(i);
          if (!g) dst.fill(0); // the loss does not depend on this variable
          else dst.set(readFloats(tf, g));
          return;
        }
        if (!g) return;
        const src = readFloats(tf, g);
        const dst = this.acc!.subarray(this.offsets[i], this.offsets[i]! + v.variable.size);
        for (let j = 0; j < src.length; j++) dst[j]! += src[j]! * weight;
      });
      return loss;
    } finally {
      value.dispose();
      for (const k of Object.keys(grads)) grads[k]!.dispose();
    }
  }

  /**
   * Average the flat buffer's gradients over the ranks (skipped on one rank) and apply them. Throws ERR_NAN
   * naming the variable on every rank if any rank's gradient is not finite (the ranks stay in step: nobody is
   * left waiting in a collective).
   */
  private async syncApply(optimizer: tfjs.Optimizer, rank: number, computeMs: number): Promise<void> {
    const tf = this.tf;
    // Non-finite gradients: not thrown here (the other ranks would wait in the collective until their timeout).
    // The engines agree on NaN and raise ERR_NAN on every rank; a NaN also survives averaging, so the check of
    // the averaged values below fails every rank the same way with engines that let it through.
    const localBad = this.firstNonFinite();
    const t1 = performance.now();
    let sparseRows = 0;
    if (this.sync.size > 1) {
      try {
        if (!this.sync.capabilities.concurrentCollectives || this.sparseGroups.length === 0) {
          await this.sync.allreduceMean(this.dense);
          for (const g of this.sparseGroups) sparseRows += await this.syncSparse(g);
        } else {
          // Engines with concurrentCollectives (ps, hybrid) take these collectives concurrently (each fixes its order on every rank when it is
          // called): the row-sparse rounds and the dense one overlap, one wait instead of one per collective. Dense
          // and sparse variables are disjoint slices of the flat buffer. The failure thrown is the one the sequential path
          // would meet first (dense, then each sparse group); nothing is applied when any fails.
          // The row-sparse rounds are issued first: a small dense allreduce may spin briefly on this thread.
          const sparse = this.sparseGroups.map((g) => this.syncSparse(g));
          const [, ...rows] = await settleAll<void | number>([this.sync.allreduceMean(this.dense), ...sparse]);
          for (const r of rows) sparseRows += r as number;
        }
      } catch (e) {
        if (!isShoalError(e, 'ERR_NAN')) throw e;
        const wire = String(e.context.tensor ?? '').replace(/^s:|^g:/, '');
        // A group of sparse tables travels as one tensor named `a+b`: name its first table.
        const other = this.variables.find((v) => v.name === wire) ?? this.variables.find((v) => wire.split('+').includes(v.name));
        const label = localBad ? localBad.label : other ? `${other.label} (on another rank)` : `a variable (on another rank: ${e.message})`;
        throw Errors.nan(`the gradient of ${label}`, { variable: localBad?.label ?? other?.label, rank, localIndex: localBad?.index ?? -1 });
      }
    }
    // One rank: the "average" is the local gradient, already checked.
    const averagedBad = this.sync.size > 1 ? this.firstNonFinite() : localBad;
    if (averagedBad) {
      const where = localBad ? `rank ${rank}'s own gradient, element ${localBad.index}` : 'another rank';
      throw Errors.nan(`the gradient of ${averagedBad.label} (from ${where})`, { variable: averagedBad.label, rank, localIndex: localBad?.index ?? -1 });
    }
    const t2 = performance.now();
    tf.tidy(() => {
      optimizer.applyGradients(
        this.variables.map((v, i) => ({ name: v.variable.name, tensor: tf.tensor(this.view(i), v.variable.shape, 'float32') })),
      );
    });
    const t3 = performance.now();
    Object.assign(this.stats, { computeMs, syncMs: t2 - t1, applyMs: t3 - t2, sparseRows });
    if (this.trace) this.traceStep(t1 - computeMs, t1, t2, t3);
  }

  /**
   * A step on this rank's gradient alone, nothing exchanged: one rank's step, and local SGD's steps between
   * averages (`syncEvery`). The gradients are checked where tfjs computed them and applied as they are, without
   * the round trip through the flat buffer (two copies of every gradient). The same values reach the optimizer
   * as on the collective path: a variable the loss does not depend on gets zeros there too.
   */
  stepLocal(lossFn: () => tfjs.Scalar, optimizer: tfjs.Optimizer, rank: number): number {
    const tf = this.tf;
    const t0 = performance.now();
    const varList = this.variables.map((v) => v.variable);
    const { value, grads } = tf.variableGrads(lossFn, varList);
    let loss: number;
    const zeros: tfjs.Tensor[] = [];
    try {
      loss = value.dataSync()[0]!;
      for (const v of this.variables) {
        const g = grads[v.variable.name];
        if (!g) {
          const z = tf.zerosLike(v.variable);
          zeros.push(z);
          grads[v.variable.name] = z;
          continue;
        }
        const at = this.kernels.firstNonFinite(readFloats(tf, g));
        if (at >= 0) throw Errors.nan(`the gradient of ${v.label} (rank ${rank}'s own gradient, element ${at})`, { variable: v.label, rank, localIndex: at });
      }
      const t1 = performance.now();
      optimizer.applyGradients(this.variables.map((v) => ({ name: v.variable.name, tensor: grads[v.variable.name]! })));
      const t2 = performance.now();
      Object.assign(this.stats, { computeMs: t1 - t0, syncMs: 0, applyMs: t2 - t1, sparseRows: 0 });
      if (this.trace) this.traceStep(t0, t1, t1, t2);
    } finally {
      value.dispose();
      for (const k of Object.keys(grads)) grads[k]!.dispose();
    }
    return loss;
  }

  /** The step's phases as spans, from the `performance.now()` readings the stats are made of. */
  private traceStep(t0: number, t1: number, t2: number, t3: number): void {
    const { timeline, lane } = this.trace!;
    const [a, b, c, d] = [t0, t1, t2, t3].map((t) => timeline.fromPerformance(t)) as [number, number, number, number];
    timeline.complete(lane, 'compute', a, b);
    if (c > b) timeline.complete(lane, 'sync', b, c);
    timeline.complete(lane, 'apply', c, d);
  }

  /** The first variable whose slot in the flat buffer holds NaN/Inf, and the element index. */
  private firstNonFinite(): { label: string; index: number } | null {
    // One native scan of the flat buffer (~30 GB/s; a JS loop costs ~0.35 ms per MiB, per check, per step).
    const at = this.kernels.firstNonFinite(this.flat);
    if (at < 0) return null;
    let i = 0;
    while (i + 1 < this.variables.length && this.offsets[i + 1]! <= at) i++;
    return { label: this.variables[i]!.label, index: at - this.offsets[i]! };
  }

  /** One row-sparse collective for a group of tables: their touched rows out, the merged mean rows back in. */
  private async syncSparse(grp: (typeof this.sparseGroups)[number]): Promise<number> {
    const { rowSize, numRows } = grp;
    const k = this.kernels;
    // The touched rows (any non-zero value) of each table, found and packed by the kernels, in group row ids.
    const found = grp.vars.map((i) => {
      const ids = new Int32Array(this.variables[i]!.variable.shape[0]!);
      return ids.subarray(0, k.nonZeroRows(this.view(i), rowSize, ids));
    });
    const count = found.reduce((a, ids) => a + ids.length, 0);
    const touched = new Int32Array(count);
    const rows = new Float32Array(count * rowSize);
    let at = 0;
    grp.vars.forEach((i, v) => {
      const ids = found[v]!;
      if (ids.length) k.rows('gather', rows.subarray(at * rowSize, (at + ids.length) * rowSize), this.view(i), ids, rowSize);
      for (let x = 0; x < ids.length; x++) touched[at + x] = grp.firstRow[v]! + ids[x]!;
      at += ids.length;
    });
    const local: RowSparseTensor = { name: grp.name, numRows, rowSize, rowIds: touched, rows };
    const merged = await this.sync.sparseAllreduceMean!(local);
    if (merged.rowSize !== rowSize) throw Errors.mismatch(`sparse gradient ${grp.name}`, `row size ${merged.rowSize} != ${rowSize}`);
    if (merged.rows.length !== merged.rowIds.length * rowSize) throw Errors.badFrame(`sparse gradient ${grp.name}`, `${merged.rows.length} values for ${merged.rowIds.length} rows of ${rowSize}`);
    let sorted = true;
    for (let n = 0; n < merged.rowIds.length; n++) {
      const id = merged.rowIds[n]!;
      if (!(id >= 0 && id < numRows)) throw Errors.badFrame(`sparse gradient ${grp.name}`, `row id ${id} outside [0, ${numRows})`);
      if (n > 0 && id <= merged.rowIds[n - 1]!) sorted = false;
    }
    for (const i of grp.vars) this.view(i).fill(0);
    // Group row id -> (variable, row): variables are stacked in order.
    const locate = (id: number, v: number) => {
      while (v + 1 < grp.vars.length && id >= grp.firstRow[v + 1]!) v++;
      return v;
    };
    if (sorted) {
      // every engine returns sorted unique ids: scatter each variable's run of them in one call
      let n = 0;
      for (let v = 0; v < grp.vars.length && n < merged.rowIds.length; v++) {
        const end = v + 1 < grp.vars.length ? grp.firstRow[v + 1]! : numRows;
        let e = n;
        while (e < merged.rowIds.length && merged.rowIds[e]! < end) e++;
        if (e > n) {
          const ids = Int32Array.from(merged.rowIds.subarray(n, e), (id) => id - grp.firstRow[v]!);
          k.rows('scatter', this.view(grp.vars[v]!), merged.rows.subarray(n * rowSize, e * rowSize), ids, rowSize);
        }
        n = e;
      }
    } else {
      // stay correct if an engine does not sort (later duplicates win, as before)
      let v = 0;
      for (let n = 0; n < merged.rowIds.length; n++) {
        const id = merged.rowIds[n]!;
        v = locate(id, n > 0 && id < merged.rowIds[n - 1]! ? 0 : v);
        const r = id - grp.firstRow[v]!;
        this.view(grp.vars[v]!).set(merged.rows.subarray(n * rowSize, (n + 1) * rowSize), r * rowSize);
      }
    }
    return touched.length;
  }

}

/**
 * A float32 tensor's values without an intermediate copy where the backend allows it: on wasm, a view of the
 * wasm heap (valid until the next tfjs allocation: copy it out at once); elsewhere `dataSync()`.
 */
function readFloats(tf: Tf, t: tfjs.Tensor): Float32Array {
  const backend = tf.backend() as unknown as { typedArrayFromHeap?: (t: tfjs.TensorInfo) => Float32Array };
  if (t.dtype === 'float32' && typeof backend.typedArrayFromHeap === 'function') return backend.typedArrayFromHeap(t);
  return t.dataSync() as Float32Array;
}

/**
 * Make every rank hold rank 0's values of `variables` (model weights, trainable or not). Collective.
 * Copies through one temporary Float32Array per variable.
 */
export async function broadcastVariables(
  tf: Tf,
  sync: GradientSync,
  variables: ReadonlyArray<{ name: string; variable: tfjs.Variable }>,
): Promise<void> {
  const tensors: DenseTensor[] = variables.map((v) => ({
    name: v.name,
    shape: v.variable.shape,
    data: Float32Array.from(v.variable.dataSync() as Float32Array),
  }));
  await sync.broadcastParameters(tensors);
  variables.forEach((v, i) => {
    tf.tidy(() => v.variable.assign(tf.tensor(tensors[i]!.data, v.variable.shape, v.variable.dtype)));
  });
}
