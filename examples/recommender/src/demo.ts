import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoOccurrence, MostPopular, RepeatBuy } from './baselines.js';
import type { DemoOptions } from './cli-options.js';
import { ONLINE_RETAIL, validateConfig, type DatasetConfig } from './config.js';
import { DEFAULT_SPEC, type JobSpec, type TrainResult } from './job.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { prepare, type Prepared } from './prepare.js';
import { relGain, writeReport } from './report.js';

/** The repository root (this file is examples/recommender/dist/demo.js). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function stamp(): string { return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15); }

/** The dataset config `--config` names (relative files resolve against its folder), or the shipped Online Retail. */
export function resolveDataset(o: DemoOptions): { cfg: DatasetConfig; baseDir: string } {
  if (o.config === null) return { cfg: ONLINE_RETAIL, baseDir: REPO };
  const p = resolve(o.config);
  return { cfg: validateConfig(JSON.parse(readFileSync(p, 'utf8')), p), baseDir: dirname(p) };
}

export function outDirFor(o: DemoOptions): string { return resolve(o.out ?? join(REPO, 'out', `recommender-${stamp()}`)); }

/** Step 1: prepare (or load the cached) task, logging one summary line. */
export function prepareStep(o: DemoOptions, cfg: DatasetConfig, baseDir: string, log: (s: string) => void): ReturnType<typeof prepare> {
  log(`[1/4] preparing ${cfg.name} (${cfg.file})`);
  const prep = prepare(cfg, baseDir, resolve(o.cache ?? join(REPO, 'out', 'cache')), o.seed);
  const d = prep.data, st = d.stats;
  log(`      ${st.rawRows} rows -> ${st.keptRows} kept -> ${st.trainBaskets} train / ${st.testBaskets} test baskets, ${d.numItems} items, ` +
    `${d.numUsers - 1} customers (${(prep.ms / 1000).toFixed(1)} s${prep.cached ? ', cached' : ''})`);
  return prep;
}

/** Step 2: HR@10 / NDCG@10 of the baselines with the same evaluation code as the model. */
export async function baselineStep(d: Prepared, log: (s: string) => void): Promise<Record<string, RankingMetrics>> {
  log('[2/4] baselines');
  const out: Record<string, RankingMetrics> = {};
  for (const rec of [new MostPopular(d.train, d.numItems), new CoOccurrence(d.train, d.numItems), new RepeatBuy(d.train, d.numItems)]) {
    const m = (out[rec.name] = await evaluate(rec, d.test, d.numItems));
    log(`      ${rec.name.padEnd(14)} HR@10 ${(m.hr * 100).toFixed(2)}%  NDCG@10 ${m.ndcg.toFixed(4)}`);
  }
  return out;
}

/** The training job the flags describe. */
export function specFor(o: DemoOptions, preparedPath: string, outDir: string): JobSpec {
  return {
    ...DEFAULT_SPEC, preparedPath, outDir,
    model: { ...(o.lr !== null ? { lr: o.lr } : {}), ...(o.dim !== null ? { dim: o.dim } : {}) },
    train: { epochs: o.epochs, globalBatch: o.batch, targetsPerBasket: o.targetsPerBasket, seed: o.seed, maxStepsPerEpoch: o.maxSteps, tables: o.tables, serverOptimizer: o.serverOptimizer },
    evalEachEpoch: o.evalEachEpoch,
  };
}

/** Step 4: log the headline and write the report folder. Returns the report path. */
export function reportStep(args: {
  outDir: string; cfg: DatasetConfig; prep: ReturnType<typeof prepare>; baselines: Record<string, RankingMetrics>;
  train: TrainResult; extraRuns?: Record<string, TrainResult>; command: string; t0: number; log: (s: string) => void;
}): string {
  const { train, baselines, prep, log } = args;
  log('[4/4] report');
  const pop = baselines['most-popular']!;
  const gain = relGain(train.final.hr, pop.hr);
  log(`      model HR@10 ${(train.final.hr * 100).toFixed(2)}% (${gain >= 0 ? '+' : ''}${(gain * 100).toFixed(0)}% vs most-popular), NDCG@10 ${train.final.ndcg.toFixed(4)}`);
  const d = prep.data;
  const report = writeReport(args.outDir, {
    title: `shoal recommender: ${args.cfg.name}`, command: args.command,
    dataset: { name: args.cfg.name, attribution: d.attribution, numItems: d.numItems, numUsers: d.numUsers, stats: d.stats, prepareMs: prep.ms, cached: prep.cached },
    baselines, train, wallSeconds: (performance.now() - args.t0) / 1000,
    ...(args.extraRuns ? { extraRuns: args.extraRuns } : {}),
  });
  log(`\nReport: ${report}\nFolder: ${args.outDir} (report.md, hr10.png, hr10-bars.png, loss.png, samples-per-sec.png, results.json)`);
  return report;
}
