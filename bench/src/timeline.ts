/**
 * `npm run bench -- timeline [--reps 3] [--steps 60] [--model mlp|rec] [--out FILE]`: the cost of `shoal run
 * --timeline` on the train step. `shoal run -n 2` (ring) of the train bench worker, `off` and `on` interleaved and
 * repeated (the anchor is the `off` run next to each `on` run); each `on` run checks the merged file (both ranks,
 * a compute and a sync span per step). Also the in-process cost of recording one span (`Timeline.span`, buffered).
 * Writes `bench/results/timeline.json`.
 */
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Timeline } from '@shoal/core/telemetry';
import { launch } from '@shoal/run';
import { medianOf, type BenchModel } from './train-models.js';

const WORKER = fileURLToPath(new URL('./train-worker.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../results/timeline.json', import.meta.url));

type Condition = 'off' | 'on';
interface Sample {
  stepMs: number;
  stepMsP50: number;
  samplesPerSec: number;
  /** With the timeline: spans per rank per step, and the merged file's size. */
  spansPerStep?: number;
  fileBytes?: number;
}

async function once(model: BenchModel, steps: number, warmup: number, cond: Condition, dir: string): Promise<Sample> {
  let out = '';
  let err = '';
  const sink = new Writable({ write: (c, _e, cb) => ((out += c), cb()) });
  const errSink = new Writable({ write: (c, _e, cb) => ((err += c), cb()) });
  const file = join(dir, 'timeline.json');
  const r = await launch({
    script: WORKER,
    args: ['--model', model, '--steps', String(steps), '--warmup', String(warmup)],
    numWorkers: 2,
    backend: 'ring',
    stdout: sink,
    stderr: errSink,
    jobTimeoutMs: 300_000,
    timeoutMs: 120_000,
    ...(cond === 'on' ? { timeline: file } : {}),
  });
  if (r.code !== 0) throw new Error(`${cond}: rank ${r.failedRank} failed: ${r.error ?? err.slice(-500)}`);
  const line = out.split('\n').find((l) => l.includes('BENCH '));
  if (!line) throw new Error(`${cond}: no BENCH line`);
  const b = JSON.parse(line.slice(line.indexOf('BENCH ') + 6));
  const s: Sample = { stepMs: b.stepMs, stepMsP50: b.stepMsP50, samplesPerSec: b.samplesPerSec };
  if (cond === 'on') {
    // verify: both ranks, one compute and one sync span per step (warmup included)
    const ev = (JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: Array<{ ph: string; pid: number; name: string }> }).traceEvents.filter((e) => e.ph === 'X');
    for (const rank of [0, 1]) {
      for (const name of ['compute', 'sync']) {
        const n = ev.filter((e) => e.pid === rank && e.name === name).length;
        if (n !== steps + warmup) throw new Error(`on: rank ${rank} has ${n} ${name} spans, expected ${steps + warmup}`);
      }
    }
    s.spansPerStep = ev.filter((e) => e.pid === 0).length / (steps + warmup);
    s.fileBytes = statSync(file).size;
  }
  return s;
}

/** Nanoseconds to record one span (buffered; the timer's writes included over the loop), median of 5 runs. */
function spanCostNs(dir: string): number {
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = new Timeline({ path: join(dir, `micro-${r}.jsonl`), pid: 0, flushMs: 100 });
    const lane = t.lane('sync');
    const n = 200_000;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) t.span(lane, 'allreduce', t.now(), { bucket: i & 3, bytes: 4096 });
    runs.push(Number(process.hrtime.bigint() - t0) / n);
    void t.close();
  }
  return medianOf(runs);
}

export const command = {
  name: 'bench timeline',
  synopsis: '[options]',
  description: 'train step time with shoal run --timeline off and on (2 workers, ring), and the cost of one span',
  options: {
    reps: { type: 'string', arg: 'N', help: 'interleaved repeats (default 3)' },
    steps: { type: 'string', arg: 'N', help: 'timed steps per run (default 60)' },
    model: { type: 'string', arg: 'NAME', help: 'bench model (default mlp)' },
    out: { type: 'string', arg: 'FILE', help: `results file (default ${RESULTS})` },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const reps = Number(v.reps ?? '3');
  const steps = Number(v.steps ?? '60');
  const warmup = 8;
  const model = (v.model ?? 'mlp') as BenchModel;
  const outFile = v.out ?? RESULTS;
  const started = new Date().toISOString();
  const load0 = loadavg()[0]!;
  console.log(`timeline bench: ${model}, 2 workers (ring), ${steps} timed steps, ${reps} reps; ${cpus().length} cores, load ${load0.toFixed(1)}`);
  const samples: Record<Condition, Sample[]> = { off: [], on: [] };
  const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-tl-'));
  let spanNs: number;
  try {
    spanNs = spanCostNs(dir);
    console.log(`  one span: ${spanNs.toFixed(0)} ns (recorded and buffered)`);
    for (let rep = 0; rep < reps; rep++) {
      for (const cond of ['off', 'on'] as const) {
        const s = await once(model, steps, warmup, cond, dir);
        samples[cond].push(s);
        console.log(`  rep ${rep} ${cond.padEnd(3)} step ${s.stepMs.toFixed(2)} ms (p50 ${s.stepMsP50.toFixed(2)})${s.spansPerStep ? `, ${s.spansPerStep.toFixed(1)} spans/step/rank, ${(s.fileBytes! / 1024).toFixed(0)} KiB` : ''}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const offP50 = medianOf(samples.off.map((s) => s.stepMsP50));
  const rows = (['off', 'on'] as const).map((cond) => {
    const xs = samples[cond];
    const p50 = medianOf(xs.map((s) => s.stepMsP50));
    return {
      condition: cond,
      step_ms_p50: p50,
      step_ms_p50_runs: xs.map((s) => s.stepMsP50),
      step_ms_mean_runs: xs.map((s) => s.stepMs),
      samples_per_sec_median: medianOf(xs.map((s) => s.samplesPerSec)),
      vs_off_pct: ((p50 - offP50) / offP50) * 100,
      ...(cond === 'on' ? { spans_per_step_per_rank: medianOf(xs.map((s) => s.spansPerStep!)), file_bytes_median: medianOf(xs.map((s) => s.fileBytes!)) } : {}),
    };
  });
  for (const r of rows) console.log(`${r.condition.padEnd(3)} step p50 ${r.step_ms_p50.toFixed(2)} ms (${r.vs_off_pct >= 0 ? '+' : ''}${r.vs_off_pct.toFixed(1)} % vs off); runs ${r.step_ms_p50_runs.map((x) => x.toFixed(2)).join(', ')}`);
  mkdirSync(dirname(outFile), { recursive: true });
  const host = { cpus: cpus().length, node: process.version, loadavg1_start: load0, loadavg1_end: loadavg()[0] };
  writeFileSync(outFile, `${JSON.stringify({ suite: 'timeline', version: 1, started, host, model, workers: 2, backend: 'ring', steps, warmup, reps, span_ns: spanNs, rows }, null, 1)}\n`);
  console.log(`wrote ${outFile}`);
}
