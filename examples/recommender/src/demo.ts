import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DemoOptions } from './cli-options.js';
import { loadConfig, ONLINE_RETAIL, type DatasetConfig } from './config.js';
import { DEFAULT_SPEC, type JobSpec, type TrainResult } from './job.js';
import type { RankingMetrics } from './metrics.js';
import type { Tf } from './model.js';
import { easeFiles, scoreReferences, type References } from './references.js';
import { prepare } from './prepare.js';
import { writeReport } from './report.js';

/** The repository root (this file is examples/recommender/dist/demo.js). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function stamp(): string { return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15); }

/** The dataset config `--config` names (relative files resolve against its folder), or the shipped Online Retail. */
export function resolveDataset(o: DemoOptions): { cfg: DatasetConfig; baseDir: string } {
  if (o.config === null) return { cfg: ONLINE_RETAIL, baseDir: REPO };
  const p = resolve(o.config);
  return { cfg: loadConfig(p), baseDir: dirname(p) };
}

export function outDirFor(o: DemoOptions): string { return resolve(o.out ?? join(REPO, 'out', `recommender-${stamp()}`)); }

/** Step 1: prepare (or load the cached) task, logging one summary line. */
export type PrepResult = Awaited<ReturnType<typeof prepare>>;
export async function prepareStep(o: DemoOptions, cfg: DatasetConfig, baseDir: string, log: (s: string) => void): Promise<PrepResult> {
  log(`[1/4] preparing ${cfg.name} (${cfg.interactions.file}${cfg.itemNames ? `, names from ${cfg.itemNames.file}` : ''})`);
  const prep = await prepare(cfg, baseDir, resolve(o.cache ?? join(REPO, 'out', 'cache')), o.seed);
  const d = prep.data, st = d.stats;
  const w = d.words;
  log(`      ${st.rawRows} rows -> ${st.keptRows} kept -> ${st.trainBaskets} training ${w.baskets} (${st.validBaskets} validate) / ${st.testBaskets} test ${w.baskets}, ` +
    `${d.numItems} ${w.items}, ${d.numUsers - 1} ${w.users} (${(prep.ms / 1000).toFixed(1)} s${prep.cached ? ', cached' : ''})`);
  return prep;
}

/** Step 2: the reference recommenders, scored by the same evaluation code as the model (tuned ones on validation). */
export async function baselineStep(tf: Tf, prep: PrepResult, log: (s: string) => void): Promise<References> {
  log('[2/4] references (95 % bootstrap intervals)');
  return scoreReferences(tf, prep.data, prep.path.replace(/\.json$/, ''), log);
}

/** The training job the flags describe. */
export function specFor(o: DemoOptions, preparedPath: string, outDir: string, refs: References | null): JobSpec {
  return {
    ...DEFAULT_SPEC, preparedPath, outDir,
    model: { ...(o.lr !== null ? { lr: o.lr } : {}), ...(o.dim !== null ? { dim: o.dim } : {}) },
    train: { globalBatch: o.batch, targetsPerBasket: o.targetsPerBasket, seed: o.seed, maxStepsPerEpoch: o.maxSteps, tables: o.tables, serverOptimizer: o.serverOptimizer,
      ...(o.accumulateSteps > 1 ? { accumulateSteps: o.accumulateSteps } : {}) },
    epochs: o.epochs,
    towerScale: o.towerWeight,
    itemItem: refs ? easeFiles(refs.ease.fitPath.replace(/-ease-fit\.f32$/, '')) : null,
    evalEachEpoch: o.evalEachEpoch,
    logdir: o.logdir === null ? null : resolve(o.logdir),
    checkpoint: o.checkpoint === null ? null : { dir: resolve(o.checkpoint), everySteps: o.checkpointEverySteps, everySeconds: o.checkpointEverySeconds },
  };
}

/** The best reference by test HR@10. */
export function bestReference(refs: Record<string, RankingMetrics>): [string, RankingMetrics] {
  return Object.entries(refs).reduce((a, b) => (b[1].hr > a[1].hr ? b : a));
}

/** Step 4: log the headline and write the report folder. Returns the report path. */
export async function reportStep(args: {
  outDir: string; cfg: DatasetConfig; prep: PrepResult; refs: References;
  train: TrainResult; extraRuns?: Record<string, TrainResult>; command: string; t0: number; log: (s: string) => void; logdir?: string | null;
}): Promise<string> {
  const { train, refs, prep, log } = args;
  log('[4/4] report');
  const [bestName, best] = bestReference(refs.metrics);
  const m = train.final;
  log(`      model HR@10 ${(m.hr * 100).toFixed(2)}% [${(m.ci.hr[0] * 100).toFixed(1)}, ${(m.ci.hr[1] * 100).toFixed(1)}] = ${(m.hr / best.hr).toFixed(3)}x ${bestName} ` +
    `(${(best.hr * 100).toFixed(2)}%), NDCG@10 ${m.ndcg.toFixed(4)}, MRR ${m.mrr.toFixed(4)}`);
  const d = prep.data;
  const report = await writeReport(args.outDir, {
    title: `shoal recommender: ${args.cfg.name}`, command: args.command,
    dataset: { name: args.cfg.name, attribution: d.attribution, words: d.words, numItems: d.numItems, numUsers: d.numUsers, stats: d.stats, prepareMs: prep.ms, cached: prep.cached },
    baselines: refs.metrics, tuning: refs.tuning, train, wallSeconds: (performance.now() - args.t0) / 1000,
    ...(args.extraRuns ? { extraRuns: args.extraRuns } : {}), logdir: args.logdir ?? null,
  });
  log(`\nReport: ${report}\nFolder: ${args.outDir} (report.md, hr10.png, hr10-bars.png, loss.png, samples-per-sec.png, results.json)`);
  return report;
}
