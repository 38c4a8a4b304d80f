/**
 * `npm run bench -- train [--quick] [--no-multi] [--no-anchor] [--cpu-segments N] [--out FILE] [--models rec,mlp,mlp64]
 * [--runs ring:1,ps:2,...] [--repeats N]`: training throughput of the tfjs wrapper. `--models`, `--runs` and `--repeats`
 * make short measurements of a few rows (`--runs` names launched rows as `backend:workers`, the mlp64 options rows
 * `backend:2:<key>`, plus `independent` and `local` for the kernels and in-process rows) into another `--out` file;
 * `--models` alone runs every row of those models and updates them in the result file (`mergeInto`).
 *
 * Models (bench/src/train-models.ts): `rec` = the recommender (two 32-dim embeddings of 4000 rows, dense 64,
 * sigmoid; batch 1024 per worker) and `mlp` = 784-512-256-10 (batch 256 per worker), plain SGD, synthetic data;
 * `mlp64` = 784-128-64-10 (batch 64, Adam) on learnable synthetic data, with the sync options rows (`OPTION_RUNS`)
 * and held-out accuracy. Modes:
 * - `plain-tfjs`: a bare tfjs loop in this process (slice the batch, `optimizer.minimize`, read the loss): no
 *   shoal at all, same backend and kernels. The harness-overhead reference.
 * - `shoal-local`: `Trainer` with the one-worker LocalSync in this process.
 * - `shoal`: `shoal run -n W --backend ring|ps` with `train-worker.ts` (W = 1, 2; ps with 1 server actor, and for
 *   `rec` and `mlp` `ps-worker`: the same with `--ps-placement worker`, the server inside rank 0; for `rec`
 *   also `ring-sparse`: the ring engine allgathering the touched embedding rows, `sparseEngines: ['ring', ...]`;
 *   plain `ring` allreduces whole tables, the default; and `ps-rows`: `ps` with every table row-sparse, as before
 *   the ps sent tables within its `sparseAsDenseBytes` whole, the default now);
 *   samples/s counts every worker's samples (weak scaling: each worker keeps the full batch).
 * - `independent`: two `shoal run -n 1` jobs started together (no communication, no waiting for each other),
 *   samples/s summed: the ceiling of any 2-worker job on this machine;
 * - `torch-anchor`: the same models in a plain PyTorch loop, one CPU thread (bench/anchors/train_torch.py): how
 *   this machine's tfjs-wasm compares with a native framework.
 * In-process rows warm up 3 steps and are the best of 3 interleaved runs; `shoal run` rows (a fresh process: JIT and
 * wasm heap growth) warm up 60 steps for rec (its 2-worker steps take ~50 steps to settle) and 8 for mlp, and are
 * the best of 3 runs (by samples/s) of more steps (rec 200, mlp 30), whose per-step medians are
 * reported beside the means: another process's load puts spikes into a few steps, which the medians ignore. Rows with more busy processes than cores are flagged.
 * The kernel section times shoal's kernel fixes against the stock kernels (see wrappers/src/tfjs/kernels.ts)
 * and checks they agree.
 *
 * bench/results/train.json:
 * { suite: 'train', version: 1, started, host: { cpus, node, loadavg1 }, tfjs: 'tfjs 4.22.0 on wasm ...',
 *   rows: [ { model: 'rec'|'mlp', mode: 'plain-tfjs'|'shoal-local'|'shoal'|'torch-anchor', backend: 'none'|'local'|'ring'|'ps'|'ps-worker'|'ps-rows',
 *             workers, batch_per_worker, steps, samples_per_sec, step_ms, sync_ms, cpu_ms_per_step?,
 *             step_ms_p50?, sync_ms_p50? (shoal rows: rank 0's median step and sync time), sleeps_per_step? (rank 0's
 *             voluntary context switches: wake-ups), server_cpu_ms_per_step?, server_sleeps_per_step? (ps rows with
 *             the server in its own process), processes, oversubscribed } ],
 *   ratios: { <model>_<backend>_2v1: samples/s of 2 workers / 1 ring worker (goal >= 1.8 for rec),
 *             <model>_<backend>_2v1_cpu: 2 x CPU ms per step of 1 worker / that of a worker of 2: the scaling if
 *             each worker had a core to itself (waits excluded),
 *             <model>_independent_2v1: the ceiling (2 independent jobs / 1 job); <model>_ring_2_of_independent:
 *             the 2-worker ring job's samples/s as a share of that ceiling,
 *             <model>_<backend>_2v1_p50: the same scaling from median step times (2 x p50 of 1 worker / p50 of 2),
 *             <model>_<backend>_sync_share_p50: median sync ms / median step ms at 2 workers,
 *             <model>_<backend>_sync_overhead_p50: 1 - p50 step of 1 worker / p50 step of 2 (the part of a 2-worker
 *             step that a 1-worker step does not have: sync, waits, contention),
 *             <model>_<backend>_job_cpu_per_sample_vs_1: (2 x rank 0's CPU ms per step + the server's) / (2 x the
 *             1-worker job's): CPU per sample of the whole 2-worker job against 1 worker (1.0: no overhead; above
 *             ~1.67 a 2-core machine cannot reach 1.2x),
 *             <model>_harness_overhead: 1 - shoal-local / plain-tfjs samples/s (goal <= 0.10),
 *             <model>_harness_overhead_cpu: shoal-local / plain-tfjs CPU ms per step - 1 (the same, measured in
 *             CPU time, which other processes' load disturbs far less than wall time),
 *             <model>_plain_tfjs_vs_torch: plain-tfjs / torch-anchor samples/s },
 *   kernels: { matmul_transposeA_128x784x512: { stock_ms, fixed_ms, untransposed_ms, max_abs_diff },
 *              gather_rows_1024_of_4000x32: { stock_ms, fixed_ms, max_abs_diff },
 *              unsorted_segment_sum_1024x32: { cpu_ms, cpu_segments, wasm_fixed_ms_4000, wasm_fixed_ms_at_cpu_segments, max_abs_diff } },
 *   errors: [...] }
 */
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname } from 'node:path';
import { Writable } from 'node:stream';
import { launch } from '@shoal/run';
import { resolveLoss, setupTfjs, Trainer, type TfjsRuntime } from '@shoal/wrappers';
import { kernels } from './train-kernels.js';
import { benchData, benchSpec, medianOf, timedFit, type BenchModel } from './train-models.js';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';

const WORKER = fileURLToPath(new URL('./train-worker.js', import.meta.url));
const ANCHOR = fileURLToPath(new URL('../anchors/train_torch.py', import.meta.url));

/** The PyTorch anchor (bench/anchors/train_torch.py), one CPU thread; null with the reason when unavailable. */
function torchAnchor(stepsRec: number, stepsMlp: number): { rec: number; mlp: number; torch: string } | string {
  const r = spawnSync('/usr/bin/python3', [ANCHOR, '--steps-rec', String(stepsRec), '--steps-mlp', String(stepsMlp)], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) return `torch anchor failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' ')}`;
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  } catch {
    return `torch anchor printed no JSON: ${r.stdout.slice(-200)}`;
  }
}
const RESULTS = fileURLToPath(new URL('../results/train.json', import.meta.url));

interface Row {
  model: BenchModel;
  mode: 'plain-tfjs' | 'shoal-local' | 'shoal' | 'independent' | 'torch-anchor';
  backend: 'none' | 'local' | 'ring' | 'ring-sparse' | 'ps' | 'ps-worker' | 'ps-rows';
  workers: number;
  batch_per_worker: number;
  steps: number;
  samples_per_sec: number;
  step_ms: number;
  sync_ms: number | null;
  /** In-process rows: median CPU time (user + system) per timed step, robust to other processes' load. */
  cpu_ms_per_step?: number;
  /** `shoal` rows: rank 0's median step and sync milliseconds over the timed steps. */
  step_ms_p50?: number;
  sync_ms_p50?: number;
  /** `shoal` rows: rank 0's sleeps (voluntary context switches, i.e. wake-ups) per timed step. */
  sleeps_per_step?: number;
  /** `ps` and `ps-rows` rows: the server process's CPU milliseconds and sleeps per timed step. */
  server_cpu_ms_per_step?: number;
  server_sleeps_per_step?: number;
  processes: number;
  oversubscribed: boolean;
  /** Options rows (mlp64): the Trainer option or ps mode this row ran with, e.g. `accumulateSteps=4`, `async staleness=2`. */
  options?: string;
  /** mlp64 rows: rank 0's accuracy and loss on 4096 held-out samples after the timed epoch. */
  eval_accuracy?: number;
  eval_loss?: number;
}

/** An options row of `mlp64`: the Trainer option or ps mode it runs with (launch and worker arguments). */
interface RunOptions {
  label: string;
  /** Its name in `ratios` keys. */
  key: string;
  args?: string[];
  psMode?: 'async';
  staleness?: number;
}
/** The options rows: gradient accumulation, local SGD, async ps with bounded staleness (2 workers each). */
const OPTION_RUNS: Array<[backend: 'ring' | 'ps', RunOptions]> = [
  ['ring', { label: 'accumulateSteps=4', key: 'ring_accumulate4', args: ['--accumulate', '4'] }],
  ['ring', { label: 'syncEvery=4', key: 'ring_syncevery4', args: ['--sync-every', '4'] }],
  ['ps', { label: 'async staleness=0', key: 'ps_async_s0', psMode: 'async', staleness: 0 }],
  ['ps', { label: 'async staleness=2', key: 'ps_async_s2', psMode: 'async', staleness: 2 }],
];

/** CPU milliseconds (user + system) of this process since `c0`. */
const cpuMsSince = (c0: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1000;
};

async function plainLoop(rt: TfjsRuntime, model: BenchModel, steps: number): Promise<{ sps: number; cpuMsPerStep: number }> {
  const tf = rt.tf;
  const spec = benchSpec[model];
  const warmup = 3;
  const data = benchData(tf, model, spec.batch * (warmup + steps));
  const net = spec.build(tf);
  const opt = spec.optimizer(tf);
  const loss = resolveLoss(tf, spec.loss);
  let c0 = process.cpuUsage();
  const slice = (t: import('@tensorflow/tfjs').Tensor, s: number) => t.slice([s * spec.batch], [spec.batch]);
  let t0 = 0;
  for (let s = 0; s < warmup + steps; s++) {
    if (s === warmup) {
      t0 = performance.now();
      c0 = process.cpuUsage();
    }
    tf.tidy(() => {
      const x = Array.isArray(data.x) ? data.x.map((t) => slice(t, s)) : slice(data.x, s);
      const y = slice(data.y, s);
      const vars = net.trainableWeights.map((w) => w.read() as import('@tensorflow/tfjs').Variable);
      const l = opt.minimize(() => loss(y, net.apply(x, { training: true }) as import('@tensorflow/tfjs').Tensor), true, vars);
      l!.dataSync();
    });
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuMsSince(c0) / steps;
  tf.dispose([...(Array.isArray(data.x) ? data.x : [data.x]), data.y]);
  net.dispose();
  opt.dispose();
  return { sps: (steps * spec.batch) / secs, cpuMsPerStep: cpu };
}

async function localTrainer(rt: TfjsRuntime, model: BenchModel, steps: number): Promise<{ sps: number; syncMs: number; cpuMsPerStep: number }> {
  const tf = rt.tf;
  const spec = benchSpec[model];
  const warmup = 3;
  const data = benchData(tf, model, spec.batch * (warmup + steps));
  const trainer = new Trainer({ model: spec.build, optimizer: spec.optimizer, loss: spec.loss, runtime: rt, verbose: 0 });
  const { secs, cpu: used, syncMs: sync } = await timedFit(trainer, data, spec.batch, warmup);
  const cpu = (used.user + used.system) / 1000 / steps;
  tf.dispose([...(Array.isArray(data.x) ? data.x : [data.x]), data.y]);
  trainer.model.dispose();
  await trainer.close();
  return { sps: (steps * spec.batch) / secs, syncMs: sync / steps, cpuMsPerStep: cpu };
}

/** The best (highest `score`) of `n` runs, one after another: another process's load only ever slows a run down. */
async function bestOf<T>(n: number, run: () => Promise<T>, score: (t: T) => number): Promise<T> {
  let best = await run();
  for (let i = 1; i < n; i++) {
    const again = await run();
    if (score(again) > score(best)) best = again;
  }
  return best;
}

async function multi(
  model: BenchModel,
  backend: 'ring' | 'ring-sparse' | 'ps' | 'ps-worker' | 'ps-rows',
  workers: number,
  steps: number,
  opts: RunOptions = { label: '', key: '' },
): Promise<{ samplesPerSec: number; stepMs: number; syncMs: number; cpuMsPerStep: number; sleepsPerStep: number; serverCpuMsPerStep?: number; serverSleepsPerStep?: number; stepMsP50: number; syncMsP50: number; evalAccuracy?: number; evalLoss?: number }> {
  let out = '';
  const sink = new Writable({ write: (c, _e, cb) => ((out += c), cb()) });
  let err = '';
  const errSink = new Writable({ write: (c, _e, cb) => ((err += c), cb()) });
  const extra = [...(backend === 'ring-sparse' ? ['--sparse-ring'] : backend === 'ps-rows' ? ['--rows-sparse'] : []), ...(opts.args ?? [])];
  const warmup = model === 'rec' ? 60 : model === 'mlp64' ? 20 : 8;
  const r = await launch({
    script: WORKER,
    args: ['--model', model, '--steps', String(steps), '--warmup', String(warmup), ...extra],
    numWorkers: workers,
    backend: backend === 'ring-sparse' ? 'ring' : backend === 'ps-worker' || backend === 'ps-rows' ? 'ps' : backend,
    ...(backend === 'ps-worker' ? { psPlacement: 'worker' as const } : {}),
    servers: 1,
    ...(opts.psMode ? { psMode: opts.psMode, staleness: opts.staleness } : {}),
    stdout: sink,
    stderr: errSink,
    jobTimeoutMs: 300_000,
    timeoutMs: 120_000,
  });
  if (r.code !== 0) throw new Error(`${model}/${backend}/${workers}: rank ${r.failedRank} failed: ${r.error ?? err.slice(-500)}`);
  const line = out.split('\n').find((l) => l.includes('BENCH '));
  if (!line) throw new Error(`${model}/${backend}/${workers}: no BENCH line in output`);
  return JSON.parse(line.slice(line.indexOf('BENCH ') + 6));
}

/**
 * `--models` with some of the models: their rows and ratios replace those models' in the existing result file
 * (the other models' stay, with their run's `started` and `host`); `model_runs[model]` records when and under
 * what load each model's figures were taken. Without an existing file the result holds only these models.
 */
function mergeInto(file: string, models: BenchModel[], now: { started: string; host: { cpus: number; node: string; loadavg1: number }; rows: Row[]; ratios: Record<string, number | null>; kernels: unknown; errors: string[]; tfjs: string }): Record<string, unknown> {
  let old: { suite?: string; started?: string; host?: { loadavg1?: number }; rows?: Row[]; ratios?: Record<string, number | null>; model_runs?: Record<string, { started: string; loadavg1: number }> } = {};
  try {
    old = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    /* no earlier run: this one alone */
  }
  if (old.suite !== 'train') old = {};
  const runs: Record<string, { started: string; loadavg1: number }> = { ...(old.model_runs ?? {}) };
  for (const r of old.rows ?? []) if (!models.includes(r.model)) runs[r.model] ??= { started: old.started ?? '', loadavg1: old.host?.loadavg1 ?? NaN };
  for (const m of models) runs[m] = { started: now.started, loadavg1: now.host.loadavg1 };
  const keep = (k: string) => !models.some((m) => k.startsWith(`${m}_`)); // 'mlp_' is not a prefix of 'mlp64_'
  const ratios = Object.fromEntries([...Object.entries(old.ratios ?? {}).filter(([k]) => keep(k)), ...Object.entries(now.ratios)]);
  return { suite: 'train', version: 1, started: now.started, host: now.host, tfjs: now.tfjs, rows: [...(old.rows ?? []).filter((r) => !models.includes(r.model)), ...now.rows], ratios, kernels: now.kernels, errors: now.errors, model_runs: runs };
}

/** `npm run bench -- train`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench train',
  synopsis: '[options]',
  description: 'training throughput: shoal against plain tfjs, 1 and 2 workers',
  options: {
    'quick': { type: 'boolean', help: 'a few steps' },
    'no-multi': { type: 'boolean', help: 'skip the launched multi-worker runs' },
    'no-anchor': { type: 'boolean', help: 'skip the anchors' },
    'cpu-segments': { type: 'string', arg: 'N', help: 'segments of the CPU-time measure (default 500)' },
    'models': { type: 'string', arg: 'LIST', help: 'models to run, comma-separated (default rec,mlp,mlp64)' },
    'out': { type: 'string', arg: 'FILE', help: 'result file (default bench/results/train.json)' },
    'runs': { type: 'string', arg: 'LIST', help: 'only these rows, e.g. ring:1,ps:2,independent,local (local: kernels and in-process rows; default all)' },
    'repeats': { type: 'string', arg: 'N', help: 'fresh jobs per launched row, the best kept (default 3, --quick 1)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const quick = v['quick'] === true;
  const noMulti = v['no-multi'] === true;
  const cpuSegments = v['cpu-segments'] === undefined ? 500 : Number(v['cpu-segments']);
  const outFile = v['out'] ?? RESULTS;
  const all: BenchModel[] = ['rec', 'mlp', 'mlp64'];
  const models = (v['models'] ?? all.join(',')).split(',') as BenchModel[];
  for (const m of models) if (!all.includes(m)) throw new Error(`--models: unknown model ${m} (${all.join(', ')})`);
  // `--runs`: a subset of the launched rows (short measurements); the committed file is a full run.
  const only = v['runs'] === undefined ? undefined : new Set(v['runs'].split(','));
  const started = new Date().toISOString();
  const rt = await setupTfjs();
  const ncpu = cpus().length;
  console.log(`train bench: ${rt.describe()}; ${ncpu} cores, load ${loadavg()[0]!.toFixed(1)}`);
  const rows: Row[] = [];
  const errors: string[] = [];
  const cpuMs: Record<string, { plain: number; local: number }> = {};
  const inProcess = !only || only.has('local');
  const kern = inProcess ? await kernels(rt, cpuSegments) : {};
  console.log(`kernels: ${JSON.stringify(kern)}`);
  const stepsFor = (m: BenchModel) => (quick ? 6 : m === 'rec' ? 100 : m === 'mlp64' ? 100 : 20);
  const launchedStepsFor = (m: BenchModel) => (quick ? 6 : m === 'rec' ? 200 : m === 'mlp64' ? 400 : 30);
  const launchRuns = v['repeats'] !== undefined ? Number(v['repeats']) : quick ? 1 : 3;
  if (!Number.isInteger(launchRuns) || launchRuns < 1) throw new Error(`--repeats must be a positive integer, got ${v['repeats']}`);
  for (const model of models) {
    const steps = stepsFor(model);
    const batch = benchSpec[model].batch;
    const base = { model, batch_per_worker: batch, steps };
    // Interleaved and repeated (best of 3): the shared machine's load moves between runs.
    let plain = { sps: 0, cpuMsPerStep: Infinity };
    let local = { sps: 0, syncMs: 0, cpuMsPerStep: Infinity };
    const cpuPlain: number[] = [];
    const cpuLocal: number[] = [];
    for (let rep = 0; rep < (!inProcess ? 0 : quick ? 1 : 3); rep++) {
      const p = await plainLoop(rt, model, steps);
      cpuPlain.push(p.cpuMsPerStep);
      if (p.sps > plain.sps) plain = p;
      const l = await localTrainer(rt, model, steps);
      cpuLocal.push(l.cpuMsPerStep);
      if (l.sps > local.sps) local = l;
    }
    if (inProcess) cpuMs[model] = { plain: medianOf(cpuPlain), local: medianOf(cpuLocal) };
    if (inProcess) rows.push({ ...base, mode: 'plain-tfjs', backend: 'none', workers: 1, samples_per_sec: plain.sps, step_ms: (batch / plain.sps) * 1000, sync_ms: null, cpu_ms_per_step: cpuMs[model]!.plain, processes: 1, oversubscribed: false });
    if (inProcess) rows.push({ ...base, mode: 'shoal-local', backend: 'local', workers: 1, samples_per_sec: local.sps, step_ms: (batch / local.sps) * 1000, sync_ms: local.syncMs, cpu_ms_per_step: cpuMs[model]!.local, processes: 1, oversubscribed: false });
    if (inProcess) console.log(`${model}: plain ${plain.sps.toFixed(0)} samples/s (${cpuMs[model]!.plain.toFixed(1)} cpu ms/step), shoal-local ${local.sps.toFixed(0)} samples/s (${cpuMs[model]!.local.toFixed(1)} cpu ms/step)`);
    if (noMulti) continue;
    const runs: Array<['ring' | 'ring-sparse' | 'ps' | 'ps-worker' | 'ps-rows', number, RunOptions?]> = [['ring', 1], ['ring', 2], ['ps', 2]];
    if (model !== 'mlp64') runs.push(['ps-worker', 2]);
    if (model === 'rec') runs.push(['ring-sparse', 2], ['ps-rows', 2]);
    if (model === 'mlp64') for (const [backend, o] of OPTION_RUNS) runs.push([backend, 2, o]);
    for (const [backend, workers, opts] of runs) {
      if (only && !only.has(`${backend}:${workers}${opts ? `:${opts.key}` : ''}`)) continue;
      try {
        const launchedSteps = launchedStepsFor(model);
        // Best of `launchRuns` fresh jobs, as the in-process rows are best of 3.
        const m = await bestOf(launchRuns, () => multi(model, backend, workers, launchedSteps, opts), (x) => x.samplesPerSec);
        const processes = workers + (backend === 'ps' || backend === 'ps-rows' ? 1 : 0);
        rows.push({
          ...base,
          steps: launchedSteps,
          mode: 'shoal',
          backend,
          workers,
          samples_per_sec: m.samplesPerSec,
          step_ms: m.stepMs,
          sync_ms: m.syncMs,
          cpu_ms_per_step: m.cpuMsPerStep,
          step_ms_p50: m.stepMsP50,
          sync_ms_p50: m.syncMsP50,
          sleeps_per_step: m.sleepsPerStep,
          ...(m.serverCpuMsPerStep === undefined ? {} : { server_cpu_ms_per_step: m.serverCpuMsPerStep, server_sleeps_per_step: m.serverSleepsPerStep }),
          processes,
          oversubscribed: processes > ncpu,
          ...(opts ? { options: opts.label } : {}),
          ...(m.evalAccuracy === undefined ? {} : { eval_accuracy: m.evalAccuracy, eval_loss: m.evalLoss! }),
        });
        const server = m.serverCpuMsPerStep === undefined ? '' : `; server ${m.serverCpuMsPerStep.toFixed(2)} cpu ms, ${m.serverSleepsPerStep!.toFixed(1)} sleeps per step`;
        console.log(
          `${model}: ${backend}${opts ? ` ${opts.label}` : ''} x${workers} ${m.samplesPerSec.toFixed(0)} samples/s${m.evalAccuracy === undefined ? '' : ` (held-out accuracy ${m.evalAccuracy.toFixed(3)})`} (step ${m.stepMs.toFixed(2)} ms, p50 ${m.stepMsP50.toFixed(2)}; sync ${m.syncMs.toFixed(2)} ms, p50 ${m.syncMsP50.toFixed(2)}; rank 0 ${m.cpuMsPerStep.toFixed(2)} cpu ms, ${m.sleepsPerStep.toFixed(1)} sleeps per step${server})`,
        );
      } catch (e) {
        errors.push(String((e as Error).message));
        console.error(String((e as Error).message));
      }
    }
    // The ceiling of any 2-worker job here: two independent 1-worker jobs at once (no communication, no waiting
    // for each other), their samples/s summed. Best of `launchRuns`.
    if (!only || only.has('independent')) {
      try {
        const launchedSteps = launchedStepsFor(model);
        const total = (ms: Awaited<ReturnType<typeof multi>>[]) => ms.reduce((a, m) => a + m.samplesPerSec, 0);
        const best = await bestOf(launchRuns, () => Promise.all([multi(model, 'ring', 1, launchedSteps), multi(model, 'ring', 1, launchedSteps)]), total);
        const mean = (f: (m: Awaited<ReturnType<typeof multi>>) => number) => (f(best[0]!) + f(best[1]!)) / 2;
        rows.push({
          ...base,
          steps: launchedSteps,
          mode: 'independent',
          backend: 'ring',
          workers: 2,
          samples_per_sec: total(best),
          step_ms: mean((m) => m.stepMs),
          sync_ms: null,
          cpu_ms_per_step: mean((m) => m.cpuMsPerStep),
          step_ms_p50: mean((m) => m.stepMsP50),
          processes: 2,
          oversubscribed: 2 > ncpu,
        });
        console.log(`${model}: 2 independent 1-worker jobs at once ${total(best).toFixed(0)} samples/s (step ${mean((m) => m.stepMs).toFixed(2)} ms, p50 ${mean((m) => m.stepMsP50).toFixed(2)})`);
      } catch (e) {
        errors.push(String((e as Error).message));
        console.error(String((e as Error).message));
      }
    }
  }
  if (!v['no-anchor'] === true) {
    const a = torchAnchor(stepsFor('rec'), stepsFor('mlp'));
    if (typeof a === 'string') errors.push(a);
    else {
      for (const model of (['rec', 'mlp'] as const).filter((m) => models.includes(m))) {
        const batch = benchSpec[model].batch;
        rows.push({ model, mode: 'torch-anchor', backend: 'none', workers: 1, batch_per_worker: batch, steps: stepsFor(model), samples_per_sec: a[model], step_ms: (batch / a[model]) * 1000, sync_ms: null, processes: 1, oversubscribed: false });
      }
      console.log(`torch ${a.torch} anchor (1 thread): rec ${a.rec.toFixed(0)} samples/s, mlp ${a.mlp.toFixed(0)} samples/s`);
    }
  }
  // Rows without `options` (the options rows have their own ratios below).
  const plainRows = rows.filter((r) => r.options === undefined);
  const cpuOf = (model: string, backend: string, workers: number) => plainRows.find((r) => r.model === model && r.mode === 'shoal' && r.backend === backend && r.workers === workers)?.cpu_ms_per_step;
  const sps = (model: string, mode: string, backend: string, workers: number) => plainRows.find((r) => r.model === model && r.mode === mode && r.backend === backend && r.workers === workers)?.samples_per_sec;
  const shoalRow = (model: string, backend: string, workers: number) => plainRows.find((r) => r.model === model && r.mode === 'shoal' && r.backend === backend && r.workers === workers);
  const ratios: Record<string, number | null> = {};
  for (const model of models) {
    const one = sps(model, 'shoal', 'ring', 1);
    for (const backend of ['ring', 'ps', 'ps-worker', 'ring-sparse', 'ps-rows']) {
      const two = sps(model, 'shoal', backend, 2);
      if (!two && (backend === 'ring-sparse' || backend === 'ps-worker' || backend === 'ps-rows')) continue;
      ratios[`${model}_${backend}_2v1`] = one && two ? two / one : null;
      const c1 = cpuOf(model, 'ring', 1);
      const c2 = cpuOf(model, backend, 2);
      ratios[`${model}_${backend}_2v1_cpu`] = c1 && c2 ? (2 * c1) / c2 : null;
      const p1 = shoalRow(model, 'ring', 1)?.step_ms_p50;
      const r2 = shoalRow(model, backend, 2);
      const p2 = r2?.step_ms_p50;
      ratios[`${model}_${backend}_2v1_p50`] = p1 && p2 ? (2 * p1) / p2 : null;
      ratios[`${model}_${backend}_sync_share_p50`] = p2 && r2?.sync_ms_p50 !== undefined ? r2.sync_ms_p50 / p2 : null;
      ratios[`${model}_${backend}_sync_overhead_p50`] = p1 && p2 ? 1 - p1 / p2 : null;
      // CPU per sample of the whole job (2 workers as rank 0, plus the server process) over the 1-worker job's.
      if (c1 && c2 && r2?.server_cpu_ms_per_step !== undefined) ratios[`${model}_${backend}_job_cpu_per_sample_vs_1`] = (2 * c2 + r2.server_cpu_ms_per_step) / (2 * c1);
    }
    const indep = sps(model, 'independent', 'ring', 2);
    ratios[`${model}_independent_2v1`] = one && indep ? indep / one : null;
    const ring2 = sps(model, 'shoal', 'ring', 2);
    ratios[`${model}_ring_2_of_independent`] = indep && ring2 ? ring2 / indep : null;
    const plain = sps(model, 'plain-tfjs', 'none', 1);
    const local = sps(model, 'shoal-local', 'local', 1);
    ratios[`${model}_harness_overhead`] = plain && local ? 1 - local / plain : null;
    const c = cpuMs[model];
    ratios[`${model}_harness_overhead_cpu`] = c ? c.local / c.plain - 1 : null;
    const torch = sps(model, 'torch-anchor', 'none', 1);
    if (model !== 'mlp64') ratios[`${model}_plain_tfjs_vs_torch`] = plain && torch ? plain / torch : null;
    // Options rows: samples/s over the 1-worker ring job, and their sync share.
    for (const [backend, o] of model === 'mlp64' ? OPTION_RUNS : []) {
      const r = rows.find((x) => x.model === model && x.backend === backend && x.options === o.label);
      ratios[`${model}_${o.key}_2v1`] = one && r ? r.samples_per_sec / one : null;
      ratios[`${model}_${o.key}_sync_share_p50`] = r?.step_ms_p50 && r.sync_ms_p50 !== undefined ? r.sync_ms_p50 / r.step_ms_p50 : null;
    }
  }
  const host = { cpus: ncpu, node: process.version, loadavg1: loadavg()[0]! };
  // `--models` alone (every row of those models) updates them in the result file; `--runs` writes its rows alone.
  const result = models.length === all.length || only ? { suite: 'train', version: 1, started, host, tfjs: rt.describe(), rows, ratios, kernels: kern, errors } : mergeInto(outFile, models, { started, host, rows, ratios, kernels: kern, errors, tfjs: rt.describe() });
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify(result, null, 1)}\n`);
  console.log(`ratios: ${JSON.stringify(ratios)}`);
  console.log(`wrote ${outFile}`);
}
