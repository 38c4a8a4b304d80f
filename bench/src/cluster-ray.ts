/**
 * The ps anchor across namespace hosts: Ray's parameter-server pattern (anchors/ray_ps.py) on a Ray cluster whose
 * nodes are namespace hosts (netns-cluster.ts). The head node (GCS) runs on the servers' host with a custom
 * resource that places every ParameterServer there; each worker host runs a node with its own resource for one
 * DataWorker; the driver runs on the servers' host. Weights and gradients therefore cross the shaped links in
 * Ray's object transfers, as shoal's values cross them in messages.
 *
 * Each node is `ray start --block` with `--node-ip-address` (its cluster address: the hosts have no default route,
 * so Ray's own probe of 8.8.8.8 fails and falls back to the hostname), its temp dir and object store in the
 * host's private /dev/shm, and a bounded object store (Ray's default, 30 % of RAM, exceeds the 1 GiB tmpfs and
 * would move the store to the shared /tmp); HOME is a folder there too, so no ~/.ray of the machine's is shared. Teardown kills every process on the Ray hosts (`killOnHost`: never
 * `ray stop`, which kills all Ray processes of the machine) and removes the temp dirs, on every exit path.
 */
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { NetnsCluster } from './netns-cluster.js';
import { jsonLines, type JsonLines } from './json-lines.js';
import { allExit } from './cluster-jobs.js';

const anchor = fileURLToPath(new URL('../anchors/ray_ps.py', import.meta.url));

/** Where each Ray node keeps its session (sockets, logs, spilled objects): the host's own /dev/shm. */
export const RAY_TEMP_DIR = '/dev/shm/shoal-ray';
export const RAY_SERVER_RESOURCE = 'shoal_ps_server';
export const RAY_WORKER_RESOURCE_PREFIX = 'shoal_ps_worker_';

export interface RayNodeSpec {
  /** The host's cluster address (`--node-ip-address`). */
  address: string;
  /** Absent for the head; else the head's `ip:port`. */
  head?: string;
  /** GCS port on the head. */
  port: number;
  resources: Record<string, number>;
  objectStoreBytes: number;
  numCpus: number;
}

/** `ray start` arguments (after `python -m ray.scripts.scripts`) for one node; `--block` keeps it our child. */
export function rayStartArgs(n: RayNodeSpec): string[] {
  const common = ['start', '--block', '--node-ip-address', n.address, '--temp-dir', RAY_TEMP_DIR, '--num-cpus', String(n.numCpus), '--object-store-memory', String(n.objectStoreBytes), '--resources', JSON.stringify(n.resources), '--disable-usage-stats'];
  return n.head === undefined ? [...common, '--head', '--port', String(n.port), '--include-dashboard', 'false'] : [...common, '--address', n.head];
}

/**
 * The lines of Ray's logs (raylet.out, gcs_server.out, python-core-*.log) that say why a run failed: errors,
 * fatal checks and unreachable peers, at most `max` of the last, each cut to 300 characters.
 */
export function rayLogDiagnosis(text: string, max = 6): string[] {
  const hits = text.split('\n').filter((l) => /^\[[^\]]* [EF] \d+ \d+\]|unavailable|Check failed|timed out|Failed to connect|refused/i.test(l) && !/network_util\.cc.*8\.8\.8\.8/.test(l));
  return hits.slice(-max).map((l) => l.slice(0, 300));
}

export interface RayPsOptions {
  serverHost: number;
  workerHosts: readonly number[];
  numServers: number;
  sizes: readonly number[];
  rounds: readonly number[];
  warmup: number;
  /** Bound on each node's start and on the driver's wait for all nodes (ms). */
  startTimeoutMs: number;
  /** Bound on each round's `ray.get` (ms). */
  roundTimeoutMs: number;
  /** Bound on the whole driver (ms). */
  timeoutMs: number;
  /** The Python with Ray (default `SHOAL_RAY_PYTHON` or python3). */
  python?: string;
  objectStoreBytes?: number;
}

export interface RayPsRow {
  impl: 'ray';
  plane: 'object-store';
  bytes: number;
  rounds: number;
  p50_us: number;
  avg_us: number;
  rounds_per_s: number;
  verified: boolean;
  worker_cpu_ms_per_round: number;
  server_cpu_ms_per_round: number;
  workers: number;
  servers: number;
  server_host: 'own';
  /** Ray's processes on the three hosts while the rounds ran (daemons, workers, driver). */
  processes: number;
  loadavg1: number;
}

/** The interpreter that imports Ray, or why none does (checked before any host is touched). */
export function rayPython(python = process.env.SHOAL_RAY_PYTHON ?? 'python3'): { python: string } | { missing: string } {
  const r = spawnSync(python, ['-c', 'import sys, ray; print(sys.executable, ray.__version__)'], { encoding: 'utf8' });
  if (r.error) return { missing: `${python}: ${r.error.message}` };
  if (r.status !== 0) return { missing: `Ray is not importable by ${python}: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`}` };
  return { python: r.stdout.trim().split(' ')[0]! };
}

/**
 * Run the Ray PS pattern across the cluster's hosts once, all of `sizes` in one Ray cluster; rows in size order.
 * Rejects with an error naming the stage (node start, node count, a round) and Ray's own log lines.
 */
export async function runRayPs(c: NetnsCluster, o: RayPsOptions): Promise<RayPsRow[]> {
  const py = rayPython(o.python);
  if ('missing' in py) throw new Error(py.missing);
  const hosts = [o.serverHost, ...o.workerHosts];
  const port = 6379;
  const headAddr = `${c.hosts[o.serverHost]!.address}:${port}`;
  // HOME inside the host's private /dev/shm: Ray reads ~/.ray (an auth token another Ray on this machine may have
  // written, then demanded of one node and not another: "InvalidAuthToken") and the hosts share the machine's home.
  const home = `${RAY_TEMP_DIR}/home`;
  const env = { ...process.env, HOME: home, RAY_AUTH_MODE: 'disabled', RAY_USAGE_STATS_ENABLED: '0', PYTHONUNBUFFERED: '1' };
  for (const h of hosts) await c.exec(h, 'mkdir', ['-p', home]);
  const nodes: JsonLines[] = [];
  const startNode = async (host: number, spec: RayNodeSpec, what: string): Promise<void> => {
    const p = jsonLines(c.spawn(host, py.python, ['-m', 'ray.scripts.scripts', ...rayStartArgs(spec)], { stdio: ['ignore', 'pipe', 'pipe'], env }));
    nodes.push(p);
    await p.wait((l) => typeof l.text === 'string' && l.text.includes('Ray runtime started'), o.startTimeoutMs, what);
  };
  const base = { port, objectStoreBytes: o.objectStoreBytes ?? 256 << 20, numCpus: 1 };
  try {
    await startNode(o.serverHost, { ...base, address: c.hosts[o.serverHost]!.address, resources: { [RAY_SERVER_RESOURCE]: 1 } }, `Ray head on host ${o.serverHost}`);
    await Promise.all(o.workerHosts.map((h, r) => startNode(h, { ...base, address: c.hosts[h]!.address, head: headAddr, resources: { [`${RAY_WORKER_RESOURCE_PREFIX}${r}`]: 1 } }, `Ray node on host ${h}`)));
    const driver = jsonLines(
      c.spawn(o.serverHost, py.python, [anchor, '--address', headAddr, '--expect-nodes', String(hosts.length), '--sizes', o.sizes.join(','), '--rounds', o.rounds.join(','), '--warmup', String(o.warmup), '--workers', String(o.workerHosts.length), '--servers', String(o.numServers), '--small-iters', '0', '--server-resource', RAY_SERVER_RESOURCE, '--worker-resource-prefix', RAY_WORKER_RESOURCE_PREFIX, '--round-timeout', String(o.roundTimeoutMs / 1000)], { stdio: ['ignore', 'pipe', 'pipe'], env }),
    );
    let processes = 0;
    const sample = setInterval(() => (processes = Math.max(processes, c.processCount(hosts))), 1000);
    try {
      await allExit([driver], o.timeoutMs, 'Ray PS driver');
    } catch (e) {
      const err = driver.lines.find((l) => typeof l.error === 'string');
      throw new Error(`${err ? String(err.error) : (e as Error).message}${await diagnosis(c, hosts)}`, { cause: 'diagnosed' });
    } finally {
      clearInterval(sample);
    }
    const load = +loadavg()[0]!.toFixed(2);
    return driver.lines
      .filter((l) => l.impl === 'ray' && l.kind === 'dense')
      .map((l) => ({ ...(l as unknown as RayPsRow), impl: 'ray', plane: 'object-store', workers: o.workerHosts.length, servers: o.numServers, server_host: 'own', processes, loadavg1: load }));
  } catch (e) {
    if ((e as Error).cause === 'diagnosed') throw e;
    throw new Error(`${(e as Error).message}${await diagnosis(c, hosts)}`);
  } finally {
    for (const h of hosts) await c.killOnHost(h);
    for (const h of hosts) await c.exec(h, 'rm', ['-rf', RAY_TEMP_DIR]).catch(() => undefined);
  }
}

/** Ray's log lines on each host that explain a failure, as text to append to an error message. */
async function diagnosis(c: NetnsCluster, hosts: readonly number[]): Promise<string> {
  const parts: string[] = [];
  for (const h of hosts) {
    const text = await c.exec(h, 'sh', ['-c', `cat ${RAY_TEMP_DIR}/session_latest/logs/raylet.out ${RAY_TEMP_DIR}/session_latest/logs/gcs_server.out ${RAY_TEMP_DIR}/session_latest/logs/python-core-*.log 2>/dev/null | tail -n 4000`], 10_000).catch(() => '');
    const lines = rayLogDiagnosis(text);
    if (lines.length) parts.push(`host ${h}: ${lines.join(' | ')}`);
  }
  return parts.length ? `; Ray log lines: ${parts.join('; ')}` : '';
}
