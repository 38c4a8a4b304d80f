import { ActorSupervisor } from '../actor/spawn.js';
import { netRemote } from '../actor/net-remote.js';
import type { Store } from '../store/store.js';

export interface PsServerActorsOptions {
  /** The job's store server URL (the servers register there; workers find them by name). */
  storeUrl: string;
  /** A client of that store in this process (the supervisors' readiness keys). */
  store: Store;
  numServers: number;
  numWorkers: number;
  timeoutMs: number;
  /** Interface the servers listen on (default 127.0.0.1). */
  host?: string;
}

/**
 * Start the parameter-server shards of a `--backend ps|hybrid` job as actor processes `ps-server-0..K-1`
 * (the KVServer class of `@shoal/backends`, sync mode, loaded by module name so core keeps no compile-time
 * dependency on the engines). Workers connect with `PsSync.connect` over the same store (see `initWorker`).
 * The caller stops them (`stop()` on each supervisor). On failure the ones started are stopped.
 */
export async function startPsServerActors(o: PsServerActorsOptions): Promise<ActorSupervisor[]> {
  const started = await Promise.allSettled(
    Array.from({ length: o.numServers }, (_, i) =>
      ActorSupervisor.spawn({
        name: `ps-server-${i}`,
        actor: {
          module: '@shoal/backends',
          export: 'KVServer',
          args: [{ serverIndex: i, numServers: o.numServers, numWorkers: o.numWorkers, mode: 'sync', timeoutMs: o.timeoutMs }],
        },
        placement: 'process',
        store: o.store,
        remote: netRemote(o.storeUrl),
        listenUrl: `tcp://${o.host ?? '127.0.0.1'}:0`,
        mailbox: 'reentrant',
        timeoutMs: o.timeoutMs,
      }),
    ),
  );
  const bad = started.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
  if (bad) {
    await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.stop(1000) : undefined)));
    throw bad.reason;
  }
  return started.map((r) => (r as PromiseFulfilledResult<ActorSupervisor>).value);
}
