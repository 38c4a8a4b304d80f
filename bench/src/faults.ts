/**
 * `npm run bench -- faults [--reps 3] [--steps 150] [--size 100000] [--out FILE]`: what a lost parameter server
 * costs under `shoal run --ps-durable`. Each rep runs three 2-worker ps jobs (2 servers) interleaved: `plain` (no
 * durability: the anchor), `durable` (checkpoint before every acknowledgement, no fault) and `durable-kill`
 * (SIGKILL of ps-server-1 once rank 0 passed a third of the steps). Recovery time = the longest step gap of the
 * killed run after the kill minus its p50 step (the stall the kill caused: detection, restart from the checkpoint,
 * resend). Verifies each job ended with code 0. `--part elastic`: the commit cost of elastic training and the
 * recovery after a lost worker (`runElastic`). Writes `bench/results/faults.json`.
 */
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { launch } from '@shoal/run';
import { medianOf } from './train-models.js';

const WORKER = fileURLToPath(new URL('./faults-worker.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../results/faults.json', import.meta.url));

type Condition = 'plain' | 'durable' | 'durable-kill';
interface Sample {
  stepMsP50: number;
  /** durable-kill: the stall after the kill, beyond a normal step. */
  recoveryMs?: number;
  totalMs: number;
}

/** The pid of ps-server-1 of job `jobId` (its actor spec, in its environment, names the job's shm prefix). */
function serverPid(jobId: string): number | undefined {
  for (const f of readdirSync('/proc')) {
    if (!/^\d+$/.test(f)) continue;
    try {
      const env = readFileSync(`/proc/${f}/environ`, 'utf8');
      if (env.includes('"name":"ps-server-1"') && env.includes(jobId)) return Number(f);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

async function once(cond: Condition, steps: number, size: number, rep: number): Promise<Sample> {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-faults-'));
  const durable = cond === 'plain' ? undefined : mkdtempSync(join(tmpdir(), 'shoal-bench-durable-'));
  const jobId = `bench-faults-${process.pid}-${cond}-${rep}`;
  let err = '';
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  const errSink = new Writable({ write: (c, _e, cb) => ((err += c), cb()) });
  try {
    const t0 = Date.now();
    const job = launch({ script: WORKER, numWorkers: 2, backend: 'ps', servers: 2, jobId, timeoutMs: 30_000, jobTimeoutMs: 300_000, stdout: quiet, stderr: errSink, ...(durable ? { psDurable: durable } : {}), env: { PROGRESS_DIR: dir, STEPS: String(steps), SIZE: String(size) } });
    let killedAt: number | undefined;
    if (cond === 'durable-kill') {
      const at = Math.floor(steps / 3);
      while (!(existsSync(join(dir, '0')) && Number(readFileSync(join(dir, '0'), 'utf8')) >= at)) await new Promise((r) => setTimeout(r, 5));
      const pid = serverPid(jobId);
      if (pid === undefined) throw new Error('ps-server-1 not found');
      killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
    }
    const r = await job;
    if (r.code !== 0) throw new Error(`${cond}: ${r.failedProcess ?? `rank ${r.failedRank}`} failed: ${r.error ?? err.slice(-500)}`);
    const times = JSON.parse(readFileSync(join(dir, 'times.json'), 'utf8')) as number[];
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    const stepMsP50 = medianOf(gaps);
    const s: Sample = { stepMsP50, totalMs: Date.now() - t0 };
    if (killedAt !== undefined) {
      const after = times.findIndex((t) => t > killedAt);
      if (after < 1) throw new Error('no step ended after the kill');
      s.recoveryMs = Math.max(...gaps.slice(after - 1)) - stepMsP50;
    }
    return s;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    if (durable) rmSync(durable, { recursive: true, force: true });
  }
}

const ELASTIC_WORKER = fileURLToPath(new URL('./elastic-worker.js', import.meta.url));

interface ElasticSample {
  stepMsP50: number;
  commits: number;
  commitMs: number;
  agreeMs: number;
  params: number;
  recoveryMs?: number;
  lostSteps?: number;
  totalMs: number;
}

/** One elastic job of elastic-worker.ts: `k` = commitEvery; `kill`: 3 workers, worker 2 SIGKILLs itself at steps/3. */
async function elasticOnce(k: number, steps: number, rep: number, kill: boolean): Promise<ElasticSample> {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-elastic-'));
  const jobId = `bench-elastic-${process.pid}-${k}-${rep}-${kill ? 'kill' : 'plain'}`;
  let err = '';
  const quiet = new Writable({ write: (_c, _e, cb) => cb() });
  const errSink = new Writable({ write: (c, _e, cb) => ((err += c), cb()) });
  const killStep = Math.floor(steps / 3) + Math.floor(k / 2);
  try {
    const t0 = Date.now();
    const n = kill ? 3 : 2;
    const r = await launch({
      script: ELASTIC_WORKER,
      numWorkers: n,
      jobId,
      timeoutMs: 30_000,
      jobTimeoutMs: 300_000,
      stdout: quiet,
      stderr: errSink,
      elastic: { minWorkers: n - 1, maxWorkers: n },
      env: { PROGRESS_DIR: dir, STEPS: String(steps), COMMIT_EVERY: String(k), ...(kill ? { KILL_WORKER: '2', KILL_STEP: String(killStep) } : {}) },
    });
    if (r.code !== 0) throw new Error(`elastic k=${k}${kill ? ' kill' : ''}: rank ${r.failedRank} failed: ${r.error ?? err.slice(-500)}`);
    const res = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')) as { times: Array<[number, number]>; commits: number; commitMs: number; agreeMs: number; params: number };
    const gaps = res.times.slice(1).map((t, i) => t[1] - res.times[i]![1]);
    const stepMsP50 = medianOf(gaps);
    const s: ElasticSample = { stepMsP50, commits: res.commits, commitMs: res.commitMs, agreeMs: res.agreeMs, params: res.params, totalMs: Date.now() - t0 };
    if (kill) {
      const killedAt = Number(readFileSync(join(dir, 'killed-at'), 'utf8'));
      // the first step after the rollback: its step number goes back
      const i = res.times.findIndex((t, j) => j > 0 && t[0] <= res.times[j - 1]![0]);
      if (i < 1) throw new Error('elastic kill: no rollback seen in rank 0\'s steps');
      s.recoveryMs = res.times[i]![1] - killedAt - stepMsP50;
      s.lostSteps = killStep - (res.times[i]![0] - 1);
    }
    return s;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The elastic part: commit cost per step at K = 1, 10, 100 against an anchor that commits only at the start and
 * the end (2 workers), and the recovery after a lost worker (3 workers, K = 10, one SIGKILLed a third in).
 */
async function runElastic(reps: number, steps: number): Promise<Record<string, unknown>> {
  const ks = [0, 1, 10, 100];
  const samples = new Map<number, ElasticSample[]>(ks.map((k) => [k, []]));
  const kills: ElasticSample[] = [];
  for (let rep = 0; rep < reps; rep++) {
    for (const k of ks) {
      const s = await elasticOnce(k === 0 ? 1_000_000 : k, steps, rep, false);
      samples.get(k)!.push(s);
      console.log(`  rep ${rep} elastic ${k === 0 ? 'anchor' : `K=${k}`.padEnd(6)} step p50 ${s.stepMsP50.toFixed(1)} ms, ${s.commits} commits ${(s.commitMs / s.commits).toFixed(2)} ms copy + ${(s.agreeMs / Math.max(1, s.commits - 2)).toFixed(2)} ms agree each`);
    }
    const s = await elasticOnce(10, steps, rep, true);
    kills.push(s);
    console.log(`  rep ${rep} elastic kill   recovery ${s.recoveryMs!.toFixed(0)} ms, ${s.lostSteps} steps redone`);
  }
  const anchor = medianOf(samples.get(0)!.map((s) => s.stepMsP50));
  const rows = ks.filter((k) => k > 0).map((k) => {
    const xs = samples.get(k)!;
    const p50 = medianOf(xs.map((s) => s.stepMsP50));
    const copy = medianOf(xs.map((s) => s.commitMs / s.commits));
    const agree = medianOf(xs.map((s) => s.agreeMs / Math.max(1, s.commits - 2)));
    return { commit_every: k, step_ms_p50: p50, step_ms_p50_runs: xs.map((s) => s.stepMsP50), vs_anchor_pct: ((p50 - anchor) / anchor) * 100, commit_copy_ms_p50: copy, commit_agree_ms_p50: agree, commit_ms_per_step: (copy + agree) / k };
  });
  for (const r of rows) console.log(`elastic K=${String(r.commit_every).padEnd(4)} step p50 ${r.step_ms_p50.toFixed(1)} ms (${r.vs_anchor_pct >= 0 ? '+' : ''}${r.vs_anchor_pct.toFixed(1)} % vs anchor ${anchor.toFixed(1)} ms); commit ${r.commit_copy_ms_p50.toFixed(2)} ms copy + ${r.commit_agree_ms_p50.toFixed(2)} ms agree = ${r.commit_ms_per_step.toFixed(3)} ms/step`);
  const recovery = { workers: 3, min_workers: 2, commit_every: 10, recovery_ms_p50: medianOf(kills.map((s) => s.recoveryMs!)), recovery_ms_runs: kills.map((s) => s.recoveryMs!), lost_steps_runs: kills.map((s) => s.lostSteps!), job_ms_runs: kills.map((s) => s.totalMs) };
  console.log(`elastic recovery p50 ${recovery.recovery_ms_p50.toFixed(0)} ms (${recovery.recovery_ms_runs.map((x) => x.toFixed(0)).join(', ')})`);
  return { workers: 2, steps, params: samples.get(1)![0]!.params, anchor_step_ms_p50: anchor, anchor_step_ms_p50_runs: samples.get(0)!.map((s) => s.stepMsP50), rows, recovery, loadavg1_end: loadavg()[0] };
}

export const command = {
  name: 'bench faults',
  synopsis: '[options]',
  description: 'recovery time after a lost parameter server with --ps-durable, and the step cost of durability (2 workers, 2 servers)',
  options: {
    'reps': { type: 'string', arg: 'N', help: 'interleaved repeats (default 3)' },
    'steps': { type: 'string', arg: 'N', help: 'steps per job (default 150)' },
    'size': { type: 'string', arg: 'N', help: 'floats allreduced per step (default 100000)' },
    'out': { type: 'string', arg: 'FILE', help: `results file (default ${RESULTS})` },
    'part': { type: 'string', arg: 'ps|elastic|all', help: 'ps: durable servers; elastic: commit cost and recovery of elastic jobs (the other part is kept from the results file); default all' },
    'elastic-steps': { type: 'string', arg: 'N', help: 'steps per elastic job (default 200)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const reps = Number(v['reps'] ?? '3');
  const steps = Number(v['steps'] ?? '150');
  const size = Number(v['size'] ?? '100000');
  const outFile = v['out'] ?? RESULTS;
  const part = v['part'] ?? 'all';
  if (!['ps', 'elastic', 'all'].includes(part)) throw new Error(`bench faults: --part must be ps|elastic|all, got ${part}`);
  const started = new Date().toISOString();
  let previous: Record<string, unknown> = {};
  try {
    previous = JSON.parse(readFileSync(outFile, 'utf8')) as Record<string, unknown>;
  } catch {
    /* no earlier results */
  }
  if (part === 'elastic') {
    console.log(`faults bench, elastic part: ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}`);
    const elastic = { started, loadavg1: loadavg()[0], ...(await runElastic(reps, Number(v['elastic-steps'] ?? '200'))) };
    mkdirSync(dirname(outFile), { recursive: true });
    writeFileSync(outFile, `${JSON.stringify({ ...previous, suite: 'faults', version: 2, elastic }, null, 1)}\n`);
    console.log(`wrote ${outFile}`);
    return;
  }
  console.log(`faults bench: ps, 2 workers, 2 servers, ${steps} steps of ${size} floats, ${reps} reps; ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}`);
  const conds = ['plain', 'durable', 'durable-kill'] as const;
  const samples: Record<Condition, Sample[]> = { plain: [], durable: [], 'durable-kill': [] };
  for (let rep = 0; rep < reps; rep++) {
    for (const cond of conds) {
      const s = await once(cond, steps, size, rep);
      samples[cond].push(s);
      console.log(`  rep ${rep} ${cond.padEnd(12)} step p50 ${s.stepMsP50.toFixed(2)} ms${s.recoveryMs !== undefined ? `, recovery ${s.recoveryMs.toFixed(0)} ms` : ''}, job ${s.totalMs} ms`);
    }
  }
  const plainP50 = medianOf(samples.plain.map((s) => s.stepMsP50));
  const rows = conds.map((cond) => {
    const xs = samples[cond];
    const p50 = medianOf(xs.map((s) => s.stepMsP50));
    return {
      condition: cond,
      step_ms_p50: p50,
      step_ms_p50_runs: xs.map((s) => s.stepMsP50),
      vs_plain_pct: ((p50 - plainP50) / plainP50) * 100,
      ...(cond === 'durable-kill' ? { recovery_ms_p50: medianOf(xs.map((s) => s.recoveryMs!)), recovery_ms_runs: xs.map((s) => s.recoveryMs!) } : {}),
      job_ms_runs: xs.map((s) => s.totalMs),
    };
  });
  for (const r of rows) console.log(`${r.condition.padEnd(12)} step p50 ${r.step_ms_p50.toFixed(2)} ms (${r.vs_plain_pct >= 0 ? '+' : ''}${r.vs_plain_pct.toFixed(1)} % vs plain)${'recovery_ms_p50' in r ? `; recovery p50 ${r.recovery_ms_p50!.toFixed(0)} ms` : ''}`);
  const elastic = part === 'all' ? { started: new Date().toISOString(), loadavg1: loadavg()[0], ...(await runElastic(reps, Number(v['elastic-steps'] ?? '200'))) } : previous.elastic;
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${JSON.stringify({ suite: 'faults', version: 2, ...(elastic === undefined ? {} : { elastic }), started, host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, workers: 2, servers: 2, backend: 'ps', steps, size, reps, rows }, null, 1)}\n`);
  console.log(`wrote ${outFile}`);
}
