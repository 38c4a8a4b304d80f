/**
 * `npm run bench -- cluster`: shoal's cross-host paths on a namespace cluster (netns-cluster.ts) with links
 * shaped to each rate in `--rates` (Mbit/s, tbf; 0 = the unshaped veth), torch gloo in the same namespaces in the
 * same invocation.
 * Format of bench/results/cluster.json and the method: bench/README.md ("cluster").
 *
 *   npm run bench -- cluster [--quick] [--rates 1000,10000] [--sizes 8,1024,...] [--no-anchor] [--no-ps]
 *                             [--impls ring-net,ring-nng,gloo,hier-net,ring-net-2x2,gloo-2x2] [--out FILE]
 *                             [--recommender-hosts 1,2,4] [--no-recommender] [--only-recommender] [--segment-bytes N]
 *                             [--no-ray] [--only-ps] [--ps-sizes BYTES,..] [--ps-request-bytes 0,65536]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { clusterUnavailable, NetnsCluster } from './netns-cluster.js';
import { allExit, runRing, startStore } from './cluster-jobs.js';
import { psAnchorNote, psStage, type PsRow } from './cluster-ps.js';
import { recommenderStage, type RecommenderRow } from './cluster-recommender.js';
import { jsonLines, type JsonLines } from './json-lines.js';
import type { WorkerArgs } from './allreduce-worker.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const workerScript = fileURLToPath(new URL('./allreduce-worker.js', import.meta.url));
const MiB = 1 << 20;

interface Impl {
  name: string;
  impl: 'shoal-ring' | 'shoal-hierarchical' | 'torch-gloo';
  transport: 'net' | 'nng' | 'gloo-tcp';
  /** Host of each rank. */
  placement: number[];
  /** The ring's small-buffer variant (default: the engine's). */
  smallAlgorithm?: 'ring' | 'direct' | 'doubling';
}

const IMPLS: Record<string, Impl> = {
  'ring-net': { name: 'ring-net', impl: 'shoal-ring', transport: 'net', placement: [0, 1, 2, 3] },
  'ring-nng': { name: 'ring-nng', impl: 'shoal-ring', transport: 'nng', placement: [0, 1, 2, 3] },
  'ring-net-doubling': { name: 'ring-net-doubling', impl: 'shoal-ring', transport: 'net', placement: [0, 1, 2, 3], smallAlgorithm: 'doubling' },
  'ring-nng-doubling': { name: 'ring-nng-doubling', impl: 'shoal-ring', transport: 'nng', placement: [0, 1, 2, 3], smallAlgorithm: 'doubling' },
  'ring-net-smallring': { name: 'ring-net-smallring', impl: 'shoal-ring', transport: 'net', placement: [0, 1, 2, 3], smallAlgorithm: 'ring' },
  'ring-nng-smallring': { name: 'ring-nng-smallring', impl: 'shoal-ring', transport: 'nng', placement: [0, 1, 2, 3], smallAlgorithm: 'ring' },
  gloo: { name: 'gloo', impl: 'torch-gloo', transport: 'gloo-tcp', placement: [0, 1, 2, 3] },
  'hier-net': { name: 'hier-net', impl: 'shoal-hierarchical', transport: 'net', placement: [0, 0, 1, 1] },
  'ring-net-2x2': { name: 'ring-net-2x2', impl: 'shoal-ring', transport: 'net', placement: [0, 0, 1, 1] },
  'gloo-2x2': { name: 'gloo-2x2', impl: 'torch-gloo', transport: 'gloo-tcp', placement: [0, 0, 1, 1] },
};

export interface ClusterRow {
  impl: Impl['impl'];
  transport: Impl['transport'];
  /** '<hosts>x<ranks per host>' */
  placement: string;
  /** The ring's small-buffer variant when the run forced one (`--impls ring-net-doubling`...); else absent. */
  small_algorithm?: string;
  n: number;
  rate_mbit: number;
  bytes: number;
  iters: number;
  p50_us: number;
  avg_us: number;
  p99_us: number;
  algbw_gbps: number;
  busbw_gbps: number;
  /** busbw over the link rate (10^9 bits = 0.125 GB/s per Gbit/s); 0 on unshaped links. */
  link_share: number;
  verified: boolean;
  /** The busiest shoal rank's process CPU (all threads) and voluntary context switches per call; absent for gloo. */
  cpu_us_per_call?: number;
  waits_per_call?: number;
  /** The busiest rank's main (JS) thread CPU per call (Linux /proc/self/schedstat). */
  main_thread_cpu_us_per_call?: number;
  processes: number;
  oversubscribed: boolean;
  loadavg1: number;
  busbw_vs_gloo?: number;
  p50_vs_gloo?: number;
  /** Hierarchical rows: the flat ring's avg time on the same placement and rate / this row's (higher is better). */
  vs_flat_ring?: number;
}

/** The issue's ps goals at `rate` as ratios of this run's rows (undefined where a row is missing). */
const psGoals = (ps: readonly PsRow[], rate: number): Record<string, number | undefined> => {
  const shoal = (rb: (x: unknown) => boolean) => ps.find((x) => x.impl === 'shoal-ps' && x.rate_mbit === rate && x.bytes === MiB && rb(x.request_bytes));
  const r = shoal((b) => !b);
  const split = shoal((b) => typeof b === 'number' && b > 0);
  return {
    [`ps_1MiB_vs_gloo_average_${rate}mbit`]: r?.vs_anchor as number | undefined,
    [`ps_1MiB_vs_ray_${rate}mbit`]: r?.vs_ray as number | undefined,
    [`ps_1MiB_split_vs_ray_${rate}mbit`]: split?.vs_ray as number | undefined,
  };
};

const placementName = (p: number[]) => `${new Set(p).size}x${p.length / new Set(p).size}`;

/** One allreduce sweep of `impl` on the cluster at its current rate; rank 0's rows. */
async function sweep(c: NetnsCluster, impl: Impl, sizes: number[], quick: boolean, segmentBytes?: number): Promise<Record<string, number | boolean>[]> {
  const n = impl.placement.length;
  const procs: JsonLines[] = [];
  const timing = { warmup: 2, minIters: quick ? 3 : 5, minTimeMs: quick ? 100 : 300, maxIters: 1000 };
  let stopStore: (() => Promise<void>) | undefined;
  try {
    if (impl.impl === 'torch-gloo') {
      const py = process.env.SHOAL_TORCH_PYTHON ?? '/usr/bin/python3';
      const init = `tcp://${c.hosts[impl.placement[0]!]!.address}:29500`;
      impl.placement.forEach((h, rank) =>
        procs.push(
          jsonLines(
            c.spawn(h, py, [`${root}bench/anchors/gloo_allreduce.py`, '--n', String(n), '--sizes', sizes.join(','), '--rank', String(rank), '--init', init, '--warmup', String(timing.warmup), '--min-iters', String(timing.minIters), '--min-time-ms', String(timing.minTimeMs), '--max-iters', String(timing.maxIters)], {
              stdio: ['ignore', 'pipe', 'pipe'],
              env: { ...process.env, GLOO_SOCKET_IFNAME: 'eth0', OMP_NUM_THREADS: '1' },
            }),
          ),
        ),
      );
    } else {
      const store = await startStore(c, impl.placement[0]);
      stopStore = store.stop;
      impl.placement.forEach((h, rank) => {
        const a: WorkerArgs = {
          rank,
          size: n,
          store: store.url,
          transport: impl.transport as 'net' | 'nng',
          sizes,
          ...timing,
          timeoutMs: 60_000,
          listenHost: c.hosts[h]!.address,
          topology: impl.impl === 'shoal-hierarchical' ? 'hierarchical' : 'flat',
          ...(impl.smallAlgorithm ? { smallAlgorithm: impl.smallAlgorithm } : {}),
          ...(segmentBytes ? { segmentBytes } : {}),
        };
        procs.push(jsonLines(c.spawn(h, process.execPath, [workerScript, JSON.stringify(a)], { stdio: ['ignore', 'pipe', 'pipe'] })));
      });
    }
    await allExit(procs, 15 * 60_000, `${impl.name} at ${c.rateMbit} Mbit/s`);
    return procs[0]!.lines.filter((l) => l.row).map((l) => l.row as Record<string, number | boolean>);
  } finally {
    procs.forEach((p) => p.child.kill('SIGKILL'));
    await stopStore?.();
  }
}

function spawnSyncQuiet(cmd: string, args: string[]): string | undefined {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return r.error.message;
  return r.status === 0 ? undefined : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
}

export const command = {
  name: 'bench cluster',
  synopsis: '[options]',
  description: 'allreduce and ps across namespace hosts on shaped links, torch gloo in the same namespaces (root)',
  options: {
    'quick': { type: 'boolean', help: 'a CI-sized run' },
    'rates': { type: 'string', arg: 'MBITS,..', help: 'link rates in Mbit/s, 0 = unshaped (default 1000,10000)' },
    'sizes': { type: 'string', arg: 'BYTES,..', help: 'message sizes (default 8 B .. 64 MiB)' },
    'impls': { type: 'string', arg: 'NAME,..', help: 'implementations (default ring-net,ring-nng,gloo,hier-net,ring-net-2x2)' },
    'no-anchor': { type: 'boolean', help: 'skip torch gloo' },
    'segment-bytes': { type: 'string', arg: 'BYTES', help: "the shoal rings' pipeline segment (default: the engine's, 1 MiB)" },
    'no-ps': { type: 'boolean', help: 'skip the parameter-server rounds' },
    'no-ray': { type: 'boolean', help: "skip Ray's PS pattern across the hosts (its rows then say so)" },
    'only-ps': { type: 'boolean', help: 'run only the ps stage and replace its rows in the existing results file' },
    'ps-sizes': { type: 'string', arg: 'BYTES,..', help: 'ps model sizes (default 1 MiB,16 MiB; --quick: 1 MiB)' },
    'ps-request-bytes': { type: 'string', arg: 'BYTES,..', help: "shoal ps once per value of the workers' requestBytes (default 0,65536)" },
    'out': { type: 'string', arg: 'FILE', help: 'results file (default bench/results/cluster.json)' },
    'recommender-hosts': { type: 'string', arg: 'K,..', help: 'the recommender example on these host counts, one rank each (default 1,2,4)' },
    'no-recommender': { type: 'boolean', help: 'skip the recommender runs' },
    'only-recommender': { type: 'boolean', help: 'run only the recommender stage and replace its rows in the existing results file' },
  },
} as const satisfies CommandSpec;

export async function run(argv: string[]): Promise<void> {
  const parsed = parseCommand(command, argv).values;
  const values = {
    ...parsed,
    quick: parsed['quick'] ?? false,
    rates: parsed['rates'] ?? '1000,10000',
    impls: parsed['impls'] ?? 'ring-net,ring-nng,gloo,hier-net,ring-net-2x2',
    out: parsed['out'] ?? `${root}bench/results/cluster.json`,
  };
  const quick = values.quick;
  const rates = values.rates.split(',').map(Number);
  if (rates.some((r) => !(r >= 0))) throw new Error(`--rates must be Mbit/s values (0 = unshaped veth), got ${values.rates}`);
  const sizes = values.sizes
    ? values.sizes.split(',').map(Number)
    : quick
      ? [8, 65536, MiB]
      : [8, 1024, 65536, MiB, 16 * MiB, 64 * MiB];
  const segmentBytes = values['segment-bytes'] === undefined ? undefined : Number(values['segment-bytes']);
  if (segmentBytes !== undefined && !(Number.isInteger(segmentBytes) && segmentBytes >= 8)) throw new Error(`--segment-bytes must be an integer >= 8, got ${values['segment-bytes']}`);
  const impls = values.impls.split(',').filter((x) => !(values['no-anchor'] && x.startsWith('gloo'))).map((x) => {
    const i = IMPLS[x];
    if (!i) throw new Error(`--impls: unknown ${JSON.stringify(x)}; known: ${Object.keys(IMPLS).join(', ')}`);
    return i;
  });
  const started = new Date().toISOString();
  const host = { cpus: cpus().length, node: process.version, kernel: release(), loadavg1_start: loadavg()[0]!, loadavg1_end: 0 };
  const out = values.out;
  const write = (o: object) => {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(o, null, 1)}\n`);
  };
  const why = clusterUnavailable({ rates: true });
  if (why) {
    console.log(`cluster: skipped: ${why}`);
    write({ suite: 'cluster', version: 1, started, quick, host, skipped: why });
    return;
  }
  const recHosts = (parsed['recommender-hosts'] ?? '1,2,4').split(',').map(Number);
  if (recHosts.some((k) => !(Number.isInteger(k) && k >= 1 && k <= 4))) throw new Error(`--recommender-hosts must be host counts 1..4, got ${parsed['recommender-hosts']}`);
  const recOptions = (rate: number, dir: string) => ({ hostCounts: recHosts, rateMbit: rate, steps: quick ? 10 : 40, dir, timeoutMs: 10 * 60_000 });
  const psSizes = (values['ps-sizes'] ?? (quick ? `${MiB}` : `${MiB},${16 * MiB}`)).split(',').map(Number);
  if (psSizes.some((b) => !(Number.isInteger(b) && b >= 64 && b % 32 === 0))) throw new Error(`--ps-sizes must be byte counts, multiples of 32 (8 float32 layers), got ${values['ps-sizes']}`);
  const psRequestBytes = (values['ps-request-bytes'] ?? '0,65536').split(',').map(Number);
  if (psRequestBytes.some((b) => !(Number.isInteger(b) && b >= 0))) throw new Error(`--ps-request-bytes must be byte counts >= 0, got ${values['ps-request-bytes']}`);
  const psOptions = (rate: number) => ({ rateMbit: rate, sizes: psSizes, quick, gloo: !values['no-anchor'], ray: !values['no-anchor'] && !values['no-ray'], requestBytes: psRequestBytes });
  if (values['only-ps']) {
    // Replace the ps rows of an existing results file, keeping its other sections (their own run).
    const old = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>) : { suite: 'cluster', version: 1 };
    const errors: { what: string; error: string }[] = [];
    const ps: PsRow[] = [];
    const cluster = await NetnsCluster.start({ hosts: 3 });
    try {
      for (const rate of rates) {
        await cluster.setRate(rate === 0 ? undefined : rate);
        ps.push(...(await psStage(cluster, psOptions(rate), errors)));
      }
    } finally {
      await cluster.stop();
    }
    const goals = Object.fromEntries(Object.entries((old.goals as Record<string, unknown> | undefined) ?? {}).filter(([k]) => !k.startsWith('ps_')));
    for (const rate of rates) Object.assign(goals, psGoals(ps, rate));
    const psErrors = ((old.errors as { what: string }[] | undefined) ?? []).filter((e) => !/^(ps|ray|gloo averaging) /.test(e.what));
    write({ ...old, goals, ps, ...psAnchorNote(ps), ps_run: { started, host: { ...host, loadavg1_end: loadavg()[0]! }, rates_mbit: rates, sizes: psSizes }, errors: [...psErrors, ...errors] });
    console.log(`cluster: wrote the ps rows of ${out} (${ps.length} rows, ${errors.length} errors; load ${host.loadavg1_start.toFixed(1)} -> ${loadavg()[0]!.toFixed(1)})`);
    return;
  }
  if (values['only-recommender']) {
    // Replace the recommender rows of an existing results file, keeping its other sections (their own run).
    const old = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>) : { suite: 'cluster', version: 1 };
    const errors: { what: string; error: string }[] = [];
    const recommender: RecommenderRow[] = [];
    const dir = mkdtempSync(join(tmpdir(), 'shoal-cluster-rec-'));
    const cluster = await NetnsCluster.start({ hosts: Math.max(...recHosts) });
    try {
      for (const rate of rates) {
        await cluster.setRate(rate === 0 ? undefined : rate);
        recommender.push(...(await recommenderStage(cluster, recOptions(rate, dir), errors)));
      }
    } finally {
      await cluster.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    const recErrors = ((old.errors as { what: string }[] | undefined) ?? []).filter((e) => !e.what.startsWith('recommender'));
    write({ ...old, recommender, recommender_run: { started, host: { ...host, loadavg1_end: loadavg()[0]! }, rates_mbit: rates }, errors: [...recErrors, ...errors] });
    console.log(`cluster: wrote the recommender rows of ${out} (${recommender.length} rows, ${errors.length} errors)`);
    return;
  }
  const rows: ClusterRow[] = [];
  const recommender: RecommenderRow[] = [];
  const recDir = mkdtempSync(join(tmpdir(), 'shoal-cluster-rec-'));
  const errors: { what: string; error: string }[] = [];
  const ps: PsRow[] = [];
  const linkBytes: Record<string, unknown>[] = [];
  const cluster = await NetnsCluster.start({ hosts: 4 });
  try {
    for (const rate of rates) {
      await cluster.setRate(rate === 0 ? undefined : rate);
      for (const impl of impls) {
        const load = loadavg()[0]!;
        console.log(`cluster: ${impl.name} (${placementName(impl.placement)}) at ${rate} Mbit/s, load ${load.toFixed(1)}`);
        try {
          for (const r of await sweep(cluster, impl, sizes, quick, segmentBytes)) {
            const row: ClusterRow = {
              impl: impl.impl,
              transport: impl.transport,
              placement: placementName(impl.placement),
              ...(impl.smallAlgorithm ? { small_algorithm: impl.smallAlgorithm } : {}),
              n: impl.placement.length,
              rate_mbit: rate,
              bytes: r.bytes as number,
              iters: r.iters as number,
              p50_us: r.p50_us as number,
              avg_us: r.avg_us as number,
              p99_us: r.p99_us as number,
              algbw_gbps: r.algbw_gbps as number,
              busbw_gbps: r.busbw_gbps as number,
              link_share: rate === 0 ? 0 : +((r.busbw_gbps as number) / (rate / 8000)).toFixed(4),
              verified: r.verified === true,
              ...(typeof r.cpu_us_per_call === 'number' ? { cpu_us_per_call: r.cpu_us_per_call, waits_per_call: r.waits_per_call as number, main_thread_cpu_us_per_call: r.main_thread_cpu_us_per_call as number } : {}),
              processes: impl.placement.length,
              oversubscribed: impl.placement.length > host.cpus,
              loadavg1: +load.toFixed(2),
            };
            rows.push(row);
            console.log(`  ${String(row.bytes).padStart(9)} B  p50 ${row.p50_us.toFixed(0).padStart(8)} us  busbw ${row.busbw_gbps.toFixed(4)} GB/s (${(row.link_share * 100).toFixed(0)} % of the link)${row.cpu_us_per_call === undefined ? '' : `  cpu ${row.cpu_us_per_call} us (main thread ${row.main_thread_cpu_us_per_call}), ${row.waits_per_call} waits per call`}`);
          }
        } catch (e) {
          errors.push({ what: `${impl.name} at ${rate} Mbit/s`, error: (e as Error).message.slice(0, 2000) });
          console.log(`  error: ${(e as Error).message.slice(0, 400)}`);
        }
      }
      if (!values['no-ps']) ps.push(...(await psStage(cluster, psOptions(rate), errors)));
      if (!values['no-recommender']) recommender.push(...(await recommenderStage(cluster, recOptions(rate, recDir), errors)));
    }
    // Bytes across each host's link for one allreduce, hierarchical vs flat on 2 hosts x 2 ranks (rate-independent).
    const B = 16 * MiB;
    for (const topology of ['hierarchical', 'flat'] as const) {
      try {
        const r = await runRing(cluster, { placement: [0, 0, 1, 1], transport: 'net', topology, linkBytes: B, timeoutMs: 60_000 });
        linkBytes.push({ topology, transport: 'net', placement: '2x2', bytes: B, tx_per_host: r.linkTx!.slice(0, 2), tx_over_bytes: r.linkTx!.slice(0, 2).map((x) => +(x / B).toFixed(4)) });
      } catch (e) {
        errors.push({ what: `link bytes ${topology}`, error: (e as Error).message.slice(0, 2000) });
      }
    }
  } finally {
    await cluster.stop();
    rmSync(recDir, { recursive: true, force: true });
  }
  for (const r of rows) {
    const g = rows.find((x) => x.impl === 'torch-gloo' && x.placement === r.placement && x.rate_mbit === r.rate_mbit && x.bytes === r.bytes);
    if (g && r !== g) {
      r.busbw_vs_gloo = +(g.avg_us / r.avg_us).toFixed(3);
      r.p50_vs_gloo = +(r.p50_us / g.p50_us).toFixed(3);
    }
  }
  for (const r of rows.filter((x) => x.impl === 'shoal-hierarchical')) {
    const f = rows.find((x) => x.impl === 'shoal-ring' && x.transport === r.transport && x.placement === r.placement && x.rate_mbit === r.rate_mbit && x.bytes === r.bytes && x.small_algorithm === undefined);
    if (f) r.vs_flat_ring = +(f.avg_us / r.avg_us).toFixed(3);
  }
  // The issue's goals, as ratios of this run (undefined where a row is missing).
  const at = (impl: string, transport: string, rate: number, bytes: number, placement = '4x1') => rows.find((x) => x.impl === impl && x.transport === transport && x.rate_mbit === rate && x.bytes === bytes && x.placement === placement && x.small_algorithm === undefined);
  const big = Math.max(...sizes);
  const small = Math.min(...sizes);
  const goals: Record<string, number | undefined> = {};
  for (const rate of rates) {
    for (const t of ['net', 'nng']) {
      goals[`ring_${t}_${big}B_link_share_${rate}mbit`] = at('shoal-ring', t, rate, big)?.link_share;
      goals[`ring_${t}_${big}B_busbw_vs_gloo_${rate}mbit`] = at('shoal-ring', t, rate, big)?.busbw_vs_gloo;
      goals[`ring_${t}_${small}B_p50_vs_gloo_${rate}mbit`] = at('shoal-ring', t, rate, small)?.p50_vs_gloo;
    }
    goals[`hier_${big}B_vs_flat_ring_2x2_${rate}mbit`] = at('shoal-hierarchical', 'net', rate, big, '2x2')?.vs_flat_ring;
    Object.assign(goals, psGoals(ps, rate));
  }
  host.loadavg1_end = loadavg()[0]!;
  const torch = spawnSyncQuiet(process.env.SHOAL_TORCH_PYTHON ?? '/usr/bin/python3', ['-c', 'import torch']) === undefined ? spawnSync(process.env.SHOAL_TORCH_PYTHON ?? '/usr/bin/python3', ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).stdout.trim() : null;
  const result = {
    suite: 'cluster',
    version: 1,
    started,
    quick,
    host: { ...host, torch, hosts: 4, cpu_note: 'every namespace host shares the same cores' },
    config: { rates_mbit: rates, sizes, impls: impls.map((i) => i.name), ...(segmentBytes ? { segment_bytes: segmentBytes } : {}), link: 'veth pair per host to a bridge, tbf on both ends (rate each direction); no netem: no delay or loss modelled' },
    rows,
    goals,
    link_bytes: linkBytes,
    ps,
    ...psAnchorNote(ps),
    recommender,
    errors,
  };
  write(result);
  console.log(`cluster: wrote ${out} (${rows.length} allreduce rows, ${ps.length} ps rows, ${errors.length} errors; load ${host.loadavg1_start.toFixed(1)} -> ${host.loadavg1_end.toFixed(1)})`);
}
