/**
 * Jobs on a namespace cluster (netns-cluster.ts): a rendezvous store on one host and ranks placed on hosts,
 * each a `cluster-rank.js` process. Shared by cluster-collectives.test.ts and the `cluster` bench suite.
 */
import { fileURLToPath } from 'node:url';
import type { NetnsCluster } from './netns-cluster.js';
import { jsonLines, type JsonLines } from './json-lines.js';
import type { RankJob } from './cluster-rank.js';
import { benchAuth } from './bench-auth.js';

export const rankScript = fileURLToPath(new URL('./cluster-rank.js', import.meta.url));

/**
 * Start `cluster-rank.js` with `job` on `host`; stdin, stdout and stderr piped. The ranks of a run share its job
 * secret through their environment (`benchAuth` puts it in this process's on first use).
 */
export function startRank(c: NetnsCluster, host: number, job: RankJob): JsonLines {
  const auth = benchAuth();
  return jsonLines(c.spawn(host, process.execPath, [rankScript, JSON.stringify(job)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...auth.childEnv() } }));
}

/** A TcpStoreServer on `host` (bound to its cluster address); `url` for the ranks, `stop` kills it. */
export async function startStore(c: NetnsCluster, host = 0): Promise<{ url: string; stop: () => Promise<void> }> {
  const p = startRank(c, host, { role: 'store', address: c.hosts[host]!.address });
  const { url } = await p.wait((o) => typeof o.url === 'string', 20_000, 'store server');
  return {
    url: url as string,
    stop: async () => {
      p.child.kill('SIGKILL');
      await p.exited;
    },
  };
}

/** Wait for every process to exit, failing with the first one's error line (and killing the rest). */
export async function allExit(ps: readonly JsonLines[], ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.all(
        ps.map(async (p, i) => {
          const code = await p.exited;
          if (code !== 0) throw new Error(`${what}: process ${i} exited ${code ?? p.child.signalCode}: ${JSON.stringify(p.lines.at(-1))} ${p.stderr().slice(-1500)}`);
        }),
      ),
      new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: not done after ${ms} ms: ${ps.map((p) => JSON.stringify(p.lines.at(-1))).join(' ')}`)), ms))),
    ]);
  } catch (e) {
    ps.forEach((p) => p.child.kill('SIGKILL'));
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

export interface RingRun {
  /** The last line of each rank (`{ ok, hosts, localRanks, leader }`). */
  results: Record<string, unknown>[];
  /** With `linkBytes`: bytes each host sent onto its link during the one measured allreduce. */
  linkTx?: number[];
}

/**
 * Ranks `0..placement.length-1` on hosts `placement[r]`, exact checks, and optionally one counted allreduce of
 * `linkBytes` (the switch's port counters read before and after, while the ranks wait on stdin).
 */
export async function runRing(
  c: NetnsCluster,
  o: { placement: readonly number[]; transport: 'net' | 'nng'; topology: 'flat' | 'hierarchical'; linkBytes?: number; timeoutMs?: number },
): Promise<RingRun> {
  const store = await startStore(c, o.placement[0]);
  const size = o.placement.length;
  const ranks = o.placement.map((h, rank) =>
    startRank(c, h, { role: 'ring', rank, size, store: store.url, address: c.hosts[h]!.address, transport: o.transport, topology: o.topology, timeoutMs: o.timeoutMs ?? 20_000, linkBytes: o.linkBytes }),
  );
  try {
    let linkTx: number[] | undefined;
    if (o.linkBytes) {
      await Promise.all(ranks.map((r) => r.wait((l) => l.ready === 'link' || 'error' in l, 60_000, 'ranks ready for the counted allreduce')));
      const bad = ranks.find((r) => r.lines.some((l) => 'error' in l));
      if (bad) throw new Error(`a rank failed: ${JSON.stringify(bad.lines.at(-1))}`);
      const before = await c.linkCounters();
      ranks.forEach((r) => r.child.stdin!.write('go\n'));
      await Promise.all(ranks.map((r) => r.wait((l) => l.done === 'link' || 'error' in l, 60_000, 'counted allreduce')));
      const after = await c.linkCounters();
      linkTx = after.map((a, i) => a.txBytes - before[i]!.txBytes);
    }
    await allExit(ranks, 60_000, `ring ${o.topology} over ${o.transport}`);
    return { results: ranks.map((r) => r.lines.find((l) => l.ok === true)!), linkTx };
  } finally {
    ranks.forEach((r) => r.child.kill('SIGKILL'));
    await store.stop();
  }
}

/** Parameter servers (`numServers` shards) on `serverHost`, workers on `workerHosts`; exact checks over `rounds`. */
export async function runPs(
  c: NetnsCluster,
  o: { serverHost: number; workerHosts: readonly number[]; numServers: number; bytes: number; rounds: number; warmup?: number; timeoutMs?: number; requestBytes?: number },
): Promise<Record<string, unknown>[]> {
  const { store, stop } = await startPsServersOn(c, o.serverHost, o.numServers, o.workerHosts.length, 'sgd', o.timeoutMs);
  try {
    const numWorkers = o.workerHosts.length;
    const workers = o.workerHosts.map((h, rank) => startRank(c, h, { role: 'ps-worker', rank, numWorkers, numServers: o.numServers, store, bytes: o.bytes, rounds: o.rounds, warmup: o.warmup, timeoutMs: o.timeoutMs ?? 20_000, ...(o.requestBytes === undefined ? {} : { requestBytes: o.requestBytes }) }));
    await allExit(workers, 90_000, 'ps workers');
    return workers.map((w) => w.lines.find((l) => l.ok === true)!);
  } finally {
    await stop();
  }
}

/** A store and `numServers` ps shards on `host` (all shards in one process); `store` is the store's URL. */
export async function startPsServersOn(c: NetnsCluster, host: number, numServers: number, numWorkers: number, updater: 'sgd' | 'assign', timeoutMs = 20_000): Promise<{ store: string; stop: () => Promise<void> }> {
  const store = await startStore(c, host);
  const server = startRank(c, host, { role: 'ps-server', store: store.url, address: c.hosts[host]!.address, numServers, numWorkers, timeoutMs, updater });
  const stop = async () => {
    server.child.kill('SIGKILL');
    await server.exited;
    await store.stop();
  };
  try {
    await server.wait((l) => l.ready === true, 30_000, 'ps servers');
  } catch (e) {
    await stop();
    throw e;
  }
  return { store: store.url, stop };
}
