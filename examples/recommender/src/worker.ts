/**
 * One rank of the recommender job. Two ways in:
 *
 *   node examples/recommender/dist/worker.js <job.json>     started by `main` (the demo) through the launcher
 *   shoal run -n 2 --backend hybrid examples/recommender/dist/worker.js [demo flags]
 *                                                           standalone: every rank prepares (cached, atomic),
 *                                                           rank 0 also scores the baselines and writes the report
 *
 * Joins the job (initWorker: ring, ps or hybrid from SHOAL_BACKEND), trains, and on rank 0 writes
 * `train-result.json` (and in standalone mode the whole report) into the out folder.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initWorker } from '@shoal/run';
import { setupTfjs } from '@shoal/wrappers';
import { parseDemoOptions, runDemoMain, USAGE } from './cli-options.js';
import { baselineStep, outDirFor, prepareStep, reportStep, resolveDataset, specFor } from './demo.js';
import { runTraining, type JobSpec } from './job.js';
import { loadPrepared, type Prepared } from './prepare.js';
import { easeFiles } from './references.js';

async function main(): Promise<void> {
  const t0 = performance.now();
  const argv = process.argv.slice(2);
  const jobFile = argv.length === 1 && argv[0]!.endsWith('.json') ? argv[0]! : null;
  let spec: JobSpec, data: Prepared;
  let standalone: null | { finish: (train: Awaited<ReturnType<typeof runTraining>>) => Promise<void> } = null;
  const worker = await initWorker();
  const { sync } = worker;
  try {
    if (jobFile !== null) {
      spec = JSON.parse(readFileSync(jobFile, 'utf8')) as JobSpec;
      data = loadPrepared(spec.preparedPath);
    } else {
      const o = parseDemoOptions(argv);
      if (o.help) { console.log(USAGE); return; }
      const log = sync.rank === 0 ? (s: string): void => console.log(s) : (): void => {};
      const { cfg, baseDir } = resolveDataset(o);
      // Rank 0 names the folder; the others learn it through a shared default only when --out is given.
      const outDir = outDirFor({ ...o, out: o.out ?? (sync.size > 1 ? 'out/recommender-shoal-run' : null) });
      mkdirSync(outDir, { recursive: true });
      const prep = await prepareStep(o, cfg, baseDir, log);
      data = prep.data;
      // Rank 0 scores the references and writes the EASE weights the model's features read; the others wait.
      const refs = sync.rank === 0 ? await baselineStep((await setupTfjs({ backend: 'wasm' })).tf, prep, log) : null;
      await sync.barrier();
      spec = { ...specFor(o, prep.path, outDir, refs), itemItem: easeFiles(prep.path.replace(/\.json$/, '')) };
      log(`[3/4] training: ${sync.size} worker(s), backend ${sync.kind}, ${o.epochs ? `${o.epochs} epochs` : 'epochs by early stopping'}, global batch ${o.batch}`);
      standalone = {
        finish: async (train) => {
          if (sync.rank !== 0) return;
          const command = `shoal run -n ${sync.size} --backend ${sync.kind} ${relative(process.cwd(), fileURLToPath(import.meta.url))} ${argv.join(' ')}`.trim();
          await reportStep({ outDir, cfg, prep, refs: refs!, train, command, t0, log, logdir: spec.logdir });
        },
      };
    }
    const rt = await setupTfjs({ backend: 'wasm' });
    const result = await runTraining(rt.tf, rt.describe(), data, sync, spec);
    if (sync.rank === 0) {
      const path = join(spec.outDir, 'train-result.json');
      writeFileSync(`${path}.tmp`, JSON.stringify(result, null, 1));
      renameSync(`${path}.tmp`, path);
    }
    await standalone?.finish(result);
    await sync.barrier();
  } finally {
    await worker.close();
  }
}

runDemoMain(main);
