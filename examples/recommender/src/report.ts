import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderPng } from '@shoal/run/charts';
import type { TrainResult } from './job.js';
import { BOOTSTRAP, type RankingMetrics } from './metrics.js';
import { reportCharts } from './plot.js';
import type { Words } from './config.js';
import type { PrepareStats } from './prepare.js';

export interface ReportInput {
  title: string;
  command: string;
  dataset: { name: string; attribution: string; words: Words; numItems: number; numUsers: number; stats: PrepareStats; prepareMs: number; cached: boolean };
  baselines: Record<string, RankingMetrics>;
  /** Settings the tuned references chose on validation. */
  tuning?: Record<string, { chosen: number; validHr: Record<string, number> }>;
  train: TrainResult;
  /** Wall time of the whole run, seconds. */
  wallSeconds: number;
  /** Extra runs to compare (e.g. 1 vs 4 workers), by label. */
  extraRuns?: Record<string, TrainResult>;
  /** Where the TensorBoard runs were written (`--logdir`), if anywhere. */
  logdir?: string | null;
}

const cap = (x: string): string => x.charAt(0).toUpperCase() + x.slice(1);
const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;
const kb = (b: number): string => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

/** Relative improvement of `a` over `b` (0.2 = 20 % better). */
export function relGain(a: number, b: number): number { return b > 0 ? a / b - 1 : Infinity; }

/**
 * Write `report.md`, `results.json` and the PNG plots (loss per epoch, HR@10 per epoch against the baselines,
 * final HR@10 bars, samples/s) into `dir` (created). Returns the report path.
 */
export async function writeReport(dir: string, r: ReportInput): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const t = r.train, ep = t.epochs;
  const base = Object.entries(r.baselines);
  for (const [file, spec] of Object.entries(reportCharts(t, r.baselines, r.dataset.words.baskets, r.extraRuns))) await renderPng(spec, join(dir, file));

  const w = r.dataset.words;
  const [bestName, best] = Object.entries(r.baselines).reduce((a, b) => (b[1].hr > a[1].hr ? b : a));
  const last = ep[ep.length - 1];
  const lines: string[] = [];
  lines.push(`# ${r.title}`, '');
  lines.push(`Command: \`${r.command}\`  `);
  if (r.logdir) lines.push(`TensorBoard: \`tensorboard --logdir ${r.logdir}\` (one run per training run: loss, samples/s, step times, validation HR@10, system metrics)  `);
  lines.push(`Wall time: ${r.wallSeconds.toFixed(1)} s (data ${(r.dataset.prepareMs / 1000).toFixed(1)} s${r.dataset.cached ? ', cached' : ''}, training ${t.trainSeconds.toFixed(1)} s). ${t.tfjs}.`, '');
  lines.push('## Task', '');
  lines.push(`${cap(w.basket)} completion: for every test ${w.basket} with at least 2 catalog ${w.items}, one ${w.item} is hidden and each recommender ranks`,
    `all catalog ${w.items} given the rest of the ${w.basket} and the ${w.user}'s history. HR@10 = share of ${w.baskets} whose hidden ${w.item} is in the`,
    `top 10 (visible ${w.items} excluded, ties counted against the recommender); NDCG@10 discounts by rank; MRR over the full ranking.`,
    `Every recommender is scored by the same evaluation code; [a, b] are 95 % bootstrap intervals (${BOOTSTRAP} resamples of the test ${w.baskets}).`, '');
  const s = r.dataset.stats;
  lines.push('## Data', '');
  lines.push(`${r.dataset.name}: ${r.dataset.attribution}`, '');
  lines.push(`| rows read | no ${w.user} | cancelled | quantity < min | rating < threshold | not a ${w.item} | kept rows | ${w.baskets} | training ${w.baskets} | validation ${w.baskets} | test ${w.baskets} (>= 2 ${w.items}) | cold test ${w.users} |`);
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  lines.push(`| ${s.rawRows} | ${s.droppedEmptyUser} | ${s.droppedCancelled} | ${s.droppedQuantity} | ${s.droppedRating} | ${s.droppedItem} | ${s.keptRows} | ${s.baskets} | ${s.trainBaskets} | ${s.validBaskets} | ${s.testBaskets} of ${s.testPeriodBaskets} | ${s.testColdUsers} |`, '');
  lines.push(`Days ${s.firstDay} .. ${s.lastDay}; training before ${s.cutoff} (its last part, from ${s.validFrom}, validates the choices below), test from ${s.cutoff}.`,
    `Catalog ${r.dataset.numItems} ${w.items}, ${r.dataset.numUsers - 1} training ${w.users}.`, '');
  lines.push('## Results', '');
  lines.push(`| recommender | HR@10 | NDCG@10 | MRR | HR@10 vs ${bestName} |`, '|---|---|---|---|---|');
  const ci = (v: number, c: [number, number], f: (x: number) => string): string => `${f(v)} [${f(c[0])}, ${f(c[1])}]`;
  const f4 = (x: number): string => x.toFixed(4);
  const row = (name: string, m: RankingMetrics): string =>
    `| ${name} | ${ci(m.hr, m.ci.hr, pct)} | ${ci(m.ndcg, m.ci.ndcg, f4)} | ${ci(m.mrr, m.ci.mrr, f4)} | ${(m.hr / best.hr).toFixed(3)}x |`;
  lines.push(row(`**model** (${t.backend}, ${t.workers} workers, ${ep.length} epochs, lr ${t.lr})`, t.final));
  for (const [name, m] of base) lines.push(row(name, m));
  const verdict = t.final.hr >= 1.05 * best.hr && t.final.ci.hr[0] > best.hr;
  lines.push('', `Test ${w.baskets}: ${t.final.n}. Best reference: ${bestName}. The model's HR@10 is ${(t.final.hr / best.hr).toFixed(3)}x it; the lower end of the model's interval ` +
    `is ${t.final.ci.hr[0] > best.hr ? 'above' : 'not above'} ${bestName}'s HR@10 (goal: >= 1.05x and above: ${verdict ? 'met' : 'not met'}).`, '');
  if (r.tuning) {
    lines.push(`Settings chosen on the validation period (HR@10 there, fit on the training ${w.baskets} before it):`, '');
    for (const [name, tu] of Object.entries(r.tuning)) {
      lines.push(`- ${name}: ${name === 'ease' ? 'lambda' : 'neighbours (0: all)'} ${tu.chosen}; ${Object.entries(tu.validHr).map(([k, v]) => `${k}: ${pct(v)}`).join(', ')}`);
    }
    lines.push('');
  }
  if (t.selection) {
    lines.push(`Model selection (validation HR@10 per epoch, early stopping; then the best epoch with tower weights ${(t.selection.runs[0]?.towerHr ?? []).map((x) => x.scale).join(' / ')}): ` +
      `${t.selection.runs.map((x) => `lr ${x.lr}: ${x.validHr.map(pct).join(', ')} (towers ${x.towerHr.map((y) => pct(y.hr)).join(' / ')})`).join('; ')}.` +
      ` Chosen: lr ${t.selection.lr}, ${t.selection.epochs} epochs, tower weight ${t.selection.towerScale}, then trained on every training ${w.basket}.`, '');
  }
  lines.push('![HR@10 per epoch](hr10.png)', '', '![HR@10 bars](hr10-bars.png)', '');
  lines.push('## Training', '');
  lines.push('| epoch | loss | steps | samples | seconds | compute / sync / apply s (rank 0) | sync s per rank | samples/s | HR@10 |', '|---|---|---|---|---|---|---|---|---|');
  for (const e of ep) {
    lines.push(`| ${e.epoch} | ${e.loss.toFixed(4)} | ${e.steps} | ${e.samples} | ${e.seconds.toFixed(1)} | ${e.computeSeconds.toFixed(1)} / ${e.syncSeconds.toFixed(1)} / ${e.applySeconds.toFixed(1)} | ${(e.syncSecondsByRank ?? []).map((x) => x.toFixed(1)).join(' / ')} | ${Math.round(e.samplesPerSec)} | ${e.metrics ? pct(e.metrics.hr) : ''} |`);
  }
  lines.push('', '![loss](loss.png)', '', '![samples/s](samples-per-sec.png)', '');
  if (last) {
    lines.push('## Row-sparse traffic (per step, per worker)', '');
    if (last.tables === 'server') {
      lines.push('The embedding tables live on the parameter servers (row-range shards), which apply the row-wise optimizer. Each step a worker pulls the rows its batch needs and pushes their gradients; it holds no table.', '');
      lines.push(`Pulled ${last.pulledRowsPerStep.toFixed(0)} rows per step: ${kb(last.pullBytesPerStep)} pulled + ${kb(last.pushBytesPerStep)} pushed (payload) vs ${kb(last.tableBytes)} of tables` +
        ` (${pct((last.pullBytesPerStep + last.pushBytesPerStep) / (2 * last.tableBytes))} of a dense pull + push). Parameter-server client bytes (sent + received): ${kb(last.psWireBytesPerStep)} per step.` +
        ` Table memory on a worker: ${kb(last.heldTableBytes)} of rows per step vs ${kb(3 * last.tableBytes)} for replicated tables with their Adam moments.`, '');
    } else {
      lines.push('Only the embedding rows a batch touched are pushed; a dense sync would move every table each step.', '');
    }
    lines.push('| table | rows | rows touched per step | share |', '|---|---|---|---|');
    for (const [name, v] of Object.entries(last.tableRows)) lines.push(`| ${name} | ${v.numRows} | ${v.rowsPerStep.toFixed(0)} | ${pct(v.rowsPerStep / v.numRows)} |`);
    lines.push('', `Row-sparse gradient payload: ${kb(last.sparseBytesPerStep)} per step vs ${kb(last.tableBytes)} of tables (${pct(last.sparseBytesPerStep / last.tableBytes)}).` +
      ` Engine bytes sent by rank 0: ${kb(last.wireBytesPerStep)} per step (dense layers + rows + control).`, '');
  }
  if (r.extraRuns) {
    const runs = Object.entries(r.extraRuns);
    lines.push('## Comparison runs', '', '![samples/s by run](runs-samples-per-sec.png)', '', '![HR@10 by run](runs-hr10.png)', '', '| run | workers | backend | HR@10 | NDCG@10 | samples/s (last epoch) | train s |', '|---|---|---|---|---|---|---|');
    for (const [label, x] of Object.entries(r.extraRuns)) {
      const le = x.epochs[x.epochs.length - 1];
      lines.push(`| ${label} | ${x.workers} | ${x.backend} | ${pct(x.final.hr)} | ${x.final.ndcg.toFixed(4)} | ${le ? Math.round(le.samplesPerSec) : ''} | ${x.trainSeconds.toFixed(1)} |`);
    }
    const ref = runs[0]![1];
    lines.push('', `Same global batch in every run. Relative HR@10 difference against "${runs[0]![0]}": ` +
      runs.slice(1).map(([label, x]) => `${label} ${(relGain(x.final.hr, ref.final.hr) * 100).toFixed(2)}%`).join(', ') + '.', '');
  }
  if (t.showcase.length > 0) {
    lines.push(`## Suggestions for a few test ${w.baskets}`, '');
    for (const sc of t.showcase) {
      lines.push(`- ${w.user} ${sc.user}, ${w.basket} so far: ${sc.visible.join('; ')}  `);
      lines.push(`  hidden ${w.item}: ${sc.hidden}  `);
      lines.push(`  suggested: ${sc.top.map((x) => (x.hit ? `**${x.item}**` : x.item)).join('; ')}`);
    }
    lines.push('');
  }
  const path = join(dir, 'report.md');
  writeFileSync(path, lines.join('\n'));
  writeFileSync(join(dir, 'results.json'), JSON.stringify({ ...r, train: { ...t, showcase: undefined } }, null, 1));
  return path;
}
