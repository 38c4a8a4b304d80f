/**
 * Collects demo runs into `bench/results/recommender.json` (format in bench/README.md):
 *
 *   node examples/recommender/dist/bench-results.js <out-dir>/results.json [...] [--out bench/results/recommender.json]
 *
 * Each results.json (written by the demo's report step) becomes one entry under `datasets[name]`: the model's and
 * every reference's HR@10 / NDCG@10 / MRR with 95 % intervals, the settings chosen on validation, the goal check
 * against the best reference, and the worker-count comparison when the run had `--compare-workers`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import type { RankingMetrics } from './metrics.js';
import type { ReportInput } from './report.js';

const USAGE = 'Usage: node examples/recommender/dist/bench-results.js <results.json> [...] [--out bench/results/recommender.json]';

const { values, positionals } = parseArgs({ options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true });
if (values.help || positionals.length === 0) {
  console.log(USAGE);
  process.exit(values.help ? 0 : 2);
}
const fig = (m: RankingMetrics): Record<string, unknown> => ({ hr10: m.hr, hr10Ci: m.ci.hr, ndcg10: m.ndcg, ndcg10Ci: m.ci.ndcg, mrr: m.mrr, mrrCi: m.ci.mrr, n: m.n });
const datasets: Record<string, unknown> = {};
for (const path of positionals) {
  const r = JSON.parse(readFileSync(path, 'utf8')) as ReportInput;
  const t = r.train;
  const [bestName, best] = Object.entries(r.baselines).reduce((a, b) => (b[1].hr > a[1].hr ? b : a));
  const runs = r.extraRuns ? Object.fromEntries(Object.entries(r.extraRuns).map(([k, x]) => [k, { workers: x.workers, backend: x.backend, ...fig(x.final), trainSeconds: x.trainSeconds }])) : undefined;
  datasets[r.dataset.name] = {
    command: r.command, wallSeconds: r.wallSeconds, testBaskets: t.final.n, catalog: r.dataset.numItems,
    model: { ...fig(t.final), backend: t.backend, workers: t.workers, lr: t.lr, epochs: t.epochs.length, trainSeconds: t.trainSeconds, selection: t.selection },
    references: Object.fromEntries(Object.entries(r.baselines).map(([k, m]) => [k, fig(m)])),
    tuning: r.tuning,
    bestReference: bestName,
    ratioToBest: t.final.hr / best.hr,
    goalMet: t.final.hr >= 1.05 * best.hr && t.final.ci.hr[0] > best.hr,
    ...(runs ? { workerRuns: runs } : {}),
  };
}
const out = values.out ?? 'bench/results/recommender.json';
writeFileSync(out, JSON.stringify({ suite: 'recommender', version: 1, written: new Date().toISOString(), host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, datasets }, null, 1) + '\n');
console.log(`wrote ${out} (${Object.keys(datasets).join(', ')})`);
