/**
 * The cluster bench's ps stage (issue 19: "ps with values in messages >= 3x Ray's PS pattern at 1 MiB"): shoal's
 * parameter servers on their own host with the workers on two others, against two anchors on the same hosts at
 * the same rate: Ray's PS pattern across the hosts (cluster-ray.ts) and gloo parameter averaging
 * (anchors/gloo_average.py). A missing anchor is a row with `missing` and an entry in `errors`, never dropped.
 */
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { NetnsCluster } from './netns-cluster.js';
import { jsonLines } from './json-lines.js';
import { allExit, runPs } from './cluster-jobs.js';
import { rayPython, runRayPs } from './cluster-ray.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const MiB = 1 << 20;
const SERVER_HOST = 2;
const WORKER_HOSTS = [0, 1] as const;
const NUM_SERVERS = 2;

export type PsRow = Record<string, unknown> & { impl: string; rate_mbit: number; bytes: number };

export interface PsStageOptions {
  rateMbit: number;
  sizes: readonly number[];
  quick: boolean;
  /** Run gloo averaging. */
  gloo: boolean;
  /** Run Ray's pattern (when importable; else `missing` rows). */
  ray: boolean;
  /** shoal runs once per value, as its workers' `KVWorkerOptions.requestBytes` (0: one request per server). */
  requestBytes: readonly number[];
}

/** Timed rounds per size: the committed runs' counts (fewer at 16 MiB, a round there takes ~0.3-0.5 s at 1 Gbit/s). */
export const psRounds = (bytes: number, quick: boolean): number => (quick ? 10 : bytes > MiB ? 15 : 40);

async function glooAverage(c: NetnsCluster, hosts: readonly number[], bytes: number, rounds: number): Promise<Record<string, unknown>> {
  const py = process.env.SHOAL_TORCH_PYTHON ?? '/usr/bin/python3';
  const init = `tcp://${c.hosts[hosts[0]!]!.address}:29501`;
  const procs = hosts.map((h, rank) =>
    jsonLines(
      c.spawn(h, py, [`${root}bench/anchors/gloo_average.py`, '--rank', String(rank), '--n', String(hosts.length), '--init', init, '--bytes', String(bytes), '--rounds', String(rounds)], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, GLOO_SOCKET_IFNAME: 'eth0', OMP_NUM_THREADS: '1' },
      }),
    ),
  );
  await allExit(procs, 5 * 60_000, 'gloo parameter averaging');
  return procs[0]!.lines.find((l) => l.impl === 'torch-gloo-average')!;
}

/** One rate's ps rows: per size shoal then gloo averaging, then Ray for all sizes in one Ray cluster. */
export async function psStage(c: NetnsCluster, o: PsStageOptions, errors: { what: string; error: string }[]): Promise<PsRow[]> {
  const rows: PsRow[] = [];
  const rate = o.rateMbit;
  const fail = (what: string, e: unknown) => {
    errors.push({ what, error: (e as Error).message.slice(0, 3000) });
    console.log(`  ${what}: error: ${(e as Error).message.slice(0, 600)}`);
  };
  for (const bytes of o.sizes) {
    const rounds = psRounds(bytes, o.quick);
    for (const requestBytes of o.requestBytes) {
      try {
        const r = (await runPs(c, { serverHost: SERVER_HOST, workerHosts: WORKER_HOSTS, numServers: NUM_SERVERS, bytes, rounds, warmup: 3, timeoutMs: 60_000, requestBytes }))[0]!;
        rows.push({ impl: 'shoal-ps', plane: 'messages', request_bytes: requestBytes, rate_mbit: rate, bytes, workers: 2, servers: NUM_SERVERS, server_host: 'own', rounds: r.rounds, p50_us: r.p50_us, avg_us: r.avg_us, rounds_per_s: r.rounds_per_s, verified: true, processes: 3, loadavg1: loadavg()[0]! });
        console.log(`  ps ${bytes} B at ${rate} Mbit/s, requestBytes ${requestBytes}: shoal ${(r.rounds_per_s as number).toFixed(1)} rounds/s`);
      } catch (e) {
        fail(`ps ${bytes} B at ${rate} Mbit/s (requestBytes ${requestBytes})`, e);
      }
    }
    if (o.gloo) {
      try {
        const g = await glooAverage(c, WORKER_HOSTS, bytes, rounds);
        rows.push({ ...g, impl: 'torch-gloo-average', rate_mbit: rate, bytes, workers: 2, servers: 0, processes: 2, loadavg1: loadavg()[0]! });
        console.log(`  gloo averaging ${bytes} B: ${(g.rounds_per_s as number).toFixed(1)} rounds/s`);
      } catch (e) {
        fail(`gloo averaging ${bytes} B at ${rate} Mbit/s`, e);
      }
    }
  }
  if (o.ray) rows.push(...(await rayRows(c, o, fail)));
  pairPsRows(rows);
  return rows;
}

async function rayRows(c: NetnsCluster, o: PsStageOptions, fail: (what: string, e: unknown) => void): Promise<PsRow[]> {
  const rate = o.rateMbit;
  const missing = (why: string): PsRow[] => o.sizes.map((bytes) => ({ impl: 'ray', rate_mbit: rate, bytes, workers: 2, servers: NUM_SERVERS, server_host: 'own', missing: why }));
  const py = rayPython();
  if ('missing' in py) {
    fail(`ray ps at ${rate} Mbit/s`, new Error(py.missing));
    return missing(py.missing);
  }
  try {
    const got = await runRayPs(c, {
      serverHost: SERVER_HOST,
      workerHosts: WORKER_HOSTS,
      numServers: NUM_SERVERS,
      sizes: o.sizes,
      rounds: o.sizes.map((b) => psRounds(b, o.quick)),
      warmup: 3,
      startTimeoutMs: 120_000,
      roundTimeoutMs: 60_000,
      timeoutMs: 10 * 60_000,
      python: py.python,
    });
    for (const r of got) console.log(`  ray ${r.bytes} B: ${r.rounds_per_s.toFixed(1)} rounds/s (${r.processes} processes on the 3 hosts)`);
    return got.map((r) => ({ ...r, rate_mbit: rate }));
  } catch (e) {
    fail(`ray ps at ${rate} Mbit/s`, e);
    return missing((e as Error).message.slice(0, 1000));
  }
}

/**
 * Ratios of each shoal row to the anchors of the same rate and size: `vs_anchor` (gloo averaging's rounds/s),
 * `vs_ray` (Ray's rounds/s) and `vs_ray_p50` (Ray's p50 round time / shoal's). Rows without a figure pair with none.
 */
export function pairPsRows(rows: PsRow[]): void {
  const find = (impl: string, r: PsRow) => rows.find((x) => x.impl === impl && x.rate_mbit === r.rate_mbit && x.bytes === r.bytes && typeof x.rounds_per_s === 'number');
  for (const r of rows.filter((x) => x.impl === 'shoal-ps' && typeof x.rounds_per_s === 'number')) {
    const g = find('torch-gloo-average', r);
    if (g) r.vs_anchor = +((r.rounds_per_s as number) / (g.rounds_per_s as number)).toFixed(3);
    const y = find('ray', r);
    if (y) {
      r.vs_ray = +((r.rounds_per_s as number) / (y.rounds_per_s as number)).toFixed(3);
      r.vs_ray_p50 = +((y.p50_us as number) / (r.p50_us as number)).toFixed(3);
    }
  }
}

/** `ps_anchor` / `ps_anchor_note` for the results file from the rows of a run. */
export function psAnchorNote(rows: readonly PsRow[]): { ps_anchor: string; ps_anchors: string[]; ps_anchor_note: string } {
  const ray = rows.filter((r) => r.impl === 'ray');
  const ran = ray.filter((r) => typeof r.rounds_per_s === 'number');
  const miss = ray.find((r) => typeof r.missing === 'string');
  if (ran.length > 0)
    return {
      ps_anchor: 'ray',
      ps_anchors: ['ray', 'torch-gloo-average'],
      ps_anchor_note: `Ray's PS pattern across the namespace hosts (a Ray node per host, ParameterServers on the servers' host, one DataWorker per worker host: bench/src/cluster-ray.ts) is the anchor (vs_ray); gloo parameter averaging is the second (vs_anchor)${miss ? `; Ray did not run for some rows: ${String(miss.missing).slice(0, 300)}` : ''}`,
    };
  return {
    ps_anchor: 'torch-gloo-average',
    ps_anchors: ['torch-gloo-average'],
    ps_anchor_note: miss ? `Ray's PS pattern did not run across the namespace hosts (${String(miss.missing).slice(0, 500)}): the ps rows compare with gloo-based parameter averaging` : 'Ray was not run (--no-ray or no ps rows): the ps rows compare with gloo-based parameter averaging',
  };
}
