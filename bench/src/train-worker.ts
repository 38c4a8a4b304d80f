/**
 * One worker of the `train` bench, run by `shoal run`: trains `--model rec|mlp|mlp64` for `--warmup` (8) + `--steps`
 * steps of the bench batch per worker with the engine the launcher chose (`--sparse-ring`: embedding rows go
 * row-sparse over the ring too; `--sync-every K`, `--accumulate K`: those Trainer options), and rank 0 prints one line
 * `BENCH {"samplesPerSec":...,"stepMs":...,"syncMs":...,"cpuMsPerStep":...,"sleepsPerStep":...,"stepMsP50":...,"syncMsP50":...}`
 * (timed steps only, all workers' samples; CPU time, sleeps (voluntary context switches: wake-ups) and the
 * per-step medians are rank 0's), with one ps server in its own process also `serverCpuMsPerStep` and
 * `serverSleepsPerStep`, plus for `mlp64` `evalAccuracy` and `evalLoss` on 4096 held-out samples after the
 * epoch. `--rows-sparse`: the ps gets every embedding table row-sparse (the default sends tables within the
 * engine's `sparseAsDenseBytes` whole).
 */
import { psWorkerOf, type KVServerStats } from '@shoal/backends';
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
    // `--rows-sparse`: every table row-sparse on the ps (the default sends small tables whole, `sparseAsDenseBytes`).
    ...(sparseRing ? { sparseEngines: ['ring', 'ps', 'hybrid'] as const } : process.argv.includes('--rows-sparse') ? { sparseEngines: ['ps', 'hybrid'] as const } : {}),
  });
  // `--tensorboard DIR --update-freq batch|epoch`: with the TensorBoard callback (the tensorboard bench).
  const logdir = arg('tensorboard', '');
  const tb = logdir ? [tensorBoard(logdir, { updateFreq: arg('update-freq', 'epoch') as 'batch' | 'epoch' })] : [];
  // ps servers in their own processes: their CPU time and sleeps over the timed steps (rank 0 asks server 0).
  const kv = worker.options.rank === 0 && process.env['SHOAL_PS_PLACEMENT'] !== 'worker' ? psWorkerOf(worker.sync) : null;
  let server0: Promise<KVServerStats> | undefined;
  const { secs, cpu, sleeps, syncMs, stepMs, stepSyncMs } = await timedFit(trainer, data, spec.batch, warmup, tb, () => {
    server0 = kv?.server(0).api.stats();
  });
  const [s0, s1] = kv && server0 ? [await server0, await kv.server(0).api.stats()] : [undefined, undefined];
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
      sleepsPerStep: sleeps / steps,
      ...(s0 && s1 && kv?.numServers === 1 ? { serverCpuMsPerStep: (s1.cpuUs - s0.cpuUs) / 1000 / steps, serverSleepsPerStep: (s1.sleeps - s0.sleeps) / steps } : {}),
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
