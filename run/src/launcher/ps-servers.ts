import { defaultServerName, startPsServers, type KVServerOptions } from '@shoal/backends';
import { Errors, netRemote, shmRemote, type ActorSupervisor, type Store } from '@shoal/core';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { JobAuth } from '@shoal/core';

/**
 * How workers reach the server actors: `ipc` = unix domain sockets (`ipc:///<socketDir>/shoal-<job>-<actor>-<door>.sock`,
 * same host only, no TCP stack on the path), `tcp` = `tcp://<host>:0` (reachable from other hosts), `shm` =
 * shared-memory rings (`shm://auto` under the job id; same host). `initWorker` dials each server URL with the
 * transport its scheme names.
 */
export type PsLink = 'ipc' | 'tcp' | 'shm';

export interface PsServerActorsOptions {
  /** The job's store server URL (the servers register there; workers find them by name). */
  storeUrl: string;
  /** A client of that store in this process (the supervisors' readiness keys). */
  store: Store;
  numServers: number;
  numWorkers: number;
  /** The servers' consistency (default `sync`); `staleness` bounds async workers' lead (default unbounded). */
  mode?: 'sync' | 'async';
  staleness?: number;
  timeoutMs: number;
  /** Interface the servers listen on with `link: 'tcp'` (default 127.0.0.1). */
  host?: string;
  /** Default `tcp` (the portable choice); `shoal run` passes `ipc` for its same-host jobs. */
  link?: PsLink;
  /** Directory of the `ipc` socket files (default os.tmpdir()). */
  socketDir?: string;
  /** Names the socket files (default `ps`); distinct jobs sharing `socketDir` need distinct ids. */
  jobId?: string;
  /**
   * Durable servers (`shoal run --ps-durable DIR`): each acknowledges an update only once it is in its checkpoint
   * `checkpointDir/ps-server-<i>.ckpt`, and its supervisor restarts it from there (`restart`) when it dies.
   */
  durable?: { checkpointDir: string; restart: { maxRestarts: number; backoffMs?: number } };
  /** The job's identity: the servers get its secret in their environment and require it of every caller. */
  auth: JobAuth;
  /** Actor names (default `ps-server-<i>`); an elastic job names each generation's servers apart. */
  serverName?: (i: number) => string;
  /** Each server writes its load (rounds/s, queue depth, bytes, apply time) to `<logdir>/server-<i>` (`--logdir`). */
  metrics?: KVServerOptions['metrics'];
  /** `--timeline FILE`: each server records its updates in the part `FILE.server-<i>.jsonl`. */
  timeline?: string;
}

/** The shm segment prefix of a job's ps links: the job id, restricted to what `shmTransport` accepts. */
export function shmPrefix(jobId: string | undefined): string {
  return (jobId ?? 'ps').replace(/[^A-Za-z0-9_.-]/g, '_');
}

/**
 * Where server `i` listens: a URL template of the actor runtime (every door listens anew, so a unix socket path
 * carries `{actor}` and `{door}`; see `ServeActorOptions.listenUrl`). unix socket paths are limited to 107 bytes:
 * a long `socketDir` falls back to os.tmpdir() with a short name.
 */
export function psServerListenUrl(o: Omit<PsServerActorsOptions, 'auth'>, i: number): string {
  const link = o.link ?? 'tcp';
  if (link === 'tcp') return `tcp://${o.host ?? '127.0.0.1'}:0`;
  if (link === 'shm') return 'shm://auto';
  if (link !== 'ipc') throw Errors.invalidArg('link', `must be ipc, tcp or shm, got ${JSON.stringify(link)}`);
  const id = (o.jobId ?? 'ps').replace(/[^A-Za-z0-9._-]/g, '_');
  let path = join(o.socketDir ?? tmpdir(), `shoal-${id}-{actor}-{door}.sock`);
  // Worst case after substitution: 'ps-server-<i>' for {actor}, '<epoch>-<door>' (up to ~24 digits) for {door}.
  const worst = Buffer.byteLength(path) + defaultServerName(i).length + 24;
  if (worst > 107) path = join(tmpdir(), `shoal-${process.pid}-${Date.now().toString(36)}-{actor}-{door}.sock`);
  return `ipc://${path}`;
}

/**
 * Start the parameter-server shards of a `--backend ps|hybrid` job as actor processes `ps-server-0..K-1`
 * (`startPsServers` of `@shoal/backends`: KVServer, sync mode unless `mode` says async), each listening where `psServerListenUrl` says.
 * Workers connect with `PsSync.connect` over the same store (see `initWorker`). The caller stops them (`stop()`
 * on each supervisor). On failure the ones started are stopped.
 */
export function startPsServerActors(o: PsServerActorsOptions): Promise<ActorSupervisor[]> {
  return startPsServers({
    placement: 'process',
    store: o.store,
    numServers: o.numServers,
    numWorkers: o.numWorkers,
    mode: o.mode ?? 'sync',
    ...(o.staleness === undefined ? {} : { staleness: o.staleness }),
    timeoutMs: o.timeoutMs,
    remote: o.link === 'shm' ? shmRemote(o.storeUrl, { prefix: shmPrefix(o.jobId) }) : netRemote(o.storeUrl),
    listenUrl: (i) => psServerListenUrl(o, i),
    ...(o.durable ? { durable: true, checkpointDir: o.durable.checkpointDir, restart: o.durable.restart } : {}),
    ...(o.metrics ? { metrics: o.metrics } : {}),
    ...(o.timeline ? { timeline: o.timeline } : {}),
    auth: o.auth,
    ...(o.serverName ? { serverName: o.serverName } : {}),
  });
}

/**
 * Remove the `ipc` socket files of a job's servers: a server killed (SIGKILL) cannot unlink its own, and each
 * incarnation listens on new paths. Call once every server has stopped.
 */
export function removeServerSockets(o: Pick<PsServerActorsOptions, 'socketDir' | 'jobId'>): void {
  const dir = o.socketDir ?? tmpdir();
  const prefix = `shoal-${(o.jobId ?? 'ps').replace(/[^A-Za-z0-9._-]/g, '_')}-`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const f of names) if (f.startsWith(prefix) && f.endsWith('.sock')) rmSync(join(dir, f), { force: true });
}
