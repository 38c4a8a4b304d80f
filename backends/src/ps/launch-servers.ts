import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { ActorSupervisor, Errors, type JobAuth, type ModuleRef, type Store, type Transport } from '@shoal/core';
import { settleAll } from '@shoal/core/util';
import type { KVServerOptions } from './kv-server.js';
import { defaultServerName } from './kv-worker.js';

/**
 * Start the server shards of a parameter-server job as actors named `ps-server-0..S-1` (`defaultServerName`):
 * the one way to start them, used by `shoal run` and the Spark store entry (`@shoal/run`) and by tests. Each server gets
 * `checkpointDir/ps-server-<i>.ckpt` when `checkpointDir` is set, so a restarted incarnation resumes from it.
 * Returns the supervisors; stop them with `Promise.all(s.map((x) => x.stop()))`.
 */
export interface StartPsServersOptions extends Omit<KVServerOptions, 'serverIndex' | 'checkpointPath'> {
  placement: 'process' | 'thread' | 'local';
  store: Store;
  /** For local placement. */
  transport?: Transport;
  /** For process/thread placement: how the servers build their transport and store. */
  remote?: { transport: ModuleRef; store: ModuleRef };
  /** Where server i listens (a URL template of the actor runtime), the same for all or per server. */
  listenUrl?: string | ((i: number) => string);
  checkpointDir?: string;
  restart?: { maxRestarts: number; backoffMs?: number };
  serverName?: (i: number) => string;
  env?: Record<string, string>;
  execArgv?: string[];
  /**
   * The job's identity (`JobAuth.generate(jobId)` in the launcher): required for process and thread placement,
   * whose servers get the secret in their environment and require it of every caller.
   */
  auth?: JobAuth;
}

export const kvServerModule = fileURLToPath(new URL('./kv-server.js', import.meta.url));

export async function startPsServers(o: StartPsServersOptions): Promise<ActorSupervisor[]> {
  if (!Number.isInteger(o.numServers) || o.numServers < 1) throw Errors.invalidArg('numServers', `must be a positive integer, got ${o.numServers}`);
  const name = o.serverName ?? defaultServerName;
  const { placement, store, transport, remote, listenUrl, checkpointDir, restart, serverName: _n, env, execArgv, auth, ...serverOpts } = o;
  void _n;
  if (placement !== 'local' && !auth) throw Errors.invalidArg('auth', `is required for ${placement} placement: pass the job's JobAuth (JobAuth.generate(jobId))`);
  return settleAll(
    Array.from({ length: o.numServers }, (_, i) => {
      const opts: KVServerOptions = {
        ...serverOpts,
        serverIndex: i,
        checkpointPath: checkpointDir ? join(checkpointDir, `${name(i)}.ckpt`) : undefined,
      };
      return ActorSupervisor.spawn({
        name: name(i),
        actor: { module: kvServerModule, export: 'KVServer', args: [JSON.parse(JSON.stringify(opts))] },
        placement,
        store,
        transport,
        remote,
        listenUrl: typeof listenUrl === 'function' ? listenUrl(i) : listenUrl,
        mailbox: 'reentrant',
        restart,
        env,
        execArgv,
        auth,
        timeoutMs: o.timeoutMs,
      });
    }),
    (s) => s.stop(1000), // on failure, the ones that did start
  );
}
