/**
 * One worker of the `train` bench, run by `shoal run`: trains `--model rec|mlp|mlp64` for `--warmup` (8) + `--steps`
 * steps of the bench batch per worker with the engine the launcher chose (`--sparse-ring`: embedding rows go
 * row-sparse over the ring too; `--sync-every K`, `--accumulate K`: those Trainer options), and rank 0 prints one line
 * `BENCH {"samplesPerSec":...,"stepMs":...,"syncMs":...,"cpuMsPerStep":...,"stepMsP50":...,"syncMsP50":...}`
 * (timed steps only, all workers' samples; CPU time and the per-step medians are rank 0's), plus for `mlp64`
 * `evalAccuracy` and `evalLoss` on 4096 held-out samples after the epoch.
 */
import { initWorker } from '@shoal/run';
import { setupTfjs, tensorBoard, Trainer } from '@shoal/wrappers';
import { benchData, benchSpec, medianOf, teacherData, timedFit, type BenchModel } from './train-models.js';

const arg = (k: string, d: string) => {
  const i = process.argv.indexOf(`--${k}`);
  return i >= 0 ? process.argv[i + 1]! : d;
};

async function main() {
  const model = arg('model', 'rec') as BenchModel;
  const warmup = Number(arg('warmup', '8'));
  const steps = Number(arg('steps', '20'));
  const spec = benchSpec[model];
  const worker = await initWorker();
  const rt = await setupTfjs();
  const { worldSize } = worker.options;
  const data = benchData(rt.tf, model, spec.batch * worldSize * (warmup + steps));
  const sparseRing = process.argv.includes('--sparse-ring');
  // `--sync-every K` / `--accumulate K`: the Trainer's local SGD / gradient accumulation (the options rows).
  const syncEvery = Number(arg('sync-every', '1'));
  const accumulateSteps = Number(arg('accumulate', '1'));
  const trainer = new Trainer({
    model: spec.build,
    optimizer: spec.optimizer,
    loss: spec.loss,
    ...(model === 'mlp64' ? { metrics: ['accuracy'] } : {}), // scored after the epoch; the others time the bare step
    sync: worker.sync,
    runtime: rt,
    verbose: 0,
    advice: false,
    syncEvery,
    accumulateSteps,
    ...(sparseRing ? { sparseEngines: ['ring', 'ps', 'hybrid'] as const } : {}),
  });
  // `--tensorboard DIR --update-freq batch|epoch`: with the TensorBoard callback (the tensorboard bench).
  const logdir = arg('tensorboard', '');
  const tb = logdir ? [tensorBoard(logdir, { updateFreq: arg('update-freq', 'epoch') as 'batch' | 'epoch' })] : [];
  const { secs, cpu, syncMs, stepMs, stepSyncMs } = await timedFit(trainer, data, spec.batch, warmup, tb);
  // mlp64 learns a teacher: score held-out data (every rank its share, averaged) after the epoch.
  let evalLogs: { loss?: number; accuracy?: number } = {};
  if (model === 'mlp64') {
    const held = teacherData(rt.tf, 4096, 12);
    evalLogs = await trainer.evaluate(held);
    rt.tf.dispose([held.x, held.y]);
  }
  if (worker.options.rank === 0) {
    const out = {
      samplesPerSec: (steps * spec.batch * worldSize) / secs,
      stepMs: (secs * 1000) / steps,
      syncMs: syncMs / steps,
      cpuMsPerStep: (cpu.user + cpu.system) / 1000 / steps,
      stepMsP50: medianOf(stepMs),
      syncMsP50: medianOf(stepSyncMs),
      ...(evalLogs.accuracy === undefined ? {} : { evalAccuracy: evalLogs.accuracy, evalLoss: evalLogs.loss }),
    };
    process.stdout.write(`BENCH ${JSON.stringify(out)}\n`);
  }
  await trainer.close();
  await worker.close();
}

await main().catch((e) => {
  console.error(e);
  process.exit(1);
});
