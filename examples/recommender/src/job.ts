import type { GradientSync } from '@shoal/backends';
import { historyLists } from './features.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { BasketModel, type ModelOptions, type Tf } from './model.js';
import type { Prepared } from './prepare.js';
import { trainModel, type EpochStats, type TrainOptions } from './train.js';

/** Everything a worker needs to train (written by the launcher-side `main` as JSON, read by every rank). */
export interface JobSpec {
  /** The prepared task cache (from `prepare`). */
  preparedPath: string;
  /** Folder rank 0 writes `train-result.json` into. */
  outDir: string;
  model: Partial<ModelOptions>;
  train: Omit<TrainOptions, 'evalEachEpoch' | 'progress'>;
  /** Distinct items of the customer's history kept per basket, most recent first (default 200). */
  historyMax: number;
  /** Evaluate HR@10 after every epoch (rank 0), for the per-epoch plot. */
  evalEachEpoch: boolean;
  progress: boolean;
}

export interface TrainResult {
  backend: string;
  workers: number;
  tfjs: string;
  epochs: EpochStats[];
  final: RankingMetrics;
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
  train: { epochs: 4, globalBatch: 512, targetsPerBasket: 8, seed: 1 },
  historyMax: 200,
  evalEachEpoch: true,
  progress: true,
};

/**
 * Train the basket model on `data` through `sync` (collective: every rank calls it), then evaluate on the test
 * baskets. Every rank returns the same epochs' losses; `final` is computed on every rank (identical weights).
 */
export async function runTraining(tf: Tf, tfjsLine: string, data: Prepared, sync: GradientSync, spec: Omit<JobSpec, 'preparedPath' | 'outDir'>): Promise<TrainResult> {
  const hist = historyLists(data.train, data.train, spec.historyMax);
  const model = new BasketModel(tf, data.numUsers, data.numItems, spec.model, sync.rank);
  model.testHistory = historyLists(data.train, data.test, spec.historyMax);
  const t0 = performance.now();
  const epochs = await trainModel(model, data.train, hist, sync, {
    ...spec.train, progress: spec.progress,
    evalEachEpoch: spec.evalEachEpoch ? { test: data.test, numItems: data.numItems } : null,
  });
  const trainSeconds = (performance.now() - t0) / 1000;
  const last = epochs[epochs.length - 1]?.metrics;
  const final = last ?? (await evaluate(model, data.test, data.numItems));
  const showcase = suggestions(model, data, 4);
  model.invalidate();
  return { backend: sync.kind, workers: sync.size, tfjs: tfjsLine, epochs, final, trainSeconds, bytesSent: sync.stats().bytesSent, showcase };
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
