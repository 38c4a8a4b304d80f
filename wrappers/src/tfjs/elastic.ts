import type * as tfjs from '@tensorflow/tfjs';
import { elasticOf, type GradientSync, type MembershipChange } from '@shoal/backends';
import { Errors, isShoalError } from '@shoal/core';
import type { Callbacks, History, Logs } from './callbacks.js';
import { disposeBatch, epochOrder, gatherBatch, isBatchSource, numSamples, type Batch, type BatchContext, type BatchSource } from './data.js';
import type { FitPlan, TensorData } from './fit-options.js';
import { getLearningRate, setLearningRate } from './schedules.js';
import { optimizerScalars, restoreOptimizerScalars } from './trainer-state.js';

type Tf = typeof tfjs;

/**
 * Elastic training (Horovod elastic's `State`): `new Trainer({ ..., elastic: { commitEvery: 10 } })` under
 * `shoal run --elastic`. The trainer copies its state (weights, optimizer slots, position in the data, learning
 * rate) in memory every `commitEvery` steps and at each epoch's end. When a worker is lost, the next collective
 * raises ERR_MEMBERSHIP on the survivors: they restore the last commit, rebuild the engine on the new
 * membership, and rank 0 of it broadcasts the state (so a joining worker gets it too), then training goes on
 * with the data re-sharded over the new ranks. Workers that join do so at the survivors' next commit.
 *
 * Under `shoal_spark.run(elastic=True)` membership never changes inside a barrier stage: a lost task fails the
 * stage. Rank 0 also hands every commit to the control's durable store (the driver's, or a folder), and the next
 * stage's rank 0 starts from the last one (see `elasticFit`).
 */
export interface ElasticOptions {
  /** Commit the state every this many optimizer steps (>= 1); a loss costs at most this many steps' work. */
  commitEvery: number;
  /**
   * What stays fixed when the number of workers changes: `per-worker` (default: each worker keeps `batchSize`, the
   * global batch is `batchSize x workers`) or `global` (the global batch of the first membership,
   * `batchSize x workers`, is split over the workers: a worker's batch grows when others are lost).
   */
  batchPolicy?: 'per-worker' | 'global';
  /**
   * Called on every rank after each membership change, once the state is in place and before training goes on:
   * set the learning rate here (`trainer.learningRate = base * workers`), from the arguments alone (it runs
   * again after a later rollback, which restores the committed learning rate first).
   */
  onMembershipChange?: (change: MembershipChange & { trainer: ElasticTrainer }) => void | Promise<void>;
}

const ELASTIC_KEYS = ['commitEvery', 'batchPolicy', 'onMembershipChange'];

/** Check `options.elastic` of a Trainer (ERR_INVALID_ARG naming the bad field). */
export function checkElasticOptions(e: ElasticOptions): void {
  if (!e || typeof e !== 'object') throw Errors.invalidArg('options.elastic', 'must be an object such as { commitEvery: 10 }');
  for (const k of Object.keys(e)) if (!ELASTIC_KEYS.includes(k)) throw Errors.invalidArg(`options.elastic.${k}`, `is not an elastic option (known: ${ELASTIC_KEYS.join(', ')})`);
  if (!Number.isInteger(e.commitEvery) || e.commitEvery < 1) throw Errors.invalidArg('options.elastic.commitEvery', `must be an integer >= 1, got ${String(e.commitEvery)}`);
  if (e.batchPolicy !== undefined && e.batchPolicy !== 'per-worker' && e.batchPolicy !== 'global') throw Errors.invalidArg('options.elastic.batchPolicy', `must be per-worker|global, got ${String(e.batchPolicy)}`);
  if (e.onMembershipChange !== undefined && typeof e.onMembershipChange !== 'function') throw Errors.invalidArg('options.elastic.onMembershipChange', 'must be a function');
}

/** What the elastic loop needs of the Trainer (kept narrow so the Trainer's own loop stays its own). */
export interface ElasticTrainer {
  readonly rank: number;
  readonly size: number;
  readonly model: tfjs.LayersModel;
  readonly optimizer: tfjs.Optimizer;
  learningRate: number;
  readonly globalStep: number;
}
export interface ElasticHost extends ElasticTrainer {
  readonly tf: Tf;
  readonly sync: GradientSync;
  setGlobalStep(step: number): void;
  trainStep(batch: Batch): Promise<number[]>;
  names(prefix?: string): string[];
  evaluate(data: TensorData, options: { batchSize: number; prefix: string }): Promise<Logs>;
  log(message: string): void;
}

/** Where an elastic run stands: what a commit records beside the tensors. */
export interface ElasticPosition {
  epoch: number;
  /** Samples of this epoch's order consumed so far (a multiple of the global batches run; in-memory data). */
  sample: number;
  /** Steps run in this epoch (a BatchSource resumes after this many of its epoch's batches). */
  epochStep: number;
  globalStep: number;
  /** Global batch in force (samples per step over all workers); fixed under the `global` policy. */
  globalBatch: number;
  learningRate: number;
}

interface Snapshot {
  pos: ElasticPosition;
  weights: Float32Array[];
  optimizer: Array<{ name: string; shape: number[]; data: Float32Array }>;
  scalars: Record<string, number>;
}

/** The committed state, in memory: copies of every weight and optimizer slot, and the position. */
export class ElasticState {
  private snap: Snapshot | undefined;
  commits = 0;
  /** Time spent copying state in `commit` (ms, summed over commits). */
  commitMs = 0;
  /** Time spent agreeing at commits whether a worker joins (one scalar allreduce each, ms summed). */
  agreeMs = 0;
  /** Time spent handing commits to the durable store (elastic Spark: the driver or a folder; ms summed). */
  durableMs = 0;

  /** Copy the current state (the copy is what `restore` brings back). */
  async commit(host: ElasticHost, pos: ElasticPosition): Promise<void> {
    const t0 = performance.now();
    this.snap = await takeSnapshot(host, pos);
    this.commits += 1;
    this.commitMs += performance.now() - t0;
  }

  get committed(): ElasticPosition | undefined {
    return this.snap ? { ...this.snap.pos } : undefined;
  }

  /** Put the last commit back in place; its position (undefined when nothing was committed yet). */
  async restore(host: ElasticHost): Promise<ElasticPosition | undefined> {
    if (!this.snap) return undefined;
    await applySnapshot(host, this.snap);
    return { ...this.snap.pos };
  }

  /** The last commit as bytes for a `CommitStore`, with what the trainer adds (history, epoch sums). */
  encode(extra: CommitExtra): Uint8Array {
    if (!this.snap) throw Errors.state('elastic state: nothing committed yet');
    return encodeCommit(this.snap, extra);
  }
}

/** What a durable commit holds beside the state: the epochs logged so far and the running epoch's global sums. */
export interface CommitExtra {
  epochs: History['epochs'];
  sums: number[];
}

const COMMIT_FORMAT = 'shoal-elastic-commit-v1';

/**
 * A commit as bytes: a 4-byte little-endian header length, the header (JSON: format, position, shapes, optimizer
 * scalars, extra), zero padding to a multiple of 4, then every weight and optimizer slot as float32.
 */
function encodeCommit(s: Snapshot, extra: CommitExtra): Uint8Array {
  const header = new TextEncoder().encode(JSON.stringify({ format: COMMIT_FORMAT, pos: s.pos, weights: s.weights.map((w) => w.length), optimizer: s.optimizer.map((o) => ({ name: o.name, shape: o.shape })), scalars: s.scalars, extra }));
  const arrays = [...s.weights, ...s.optimizer.map((o) => o.data)];
  const start = Math.ceil((4 + header.length) / 4) * 4;
  const out = new Uint8Array(start + 4 * arrays.reduce((a, b) => a + b.length, 0));
  new DataView(out.buffer).setUint32(0, header.length, true);
  out.set(header, 4);
  const values = new Float32Array(out.buffer, start);
  let off = 0;
  for (const a of arrays) {
    values.set(a, off);
    off += a.length;
  }
  return out;
}

/** Read a commit `encodeCommit` made; ERR_DATA naming `where` when it is not one. */
export function decodeCommit(bytes: Uint8Array, where: string): { snap: Snapshot; extra: CommitExtra } {
  const bad = (why: string) => Errors.data(where, `is not an elastic commit: ${why}`);
  if (bytes.byteLength < 4) throw bad(`${bytes.byteLength} bytes`);
  const hlen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (4 + hlen > bytes.byteLength) throw bad(`a header of ${hlen} bytes in ${bytes.byteLength}`);
  let h: { format: string; pos: ElasticPosition; weights: number[]; optimizer: Array<{ name: string; shape: number[] }>; scalars: Record<string, number>; extra: CommitExtra };
  try {
    h = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + hlen)));
  } catch (e) {
    throw bad(`header: ${(e as Error).message}`);
  }
  if (h.format !== COMMIT_FORMAT) throw bad(`format ${JSON.stringify(h.format)}`);
  const start = Math.ceil((4 + hlen) / 4) * 4;
  const values = new Float32Array(bytes.slice(start).buffer);
  const sizes = [...h.weights, ...h.optimizer.map((o) => o.shape.reduce((a, d) => a * d, 1))];
  if (sizes.reduce((a, b) => a + b, 0) !== values.length) throw bad(`${values.length} values, the header describes ${sizes.reduce((a, b) => a + b, 0)}`);
  let off = 0;
  const take = (n: number) => values.subarray(off, (off += n));
  const weights = h.weights.map(take);
  const optimizer = h.optimizer.map((o) => ({ ...o, data: take(o.shape.reduce((a, d) => a * d, 1)) }));
  return { snap: { pos: { ...h.pos, epochStep: h.pos.epochStep ?? 0 }, weights, optimizer, scalars: h.scalars }, extra: h.extra };
}

async function takeSnapshot(host: ElasticHost, pos: ElasticPosition): Promise<Snapshot> {
  const weights = host.model.weights.map((w) => Float32Array.from(w.read().dataSync() as Float32Array));
  const optimizer: Snapshot['optimizer'] = [];
  for (const nt of await host.optimizer.getWeights()) optimizer.push({ name: nt.name, shape: [...nt.tensor.shape], data: Float32Array.from(nt.tensor.dataSync() as Float32Array) });
  return { pos: { ...pos }, weights, optimizer, scalars: optimizerScalars(host.optimizer) };
}

async function applySnapshot(host: ElasticHost, s: Snapshot): Promise<void> {
  const tf = host.tf;
  const ws = host.model.weights;
  if (s.weights.length !== ws.length) throw Errors.mismatch('elastic state', `${s.weights.length} weights received, the model has ${ws.length}`);
  ws.forEach((w, i) => {
    const size = w.shape.reduce<number>((a, d) => a * (d ?? 0), 1);
    if (s.weights[i]!.length !== size) throw Errors.mismatch('elastic state', `weight ${i} (${w.name}) has ${s.weights[i]!.length} values, the model's has ${size}`);
  });
  ws.forEach((w, i) => tf.tidy(() => (w.read() as tfjs.Variable).assign(tf.tensor(s.weights[i]!, w.shape.map((d) => d ?? 0), w.dtype))));
  const named = s.optimizer.map((a) => ({ name: a.name, tensor: tf.tensor(a.data, a.shape) }));
  await host.optimizer.setWeights(named);
  for (const n of named) n.tensor.dispose();
  restoreOptimizerScalars(tf, host.optimizer, s.scalars);
  setLearningRate(host.optimizer, s.pos.learningRate);
  host.setGlobalStep(s.pos.globalStep);
}

/**
 * Make every rank hold rank 0's state (collective): two broadcasts, a fixed-size one that gives the sizes, then
 * a description (JSON as bytes) and the values. A joining worker learns the optimizer's slots from it.
 */
async function broadcastState(host: ElasticHost, pos: ElasticPosition): Promise<ElasticPosition> {
  const sync = host.sync;
  const mine = host.rank === 0 ? await takeSnapshot(host, pos) : undefined;
  const header = mine ? new TextEncoder().encode(JSON.stringify({ pos: mine.pos, optimizer: mine.optimizer.map((o) => ({ name: o.name, shape: o.shape })), scalars: mine.scalars })) : new Uint8Array(0);
  const lengths = mine ? [...mine.weights, ...mine.optimizer.map((o) => o.data)].map((a) => a.length) : [];
  const total = lengths.reduce((a, b) => a + b, 0);
  const meta = Float32Array.of(header.length, Math.floor(total / 2 ** 24), total % 2 ** 24);
  await sync.broadcastParameters([{ name: 'elastic/meta', shape: [3], data: meta }]);
  const hlen = meta[0]!;
  const n = meta[1]! * 2 ** 24 + meta[2]!;
  const hdata = Float32Array.from(header.length ? header : new Uint8Array(hlen));
  const values = new Float32Array(n);
  if (mine) {
    let off = 0;
    for (const a of [...mine.weights, ...mine.optimizer.map((o) => o.data)]) {
      values.set(a, off);
      off += a.length;
    }
  }
  await sync.broadcastParameters([
    { name: 'elastic/header', shape: [hlen], data: hdata },
    { name: 'elastic/state', shape: [n], data: values },
  ]);
  if (mine) return pos;
  const h = JSON.parse(new TextDecoder().decode(Uint8Array.from(hdata))) as { pos: ElasticPosition; optimizer: Array<{ name: string; shape: number[] }>; scalars: Record<string, number> };
  let off = 0;
  const take = (len: number) => values.subarray(off, (off += len));
  const weights = host.model.weights.map((w) => take(w.shape.reduce<number>((a, d) => a * (d ?? 0), 1)));
  const optimizer = h.optimizer.map((o) => ({ ...o, data: take(o.shape.reduce((a, d) => a * d, 1)) }));
  if (off !== n) throw Errors.mismatch('elastic state', `rank 0 sent ${n} values, this rank's model and rank 0's optimizer slots hold ${off}`, { rank: host.rank });
  await applySnapshot(host, { pos: h.pos, weights, optimizer, scalars: h.scalars });
  return { ...h.pos };
}

/** This rank's rows of the global batch at `start` (G samples split over the ranks, remainders spread). */
export function elasticBatchRows(order: Int32Array, start: number, globalBatch: number, rank: number, size: number): Int32Array {
  const lo = start + Math.floor((globalBatch * rank) / size);
  const hi = start + Math.floor((globalBatch * (rank + 1)) / size);
  return order.subarray(lo, hi);
}

/**
 * The elastic training loop: see `ElasticOptions`. Returns the epochs this worker ran (a worker that joined late
 * has fewer). Collective; ERR_MEMBERSHIP is handled here, any other error ends the fit.
 *
 * In-memory data (x, y on every rank) is re-sharded over whoever is there after each change. A BatchSource (this
 * rank's `worker.data()`) cannot be re-split in place, so it needs a control that restarts whole (an elastic Spark
 * stage: `control.durable`) or none: a restarted stage's sources are the new shards, and the interrupted epoch
 * resumes after the committed number of steps of them.
 */
export async function elasticFit(host: ElasticHost, plan: FitPlan, callbacks: Callbacks[], opts: ElasticOptions, state = new ElasticState()): Promise<History> {
  const { data, epochs, batchSize, options } = plan;
  const tf = host.tf;
  const control = elasticOf(host.sync);
  const durable = control?.durable;
  const source = isBatchSource(data) ? data : undefined;
  if (source && control !== undefined && durable === undefined) {
    throw Errors.invalidArg('fit data', 'must be in-memory x, y tensors under `shoal run --elastic` (the trainer re-shards them when the membership changes); a BatchSource or worker.data() works with an elastic Spark job, which restarts whole');
  }
  if (options.checkpoint !== undefined) throw Errors.invalidArg('fit options.checkpoint', 'is not supported with options.elastic yet');
  if (!source && options.stepsPerEpoch !== undefined) throw Errors.invalidArg('fit options.stepsPerEpoch', 'is not supported with options.elastic and in-memory data');
  if (source && options.stepsPerEpoch === undefined) throw Errors.invalidArg('fit options.stepsPerEpoch', 'is required with a BatchSource and options.elastic (worker.data() sets it)');
  const policy = opts.batchPolicy ?? 'per-worker';
  if (source && policy === 'global') throw Errors.invalidArg('options.elastic.batchPolicy', "'global' needs in-memory data: a BatchSource's batches have its own size");
  const n = source ? 0 : numSamples(data as TensorData, 'fit data');
  const steps = options.stepsPerEpoch ?? Infinity;
  const names = host.names();
  const history: History = { epochs: [], startEpoch: options.initialEpoch ?? 0, stopped: false };
  let pos: ElasticPosition = { epoch: options.initialEpoch ?? 0, sample: 0, epochStep: 0, globalStep: host.globalStep, globalBatch: batchSize * host.size, learningRate: host.learningRate };
  let sums = new Float64Array(names.length + 1);
  let committedSums = sums.slice();
  let change: MembershipChange | undefined;
  const commit = async () => {
    await state.commit(host, pos);
    committedSums = sums.slice();
  };
  /** Commit, and hand the commit to the durable store (collective: the epoch sums are summed over the ranks). */
  const commitDurable = async () => {
    await commit();
    if (durable === undefined) return;
    const t0 = performance.now();
    const mean = await host.sync.allreduceScalars(sums);
    if (host.rank === 0) await durable.save(state.encode({ epochs: history.epochs, sums: Array.from(mean, (v) => v * host.size) }));
    state.durableMs += performance.now() - t0;
  };
  /** After a reset (or at the start): take rank 0's state, re-shard, tell the user. */
  const adopt = async () => {
    pos = await broadcastState(host, pos);
    if (policy === 'per-worker') pos.globalBatch = batchSize * host.size;
    if (!source && pos.globalBatch < host.size) throw Errors.data('fit data', `a global batch of ${pos.globalBatch} cannot be split over ${host.size} workers`);
    await commit();
    if (change) {
      host.log(`generation ${change.generation}: ${change.workers} worker(s)${change.lost.length ? `, lost ${change.lost.map((l) => `rank ${l.rank} (worker ${l.workerId}, ${l.reason})`).join(', ')}` : ''}${change.joined.length ? `, joined worker(s) ${change.joined.join(', ')}` : ''}; resuming at step ${pos.globalStep}`);
      await opts.onMembershipChange?.({ ...change, trainer: host });
      pos.learningRate = host.learningRate;
    }
  };
  // A restarted stage of an elastic Spark job: rank 0 takes the last durable commit (adopt() hands it to all).
  if (durable !== undefined && host.rank === 0) {
    const bytes = await durable.load();
    if (bytes !== undefined) {
      const { snap, extra } = decodeCommit(bytes, durable.where);
      await applySnapshot(host, snap);
      pos = { ...snap.pos };
      history.epochs.push(...extra.epochs);
      if (extra.sums.length === sums.length) sums.set(extra.sums);
      host.log(`restored the commit of step ${pos.globalStep} (epoch ${pos.epoch}, step ${pos.epochStep} of it) from ${durable.where}`);
    }
  }
  for (const cb of callbacks) await cb.onTrainBegin?.();
  // A worker that joins a running job (generation > 0) calls the hook too, so every rank sets the same rate.
  if (control !== undefined && control.generation > 0) change = { generation: control.generation, workers: host.size, rank: host.rank, lost: [...(control.lostBefore ?? [])], joined: [] };
  let synced = false;
  for (;;) {
    try {
      if (!synced) {
        await adopt();
        synced = true;
      }
      while (pos.epoch < epochs) {
        if (pos.epochStep === 0) for (const cb of callbacks) await cb.onEpochBegin?.(pos.epoch);
        const t0 = performance.now();
        const order = source ? undefined : epochOrder(n, pos.epoch, options.shuffle ?? true, options.seed ?? 0);
        const it = source ? sourceBatches(source, { epoch: pos.epoch, rank: host.rank, size: host.size, batchSize }, pos.epochStep) : undefined;
        try {
          for (;;) {
            let batch: Batch;
            if (it) {
              if (pos.epochStep >= steps) break;
              const r = await it.next();
              if (r.done) throw Errors.data('fit data', `rank ${host.rank}'s batch source ended after ${pos.epochStep} of ${steps} steps in epoch ${pos.epoch}`, { rank: host.rank });
              batch = r.value;
            } else {
              if (pos.sample + pos.globalBatch > n) break;
              batch = gatherBatch(tf, data as TensorData, elasticBatchRows(order!, pos.sample, pos.globalBatch, host.rank, host.size));
            }
            const rows = batch.y.shape[0]!;
            let values: number[];
            try {
              values = await host.trainStep(batch);
            } finally {
              disposeBatch(batch);
            }
            values.forEach((v, i) => (sums[i]! += v * rows));
            sums[values.length]! += rows;
            pos.sample += source ? 0 : pos.globalBatch;
            pos.epochStep += 1;
            pos.globalStep = host.globalStep;
            const local: Logs = {};
            names.forEach((k, i) => (local[k] = values[i]!));
            for (const cb of callbacks) await cb.onBatchEnd?.(pos.epochStep - 1, local);
            if (pos.globalStep % opts.commitEvery === 0) {
              await commitDurable();
              const t0 = performance.now();
              const joins = control !== undefined && (await control.joinPending());
              state.agreeMs += performance.now() - t0;
              if (joins) {
                change = await control!.reset();
                await adopt();
              }
            }
          }
        } finally {
          await it?.return?.(undefined);
        }
        const reduced = await host.sync.allreduceScalars(sums);
        const total = reduced[reduced.length - 1]!;
        const logs: Logs = {};
        names.forEach((k, i) => (logs[k] = total > 0 ? reduced[i]! / total : NaN));
        if (plan.validation && (pos.epoch + 1) % (options.validationFreq ?? 1) === 0) {
          Object.assign(logs, await host.evaluate(plan.validation, { batchSize: options.validationBatchSize ?? batchSize, prefix: 'val_', ...(plan.validationLocal ? { local: true } : {}) }));
        }
        const seconds = (performance.now() - t0) / 1000;
        history.epochs.push({ ...logs, epoch: pos.epoch, seconds, samplesPerSec: total / seconds, learningRate: getLearningRate(host.optimizer), workers: host.size } as never);
        for (const cb of callbacks) await cb.onEpochEnd?.(pos.epoch, { ...logs });
        pos.epoch += 1;
        pos.sample = 0;
        pos.epochStep = 0;
        sums = new Float64Array(names.length + 1);
        await commitDurable();
      }
      break;
    } catch (e) {
      if (control === undefined || !isShoalError(e, 'ERR_MEMBERSHIP')) throw e;
      host.log(`${e.message}`);
      const back = await state.restore(host);
      if (back) {
        pos = back;
        sums = committedSums.slice();
      }
      change = await control.reset();
      synced = false;
    }
  }
  for (const cb of callbacks) await cb.onTrainEnd?.(history);
  return history;
}

/** The batches of one epoch of `source` after the first `skip` (disposed unseen): where a restarted stage resumes. */
async function* sourceBatches(source: BatchSource, ctx: BatchContext, skip: number): AsyncGenerator<Batch> {
  for await (const b of source.batches(ctx) as AsyncIterable<Batch>) {
    if (skip > 0) {
      skip -= 1;
      disposeBatch(b);
      continue;
    }
    yield b;
  }
}
