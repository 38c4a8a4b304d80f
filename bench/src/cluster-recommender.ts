/**
 * The cluster bench's recommender stage (issue 19: "the recommender's samples/s on 1, 2, 4 hosts"): the recommender
 * example's worker trained by `shoal run --hosts h0:1,...,h<k-1>:1 --rsh cluster-rsh --backend hybrid` from host 0
 * of the namespace cluster, one rank per host, the parameter servers on host 0 (the launcher's), at the same global
 * batch whatever the host count (strong scaling). samples/s is the final epoch's, as the worker reports it in
 * `train-result.json` (all workers' examples over the epoch's wall time). Every host shares the machine's cores.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NetnsCluster } from './netns-cluster.js';
import { jsonLines } from './json-lines.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const cli = here('../../run/dist/launcher/cli.js');
const rsh = `${process.execPath} ${here('./cluster-rsh.js')}`;
const worker = here('../../examples/recommender/dist/worker.js');
const config = here('../../examples/recommender/configs/synthetic-ratings.json');

export interface RecommenderRow {
  impl: 'shoal-hybrid';
  dataset: 'synthetic-ratings';
  hosts: number;
  ranks_per_host: 1;
  transport: string;
  rate_mbit: number;
  global_batch: number;
  steps: number;
  samples: number;
  seconds: number;
  samples_per_sec: number;
  /** samples/s over the 1-host row's at the same rate (absent for that row or when it failed). */
  vs_1_host?: number;
  bytes_sent_rank0: number;
  loss: number;
  processes: number;
  loadavg1: number;
}

export interface RecommenderStageOptions {
  hostCounts: number[];
  rateMbit: number;
  /** Steps of the one epoch trained (`--max-steps`). */
  steps: number;
  /** Folder for the prepared-data cache and the runs' outputs (removed by the caller). */
  dir: string;
  timeoutMs: number;
}

/** One `shoal run` of the recommender worker on hosts 0..k-1; its row. Throws with the run's last output on failure. */
async function runOn(c: NetnsCluster, k: number, o: RecommenderStageOptions): Promise<RecommenderRow> {
  const out = join(o.dir, `out-${k}-${o.rateMbit}`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const hosts = c.hosts.slice(0, k).map((h) => `${h.hostname}:1`).join(',');
  const batch = 512;
  const args = [cli, 'run', '-n', String(k), '--hosts', hosts, '--rsh', rsh, '--backend', 'hybrid', '--timeout-ms', '60000', worker,
    '--config', config, '--epochs', '1', '--lr', '0.01', '--tower-weight', '0.5', '--max-steps', String(o.steps), '--batch', String(batch),
    '--no-eval-each-epoch', '--out', out, '--cache', join(o.dir, 'cache')];
  const load = loadavg()[0]!;
  const p = jsonLines(c.spawn(0, process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const timer = setTimeout(() => p.child.kill('SIGKILL'), o.timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  const result = join(out, 'train-result.json');
  if (code !== 0 || !existsSync(result)) {
    const tail = p.lines.slice(-8).map((l) => (typeof l.text === 'string' ? l.text : JSON.stringify(l))).join('\n');
    throw new Error(`recommender on ${k} host(s) exited ${code ?? p.child.signalCode}: ${tail}\n${p.stderr().slice(-1500)}`);
  }
  const r = JSON.parse(readFileSync(result, 'utf8')) as { workers: number; epochs: Array<{ steps: number; samples: number; seconds: number; samplesPerSec: number; loss: number }>; bytesSent: number };
  if (r.workers !== k) throw new Error(`recommender on ${k} host(s): the job had ${r.workers} worker(s)`);
  const e = r.epochs.at(-1)!;
  // shoal run's defaults: shared memory on one host, nng across hosts (launch.ts)
  const transport = k > 1 ? 'nng' : 'shm';
  return {
    impl: 'shoal-hybrid',
    dataset: 'synthetic-ratings',
    hosts: k,
    ranks_per_host: 1,
    transport,
    rate_mbit: o.rateMbit,
    global_batch: batch,
    steps: e.steps,
    samples: e.samples,
    seconds: +e.seconds.toFixed(3),
    samples_per_sec: +e.samplesPerSec.toFixed(1),
    bytes_sent_rank0: r.bytesSent,
    loss: e.loss,
    // k workers, the launcher and one server process (host 0)
    processes: k + 2,
    loadavg1: +load.toFixed(2),
  };
}

/** The stage at the cluster's current rate: one row per host count (errors collected, not thrown). */
export async function recommenderStage(c: NetnsCluster, o: RecommenderStageOptions, errors: { what: string; error: string }[]): Promise<RecommenderRow[]> {
  const rows: RecommenderRow[] = [];
  for (const k of o.hostCounts) {
    if (k > c.hosts.length) {
      errors.push({ what: `recommender on ${k} hosts`, error: `the cluster has ${c.hosts.length} hosts` });
      continue;
    }
    try {
      const row = await runOn(c, k, o);
      rows.push(row);
      console.log(`  recommender on ${k} host(s) at ${o.rateMbit} Mbit/s: ${row.samples_per_sec} samples/s (${row.steps} steps, load ${row.loadavg1})`);
    } catch (e) {
      errors.push({ what: `recommender on ${k} host(s) at ${o.rateMbit} Mbit/s`, error: (e as Error).message.slice(0, 2000) });
      console.log(`  recommender error: ${(e as Error).message.slice(0, 400)}`);
    }
  }
  const one = rows.find((r) => r.hosts === 1);
  if (one) for (const r of rows) if (r !== one) r.vs_1_host = +(r.samples_per_sec / one.samples_per_sec).toFixed(3);
  return rows;
}
