/**
 * `npm run bench -- tensorboard [--reps 3] [--steps 60] [--model mlp|rec] [--backend ring|ps] [--out FILE]`: the cost of
 * the TensorBoard callback on the train step (with `--backend ps`, also of the servers' metrics: `shoal run --logdir`). `shoal run -n 2` (ring) of the train bench worker, three conditions interleaved and
 * repeated (the anchor is the `off` run next to each `on` run): `off`, `epoch` (`tensorBoard(dir)`, per-rank runs and
 * system metrics) and `batch` (`updateFreq: 'batch'`: a scalar event per step on every rank and one extra
 * 4-float allreduce per step for the rank-averaged batch logs). Verifies that the event files were written.
 * Writes `bench/results/tensorboard.json`.
 */
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { launch } from '@shoal/run';
import { medianOf, type BenchModel } from './train-models.js';

const WORKER = fileURLToPath(new URL('./train-worker.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../results/tensorboard.json', import.meta.url));

type Condition = 'off' | 'epoch' | 'batch';
interface Sample {
  stepMs: number;
  stepMsP50: number;
  samplesPerSec: number;
}

async function once(model: BenchModel, steps: number, cond: Condition, logdir: string, backend: 'ring' | 'ps'): Promise<Sample> {
  let out = '';
  let err = '';
  const sink = new Writable({ write: (c, _e, cb) => ((out += c), cb()) });
  const errSink = new Writable({ write: (c, _e, cb) => ((err += c), cb()) });
  const tb = cond === 'off' ? [] : ['--tensorboard', logdir, '--update-freq', cond];
  // ps: the servers write their metrics too (what `shoal run --logdir` does); the worker's explicit callback stays the only one
  const servers = backend === 'ps' && cond !== 'off' ? { logdir } : {};
  const r = await launch({ script: WORKER, args: ['--model', model, '--steps', String(steps), '--warmup', '8', ...tb], numWorkers: 2, backend, stdout: sink, stderr: errSink, jobTimeoutMs: 300_000, timeoutMs: 120_000, ...servers });
  if (r.code !== 0) throw new Error(`${cond}: rank ${r.failedRank} failed: ${r.error ?? err.slice(-500)}`);
  const line = out.split('\n').find((l) => l.includes('BENCH '));
  if (!line) throw new Error(`${cond}: no BENCH line`);
  const b = JSON.parse(line.slice(line.indexOf('BENCH ') + 6));
  if (cond !== 'off') {
    const runs = readdirSync(logdir).sort();
    const want = backend === 'ps' ? 'rank-0,rank-1,server-0,train' : 'rank-0,rank-1,train';
    if (runs.join() !== want) throw new Error(`${cond}: runs ${runs.join()} in ${logdir}, expected ${want}`);
  }
  return { stepMs: b.stepMs, stepMsP50: b.stepMsP50, samplesPerSec: b.samplesPerSec };
}

export const command = {
  name: 'bench tensorboard',
  synopsis: '[options]',
  description: 'train step time with the TensorBoard callback off, per epoch and per batch (2 workers, ring)',
  options: {
    'reps': { type: 'string', arg: 'N', help: 'interleaved repeats (default 3)' },
    'steps': { type: 'string', arg: 'N', help: 'timed steps per run (default 60)' },
    'model': { type: 'string', arg: 'NAME', help: 'bench model (default mlp)' },
    'backend': { type: 'string', arg: 'ring|ps', help: 'engine (default ring); ps: the servers write their metrics too' },
    'out': { type: 'string', arg: 'FILE', help: `results file (default ${RESULTS})` },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const reps = Number(v['reps'] ?? '3');
  const steps = Number(v['steps'] ?? '60');
  const model = (v['model'] ?? 'mlp') as BenchModel;
  const backend = (v['backend'] ?? 'ring') as 'ring' | 'ps';
  if (backend !== 'ring' && backend !== 'ps') throw new Error(`--backend must be ring or ps, got ${backend}`);
  const outFile = v['out'] ?? (backend === 'ring' ? RESULTS : RESULTS.replace(/\.json$/, `-${backend}.json`));
  const started = new Date().toISOString();
  console.log(`tensorboard bench: ${model}, 2 workers (${backend}), ${steps} timed steps, ${reps} reps; ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}`);
  const samples: Record<Condition, Sample[]> = { off: [], epoch: [], batch: [] };
  for (let rep = 0; rep < reps; rep++) {
    for (const cond of ['off', 'epoch', 'batch'] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-tb-'));
      try {
        const s = await once(model, steps, cond, dir, backend);
        samples[cond].push(s);
        console.log(`  rep ${rep} ${cond.padEnd(5)} step ${s.stepMs.toFixed(2)} ms (p50 ${s.stepMsP50.toFixed(2)})`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  const rows = (['off', 'epoch', 'batch'] as const).map((cond) => {
    const xs = samples[cond];
    const p50 = medianOf(xs.map((s) => s.stepMsP50));
    const offP50 = medianOf(samples.off.map((s) => s.stepMsP50));
    return {
      condition: cond,
      step_ms_p50: p50,
      step_ms_mean_runs: xs.map((s) => s.stepMs),
      step_ms_p50_runs: xs.map((s) => s.stepMsP50),
      samples_per_sec_median: medianOf(xs.map((s) => s.samplesPerSec)),
      vs_off_pct: ((p50 - offP50) / offP50) * 100,
    };
  });
  for (const r of rows) console.log(`${r.condition.padEnd(5)} step p50 ${r.step_ms_p50.toFixed(2)} ms (${r.vs_off_pct >= 0 ? '+' : ''}${r.vs_off_pct.toFixed(1)} % vs off); runs ${r.step_ms_p50_runs.map((v) => v.toFixed(2)).join(', ')}`);
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify({ suite: 'tensorboard', version: 1, started, host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, model, workers: 2, backend, steps, reps, rows }, null, 1)}\n`);
  console.log(`wrote ${outFile}`);
}
