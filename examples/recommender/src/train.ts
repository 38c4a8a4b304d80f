import { EmbeddingTables, type DenseTensor, type GradientSync, type OptimizerSpec, type ParameterState, type TablesState } from '@shoal/backends';
import { Errors, Rng } from '@shoal/core';
import { ProgressBar, type LogSink } from '@shoal/wrappers';
import type { Lists } from './features.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { meanGradients, unionRows } from './accumulate.js';
import { packedView, tableView, type BasketModel, type BatchPlan, type Example, type RowView, type StepGradients } from './model.js';
import type { Baskets, TestBaskets } from './prepare.js';

export interface TrainOptions {
  epochs: number;
  /** Examples per step summed over all workers; must be a multiple of the world size. */
  globalBatch: number;
  /** Targets drawn per training basket per epoch (each with the rest of the basket as context). */
  targetsPerBasket: number;
  seed: number;
  /** Stop each epoch after this many steps (tests, smoke runs); 0 = no limit. */
  maxStepsPerEpoch?: number;
  /** Evaluate on the test baskets after every epoch (rank 0 only; others get null). */
  evalEachEpoch?: { test: TestBaskets; numItems: number } | null;
  /** Draw a progress bar on rank 0 (the wrappers' Keras-style bar) into this sink, e.g. `process.stderr`; none when absent. */
  progress?: LogSink | null;
  /** Called on rank 0 after every step with the global step (1-based, over all epochs) and the epoch's running mean loss (TensorBoard logs). */
  onStep?: ((globalStep: number, loss: number) => void) | null;
  /** Called on rank 0 after every epoch with its stats (TensorBoard logs). */
  onEpochEnd?: ((stats: EpochStats) => void | Promise<void>) | null;
  /**
   * Where the embedding tables live. `replicated` (default): every rank holds full tables, row-sparse gradients
   * are averaged through the engine and every rank applies the same lazy Adam. `server`: the tables live on the
   * parameter servers (ps / hybrid engines only), which apply the row-wise optimizer; ranks pull the rows a step
   * needs and push the row gradients. `auto` (default): `server` when the engine has parameter servers.
   */
  tables?: 'auto' | 'replicated' | 'server';
  /** Optimizer of the tables, on the servers or on every rank (default `adam`: lazy Adam with per-row bias correction; `adagrad`: lr x 10). */
  serverOptimizer?: 'adam' | 'adagrad';
  /**
   * Stop when the evaluation HR@10 (`evalEachEpoch`, rank 0's figure shared with every rank) has not improved for
   * `patience` epochs, and put the best epoch's parameters back (every rank keeps a copy of the best state).
   */
  earlyStop?: { patience: number } | null;
  /** Key prefix of server-held tables (default `t:`): each training run of one job needs its own. */
  tablePrefix?: string;
  /** Progress-bar label before `epoch e/E`. */
  label?: string;
  /**
   * Micro-batches per optimizer step (default 1): K global batches run on the same parameters, their gradients
   * are averaged and synced once (`accumulate.ts`), so an epoch has K times fewer syncs and updates.
   */
  accumulateSteps?: number;
  /** Step checkpoints of this run and the state to resume from (`checkpoint.ts`), or none. */
  checkpoint?: RunCheckpoint | null;
}

/** An epoch's running sums at a step (what `EpochStats` is computed from); a checkpoint carries them. */
export interface EpochSums {
  loss: number; sparseRows: number; sparseBytes: number; pulledRows: number; pullBytes: number; held: number;
  /** Milliseconds: in compute, sync, apply, and in the epoch overall (before this process's share). */
  compute: number; sync: number; apply: number; elapsed: number;
  /** Engine and ps-client bytes of the epoch before this process's share. */
  wire: number; psWire: number;
  rowsPerStep: Record<string, number>;
}

/** Where a run stands after a step, with everything needed to go on exactly (dense layers, tables, the best epoch). */
export interface RunState {
  /** 1-based epoch and the steps of it done. */
  epoch: number; step: number; globalStep: number;
  sums: EpochSums;
  history: EpochStats[];
  best: { hr: number; epoch: number; state: { tables: Float32Array[]; dense: Float32Array[] } } | null;
  dense: Float32Array[];
  denseOptimizer: Record<string, ParameterState>;
  tables: TablesState;
}

/** A run's step checkpoints: `due` after every mid-epoch step (rank 0), `save` writes the state. */
export interface RunCheckpoint {
  resume: RunState | null;
  due(globalStep: number): boolean;
  save(state: RunState): Promise<void>;
}

export interface EpochStats {
  epoch: number;
  /** Mean training loss over the epoch's steps and all workers. */
  loss: number;
  steps: number;
  /** Examples processed by all workers this epoch. */
  samples: number;
  seconds: number;
  samplesPerSec: number;
  /** Mean unique table rows this rank pushed per step, summed over tables. */
  sparseRowsPerStep: number;
  /** The same per table (name -> mean unique rows per step) with each table's row count. */
  tableRows: Record<string, { rowsPerStep: number; numRows: number }>;
  /** Mean bytes of row-sparse gradients this rank pushed per step (rows * rowSize * 4, plus 4 per id). */
  sparseBytesPerStep: number;
  /** Bytes of all embedding tables (what a dense sync of them would move per step). */
  tableBytes: number;
  /** Rank 0's time in gradient computation (tfjs + JS gathers/scatters), in the engine, and applying updates. */
  computeSeconds: number;
  syncSeconds: number;
  /** Every rank's sync seconds (rank 0's is `syncSeconds`): a rank waiting for a slower peer shows here. */
  syncSecondsByRank: number[];
  applySeconds: number;
  /** Bytes the engine reported sent by this rank during the epoch, per step. */
  wireBytesPerStep: number;
  tables: 'replicated' | 'server';
  /** Server-held tables: mean rows pulled per step (all tables), the payload bytes pulled / pushed per step (rows * rowSize * 4 + 4 per id). */
  pulledRowsPerStep: number;
  pullBytesPerStep: number;
  pushBytesPerStep: number;
  /**
   * Server-held tables: bytes sent plus received per step by this rank's parameter-server client (tables only
   * under hybrid; under ps it also carries the dense allreduce and scalars). Replicated: 0.
   */
  psWireBytesPerStep: number;
  /** Table bytes this rank held during the epoch: the mean pulled rows per step (server), or full tables plus their Adam m / v / step state (replicated). */
  heldTableBytes: number;
  metrics: RankingMetrics | null;
  /** HR@10 of the evaluation after this epoch, the same on every rank (null without `evalEachEpoch`). */
  evalHr: number | null;
}

/**
 * The training examples of one epoch, in the same order on every rank (seeded by epoch): up to
 * `targetsPerBasket` distinct target positions per training basket of >= 2 items, shuffled.
 */
export function epochExamples(train: Baskets, targetsPerBasket: number, seed: number): Example[] {
  const rng = new Rng(seed);
  const out: Example[] = [];
  for (let b = 0; b + 1 < train.offsets.length; b++) {
    const s = train.offsets[b]!, e = train.offsets[b + 1]!;
    if (e - s < 2) continue;
    const pos = Array.from({ length: e - s }, (_, i) => s + i);
    if (pos.length > targetsPerBasket) { rng.shuffle(pos); pos.length = targetsPerBasket; }
    for (const t of pos) out.push({ basket: b, target: t });
  }
  return rng.shuffle(out as unknown as number[]) as unknown as Example[];
}

/**
 * Data-parallel training of `model` through `sync`: every step each rank takes its slice of the global batch,
 * computes gradients and averages the dense ones with `allreduceMean` (then the same local Adam everywhere).
 * The tables are `EmbeddingTables` (@shoal/backends), placed by `opts.tables`:
 * - `replicated`: every rank holds them; the row gradients are averaged with the engine's row-sparse collective
 *   and every rank applies the identical lazy Adam, so replicas stay equal;
 * - `server`: rank 0's initial tables go to the parameter servers once and the ranks drop theirs; each step a
 *   rank pulls the rows its plan needs and pushes their gradients, and the servers apply the same row-wise
 *   optimizer (sync rounds: the update of the mean gradient). Every rank pulls the whole tables once at the end
 *   (rank 0 also after each epoch it evaluates).
 * Returns one EpochStats per epoch (identical loss on every rank).
 */
export async function trainModel(model: BasketModel, train: Baskets, hist: Lists, sync: GradientSync, opts: TrainOptions): Promise<EpochStats[]> {
  const W = sync.size;
  if (!(opts.globalBatch > 0 && opts.globalBatch % W === 0)) {
    throw Errors.invalidArg('globalBatch', `must be a positive multiple of the world size ${W}, got ${opts.globalBatch}`);
  }
  const local = opts.globalBatch / W;
  const K = opts.accumulateSteps ?? 1;
  if (!(Number.isInteger(K) && K >= 1)) throw Errors.invalidArg('accumulateSteps', `must be an integer >= 1, got ${K}`);
  const perStep = opts.globalBatch * K; // examples per optimizer step, all workers
  const tables = model.tables();
  const lr = model.opts.lr;
  const optimizer: OptimizerSpec = (opts.serverOptimizer ?? 'adam') === 'adam' ? { type: 'adam', lr, rowStep: true } : { type: 'adagrad', lr: lr * 10 };
  const resume = opts.checkpoint?.resume ?? null;
  // Dense layers from rank 0 (a checkpoint's on resume); the tables from rank 0 onto the servers (then dropped
  // here) or onto every rank, or the checkpoint's with their optimizer state.
  if (resume) model.setDenseState(resume.dense, resume.denseOptimizer);
  await sync.broadcastParameters(model.dense);
  const emb = await EmbeddingTables.create(sync, tables.map((t) => ({ name: t.name, numRows: t.numRows, rowSize: t.rowSize })), resume ? undefined : tables.map((t) => t.data), {
    placement: opts.tables ?? 'auto', optimizer, prefix: opts.tablePrefix ?? 't:', ...(resume ? { restore: resume.tables } : {}),
  });
  const server = emb.placement === 'server';
  if (server) model.releaseTables();
  else if (resume) emb.local()!.forEach((a, k) => model.setTable(tables[k]!.name, a)); // the restored tables, stepped in place by push
  else model.invalidate();
  const tableBytes = emb.tableBytes;
  const history: EpochStats[] = resume ? [...resume.history] : [];
  const onStep = sync.rank === 0 ? opts.onStep : null;
  let globalStep = resume?.globalStep ?? 0;
  let best: RunState['best'] = resume?.best ?? null;
  const ckpt = sync.rank === 0 ? (opts.checkpoint ?? null) : null;
  for (let epoch = resume?.epoch ?? 1; epoch <= opts.epochs; epoch++) {
    const ex = epochExamples(train, opts.targetsPerBasket, opts.seed * 1000 + epoch);
    let steps = Math.floor(ex.length / perStep);
    if (opts.maxStepsPerEpoch) steps = Math.min(steps, opts.maxStepsPerEpoch);
    if (steps === 0) throw Errors.data('training', `${ex.length} examples are fewer than one optimizer step of ${perStep}`);
    const first = resume && epoch === resume.epoch ? resume.step : 0;
    if (opts.progress && sync.rank === 0) opts.progress.write(`${opts.label ? `${opts.label} ` : ''}Epoch ${epoch}/${opts.epochs}${first ? ` (resumed at step ${first})` : ''}\n`);
    const bar = opts.progress && sync.rank === 0 ? new ProgressBar(opts.progress, steps) : null;
    const t0 = performance.now();
    const wire0 = sync.stats().bytesSent;
    const ps0 = emb.stats();
    const acc: EpochSums = first ? structuredClone(resume!.sums) : {
      loss: 0, sparseRows: 0, sparseBytes: 0, pulledRows: 0, pullBytes: 0, held: 0, compute: 0, sync: 0, apply: 0, elapsed: 0, wire: 0, psWire: 0,
      rowsPerStep: Object.fromEntries(tables.map((t) => [t.name, 0])),
    };
    // The K micro-batches of optimizer step s are global batches s*K .. s*K+K-1 (seeded by that index).
    const planOf = (s: number): BatchPlan[] => Array.from({ length: K }, (_, m) => {
      const b = s * K + m, start = b * opts.globalBatch + sync.rank * local;
      return model.plan(train, hist, ex.slice(start, start + local), { stepSeed: opts.seed * 1_000_003 + epoch * 10_007 + b, firstIndex: start });
    });
    // Server-held tables: the rows of step s are pulled right after step s-1's push is sent (the servers answer
    // once that round is applied), together with the dense allreduce: one wait per step.
    const pullRows = async (rows: Int32Array[]): Promise<RowView[]> => {
      const got = await emb.pull(rows);
      return tables.map((t, k) => packedView(rows[k]!, got[k]!, t.rowSize));
    };
    let plan = planOf(first);
    let rows = unionRows(plan);
    let pulling: Promise<RowView[]> | null = server ? pullRows(rows) : null;
    pulling?.catch(() => {});
    for (let s = first; s < steps; s++) {
      const c0 = performance.now();
      const views = server ? await pulling! : tables.map(tableView);
      if (server) {
        for (let k = 0; k < tables.length; k++) {
          const n = rows[k]!.length;
          acc.pulledRows += n; acc.pullBytes += n * (tables[k]!.rowSize * 4 + 4); acc.held += n * tables[k]!.rowSize * 4;
        }
      }
      const c0b = performance.now();
      acc.sync += c0b - c0;
      const micro: StepGradients[] = [];
      for (const p of plan) micro.push(await model.gradients(p, hist, views));
      model.recycle(plan);
      const g = meanGradients(micro);
      const c1 = performance.now();
      acc.compute += c1 - c0b;
      for (const sp of g.sparse) {
        acc.sparseRows += sp.rowIds.length;
        acc.rowsPerStep[sp.name]! += sp.rowIds.length / steps;
        acc.sparseBytes += sp.rowIds.length * 4 + sp.rows.byteLength;
      }
      // The step's loss rides with the dense gradients: every rank sums the same mean loss (a resumed rank 1 goes
      // on from rank 0's checkpointed sum), and the epoch's loss needs no collective of its own.
      const lossT: DenseTensor = { name: 'loss', shape: [1], data: Float32Array.of(g.loss) };
      const dense = [...g.dense, lossT];
      let tPlan = 0;
      if (server) {
        // Send the row push and start the dense allreduce first, then build the next step's plan while they are
        // on the wire (the plan is seeded per step, so the order changes no value); its time counts as compute.
        const pushed = emb.push(g.sparse);
        const reduced = sync.allreduceMean(dense);
        pushed.catch(() => {}); reduced.catch(() => {}); // awaited below; if planning throws first, not unhandled
        if (s + 1 < steps) {
          const p0 = performance.now();
          plan = planOf(s + 1);
          rows = unionRows(plan);
          tPlan = performance.now() - p0;
          pulling = pullRows(rows);
          pulling.catch(() => {}); // observed when awaited next step; if this step fails first, not unhandled
        } else pulling = null;
        await Promise.all([reduced, pushed]);
      } else {
        await sync.allreduceMean(dense);
        await emb.push(g.sparse); // the row collective, then the same lazy Adam on every rank
        acc.held += emb.heldBytes();
      }
      const c2 = performance.now();
      model.applyDenseGradients(g.dense);
      acc.compute += tPlan; acc.sync += c2 - c1 - tPlan; acc.apply += performance.now() - c2;
      if (!server && s + 1 < steps) plan = planOf(s + 1);
      acc.loss += lossT.data[0]!;
      globalStep++;
      onStep?.(globalStep, acc.loss / (s + 1));
      if (s + 1 < steps) bar?.update(s + 1, { loss: acc.loss / (s + 1) }, (s + 1) * perStep); // the last step: `end` below
      // A step checkpoint (rank 0, between this step's push settling and the next push: the servers are at this
      // round). Mid-epoch only: one due at an epoch's last step is written after the next step.
      if (ckpt && s + 1 < steps && ckpt.due(globalStep)) {
        const now = { ...acc, rowsPerStep: { ...acc.rowsPerStep }, elapsed: acc.elapsed + performance.now() - t0, wire: acc.wire + sync.stats().bytesSent - wire0 };
        const ps = emb.stats();
        now.psWire = acc.psWire + ps.bytesSent - ps0.bytesSent + ps.bytesReceived - ps0.bytesReceived;
        await ckpt.save({
          epoch, step: s + 1, globalStep, sums: now, history, best,
          dense: model.dense.map((p) => Float32Array.from(p.data)), denseOptimizer: model.denseOptimizerState(), tables: await emb.exportState(),
        });
      }
    }
    const seconds = (acc.elapsed + performance.now() - t0) / 1000;
    const ps1 = emb.stats();
    const loss = acc.loss / steps; // the same on every rank
    bar?.end(steps, { loss }, steps * perStep);
    let metrics: RankingMetrics | null = null;
    if (opts.evalEachEpoch && sync.rank === 0) {
      if (server) await loadTables(emb, model);
      metrics = await evaluate(model, opts.evalEachEpoch.test, opts.evalEachEpoch.numItems);
      if (server && epoch < opts.epochs && !opts.earlyStop) model.releaseTables();
    }
    let evalHr: number | null = null;
    // allreduceScalars averages: rank 0 contributes size x its HR@10, the others 0 (exact for 2 and 4 ranks).
    if (opts.evalEachEpoch) [evalHr] = Array.from(await sync.allreduceScalars(Float64Array.of(sync.rank === 0 ? metrics!.hr * sync.size : 0)));
    // Every rank's sync time (allreduceScalars averages: each rank puts size x its own at its index; exact for 2, 4).
    const mine = new Float64Array(sync.size);
    mine[sync.rank] = (acc.sync / 1000) * sync.size;
    const syncByRank = Array.from(await sync.allreduceScalars(mine));
    const perTable = Object.fromEntries(tables.map((t) => [t.name, { rowsPerStep: acc.rowsPerStep[t.name]!, numRows: t.numRows }]));
    const stats: EpochStats = {
      epoch, loss, steps, samples: steps * perStep, seconds, samplesPerSec: (steps * perStep) / seconds,
      sparseRowsPerStep: acc.sparseRows / steps, tableRows: perTable, sparseBytesPerStep: acc.sparseBytes / steps, tableBytes,
      wireBytesPerStep: (acc.wire + sync.stats().bytesSent - wire0) / steps, metrics,
      computeSeconds: acc.compute / 1000, syncSeconds: acc.sync / 1000, syncSecondsByRank: syncByRank, applySeconds: acc.apply / 1000,
      tables: emb.placement, pulledRowsPerStep: acc.pulledRows / steps, pullBytesPerStep: acc.pullBytes / steps, pushBytesPerStep: (server ? acc.sparseBytes : 0) / steps,
      psWireBytesPerStep: server ? (acc.psWire + ps1.bytesSent - ps0.bytesSent + ps1.bytesReceived - ps0.bytesReceived) / steps : 0,
      heldTableBytes: acc.held / steps, evalHr,
    };
    history.push(stats);
    if (sync.rank === 0) await opts.onEpochEnd?.(stats);
    if (opts.earlyStop && evalHr !== null) {
      if (best === null || evalHr > best.hr) {
        // Every rank keeps the best state (server-held tables: pulled once per improving epoch).
        if (server && model.heldTableBytes() === 0) await loadTables(emb, model);
        best = { hr: evalHr, epoch, state: model.snapshot() };
      }
      if (server) model.releaseTables();
      if (epoch - best.epoch >= opts.earlyStop.patience) break;
    }
  }
  if (best !== null) {
    // Keep the best epoch: its parameters go back into the model (server-held tables are not written back:
    // evaluation after this runs on the local copy).
    model.restore(best.state);
    return history;
  }
  // Every rank ends with the trained tables (evaluation, suggestions): one full pull from the servers.
  if (server && model.heldTableBytes() === 0) await loadTables(emb, model);
  return history;
}

/** Pull the whole tables into the model (after this rank's last push). */
async function loadTables(emb: EmbeddingTables, model: BasketModel): Promise<void> {
  const full = await emb.pullAll();
  model.tables().forEach((t, k) => model.setTable(t.name, full[k]!));
}
