/**
 * One rank of the recommender job (started by `main` through the launcher, N copies): join the job, connect the
 * engine, load the prepared task, train, and (rank 0) write `train-result.json` into the job's out folder.
 *
 *   node examples/recommender/dist/worker.js <job.json>
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initWorker, setupTfjs } from '@shoal/wrappers';
import { runTraining, type JobSpec } from './job.js';
import { loadPrepared } from './prepare.js';

async function main(): Promise<void> {
  const specPath = process.argv[2];
  if (specPath === undefined) throw new RangeError('usage: worker.js <job.json>');
  const spec = JSON.parse(readFileSync(specPath, 'utf8')) as JobSpec;
  const rt = await setupTfjs({ backend: 'wasm' });
  const data = loadPrepared(spec.preparedPath);
  const worker = await initWorker();
  const { sync } = worker;
  try {
    const result = await runTraining(rt.tf, rt.describe(), data, sync, spec);
    if (sync.rank === 0) {
      const path = join(spec.outDir, 'train-result.json');
      writeFileSync(`${path}.tmp`, JSON.stringify(result, null, 1));
      renameSync(`${path}.tmp`, path);
    }
    await sync.barrier();
  } finally {
    await worker.close();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
