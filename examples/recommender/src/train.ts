import { psWorkerOf, ServerTables, type DenseTensor, type GradientSync, type RowSparseTensor } from '@shoal/backends';
import { Errors } from '@shoal/core';
import type { Lists } from './features.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { packedView, type BasketModel, type BatchPlan, type Example, type RowView } from './model.js';
import type { Baskets, TestBaskets } from './prepare.js';
import { ProgressBar } from './progress.js';
import { Rng } from '@shoal/core';

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
  /** Draw a progress bar (rank 0). */
  progress?: boolean;
  /**
   * Where the embedding tables live. `replicated` (default): every rank holds full tables, row-sparse gradients
   * are averaged through the engine and every rank applies the same lazy Adam. `server`: the tables live on the
   * parameter servers (ps / hybrid engines only), which apply the row-wise optimizer; ranks pull the rows a step
   * needs and push the row gradients. `auto` (default): `server` when the engine has parameter servers.
   */
  tables?: 'auto' | 'replicated' | 'server';
  /** Server-side optimizer of server-held tables (default `adam`: lazy Adam with per-row bias correction). */
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
  /** Mean bytes of row-sparse gradients this rank pushed per step (rows * rowSize * 4, plus 4 per id; tables fused, see fuseTables). */
  sparseBytesPerStep: number;
  /** Bytes of all embedding tables (what a dense sync of them would move per step). */
  tableBytes: number;
  /** Rank 0's time in gradient computation (tfjs + JS gathers/scatters), in the engine, and applying updates. */
  computeSeconds: number;
  syncSeconds: number;
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
 * Tables (`opts.tables`):
 * - `replicated`: the table rows are averaged with `sparseAllreduceMean` (only touched rows move; engines
 *   without it get the whole table densified) and every rank applies the identical lazy Adam, so replicas stay
 *   equal;
 * - `server`: rank 0's initial tables go to the parameter servers once and the ranks drop theirs; each step a
 *   rank pulls the rows its plan needs and pushes their gradients, and the servers apply the row-wise optimizer
 *   (sync rounds: the update of the mean gradient). Every rank pulls the whole tables once at the end (rank 0
 *   also after each epoch it evaluates).
 * Returns one EpochStats per epoch (identical loss on every rank).
 */
export async function trainModel(model: BasketModel, train: Baskets, hist: Lists, sync: GradientSync, opts: TrainOptions): Promise<EpochStats[]> {
  const W = sync.size;
  if (!(opts.globalBatch > 0 && opts.globalBatch % W === 0)) {
    throw Errors.invalidArg('globalBatch', `must be a positive multiple of the world size ${W}, got ${opts.globalBatch}`);
  }
  const local = opts.globalBatch / W;
  const tables = model.tables();
  const tableBytes = tables.reduce((a, t) => a + t.data.byteLength, 0);
  const kv = psWorkerOf(sync);
  const mode: 'server' | 'replicated' = (opts.tables ?? 'auto') === 'auto' ? (kv ? 'server' : 'replicated') : (opts.tables as 'server' | 'replicated');
  let server: ServerTables | null = null;
  if (mode === 'server') {
    if (kv === null) throw Errors.config('tables', `server-held tables need the ps or hybrid backend (parameter servers), got ${sync.kind}`);
    const lr = model.opts.lr;
    server = new ServerTables(kv, tables.map((t) => ({ name: t.name, numRows: t.numRows, rowSize: t.rowSize })), {
      updater: (opts.serverOptimizer ?? 'adam') === 'adam' ? { type: 'adam', lr, rowStep: true } : { type: 'adagrad', lr: lr * 10 },
      // One row-sparse key for all tables: each step's pull and push is one request per server, not one per table.
      fused: true,
      prefix: opts.tablePrefix ?? 't:',
    });
    // Dense layers from rank 0; the tables once onto the servers (rank 0's seeded values), then dropped here.
    await sync.broadcastParameters(model.dense);
    await server.init(sync.rank === 0 ? tables.map((t) => t.data) : undefined);
    model.releaseTables();
  } else {
    // Same starting point everywhere: rank 0's values.
    await sync.broadcastParameters([...model.dense, ...tables.map((t): DenseTensor => ({ name: t.name, shape: [t.numRows, t.rowSize], data: t.data }))]);
    model.invalidate();
  }
  const history: EpochStats[] = [];
  let best: { hr: number; epoch: number; state: ReturnType<BasketModel['snapshot']> } | null = null;
  for (let epoch = 1; epoch <= opts.epochs; epoch++) {
    const ex = epochExamples(train, opts.targetsPerBasket, opts.seed * 1000 + epoch);
    let steps = Math.floor(ex.length / opts.globalBatch);
    if (opts.maxStepsPerEpoch) steps = Math.min(steps, opts.maxStepsPerEpoch);
    if (steps === 0) throw Errors.data('training', `${ex.length} examples are fewer than one global batch of ${opts.globalBatch}`);
    const bar = opts.progress && sync.rank === 0 ? new ProgressBar(`${opts.label ? `${opts.label} ` : ''}epoch ${epoch}/${opts.epochs}`, steps) : null;
    const t0 = performance.now();
    const wire0 = sync.stats().bytesSent;
    const ps0 = server?.stats();
    let lossSum = 0, sparseRows = 0, sparseBytes = 0, tCompute = 0, tSync = 0, tApply = 0;
    let pulledRows = 0, pullBytes = 0, pushBytes = 0, held = 0;
    const perTable: Record<string, { rowsPerStep: number; numRows: number }> = Object.fromEntries(tables.map((t) => [t.name, { rowsPerStep: 0, numRows: t.numRows }]));
    const planOf = (s: number): BatchPlan => {
      const start = s * opts.globalBatch + sync.rank * local;
      return model.plan(train, hist, ex.slice(start, start + local), { stepSeed: opts.seed * 1_000_003 + epoch * 10_007 + s, firstIndex: start });
    };
    // Server-held tables: the rows of step s are pulled right after step s-1's push is sent (the servers answer
    // once that round is applied), together with the dense allreduce: one wait per step.
    let plan = planOf(0);
    let pulling: Promise<RowView[]> | null = server ? pullRows(server, tables, plan) : null;
    pulling?.catch(() => {});
    for (let s = 0; s < steps; s++) {
      const c0 = performance.now();
      let g;
      if (server) {
        const views = await pulling!;
        for (let k = 0; k < 3; k++) {
          const n = plan.rows[k]!.length;
          pulledRows += n; pullBytes += n * (tables[k]!.rowSize * 4 + 4); held += n * tables[k]!.rowSize * 4;
        }
        const c0b = performance.now();
        tSync += c0b - c0;
        g = await model.gradients(plan, hist, views as [RowView, RowView, RowView]);
        const c1 = performance.now();
        tCompute += c1 - c0b;
        for (const sp of g.sparse) {
          // The servers would fold a NaN into the table for good: stop here, as for a NaN loss (the other ranks
          // then see this rank's connections close).
          for (let i = 0; i < sp.rows.length; i++) if (!Number.isFinite(sp.rows[i]!)) throw Errors.nan(`row gradient of ${sp.name}`, { rank: sync.rank, step: s });
          sparseRows += sp.rowIds.length;
          perTable[sp.name]!.rowsPerStep += sp.rowIds.length / steps;
          pushBytes += sp.rowIds.length * 4 + sp.rows.byteLength;
        }
        // Send the row push and start the dense allreduce first, then build the next step's plan while they are
        // on the wire (the plan is seeded per step, so the order changes no value); its time counts as compute.
        const pushed = server.pushMany(g.sparse.map((sp) => ({ name: sp.name, ids: sp.rowIds, rows: sp.rows })));
        const reduced = sync.allreduceMean(g.dense);
        pushed.catch(() => {}); reduced.catch(() => {}); // awaited below; if planning throws first, not unhandled
        let tPlan = 0;
        if (s + 1 < steps) {
          const p0 = performance.now();
          plan = planOf(s + 1);
          tPlan = performance.now() - p0;
          pulling = pullRows(server, tables, plan);
          pulling.catch(() => {}); // observed when awaited next step; if this step fails first, not unhandled
        } else pulling = null;
        await Promise.all([reduced, pushed]);
        const c2 = performance.now();
        model.applyGradients(g.dense, []);
        tCompute += tPlan; tSync += c2 - c1 - tPlan; tApply += performance.now() - c2;
      } else {
        g = await model.gradients(plan, hist, [tables[0]!, tables[1]!, tables[2]!].map(fullView) as [RowView, RowView, RowView]);
        const c1 = performance.now();
        await sync.allreduceMean(g.dense);
        for (const sp of g.sparse) {
          sparseRows += sp.rowIds.length;
          perTable[sp.name]!.rowsPerStep += sp.rowIds.length / steps;
        }
        // One row-sparse collective for all tables (one round trip to the servers instead of one per table).
        const fused = fuseTables(g.sparse);
        sparseBytes += fused.rows.byteLength + fused.rowIds.byteLength;
        const merged = splitTables(sync.sparseAllreduceMean ? await sync.sparseAllreduceMean(fused) : await densified(sync, fused), g.sparse);
        const c2 = performance.now();
        model.applyGradients(g.dense, merged);
        held += model.heldTableBytes();
        tCompute += c1 - c0; tSync += c2 - c1; tApply += performance.now() - c2;
        if (s + 1 < steps) plan = planOf(s + 1);
      }
      lossSum += g.loss;
      if (bar && (s % 5 === 4 || s === steps - 1)) {
        const sec = (performance.now() - t0) / 1000;
        bar.update(s + 1, `loss ${(lossSum / (s + 1)).toFixed(3)} ${Math.round(((s + 1) * opts.globalBatch) / sec)} samples/s`);
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const ps1 = server?.stats();
    const [loss] = await sync.allreduceScalars(Float64Array.of(lossSum / steps));
    let metrics: RankingMetrics | null = null;
    if (opts.evalEachEpoch && sync.rank === 0) {
      if (server) await loadTables(server, model);
      metrics = await evaluate(model, opts.evalEachEpoch.test, opts.evalEachEpoch.numItems);
      if (server && epoch < opts.epochs && !opts.earlyStop) model.releaseTables();
    }
    let evalHr: number | null = null;
    if (opts.evalEachEpoch) [evalHr] = Array.from(await sync.allreduceScalars(Float64Array.of(sync.rank === 0 ? metrics!.hr : 0)));
    history.push({
      epoch, loss: loss!, steps, samples: steps * opts.globalBatch, seconds, samplesPerSec: (steps * opts.globalBatch) / seconds,
      sparseRowsPerStep: sparseRows / steps, tableRows: perTable, sparseBytesPerStep: (server ? pushBytes : sparseBytes) / steps, tableBytes,
      wireBytesPerStep: (sync.stats().bytesSent - wire0) / steps, metrics,
      computeSeconds: tCompute / 1000, syncSeconds: tSync / 1000, applySeconds: tApply / 1000,
      tables: mode, pulledRowsPerStep: pulledRows / steps, pullBytesPerStep: pullBytes / steps, pushBytesPerStep: pushBytes / steps,
      psWireBytesPerStep: ps0 && ps1 ? (ps1.bytesSent - ps0.bytesSent + ps1.bytesReceived - ps0.bytesReceived) / steps : 0,
      heldTableBytes: held / steps, evalHr,
    });
    if (opts.earlyStop && evalHr !== null) {
      if (best === null || evalHr > best.hr) {
        // Every rank keeps the best state (server-held tables: pulled once per improving epoch).
        if (server && model.heldTableBytes() === 0) await loadTables(server, model);
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
  if (server && model.heldTableBytes() === 0) await loadTables(server, model);
  return history;
}

function fullView(t: { data: Float32Array; rowSize: number }): RowView {
  const rs = t.rowSize, data = t.data;
  return { data, at: (r) => r * rs };
}

/** Pull the plan's rows of every table (fused tables: one request per server for all of them). */
async function pullRows(server: ServerTables, tables: readonly { name: string; rowSize: number }[], plan: BatchPlan): Promise<RowView[]> {
  const got = await server.pullMany(tables.map((t, k) => ({ name: t.name, ids: plan.rows[k]! })));
  return tables.map((t, k) => packedView(plan.rows[k]!, got[k]!, t.rowSize));
}

/** Pull the whole tables into the model (after this rank's last push). */
async function loadTables(server: ServerTables, model: BasketModel): Promise<void> {
  const full = await server.pullMany(model.tables().map((t) => ({ name: t.name, ids: Int32Array.from({ length: t.numRows }, (_, i) => i) })));
  model.tables().forEach((t, k) => model.setTable(t.name, full[k]!));
}

/** Fallback for engines without row-sparse support: scatter into a full dense table, allreduce it, keep touched rows. */
async function densified(sync: GradientSync, g: RowSparseTensor): Promise<RowSparseTensor> {
  const full = new Float32Array(g.numRows * g.rowSize);
  for (let r = 0; r < g.rowIds.length; r++) {
    const o = g.rowIds[r]! * g.rowSize;
    for (let k = 0; k < g.rowSize; k++) full[o + k]! += g.rows[r * g.rowSize + k]!;
  }
  await sync.allreduceMean([{ name: g.name, shape: [g.numRows, g.rowSize], data: full }]);
  const ids: number[] = [];
  for (let r = 0; r < g.numRows; r++) {
    const o = r * g.rowSize;
    for (let k = 0; k < g.rowSize; k++) if (full[o + k] !== 0) { ids.push(r); break; }
  }
  const rows = new Float32Array(ids.length * g.rowSize);
  ids.forEach((id, i) => rows.set(full.subarray(id * g.rowSize, (id + 1) * g.rowSize), i * g.rowSize));
  return { name: g.name, numRows: g.numRows, rowSize: g.rowSize, rowIds: Int32Array.from(ids), rows };
}

/**
 * Stack row-sparse gradients of several tables into one (`tables`): table k's row r becomes row
 * `sum(numRows of tables before k) + r`, rows padded with zeros to the widest row size. Ids stay sorted when each
 * input's ids are sorted. Returns new arrays.
 */
export function fuseTables(parts: readonly RowSparseTensor[]): RowSparseTensor {
  const width = Math.max(...parts.map((p) => p.rowSize));
  const n = parts.reduce((a, p) => a + p.rowIds.length, 0);
  const rowIds = new Int32Array(n), rows = new Float32Array(n * width);
  let base = 0, at = 0;
  for (const p of parts) {
    for (let r = 0; r < p.rowIds.length; r++, at++) {
      rowIds[at] = base + p.rowIds[r]!;
      rows.set(p.rows.subarray(r * p.rowSize, (r + 1) * p.rowSize), at * width);
    }
    base += p.numRows;
  }
  return { name: 'tables', numRows: base, rowSize: width, rowIds, rows };
}

/** Undo `fuseTables` on a merged result (any subset of rows, sorted ids), using `like` for names and sizes. */
export function splitTables(fused: RowSparseTensor, like: readonly RowSparseTensor[]): RowSparseTensor[] {
  const out: RowSparseTensor[] = [];
  let base = 0, at = 0;
  for (const p of like) {
    const start = at;
    while (at < fused.rowIds.length && fused.rowIds[at]! < base + p.numRows) at++;
    const rowIds = new Int32Array(at - start), rows = new Float32Array((at - start) * p.rowSize);
    for (let i = start; i < at; i++) {
      rowIds[i - start] = fused.rowIds[i]! - base;
      rows.set(fused.rows.subarray(i * fused.rowSize, i * fused.rowSize + p.rowSize), (i - start) * p.rowSize);
    }
    out.push({ name: p.name, numRows: p.numRows, rowSize: p.rowSize, rowIds, rows });
    base += p.numRows;
  }
  if (at !== fused.rowIds.length) throw Errors.data('splitTables', `row id ${fused.rowIds[at]} is outside the fused tables (${base} rows)`);
  return out;
}
