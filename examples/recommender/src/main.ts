/**
 * The recommender demo (`npm run demo`): prepare the Online Retail data (or a configured log), score the baselines,
 * train the basket model with N workers on the chosen backend, and write a Markdown + PNG report.
 * See examples/recommender/README.md.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Errors, launch } from '@shoal/core';
import { LocalSync, setupTfjs } from '@shoal/wrappers';
import { CoOccurrence, MostPopular, RepeatBuy } from './baselines.js';
import { parseDemoOptions, USAGE, type DemoOptions } from './cli-options.js';
import { ONLINE_RETAIL, validateConfig, type DatasetConfig } from './config.js';
import { DEFAULT_SPEC, runTraining, type JobSpec, type TrainResult } from './job.js';
import { evaluate, type RankingMetrics } from './metrics.js';
import { loadPrepared, prepare } from './prepare.js';
import { relGain, writeReport } from './report.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

function stamp(): string { return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15); }

/** Train once with `workers` ranks: in this process for one ring worker, else through the launcher. */
async function trainRun(o: DemoOptions, workers: number, spec: JobSpec, label: string): Promise<TrainResult> {
  const runDir = join(spec.outDir, label);
  mkdirSync(runDir, { recursive: true });
  const s: JobSpec = { ...spec, outDir: runDir };
  if (workers === 1 && o.backend === 'ring') {
    const rt = await setupTfjs({ backend: 'wasm' });
    const sync = new LocalSync();
    try { return await runTraining(rt.tf, rt.describe(), loadPrepared(s.preparedPath), sync, s); } finally { await sync.close(); }
  }
  const jobPath = join(runDir, 'job.json');
  writeFileSync(jobPath, JSON.stringify(s, null, 1));
  // Ctrl-C stops every worker (and server actor) before this process exits.
  const ac = new AbortController();
  const onSigint = (): void => ac.abort();
  process.once('SIGINT', onSigint);
  const res = await launch({ script: WORKER, args: [jobPath], numWorkers: workers, backend: o.backend, jobTimeoutMs: 15 * 60_000, timeoutMs: 120_000, signal: ac.signal })
    .finally(() => process.off('SIGINT', onSigint));
  if (res.code !== 0) throw Errors.remote(`recommender job (${workers} workers, ${o.backend})`, res.error ?? `exit code ${res.code}`);
  return JSON.parse(readFileSync(join(runDir, 'train-result.json'), 'utf8')) as TrainResult;
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const o = parseDemoOptions(process.argv.slice(2));
  if (o.help) { console.log(USAGE); return; }
  let cfg: DatasetConfig = ONLINE_RETAIL, baseDir = REPO;
  if (o.config !== null) {
    const p = resolve(o.config);
    cfg = validateConfig(JSON.parse(readFileSync(p, 'utf8')), p);
    baseDir = dirname(p);
  }
  const outDir = resolve(o.out ?? join(REPO, 'out', `recommender-${stamp()}`));
  const cacheDir = resolve(o.cache ?? join(REPO, 'out', 'cache'));
  mkdirSync(outDir, { recursive: true });

  console.log(`[1/4] preparing ${cfg.name} (${cfg.file})`);
  const prep = prepare(cfg, baseDir, cacheDir, o.seed);
  const d = prep.data, st = d.stats;
  console.log(`      ${st.rawRows} rows -> ${st.keptRows} kept -> ${st.trainBaskets} train / ${st.testBaskets} test baskets, ${d.numItems} items, ` +
    `${d.numUsers - 1} customers (${(prep.ms / 1000).toFixed(1)} s${prep.cached ? ', cached' : ''})`);

  console.log('[2/4] baselines');
  const baselines: Record<string, RankingMetrics> = {};
  for (const rec of [new MostPopular(d.train, d.numItems), new CoOccurrence(d.train, d.numItems), new RepeatBuy(d.train, d.numItems)]) {
    baselines[rec.name] = await evaluate(rec, d.test, d.numItems);
    console.log(`      ${rec.name.padEnd(14)} HR@10 ${(baselines[rec.name]!.hr * 100).toFixed(2)}%  NDCG@10 ${baselines[rec.name]!.ndcg.toFixed(4)}`);
  }

  const spec: JobSpec = {
    ...DEFAULT_SPEC, preparedPath: prep.path, outDir,
    model: { ...(o.lr !== null ? { lr: o.lr } : {}), ...(o.dim !== null ? { dim: o.dim } : {}) },
    train: { epochs: o.epochs, globalBatch: o.batch, targetsPerBasket: o.targetsPerBasket, seed: o.seed, maxStepsPerEpoch: o.maxSteps },
    evalEachEpoch: o.evalEachEpoch,
  };
  console.log(`[3/4] training: ${o.workers} worker(s), backend ${o.backend}, ${o.epochs} epochs, global batch ${o.batch}`);
  const train = await trainRun(o, o.workers, spec, `run-${o.backend}-w${o.workers}`);
  const extraRuns: Record<string, TrainResult> = {};
  for (const w of o.compareWorkers) {
    console.log(`      comparison run: ${w} worker(s), backend ${o.backend}`);
    extraRuns[`${w} worker(s)`] = await trainRun(o, w, spec, `run-${o.backend}-w${w}`);
  }
  if (o.compareWorkers.length > 0) extraRuns[`${o.workers} worker(s) (main run)`] = train;

  console.log('[4/4] report');
  const pop = baselines['most-popular']!;
  console.log(`      model HR@10 ${(train.final.hr * 100).toFixed(2)}% (${relGain(train.final.hr, pop.hr) >= 0 ? '+' : ''}${(relGain(train.final.hr, pop.hr) * 100).toFixed(0)}% vs most-popular), NDCG@10 ${train.final.ndcg.toFixed(4)}`);
  const command = `node ${relative(process.cwd(), fileURLToPath(import.meta.url))} ${process.argv.slice(2).join(' ')}`.trim();
  const report = writeReport(outDir, {
    title: `shoal recommender: ${cfg.name}`, command,
    dataset: { name: cfg.name, attribution: d.attribution, numItems: d.numItems, numUsers: d.numUsers, stats: st, prepareMs: prep.ms, cached: prep.cached },
    baselines, train, wallSeconds: (performance.now() - t0) / 1000,
    ...(o.compareWorkers.length > 0 ? { extraRuns } : {}),
  });
  console.log(`\nReport: ${report}\nFolder: ${outDir}${existsSync(join(outDir, 'hr10.png')) ? ' (report.md, hr10.png, hr10-bars.png, loss.png, samples-per-sec.png, results.json)' : ''}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
