/**
 * `npm run bench -- ps-rounds [--reps 2] [--steps 200] [--model rec] [--out FILE]`: where a ps sync round's time
 * goes on the train step. `shoal run -n 2 --backend ps` (one server process) of the train bench worker with
 * `--timeline`; the merged file is split per round by `psRoundBreakdown` (arrival gap, last arrival -> server,
 * server before the apply, apply, after it, reply to the first and to the last arriver). Each rep is a fresh job;
 * the row keeps every rep's medians. Writes `bench/results/ps-rounds.json`.
 */
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { launch } from '@shoal/run';
import { BREAKDOWN_PARTS, psRoundBreakdown, type RoundBreakdown, type TraceEvent } from './ps-round-breakdown.js';
import type { BenchModel } from './train-models.js';

const WORKER = fileURLToPath(new URL('./train-worker.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../results/ps-rounds.json', import.meta.url));

async function once(model: BenchModel, steps: number, warmup: number, dir: string): Promise<{ bench: Record<string, number>; breakdown: RoundBreakdown }> {
  let out = '';
  let err = '';
  const file = join(dir, 'timeline.json');
  const r = await launch({
    script: WORKER,
    args: ['--model', model, '--steps', String(steps), '--warmup', String(warmup)],
    numWorkers: 2,
    backend: 'ps',
    servers: 1,
    timeline: file,
    stdout: new Writable({ write: (c, _e, cb) => ((out += c), cb()) }),
    stderr: new Writable({ write: (c, _e, cb) => ((err += c), cb()) }),
    jobTimeoutMs: 300_000,
    timeoutMs: 120_000,
  });
  if (r.code !== 0) throw new Error(`ps-rounds: rank ${r.failedRank} failed: ${r.error ?? err.slice(-500)}`);
  const line = out.split('\n').find((l) => l.includes('BENCH '));
  if (!line) throw new Error('ps-rounds: no BENCH line');
  const events = (JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[] }).traceEvents;
  return { bench: JSON.parse(line.slice(line.indexOf('BENCH ') + 6)), breakdown: psRoundBreakdown(events, warmup) };
}

export const command = {
  name: 'bench ps-rounds',
  synopsis: '[options]',
  description: 'where a ps sync round goes: 2 workers and a ps server with --timeline, split per round',
  options: {
    reps: { type: 'string', arg: 'N', help: 'fresh jobs (default 2)' },
    steps: { type: 'string', arg: 'N', help: 'timed steps per job (default 200)' },
    model: { type: 'string', arg: 'NAME', help: 'bench model (default rec)' },
    out: { type: 'string', arg: 'FILE', help: `results file (default ${RESULTS})` },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const reps = Number(v.reps ?? '2');
  const steps = Number(v.steps ?? '200');
  const model = (v.model ?? 'rec') as BenchModel;
  const warmup = model === 'rec' ? 60 : 20;
  const outFile = v.out ?? RESULTS;
  const started = new Date().toISOString();
  const load0 = loadavg()[0]!;
  console.log(`ps-rounds bench: ${model}, 2 workers + 1 ps server process, ${steps} timed steps, ${reps} reps; ${cpus().length} cores, load ${load0.toFixed(1)}`);
  const runs: Array<{ step_ms: number; step_ms_p50: number; sync_ms_p50: number; rounds: number; p50_us: RoundBreakdown['p50']; mean_us: RoundBreakdown['mean'] }> = [];
  const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-psr-'));
  try {
    for (let rep = 0; rep < reps; rep++) {
      const { bench: b, breakdown: d } = await once(model, steps, warmup, dir);
      runs.push({ step_ms: b['stepMs']!, step_ms_p50: b['stepMsP50']!, sync_ms_p50: b['syncMsP50']!, rounds: d.rounds, p50_us: d.p50, mean_us: d.mean });
      console.log(`  rep ${rep}: step ${b['stepMs']!.toFixed(2)} ms (p50 ${b['stepMsP50']!.toFixed(2)}, sync p50 ${b['syncMsP50']!.toFixed(2)}), ${d.rounds} rounds; p50/mean us:`);
      for (const k of BREAKDOWN_PARTS) console.log(`    ${k.padEnd(20)} ${d.p50[k].toFixed(0).padStart(6)} / ${d.mean[k].toFixed(0).padStart(6)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(dirname(outFile), { recursive: true });
  const host = { cpus: cpus().length, node: process.version, loadavg1_start: load0, loadavg1_end: loadavg()[0] };
  writeFileSync(outFile, `${JSON.stringify({ suite: 'ps-rounds', version: 1, started, host, model, workers: 2, servers: 1, steps, warmup, runs }, null, 1)}\n`);
  console.log(`wrote ${outFile}`);
}
