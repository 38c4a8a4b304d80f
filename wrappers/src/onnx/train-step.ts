import type * as ortTypes from 'onnxruntime-node';
import type { DenseTensor, GradientSync, RowSparseTensor } from '@shoal/backends';
import { Errors, Rng } from '@shoal/core';
import { createSession, ortType, zeros, type Ort } from './ort-runtime.js';
import type { ArrayData } from './proto.js';
import type { TrainingGraph } from './training-graph.js';

/**
 * Where every trainable value lives: parameters in one flat Float32Array (the optimizer's), gradients in
 * another with the same layout (the engine averages views of it in place), BatchNormalization running
 * statistics in a third. onnxruntime reads the parameters through tensors that view the flat buffer, so an
 * optimizer step is seen by the next run without any copy or session rebuild.
 */
export interface ParamSlot {
  name: string;
  dims: number[];
  offset: number;
  size: number;
  /** Gathered only (axis 0): its gradient can travel row-sparse. */
  table: boolean;
}
export interface BufferSlot {
  name: string;
  dims: number[];
  offset: number;
  size: number;
}
export interface StepState {
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly buffers: Float32Array;
  readonly paramSlots: readonly ParamSlot[];
  readonly bufferSlots: readonly BufferSlot[];
}

/** One batch's feeds: each model input's rows (dim 0 = batch) and the labels. */
export type BatchFeeds = { x: Record<string, ArrayData>; y?: ArrayData };

export interface StepTimings {
  computeMs: number;
  syncMs: number;
  applyMs: number;
  sparseRows: number;
}

/**
 * The training graph of one batch size, its onnxruntime session and its reusable feeds. `run` computes the
 * local loss and gradients into `state.grads`; `sync` averages them over the ranks (dense and row-sparse).
 */
export class CompiledStep {
  private constructor(
    readonly graph: TrainingGraph,
    private readonly session: ortTypes.InferenceSession,
    private readonly feeds: Record<string, ortTypes.Tensor>,
    private readonly state: StepState,
    private readonly statTensors: DenseTensor[],
  ) {}

  static async create(ort: Ort, graph: TrainingGraph, state: StepState, options: ortTypes.InferenceSession.SessionOptions, source: string): Promise<CompiledStep> {
    const session = await createSession(ort, graph.bytes, options, `onnx training graph of ${source} (batch ${graph.batchSize})`);
    const feeds: Record<string, ortTypes.Tensor> = {};
    for (const p of state.paramSlots) feeds[p.name] = new ort.Tensor('float32', state.params.subarray(p.offset, p.offset + p.size), p.dims);
    for (const s of [...graph.inputs, ...(graph.labels ? [graph.labels] : [])]) feeds[s.name] = new ort.Tensor(ortType(s.elemType, s.name), zeros(s) as Float32Array, s.dims);
    for (const m of graph.masks) feeds[m.input] = new ort.Tensor('float32', new Float32Array(m.dims.reduce((p, d) => p * d, 1)), m.dims);
    const statTensors = graph.buffers.map((b) => ({ name: `stat/${b.name}`, shape: b.dims, data: new Float32Array(b.dims.reduce((p, d) => p * d, 1)) }));
    return new CompiledStep(graph, session, feeds, state, statTensors);
  }

  /** Copy rows `rows` of the full arrays `data` (dim 0 = samples) into this step's feeds. */
  setBatch(data: { x: Record<string, { data: ArrayData; dims: readonly number[] }>; y?: { data: ArrayData; dims: readonly number[] } }, rows: ArrayLike<number>): void {
    const put = (dst: ArrayData, src: { data: ArrayData; dims: readonly number[] }, name: string) => {
      const rowSize = dst.length / rows.length;
      const srcRow = src.data.length / src.dims[0]!;
      if (srcRow !== rowSize) throw Errors.invalidArg(`data ${name}`, `has ${srcRow} values per sample, the model takes ${rowSize}`);
      const sameKind = (dst instanceof BigInt64Array) === (src.data instanceof BigInt64Array);
      for (let r = 0; r < rows.length; r++) {
        const at = rows[r]! * rowSize;
        if (sameKind) (dst as Float32Array).set((src.data as Float32Array).subarray(at, at + rowSize), r * rowSize);
        else if (dst instanceof BigInt64Array) for (let k = 0; k < rowSize; k++) dst[r * rowSize + k] = BigInt(Math.trunc(Number(src.data[at + k]!)));
        else for (let k = 0; k < rowSize; k++) dst[r * rowSize + k] = Number(src.data[at + k]!);
      }
    };
    for (const s of this.graph.inputs) {
      const src = data.x[s.name];
      if (!src) throw Errors.invalidArg('data.x', `is missing model input ${JSON.stringify(s.name)} (the model takes ${this.graph.inputs.map((i) => i.name).join(', ')})`);
      put(this.feeds[s.name]!.data as ArrayData, src, `x.${s.name}`);
    }
    if (this.graph.labels) {
      if (!data.y) throw Errors.invalidArg('data.y', `is required by the loss (labels [${this.graph.labels.dims}])`);
      const labels = this.feeds[this.graph.labels.name]!.data as ArrayData;
      put(labels, data.y, 'y');
      const classes = this.graph.classes;
      if (classes !== undefined) {
        // OneHot would turn an out-of-range label into an all-zero row: a wrong loss, not an error.
        for (let r = 0; r < labels.length; r++) {
          const v = Number(labels[r]!);
          if (!(v >= 0 && v < classes)) throw Errors.invalidArg('data.y', `holds label ${v} at sample ${rows[r]}: softmaxCrossEntropy needs integer labels in [0, ${classes})`);
        }
      }
    }
  }

  /** Fill the Dropout masks: keep with probability 1 - ratio, scaled by 1 / (1 - ratio); one seeded stream per global row. */
  setMasks(seed: number, step: number, firstRow: number): void {
    this.graph.masks.forEach((m, k) => {
      const data = this.feeds[m.input]!.data as Float32Array;
      const rowSize = data.length / m.dims[0]!;
      const keep = 1 / (1 - m.ratio);
      for (let r = 0; r < m.dims[0]!; r++) {
        const rng = new Rng((Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b) ^ Math.imul(firstRow + r + 1, 0xc2b2ae35) ^ (k * 0x27d4eb2f)) >>> 0);
        for (let i = 0; i < rowSize; i++) data[r * rowSize + i] = rng.u32() / 4294967296 < m.ratio ? 0 : keep;
      }
    });
  }

  /**
   * Run forward + backward: dense gradients land in `state.grads`; tables' gradients come back as touched rows
   * (`sparse`, ids as Int32Array). Returns the local batch's mean loss and the model output.
   */
  async run(): Promise<{ loss: number; prediction: ortTypes.Tensor; sparse: Map<string, { ids: Int32Array; rows: Float32Array }> }> {
    const out = await this.session.run(this.feeds);
    const { grads, paramSlots } = this.state;
    const sparse = new Map<string, { ids: Int32Array; rows: Float32Array }>();
    this.graph.params.forEach((p, i) => {
      const slot = paramSlots[i]!;
      const view = grads.subarray(slot.offset, slot.offset + slot.size);
      if (p.grad) view.set(out[p.grad]!.data as Float32Array);
      else if (p.sparse) {
        const idParts = p.sparse.map((s) => out[s.ids]!.data as BigInt64Array);
        const rowParts = p.sparse.map((s) => out[s.rows]!.data as Float32Array);
        const ids = new Int32Array(idParts.reduce((a, x) => a + x.length, 0));
        const rows = new Float32Array(rowParts.reduce((a, x) => a + x.length, 0));
        let at = 0;
        let rat = 0;
        idParts.forEach((part, k) => {
          for (let j = 0; j < part.length; j++) ids[at + j] = Number(part[j]!);
          rows.set(rowParts[k]!, rat);
          at += part.length;
          rat += rowParts[k]!.length;
        });
        sparse.set(p.name, { ids, rows });
      } else view.fill(0);
    });
    this.graph.buffers.forEach((b, i) => this.statTensors[i]!.data.set(out[b.stat]!.data as Float32Array));
    return { loss: Number((out[this.graph.loss]!.data as Float32Array)[0]), prediction: out[this.graph.prediction]!, sparse };
  }

  /**
   * Average this step's gradients (and BatchNormalization batch statistics) over all ranks. Tables go
   * row-sparse through `sparseAllreduceMean` when `rowSparse`; otherwise their rows are scatter-added into the
   * dense gradient first. Returns the number of rows sent row-sparse.
   */
  async sync(sync: GradientSync, sparse: Map<string, { ids: Int32Array; rows: Float32Array }>, rowSparse: boolean): Promise<number> {
    const { grads, paramSlots } = this.state;
    const dense: DenseTensor[] = [];
    const tables: Array<{ slot: ParamSlot; local: RowSparseTensor }> = [];
    for (const slot of paramSlots) {
      const view = grads.subarray(slot.offset, slot.offset + slot.size);
      const s = sparse.get(slot.name);
      if (s && rowSparse) {
        tables.push({ slot, local: { name: slot.name, numRows: slot.dims[0]!, rowSize: slot.dims[1]!, rowIds: s.ids, rows: s.rows } });
        continue;
      }
      if (s) {
        view.fill(0);
        scatterRows(view, s.ids, s.rows, slot.dims[1]!, true, slot.name);
      }
      dense.push({ name: slot.name, shape: slot.dims, data: view });
    }
    dense.push(...this.statTensors);
    let sent = 0;
    const applyMerged = (t: { slot: ParamSlot; local: RowSparseTensor }, merged: RowSparseTensor) => {
      const view = grads.subarray(t.slot.offset, t.slot.offset + t.slot.size);
      view.fill(0);
      scatterRows(view, merged.rowIds, merged.rows, t.slot.dims[1]!, false, t.slot.name);
      sent += t.local.rowIds.length;
    };
    if (sync.kind === 'ring' || tables.length === 0) {
      await sync.allreduceMean(dense);
      for (const t of tables) applyMerged(t, await sync.sparseAllreduceMean!(t.local));
    } else {
      // ps and hybrid take the collectives concurrently (as the tfjs GradientBridge does): one wait, not several.
      const done = await Promise.allSettled([sync.allreduceMean(dense), ...tables.map((t) => sync.sparseAllreduceMean!(t.local))]);
      const bad = done.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      if (bad) throw bad.reason;
      tables.forEach((t, i) => applyMerged(t, (done[i + 1] as PromiseFulfilledResult<RowSparseTensor>).value));
    }
    return sent;
  }

  /** Update the running statistics from this step's (rank-averaged) batch statistics, PyTorch's rule. */
  updateBuffers(): void {
    const { buffers, bufferSlots } = this.state;
    this.graph.buffers.forEach((b, i) => {
      const slot = bufferSlots.find((s) => s.name === b.name)!;
      const stat = this.statTensors[i]!.data;
      const unbias = b.kind === 'var' && b.count > 1 ? b.count / (b.count - 1) : 1;
      for (let k = 0; k < slot.size; k++) buffers[slot.offset + k] = b.momentum * buffers[slot.offset + k]! + (1 - b.momentum) * stat[k]! * unbias;
    });
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** Add (or set) rows of `rowSize` values at `ids` into `dst`. */
function scatterRows(dst: Float32Array, ids: Int32Array, rows: Float32Array, rowSize: number, add: boolean, name: string): void {
  const numRows = dst.length / rowSize;
  for (let k = 0; k < ids.length; k++) {
    const id = ids[k]!;
    if (!(id >= 0 && id < numRows)) throw Errors.data(`gradient of ${name}`, `row id ${id} outside [0, ${numRows}) (an index out of range in the batch?)`);
    const at = id * rowSize;
    if (add) for (let j = 0; j < rowSize; j++) dst[at + j]! += rows[k * rowSize + j]!;
    else dst.set(rows.subarray(k * rowSize, (k + 1) * rowSize), at);
  }
}

