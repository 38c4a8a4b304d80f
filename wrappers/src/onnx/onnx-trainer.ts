import { readFile, writeFile } from 'node:fs/promises';
import type { GradientSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import { LocalSync } from '@shoal/backends';
import { loadCheckpoint, saveCheckpoint, type SavedArray } from '../tfjs/checkpoint.js';
import { epochOrder, rankBatchRows, stepsPerEpochFor } from '../tfjs/data.js';
import { fmtLogs, ProgressBar, type LogSink } from '../tfjs/progress.js';
import { lossSums } from './eval-loss.js';
import type { LossKind } from './losses.js';
import { OnnxModel, type OnnxInput } from './session.js';
import { FlatOptimizer, type OptimizerSpec } from './optimizer.js';
import { loadOrt, ortProbe, sessionOptions, type Ort } from './ort-runtime.js';
import { decodeModel, encodeModel, onnx, makeTensor, tensorDims, tensorValues, type ArrayData, type ModelProto } from './proto.js';
import { CompiledStep, type BufferSlot, type ParamSlot, type StepState, type StepTimings } from './train-step.js';
import { buildTrainingGraph, checkTrainable } from './training-graph.js';

export interface OnnxTrainerOptions {
  /** An ONNX model (file path or bytes), e.g. from `torch.onnx.export` (opset 13..17, training mode). */
  model: string | Uint8Array;
  loss: LossKind;
  /** The model output the loss reads (default the first). */
  output?: string;
  optimizer: OptimizerSpec;
  /** The gradient engine (from `initWorker()`); default a one-worker `LocalSync`. Not closed by the trainer. */
  sync?: GradientSync;
  /** `auto` (default): tables read only by Gather go row-sparse on the engines in `sparseEngines`; `off`: all dense. */
  sparse?: 'auto' | 'off';
  /** Engine kinds that take tables row-sparse (default ps and hybrid; add ring to allgather touched rows). */
  sparseEngines?: ReadonlyArray<GradientSync['kind']>;
  /** Float initializers to keep constant. */
  frozen?: string[];
  /** onnxruntime intra-op threads (default 0: onnxruntime's choice, one per core). */
  threads?: number;
  /** Seed of the Dropout masks (default 0). */
  seed?: number;
  log?: LogSink;
  /** 0 = silent, 1 = progress bar on rank 0 (default). */
  verbose?: 0 | 1;
}

/** In-memory training data: each model input's values with dim 0 = samples, and the labels. */
export interface OnnxTrainData {
  x: Record<string, { data: ArrayData; dims: readonly number[] }>;
  y?: { data: ArrayData; dims: readonly number[] };
}
export interface OnnxFitOptions {
  epochs: number;
  /** Per-worker batch size (the global batch is `batchSize * worldSize`). */
  batchSize: number;
  stepsPerEpoch?: number;
  shuffle?: boolean;
  seed?: number;
  /** As the tfjs Trainer: save every `everyEpochs` epochs from rank 0, resume from the newest. */
  checkpoint?: { dir: string; everyEpochs?: number; keep?: number; resume?: boolean };
}
export interface OnnxEpochRecord {
  epoch: number;
  loss: number;
  seconds: number;
  samplesPerSec: number;
}

/**
 * Data-parallel training of an ONNX model with onnxruntime-node: shoal generates the backward graph
 * (`training-graph.ts`), onnxruntime runs forward + loss + gradients as one session per batch size, the engine
 * (ring, ps or hybrid) averages the gradients, and the optimizer updates flat parameter buffers in place.
 *
 * ```ts
 * const trainer = new OnnxTrainer({ model: 'mlp.onnx', loss: 'softmaxCrossEntropy', optimizer: { type: 'adam', lr: 1e-3 }, sync });
 * await trainer.fit({ x: { x: { data: pixels, dims: [n, 784] } }, y: { data: labels, dims: [n] } }, { epochs: 2, batchSize: 128 });
 * await trainer.saveModel('trained.onnx');
 * ```
 * Collective like the tfjs Trainer: every rank makes the same calls; rank 0's initial weights are broadcast.
 */
export class OnnxTrainer {
  private ort?: Ort;
  private proto?: ModelProto;
  private bytes?: Uint8Array;
  private source = '';
  private state?: StepState;
  private opt?: FlatOptimizer;
  private readonly steps = new Map<number, CompiledStep>();
  private readonly sync: GradientSync;
  private readonly ownsSync: boolean;
  private broadcastDone = false;
  private globalStep = 0;
  /** Timings of the last step. */
  readonly stats: StepTimings = { computeMs: 0, syncMs: 0, applyMs: 0, sparseRows: 0 };

  constructor(private readonly options: OnnxTrainerOptions) {
    if (!options || typeof options !== 'object') throw Errors.invalidArg('options', 'must be an object');
    if (typeof options.model !== 'string' && !(options.model instanceof Uint8Array)) throw Errors.invalidArg('options.model', 'must be a file path or the model bytes');
    this.sync = options.sync ?? new LocalSync();
    this.ownsSync = options.sync === undefined;
  }

  get rank(): number {
    return this.sync.rank;
  }

  /** Load and check the model (unsupported ops are refused here, naming the node). Idempotent. */
  async init(): Promise<void> {
    if (this.proto) return;
    const bytes = typeof this.options.model === 'string' ? new Uint8Array(await readFile(this.options.model)) : this.options.model;
    this.source = typeof this.options.model === 'string' ? this.options.model : `<${bytes.byteLength} bytes>`;
    const proto = decodeModel(bytes, this.source);
    checkTrainable(proto, this.source);
    this.ort = await loadOrt();
    this.proto = proto;
    this.bytes = bytes;
  }

  /** The compiled step for `batchSize` (built on first use; parameters keep their layout across sizes). */
  private async stepFor(batchSize: number): Promise<CompiledStep> {
    await this.init();
    const have = this.steps.get(batchSize);
    if (have) return have;
    const o = this.options;
    const frozen = new Set(o.frozen ?? []);
    const rowSparse = this.rowSparse();
    const graph = await buildTrainingGraph(this.proto!, this.source, { loss: o.loss, output: o.output, batchSize, frozen, sparseTables: rowSparse || o.sparse !== 'off' }, ortProbe(this.ort!, sessionOptions(o.threads ?? 0)));
    if (!this.state) this.state = this.allocate(graph.params, graph.buffers);
    else if (graph.params.map((p) => p.name).join() !== this.state.paramSlots.map((p) => p.name).join()) throw Errors.state('onnx trainer: the parameter set changed between batch sizes');
    const step = await CompiledStep.create(this.ort!, graph, this.state, sessionOptions(o.threads ?? 0), this.source);
    this.steps.set(batchSize, step);
    return step;
  }

  private rowSparse(): boolean {
    const engines = this.options.sparseEngines ?? ['ps', 'hybrid'];
    return this.options.sparse !== 'off' && this.sync.size > 1 && engines.includes(this.sync.kind) && typeof this.sync.sparseAllreduceMean === 'function';
  }

  private allocate(params: Array<{ name: string; dims: number[]; sparse?: unknown }>, buffers: Array<{ name: string; dims: number[] }>): StepState {
    const inits = new Map(this.proto!.graph!.initializer!.map((t) => [t.name!, t]));
    let off = 0;
    const paramSlots: ParamSlot[] = params.map((p) => {
      const size = p.dims.reduce((a, d) => a * d, 1);
      const s = { name: p.name, dims: p.dims, offset: off, size, table: p.sparse !== undefined };
      off += size;
      return s;
    });
    const flat = new Float32Array(off);
    for (const s of paramSlots) flat.set(tensorValues(inits.get(s.name)!) as Float32Array, s.offset);
    off = 0;
    const seen = new Set<string>();
    const bufferSlots: BufferSlot[] = [];
    for (const b of buffers) {
      if (seen.has(b.name)) continue;
      seen.add(b.name);
      const size = b.dims.reduce((a, d) => a * d, 1);
      bufferSlots.push({ name: b.name, dims: b.dims, offset: off, size });
      off += size;
    }
    const buf = new Float32Array(off);
    for (const s of bufferSlots) buf.set(tensorValues(inits.get(s.name)!) as Float32Array, s.offset);
    this.opt = new FlatOptimizer(this.options.optimizer, flat.length);
    return { params: flat, grads: new Float32Array(flat.length), buffers: buf, paramSlots, bufferSlots };
  }

  private async ensureBroadcast(): Promise<void> {
    if (this.broadcastDone) return;
    const st = this.state!;
    await this.sync.broadcastParameters([
      ...st.paramSlots.map((s) => ({ name: `p/${s.name}`, shape: s.dims, data: st.params.subarray(s.offset, s.offset + s.size) })),
      ...st.bufferSlots.map((s) => ({ name: `b/${s.name}`, shape: s.dims, data: st.buffers.subarray(s.offset, s.offset + s.size) })),
    ]);
    this.broadcastDone = true;
  }

  /** One synchronous step on rows `rows` of `data` (this rank's batch). Returns the local mean loss. */
  private async trainRows(data: OnnxTrainData, rows: ArrayLike<number>, firstGlobalRow: number): Promise<number> {
    const step = await this.stepFor(rows.length);
    await this.ensureBroadcast();
    const t0 = performance.now();
    step.setBatch(data, rows);
    step.setMasks(this.options.seed ?? 0, this.globalStep, firstGlobalRow);
    const { loss, sparse } = await step.run();
    const t1 = performance.now();
    const sparseRows = await step.sync(this.sync, sparse, this.rowSparse());
    const t2 = performance.now();
    this.opt!.step(this.state!.params, this.state!.grads);
    step.updateBuffers();
    this.globalStep += 1;
    Object.assign(this.stats, { computeMs: t1 - t0, syncMs: t2 - t1, applyMs: performance.now() - t2, sparseRows });
    return loss;
  }

  /**
   * This rank's loss and gradients on `batch` at the current weights, nothing averaged or applied (not
   * collective). Tables' row gradients are summed into dense arrays. Returns new arrays by parameter name.
   */
  async gradients(batch: OnnxTrainData): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const first = Object.values(batch.x)[0];
    if (!first) throw Errors.invalidArg('batch.x', 'holds no input');
    const n = first.dims[0]!;
    const step = await this.stepFor(n);
    step.setBatch(batch, Int32Array.from({ length: n }, (_, i) => i));
    step.setMasks(this.options.seed ?? 0, this.globalStep, this.rank * n);
    const { loss, sparse } = await step.run();
    const st = this.state!;
    const grads = new Map<string, Float32Array>();
    for (const s of st.paramSlots) {
      const g = st.grads.slice(s.offset, s.offset + s.size);
      const rows = sparse.get(s.name);
      if (rows) {
        g.fill(0);
        for (let k = 0; k < rows.ids.length; k++) for (let j = 0; j < s.dims[1]!; j++) g[rows.ids[k]! * s.dims[1]! + j]! += rows.rows[k * s.dims[1]! + j]!;
      }
      grads.set(s.name, g);
    }
    return { loss, grads };
  }

  /** Train on one batch (every sample of `batch`). Collective. Returns this rank's mean loss. */
  async trainOnBatch(batch: OnnxTrainData): Promise<number> {
    const first = Object.values(batch.x)[0];
    if (!first) throw Errors.invalidArg('batch.x', 'holds no input');
    const n = first.dims[0]!;
    return this.trainRows(batch, Int32Array.from({ length: n }, (_, i) => i), this.rank * n);
  }

  /**
   * Train for `epochs` epochs; in-memory data is sharded as in the tfjs Trainer, so N workers with batch b
   * follow the path of one worker with batch N*b. Returns per-epoch rank-averaged losses.
   */
  async fit(data: OnnxTrainData, options: OnnxFitOptions): Promise<OnnxEpochRecord[]> {
    if (!Number.isInteger(options?.epochs) || options.epochs < 0) throw Errors.invalidArg('fit options.epochs', `must be a non-negative integer, got ${options?.epochs}`);
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw Errors.invalidArg('fit options.batchSize', `must be a positive integer, got ${options.batchSize}`);
    const first = Object.values(data?.x ?? {})[0];
    if (!first) throw Errors.invalidArg('data.x', 'must map model input names to { data, dims }');
    const n = first.dims[0]!;
    const ctx = { rank: this.rank, size: this.sync.size, batchSize: options.batchSize };
    const steps = Math.min(options.stepsPerEpoch ?? Infinity, stepsPerEpochFor(n, ctx));
    if (steps < 1) throw Errors.data('fit data', `${n} samples are fewer than one global batch (${options.batchSize} x ${ctx.size} workers)`);
    await this.stepFor(options.batchSize);
    const ckpt = options.checkpoint;
    const startEpoch = ckpt && ckpt.resume !== false ? await this.restore(ckpt.dir) : 0;
    await this.ensureBroadcast();
    const verbose = this.options.verbose !== 0 && this.rank === 0;
    const out = this.options.log ?? process.stdout;
    const history: OnnxEpochRecord[] = [];
    for (let epoch = startEpoch; epoch < options.epochs; epoch++) {
      const order = epochOrder(n, epoch, options.shuffle ?? true, options.seed ?? 0);
      const bar = verbose ? new ProgressBar(out, steps) : undefined;
      const t0 = performance.now();
      const sums = new Float64Array(2);
      for (let s = 0; s < steps; s++) {
        const rows = rankBatchRows(order, s, { ...ctx, epoch });
        const loss = await this.trainRows(data, rows, (s * ctx.size + ctx.rank) * ctx.batchSize);
        sums[0]! += loss * rows.length;
        sums[1]! += rows.length;
        bar?.update(s + 1, { loss: sums[0]! / sums[1]! }, sums[1]! * ctx.size);
      }
      const reduced = await this.sync.allreduceScalars(sums);
      const seconds = (performance.now() - t0) / 1000;
      const rec = { epoch, loss: reduced[0]! / reduced[1]!, seconds, samplesPerSec: (reduced[1]! * ctx.size) / seconds };
      bar?.end(steps, { loss: rec.loss }, reduced[1]! * ctx.size);
      if (verbose && !bar) out.write(`epoch ${epoch + 1}: ${fmtLogs({ loss: rec.loss })}\n`);
      history.push(rec);
      if (ckpt && this.rank === 0 && ((epoch + 1) % (ckpt.everyEpochs ?? 1) === 0 || epoch + 1 === options.epochs)) await this.saveState(ckpt.dir, epoch + 1, ckpt.keep ?? 2);
    }
    return history;
  }

  private async saveState(dir: string, epoch: number, keep: number): Promise<string> {
    const st = this.state!;
    const weights: SavedArray[] = [
      ...st.paramSlots.map((s) => ({ name: s.name, shape: s.dims, data: st.params.slice(s.offset, s.offset + s.size) })),
      ...st.bufferSlots.map((s) => ({ name: s.name, shape: s.dims, data: st.buffers.slice(s.offset, s.offset + s.size) })),
    ];
    return saveCheckpoint(dir, { epoch, step: this.globalStep, weights, optimizer: this.opt!.state(), extra: { worldSize: this.sync.size, optimizerSteps: this.opt!.t, format: 'shoal-onnx' } }, keep);
  }

  private async restore(dir: string): Promise<number> {
    const st = this.state!;
    const saved = await loadCheckpoint(dir);
    let epoch = 0;
    if (saved) {
      const slots = [...st.paramSlots.map((s) => ({ s, buf: st.params })), ...st.bufferSlots.map((s) => ({ s, buf: st.buffers }))];
      if (saved.weights.length !== slots.length) throw Errors.data(dir, `checkpoint has ${saved.weights.length} arrays, the model has ${slots.length}`);
      slots.forEach(({ s, buf }, i) => {
        const w = saved.weights[i]!;
        if (w.name !== s.name || w.data.length !== s.size) throw Errors.data(dir, `array ${i} is ${w.name} [${w.shape}] in the checkpoint, ${s.name} [${s.dims}] in the model`);
        buf.set(w.data, s.offset);
      });
      this.opt!.load(saved.optimizer, Number(saved.extra?.optimizerSteps ?? saved.step), dir);
      epoch = saved.epoch;
      this.globalStep = saved.step;
    }
    const mean = (await this.sync.allreduceScalars(Float64Array.of(epoch)))[0]!;
    if (mean !== epoch) throw Errors.mismatch('resume epoch', `rank ${this.rank} found epoch ${epoch}, the mean over ranks is ${mean}: is ${dir} visible to every rank?`, { rank: this.rank });
    return epoch;
  }

  /** Save a checkpoint now (rank 0 writes; other ranks return null). */
  async save(dir: string, epoch = 0): Promise<string | null> {
    if (!this.state) throw Errors.state('OnnxTrainer.save: nothing trained yet');
    return this.rank === 0 ? this.saveState(dir, epoch, 2) : null;
  }

  /** A copy of every parameter then every running statistic, concatenated (for tests and equality checks). */
  weightsFlat(): Float32Array {
    if (!this.state) throw Errors.state('OnnxTrainer.weightsFlat: nothing trained yet');
    const out = new Float32Array(this.state.params.length + this.state.buffers.length);
    out.set(this.state.params);
    out.set(this.state.buffers, this.state.params.length);
    return out;
  }

  /** The trained weights by name (parameters and running statistics). */
  weights(): Map<string, Float32Array> {
    const st = this.state;
    if (!st) throw Errors.state('OnnxTrainer.weights: nothing trained yet');
    const m = new Map<string, Float32Array>();
    for (const s of st.paramSlots) m.set(s.name, st.params.slice(s.offset, s.offset + s.size));
    for (const s of st.bufferSlots) m.set(s.name, st.buffers.slice(s.offset, s.offset + s.size));
    return m;
  }

  /**
   * The inference model with the trained weights: the original graph, its initializers replaced, and put in
   * inference mode: BatchNormalization keeps only its output Y (so it normalizes with the running statistics;
   * `training_mode` 0), Dropout becomes Identity.
   */
  exportModel(): Uint8Array {
    if (!this.proto) throw Errors.state('OnnxTrainer.exportModel: call init() or fit() first');
    const trained = this.state ? this.weights() : new Map<string, Float32Array>();
    const copy = decodeModel(this.bytes!, this.source);
    const graph = copy.graph!;
    graph.initializer = graph.initializer!.map((t) => {
      const w = trained.get(t.name!);
      return w ? onnx.TensorProto.fromObject(makeTensor(t.name!, tensorDims(t), w)) : t;
    });
    for (const n of graph.node!) {
      if (n.opType === 'BatchNormalization') {
        n.output = n.output!.slice(0, 1);
        n.attribute = n.attribute!.filter((a) => a.name !== 'training_mode');
      } else if (n.opType === 'Dropout') {
        n.opType = 'Identity';
        n.input = n.input!.slice(0, 1);
        n.output = n.output!.slice(0, 1);
        n.attribute = [];
      }
    }
    return encodeModel(copy);
  }

  /**
   * Model outputs for `x` with the current weights in inference mode (the exported model; not collective).
   * Returns each output's values, dim 0 = samples.
   */
  async predict(x: Record<string, OnnxInput>, options: { batchSize?: number } = {}): Promise<Record<string, OnnxInput>> {
    await this.init();
    const model = await OnnxModel.load(this.exportModel(), sessionOptions(this.options.threads ?? 0));
    try {
      return await model.predict(x, options.batchSize ?? 1024);
    } finally {
      await model.close();
    }
  }

  /**
   * Mean loss (and accuracy for softmaxCrossEntropy) over `data` in inference mode, each rank scoring a contiguous
   * shard; the result is the same on every rank. Collective. Not for `loss: 'output'`.
   */
  async evaluate(data: OnnxTrainData, options: { batchSize?: number } = {}): Promise<{ loss: number; accuracy?: number }> {
    const kind = this.options.loss;
    if (kind === 'output') throw Errors.invalidArg('evaluate', "is not available with loss 'output' (the model computes its own loss: use predict)");
    if (!data.y) throw Errors.invalidArg('data.y', 'is required by evaluate');
    const first = Object.values(data.x)[0];
    if (!first) throw Errors.invalidArg('data.x', 'holds no input');
    const n = first.dims[0]!;
    const [lo, hi] = [Math.floor((n * this.rank) / this.sync.size), Math.floor((n * (this.rank + 1)) / this.sync.size)];
    const shard = (v: { data: ArrayData; dims: readonly number[] }) => {
      const row = v.data.length / v.dims[0]!;
      return { data: v.data.subarray(lo * row, hi * row) as OnnxInput['data'], dims: [hi - lo, ...v.dims.slice(1)] };
    };
    const sums = new Float64Array(3);
    if (hi > lo) {
      const out = await this.predict(Object.fromEntries(Object.entries(data.x).map(([k, v]) => [k, shard(v)])), options);
      const pred = out[this.options.output ?? Object.keys(out)[0]!]!;
      const s = lossSums(kind, pred.data as Float32Array, shard(data.y).data as ArrayLike<number>, hi - lo);
      sums.set([s.loss, s.correct, hi - lo]);
    }
    const [loss, correct, count] = await this.sync.allreduceScalars(sums);
    return { loss: loss! / count!, ...(kind === 'softmaxCrossEntropy' ? { accuracy: correct! / count! } : {}) };
  }

  async saveModel(path: string): Promise<void> {
    await writeFile(path, this.exportModel());
  }

  async close(): Promise<void> {
    for (const s of this.steps.values()) await s.close();
    this.steps.clear();
    if (this.ownsSync) await this.sync.close();
  }
}
