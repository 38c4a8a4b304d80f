/**
 * `npm run bench -- soak [--engines ring,ps,hybrid] [--mode trainer|tables] [--steps N] [--batch B] [--out FILE]`: memory and
 * file-descriptor soak (issue #16). Not in CI: a full run takes minutes per engine.
 *
 * For each engine it launches a 2-worker job of `soak-worker.ts` (1 server for ps/hybrid) and samples, every
 * `--interval-ms` (500), every process of the job (workers by rank, servers by actor name, found as descendants
 * of this process through /proc): resident set size (VmRSS) and open file descriptors. Rank 0's `SOAK` lines put
 * the samples on a step axis. Per process it reports the least-squares slope of RSS in MiB per 1000 steps and of
 * fds per 1000 steps over the samples after the first `--warm` (0.25) of the steps (JIT, heap and pool growth
 * settle there), with the first and last RSS. `--gc`: workers run with --expose-gc and rank 0 collects garbage
 * before each report, so its heap figures are live data (its RSS then also stays lower).
 *
 * Output (stdout, and `--out FILE` when given):
 * { suite: 'soak', version: 1, started, host: { cpus, node }, mode, steps,
 *   runs: [ { engine, code, seconds, procs: [ { proc: 'rank 0'|'ps-server-0', samples, rss_first_mib, rss_last_mib,
 *             rss_mib_per_1k_steps, fds_first, fds_last, fds_per_1k_steps } ],
 *             rank0: { after_warmup, end: { step, heapMiB, externalMiB, arrayBuffersMiB, tensors } } } ] }
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { Writable } from 'node:stream';
import { launch } from '@shoal/run';

const WORKER = fileURLToPath(new URL('./soak-worker.js', import.meta.url));

interface Sample {
  step: number;
  rss: number;
  fds: number;
}

/** Pids of every descendant of `root` (children, grandchildren, ...). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      // the command may hold spaces and parentheses: fields after the last ')'
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(d), ppid);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const want = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, pp] of parent) {
      if (want.has(pp) && !want.has(pid)) {
        want.add(pid);
        out.push(pid);
        grew = true;
      }
    }
  }
  return out;
}

/** `rank N` for a worker, the actor name for a server, undefined for anything else (e.g. a shell). */
function labelOf(pid: number): string | undefined {
  try {
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const spec = env.find((e) => e.startsWith('SHOAL_ACTOR_SPEC='));
    if (spec) return (JSON.parse(spec.slice('SHOAL_ACTOR_SPEC='.length)) as { name: string }).name;
    const rank = env.find((e) => e.startsWith('SHOAL_RANK='));
    if (rank) return `rank ${rank.slice('SHOAL_RANK='.length)}`;
  } catch {
    // gone, or not ours
  }
  return undefined;
}

function measure(pid: number): { rss: number; fds: number } | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { rss: Number(m?.[1] ?? 0) / 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return undefined;
  }
}

/** Least-squares slope of y over x (0 with fewer than 2 distinct x). */
function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return 0;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function soakOne(engine: 'ring' | 'ps' | 'hybrid', o: { mode: string; steps: number; intervalMs: number; warm: number; gc: boolean; batch: number }) {
  let step = 0;
  /** Rank 0's own view (heap, external, array buffers, live tfjs tensors) at its last report. */
  let first: Record<string, number> | undefined;
  let last: Record<string, number> | undefined;
  const lines = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const m of chunk.toString().matchAll(/SOAK (\{[^\n]*\})/g)) {
        last = JSON.parse(m[1]!) as Record<string, number>;
        step = last.step!;
        if (!first && step >= o.warm * o.steps) first = last;
      }
      cb();
    },
  });
  const samples = new Map<string, Sample[]>();
  const timer = setInterval(() => {
    for (const pid of descendants(process.pid)) {
      const label = labelOf(pid);
      const m = label && measure(pid);
      if (!label || !m) continue;
      const list = samples.get(label) ?? [];
      list.push({ step, ...m });
      samples.set(label, list);
    }
  }, o.intervalMs);
  const t0 = performance.now();
  const r = await launch({
    script: WORKER,
    args: ['--mode', o.mode, '--steps', String(o.steps), '--batch', String(o.batch)],
    numWorkers: 2,
    backend: engine,
    servers: 1,
    stdout: lines,
    stderr: process.stderr,
    timeoutMs: 120_000,
    nodeArgs: o.gc ? ['--expose-gc'] : [],
  });
  clearInterval(timer);
  const procs = [...samples].sort(([a], [b]) => a.localeCompare(b)).map(([proc, all]) => {
    // after warm-up, and before the last step (then the job tears down: processes exit, fds close)
    const s = all.filter((x) => x.step >= o.warm * o.steps && x.step < o.steps);
    const xs = s.map((x) => x.step / 1000);
    return {
      proc,
      samples: s.length,
      rss_first_mib: +(s[0]?.rss ?? 0).toFixed(1),
      rss_last_mib: +(s.at(-1)?.rss ?? 0).toFixed(1),
      rss_mib_per_1k_steps: +slope(xs, s.map((x) => x.rss)).toFixed(2),
      fds_first: s[0]?.fds ?? 0,
      fds_last: s.at(-1)?.fds ?? 0,
      fds_per_1k_steps: +slope(xs, s.map((x) => x.fds)).toFixed(2),
    };
  });
  return { engine, code: r.code, error: r.error, seconds: +((performance.now() - t0) / 1000).toFixed(1), procs, rank0: { after_warmup: first, end: last } };
}

export const command = {
  name: 'bench soak',
  synopsis: '[options]',
  description: 'RSS and open-fd slopes per process over a long 2-worker job on each engine (not in CI)',
  options: {
    'engines': { type: 'string', arg: 'LIST', help: 'engines (default ring,ps,hybrid)' },
    'mode': { type: 'string', arg: 'trainer|tables', help: 'the Trainer, or the server-held tables pattern (default trainer)' },
    'steps': { type: 'string', arg: 'N', help: 'steps per engine (default 3000)' },
    'interval-ms': { type: 'string', arg: 'MS', help: 'sampling interval (default 500)' },
    'warm': { type: 'string', arg: 'SHARE', help: 'share of steps before slopes are fitted (default 0.25)' },
    'gc': { type: 'boolean', help: "collect garbage before rank 0's reports" },
    'batch': { type: 'string', arg: 'N', help: 'batch size (default 128)' },
    'out': { type: 'string', arg: 'FILE', help: 'also write the JSON here' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const a = {
    engines: v['engines'] ?? 'ring,ps,hybrid', mode: v['mode'] ?? 'trainer', steps: v['steps'] ?? '3000',
    'interval-ms': v['interval-ms'] ?? '500', warm: v['warm'] ?? '0.25', gc: v['gc'] ?? false, batch: v['batch'] ?? '128', out: v['out'],
  };
  const o = { mode: a.mode!, steps: Number(a.steps), intervalMs: Number(a['interval-ms']), warm: Number(a.warm), gc: !!a.gc, batch: Number(a.batch) };
  if (!(o.steps > 0) || !(o.intervalMs > 0) || !(o.warm >= 0 && o.warm < 1) || !['trainer', 'tables'].includes(o.mode)) throw new RangeError('soak: --steps and --interval-ms must be positive, --warm in [0, 1), --mode trainer|tables');
  const engines = a.engines!.split(',') as ('ring' | 'ps' | 'hybrid')[];
  const runs = [];
  for (const e of engines) {
    if (!['ring', 'ps', 'hybrid'].includes(e)) throw new RangeError(`soak: unknown engine ${JSON.stringify(e)} (ring, ps, hybrid)`);
    if (o.mode === 'tables' && e === 'ring') continue;
    const r = await soakOne(e, o);
    console.error(`soak ${e} (${o.mode}, ${o.steps} steps): ${r.procs.map((p) => `${p.proc} ${p.rss_first_mib}->${p.rss_last_mib} MiB, ${p.rss_mib_per_1k_steps} MiB/1k steps, fds ${p.fds_first}->${p.fds_last}`).join('; ')}`);
    console.error(`  rank 0 after warm-up ${JSON.stringify(r.rank0.after_warmup)}, at the end ${JSON.stringify(r.rank0.end)}`);
    runs.push(r);
  }
  const result = { suite: 'soak', version: 1, started: new Date().toISOString(), host: { cpus: cpus().length, node: process.version }, mode: o.mode, steps: o.steps, runs };
  const json = JSON.stringify(result, null, 2);
  console.log(json);
  if (a.out) writeFileSync(a.out, json + '\n');
}
