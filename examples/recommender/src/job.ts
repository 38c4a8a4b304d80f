import { join } from 'node:path';
import type { GradientSync } from '@shoal/backends';
import { JobCheckpoint, type CheckpointSpec, type RunIdentity, type SelectionRun } from './checkpoint.js';
import { historyLists } from './features.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { BasketModel, type ModelOptions, type Tf } from './model.js';
import { sliceBaskets, type Prepared } from './prepare.js';
import { readItemItem, type ItemItemFiles } from './references.js';
import { RunLog } from './tensorboard-log.js';
import { trainModel, type EpochStats, type TrainOptions } from './train.js';

/**
 * Model selection unless the flags fix all of lr, epochs and the tower weight (README "Robust training"): each learning rate of `lrs` trains on
 * the baskets before the validation period, evaluated on the validation baskets after every epoch, stopping
 * `patience` epochs after the best (at most `maxEpochs`); the best learning rate and epoch count then train the
 * final model on every training basket.
 */
export interface Selection { lrs: number[]; maxEpochs: number; patience: number }
export const DEFAULT_SELECTION: Selection = { lrs: [0.01, 0.003], maxEpochs: 8, patience: 1 };

/** Tower weights tried on validation after each selection run (`BasketModel.towerScale`). */
export const TOWER_SCALES = [1, 0.75, 0.5, 0.35, 0.25, 0] as const;

/** Everything a worker needs to train (written by the launcher-side `main` as JSON, read by every rank). */
export interface JobSpec {
  /** The prepared task cache (from `prepare`). */
  preparedPath: string;
  /** Folder rank 0 writes `train-result.json` into. */
  outDir: string;
  model: Partial<ModelOptions>;
  train: Omit<TrainOptions, 'evalEachEpoch' | 'progress' | 'epochs' | 'earlyStop' | 'tablePrefix' | 'label' | 'onStep' | 'onEpochEnd' | 'checkpoint'>;
  /** Fixed epoch count, or 0: chosen on validation (`select`). */
  epochs: number;
  /** Fixed tower weight (`BasketModel.towerScale`), or null: chosen on validation. */
  towerScale: number | null;
  select: Selection;
  /** EASE inverses and Gram matrices (float32 files from `scoreReferences`) for the model's item-item features, or null. */
  itemItem: ItemItemFiles | null;
  /** Distinct items of the customer's history kept per basket, most recent first (default 200). */
  historyMax: number;
  /** Evaluate HR@10 after every epoch (rank 0), for the per-epoch plot. */
  evalEachEpoch: boolean;
  /** Progress bars on stderr (rank 0). */
  progress: boolean;
  /** TensorBoard logs of every training run under this folder (`select-lr<lr>`, `final`; rank 0), or null. */
  logdir: string | null;
  /** Step checkpoints (`--checkpoint DIR`): written by rank 0, resumed from when the folder holds one; or null. */
  checkpoint: CheckpointSpec | null;
}

export interface TrainResult {
  backend: string;
  workers: number;
  tfjs: string;
  /** The final run's epochs (trained on every training basket). */
  epochs: EpochStats[];
  final: RankingMetrics;
  /** What model selection chose, and the validation HR@10 per epoch of every candidate (null: flags fixed both). */
  selection: { lr: number; epochs: number; towerScale: number; runs: SelectionRun[] } | null;
  lr: number;
  towerScale: number;
  trainSeconds: number;
  /** Bytes this rank sent through the engine in total. */
  bytesSent: number;
  /** A few test baskets with the model's top suggestions ("the menu board"), item keys and names. */
  showcase: Showcase[];
}

export interface Showcase {
  user: string;
  visible: string[];
  hidden: string;
  /** Top 5 suggestions; `hit` marks the hidden item. */
  top: { item: string; hit: boolean }[];
}

export const DEFAULT_SPEC: Omit<JobSpec, 'preparedPath' | 'outDir'> = {
  model: {},
  train: { globalBatch: 512, targetsPerBasket: 8, seed: 1 },
  epochs: 0,
  towerScale: null,
  select: DEFAULT_SELECTION,
  itemItem: null,
  historyMax: 200,
  evalEachEpoch: true,
  progress: true,
  logdir: null,
  checkpoint: null,
};

/** TrainOptions hooks for one run: the progress bar and, with a logdir, rank 0's TensorBoard run `name`. */
function runHooks(spec: Omit<JobSpec, 'preparedPath' | 'outDir'>, sync: GradientSync, name: string, lr: number): { opts: Pick<TrainOptions, 'progress' | 'onStep' | 'onEpochEnd'>; close: () => Promise<void> } {
  const log = spec.logdir !== null && sync.rank === 0 ? new RunLog(join(spec.logdir, name), lr) : null;
  return {
    opts: { progress: spec.progress ? process.stderr : null, onStep: log ? (s, l) => log.onStep(s, l) : null, onEpochEnd: log ? (e) => log.onEpoch(e) : null },
    close: async () => { await log?.close(); },
  };
}

/**
 * Train the basket model on `data` through `sync` (collective: every rank calls it): model selection on the
 * validation period unless the spec fixes the epochs and the learning rate, then the final run on every training
 * basket, evaluated on the test baskets. Every rank returns the same losses; `final` is computed on every rank
 * (identical weights).
 */
export async function runTraining(tf: Tf, tfjsLine: string, data: Prepared, sync: GradientSync, spec: Omit<JobSpec, 'preparedPath' | 'outDir'>): Promise<TrainResult> {
  const t0 = performance.now();
  const ck = spec.checkpoint ? await JobCheckpoint.open(spec.checkpoint, runIdentity(spec, data, sync.size, sync.kind), sync) : null;
  const resumed = ck?.job ?? null;
  if (resumed && sync.rank === 0 && spec.progress) process.stderr.write(`resuming from ${spec.checkpoint!.dir}: training run ${resumed.run + 1} (${resumed.runs.length} selection run(s) done)\n`);
  let run = 0;
  let lr = spec.model.lr ?? null, epochs = spec.epochs;
  let selection: TrainResult['selection'] = null;
  const runs: NonNullable<TrainResult['selection']>['runs'] = resumed ? [...resumed.runs] : [];
  let best = resumed ? { ...resumed.best } : { hr: -1, lr: 0, epochs: 0, scale: 1 };
  if (lr === null || epochs === 0 || spec.towerScale === null) {
    const fit = sliceBaskets(data.train, 0, data.fitBaskets);
    const hist = historyLists(fit, fit, spec.historyMax);
    const validHist = historyLists(fit, data.valid, spec.historyMax);
    const w = spec.itemItem ? readItemItem(spec.itemItem, 'fit') : null;
    for (const l of lr !== null ? [lr] : spec.select.lrs) {
      const thisRun = run++;
      if (resumed && thisRun < resumed.run) continue; // finished before the checkpoint: its figures are in `runs`
      const r0 = performance.now();
      const model = new BasketModel(tf, data.numUsers, data.numItems, { ...spec.model, lr: l }, sync.rank);
      model.testHistory = validHist;
      model.setItemItem(w);
      model.setFeatures(data.features ?? null);
      const hooks = runHooks(spec, sync, `select-lr${l}`, l);
      const ep = await trainModel(model, fit, hist, sync, {
        ...spec.train, ...hooks.opts, epochs: epochs || spec.select.maxEpochs, label: `[select lr ${l}]`, tablePrefix: `t${thisRun}:`,
        checkpoint: ck?.forRun({ run: thisRun, runs: [...runs], best: { ...best } }) ?? null,
        evalEachEpoch: { test: data.valid, numItems: data.numItems }, earlyStop: epochs ? null : { patience: spec.select.patience },
      }).finally(hooks.close);
      const hrs = ep.map((e) => e.evalHr!);
      // The best epoch's model (kept by early stopping) scored with each tower weight; the same on every rank.
      const towerHr: { scale: number; hr: number }[] = [];
      const bestEpoch = epochs ? hrs.length : hrs.indexOf(Math.max(...hrs)) + 1;
      for (const scale of spec.towerScale !== null ? [spec.towerScale] : TOWER_SCALES) {
        model.towerScale = scale;
        const hr = (await evaluate(model, data.valid, data.numItems)).hr;
        towerHr.push({ scale, hr });
        if (hr > best.hr) best = { hr, lr: l, epochs: bestEpoch, scale };
      }
      model.invalidate();
      runs.push({ lr: l, validHr: hrs, losses: ep.map((e) => e.loss), towerHr, seconds: (performance.now() - r0) / 1000 });
    }
    lr = best.lr;
    epochs = epochs || best.epochs;
    selection = { lr, epochs, towerScale: best.scale, runs };
  }
  const hist = historyLists(data.train, data.train, spec.historyMax);
  const model = new BasketModel(tf, data.numUsers, data.numItems, { ...spec.model, lr }, sync.rank);
  model.testHistory = historyLists(data.train, data.test, spec.historyMax);
  model.setItemItem(spec.itemItem ? readItemItem(spec.itemItem, 'full') : null);
  model.setFeatures(data.features ?? null);
  model.towerScale = selection?.towerScale ?? spec.towerScale ?? 1;
  const hooks = runHooks(spec, sync, 'final', lr);
  const epochStats = await trainModel(model, data.train, hist, sync, {
    ...spec.train, ...hooks.opts, epochs, tablePrefix: `t${run}:`,
    checkpoint: ck?.forRun({ run, runs, best }) ?? null,
    evalEachEpoch: spec.evalEachEpoch ? { test: data.test, numItems: data.numItems } : null,
  }).finally(hooks.close);
  const trainSeconds = (performance.now() - t0) / 1000;
  const last = epochStats[epochStats.length - 1]?.metrics;
  const final = last ?? (await evaluate(model, data.test, data.numItems));
  const showcase = suggestions(model, data, 4);
  model.invalidate();
  return { backend: sync.kind, workers: sync.size, tfjs: tfjsLine, epochs: epochStats, final, selection, lr, towerScale: model.towerScale, trainSeconds, bytesSent: sync.stats().bytesSent, showcase };
}

function label(data: Prepared, item: number): string {
  const name = data.itemNames[item];
  return name ? `${data.itemKeys[item]} ${name.trim()}` : data.itemKeys[item]!;
}

/** The model's top 5 for the first `n` test baskets with 2..6 visible items (readable examples). */
function suggestions(model: BasketModel, data: Prepared, n: number): Showcase[] {
  const t = data.test, N = data.numItems, out: Showcase[] = [];
  const scores = new Float32Array(N);
  for (let b = 0; b < t.hidden.length && out.length < n; b++) {
    const s = t.offsets[b]!, e = t.offsets[b + 1]!;
    if (e - s < 2 || e - s > 6) continue;
    model.scoreBatch(t, b, b + 1, scores);
    const visible = new Set(t.items.subarray(s, e));
    const order = Array.from(scores.keys()).filter((j) => !visible.has(j)).sort((x, y) => scores[y]! - scores[x]!).slice(0, 5);
    out.push({
      user: data.userKeys[t.users[b]!]!, visible: [...visible].map((j) => label(data, j)), hidden: label(data, t.hidden[b]!),
      top: order.map((j) => ({ item: label(data, j), hit: j === t.hidden[b] })),
    });
  }
  return out;
}

/** The flags that fix a run's trajectory: a checkpoint written under other values is refused. */
export function runIdentity(spec: Omit<JobSpec, 'preparedPath' | 'outDir'>, data: Prepared, workers: number, backend: string): RunIdentity {
  const t = spec.train;
  return {
    'data set': `${data.name} (${data.numItems} items, ${data.numUsers} users, ${data.train.offsets.length - 1} training baskets)`,
    '--workers': workers,
    '--backend': backend === 'local' ? 'ring' : backend,
    '--tables': t.tables ?? 'auto',
    '--server-optimizer': t.serverOptimizer ?? 'adam',
    '--seed': t.seed,
    '--batch': t.globalBatch,
    '--targets-per-basket': t.targetsPerBasket,
    '--max-steps': t.maxStepsPerEpoch ?? 0,
    '--accumulate-steps': t.accumulateSteps ?? 1,
    '--lr': spec.model.lr ?? 'chosen',
    '--dim': spec.model.dim ?? 'default',
    'model options': JSON.stringify(spec.model),
    '--epochs': spec.epochs || 'chosen',
    '--tower-weight': spec.towerScale ?? 'chosen',
    'selection grid': JSON.stringify(spec.select),
    'history length': spec.historyMax,
    '--no-eval-each-epoch': !spec.evalEachEpoch,
    'item-item features': spec.itemItem !== null,
  };
}
