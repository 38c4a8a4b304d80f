/**
 * The reference recommenders of the report, scored by the same `evaluate` as the model: most-popular,
 * co-occurrence, repeat-buy, item-kNN (cosine) and EASE. The two with a setting choose it on the validation period
 * (fit on the training baskets before it, HR@10 on its baskets), then refit on all training baskets for the test.
 * EASE's inverses P (validation fit and final fit) are cached as float32 files: the model's features use them.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type * as tfjs from '@tensorflow/tfjs';
import { CoOccurrence, MostPopular, RepeatBuy } from './baselines.js';
import { cosineWeights, easeFromInverse, easeInverse, gramMatrix, ItemItem } from './item-item.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { sliceBaskets, type Prepared } from './prepare.js';

/** EASE regularisation grid (Steck 2019 tunes lambda over a few powers; these span 5x steps). */
export const EASE_LAMBDAS = [10, 50, 250, 1250] as const;
/** item-kNN neighbourhood sizes (0: every co-occurring item). */
export const KNN_SIZES = [20, 100, 0] as const;

export interface References {
  metrics: Record<string, RankingMetrics>;
  /** The setting each tuned reference chose and the validation HR@10 of every candidate. */
  tuning: Record<string, { chosen: number; validHr: Record<string, number> }>;
  /** Float32 files of the EASE inverses P (numItems^2) fit before the validation period and on all training baskets. */
  ease: { lambda: number; fitPath: string; fullPath: string };
}

function writeF32(path: string, a: Float32Array): void {
  writeFileSync(`${path}.tmp`, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  renameSync(`${path}.tmp`, path);
}
/** Read a float32 file written by `writeF32`. */
export function readF32(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** Where `scoreReferences` caches the EASE weights of a prepared task (its cache path without `.json`). */
export function easeFiles(cacheBase: string): { fitPath: string; fullPath: string } {
  return { fitPath: `${cacheBase}-ease-fit.f32`, fullPath: `${cacheBase}-ease-full.f32` };
}

/**
 * Score every reference on the test baskets. `cacheBase` (the prepared task's cache path without `.json`) keys the
 * EASE cache files. `log` gets one line per reference.
 */
export async function scoreReferences(tf: typeof tfjs, d: Prepared, cacheBase: string, log: (s: string) => void): Promise<References> {
  const n = d.numItems, metrics: Record<string, RankingMetrics> = {}, tuning: References['tuning'] = {};
  const line = (name: string, m: RankingMetrics, note = ''): void =>
    log(`      ${name.padEnd(14)} HR@10 ${(m.hr * 100).toFixed(2)}% [${(m.ci.hr[0] * 100).toFixed(1)}, ${(m.ci.hr[1] * 100).toFixed(1)}]  NDCG@10 ${m.ndcg.toFixed(4)}  MRR ${m.mrr.toFixed(4)}${note}`);
  for (const rec of [new MostPopular(d.train, n), new CoOccurrence(d.train, n), new RepeatBuy(d.train, n)]) {
    line(rec.name, (metrics[rec.name] = await evaluate(rec, d.test, n)));
  }
  const fit = sliceBaskets(d.train, 0, d.fitBaskets);
  let gFit: Float64Array | null = gramMatrix(fit, n);
  const gFull = gramMatrix(d.train, n);
  const pick = async (name: string, grid: readonly number[], weights: (g: Float64Array, v: number) => Promise<Float32Array>): Promise<number> => {
    const validHr: Record<string, number> = {};
    let best = grid[0]!, bestHr = -1;
    for (const v of grid) {
      const hr = (await evaluate(new ItemItem(name, await weights(gFit!, v), fit, n), d.valid, n)).hr;
      validHr[String(v)] = hr;
      if (hr > bestHr) { bestHr = hr; best = v; }
    }
    tuning[name] = { chosen: best, validHr };
    return best;
  };
  const k = await pick('item-knn', KNN_SIZES, async (g, v) => cosineWeights(g, n, v));
  line('item-knn', (metrics['item-knn'] = await evaluate(new ItemItem('item-knn', cosineWeights(gFull, n, k), d.train, n), d.test, n)), ` (k ${k || 'all'}, chosen on validation)`);
  // EASE: cached by the prepared task (the inverses are the slow part: seconds per lambda at 3,600 items).
  const tunePath = `${cacheBase}-ease.json`, { fitPath, fullPath } = easeFiles(cacheBase);
  let lambda: number;
  if (existsSync(tunePath) && existsSync(fitPath) && existsSync(fullPath)) {
    const t = JSON.parse(readFileSync(tunePath, 'utf8')) as { chosen: number; validHr: Record<string, number> };
    tuning.ease = t;
    lambda = t.chosen;
  } else {
    const fits = new Map<number, Float32Array>();
    lambda = await pick('ease', EASE_LAMBDAS, async (g, v) => {
      const p = await easeInverse(g, n, v, tf);
      fits.set(v, p);
      return easeFromInverse(p, n);
    });
    writeF32(fitPath, fits.get(lambda)!);
    fits.clear();
    writeF32(fullPath, await easeInverse(gFull, n, lambda, tf));
    writeFileSync(tunePath, JSON.stringify(tuning.ease));
  }
  gFit = null;
  line('ease', (metrics.ease = await evaluate(new ItemItem('ease', easeFromInverse(readF32(fullPath), n), d.train, n), d.test, n)), ` (lambda ${lambda}, chosen on validation)`);
  return { metrics, tuning, ease: { lambda, fitPath, fullPath } };
}
