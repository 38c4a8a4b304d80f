/**
 * The recommender demo (`npm run demo`): prepare the Online Retail data (or a configured log), score the baselines,
 * train the basket model with N workers on the chosen backend, and write a Markdown + PNG report.
 * See examples/recommender/README.md.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalSync } from '@shoal/backends';
import { Errors } from '@shoal/core';
import { launch } from '@shoal/run';
import { setupTfjs } from '@shoal/wrappers';
import { parseDemoOptions, runDemoMain, USAGE, type DemoOptions } from './cli-options.js';
import { baselineStep, outDirFor, prepareStep, reportStep, resolveDataset, specFor } from './demo.js';
import { checkCheckpoint } from './checkpoint.js';
import { runIdentity, runTraining, type JobSpec, type TrainResult } from './job.js';
import { loadPrepared } from './prepare.js';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));

/** Train once with `workers` ranks: in this process for one ring worker, else through the launcher. */
async function trainRun(o: DemoOptions, workers: number, spec: JobSpec, label: string): Promise<TrainResult> {
  const runDir = join(spec.outDir, label);
  mkdirSync(runDir, { recursive: true });
  const s: JobSpec = { ...spec, outDir: runDir, logdir: o.logdir === null ? null : resolve(o.logdir, label) };
  // A checkpoint of other flags is refused here, in one line, before any worker starts.
  if (s.checkpoint) checkCheckpoint(s.checkpoint.dir, runIdentity(s, loadPrepared(s.preparedPath), workers, o.backend));
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
  const res = await launch({
    script: WORKER, args: [jobPath], numWorkers: workers, backend: o.backend, servers: o.servers, psPlacement: o.psPlacement,
    jobTimeoutMs: o.jobTimeoutMin * 60_000, timeoutMs: 120_000, signal: ac.signal,
  }).finally(() => process.off('SIGINT', onSigint));
  if (res.code !== 0) throw Errors.remote(`recommender job (${workers} workers, ${o.backend})`, res.error ?? `exit code ${res.code}`);
  return JSON.parse(readFileSync(join(runDir, 'train-result.json'), 'utf8')) as TrainResult;
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const o = parseDemoOptions(process.argv.slice(2));
  if (o.help) { console.log(USAGE); return; }
  const log = (s: string): void => console.log(s);
  const { cfg, baseDir } = resolveDataset(o);
  const outDir = outDirFor(o);
  mkdirSync(outDir, { recursive: true });
  const prep = await prepareStep(o, cfg, baseDir, log);
  const rt = await setupTfjs({ backend: 'wasm' });
  const refs = await baselineStep(rt.tf, prep, log);
  const spec = specFor(o, prep.path, outDir, refs);
  log(`[3/4] training: ${o.workers} worker(s), backend ${o.backend}, ${o.epochs ? `${o.epochs} epochs` : 'epochs by early stopping'}` +
    `${o.lr !== null ? `, lr ${o.lr}` : `, lr from {${spec.select.lrs.join(', ')}} on validation`}, global batch ${o.batch}`);
  const train = await trainRun(o, o.workers, spec, `run-${o.backend}-w${o.workers}`);
  const extraRuns: Record<string, TrainResult> = {};
  for (const w of o.compareWorkers) {
    // The comparison runs train the final model with the main run's choices (same epochs, same learning rate).
    log(`      comparison run: ${w} worker(s), backend ${o.backend}, lr ${train.lr}, ${train.epochs.length} epochs`);
    const checkpoint = spec.checkpoint ? { ...spec.checkpoint, dir: join(spec.checkpoint.dir, `compare-w${w}`) } : null;
    extraRuns[`${w} worker(s)`] = await trainRun(o, w, { ...spec, epochs: train.epochs.length, towerScale: train.towerScale, model: { ...spec.model, lr: train.lr }, checkpoint }, `run-${o.backend}-w${w}`);
  }
  if (o.compareWorkers.length > 0) extraRuns[`${o.workers} worker(s) (main run)`] = train;
  const command = `node ${relative(process.cwd(), fileURLToPath(import.meta.url))} ${process.argv.slice(2).join(' ')}`.trim();
  await reportStep({ outDir, cfg, prep, refs, train, command, t0, log, logdir: o.logdir === null ? null : resolve(o.logdir), ...(o.compareWorkers.length > 0 ? { extraRuns } : {}) });
}

runDemoMain(main);
