import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { Store } from '../store/store.js';
import type { Transport } from '../transport/transport.js';
import { ActorServer } from './actor-server.js';
import { instantiate, type ModuleRef } from './module-ref.js';
import { errorInfo } from './rpc.js';
import { JobAuth } from '../security/job-auth.js';
import { sweepLeftovers } from '../security/leftovers.js';

/** The entry point reads the job secret once, from its environment (never argv). */
function authOf(spec: ActorHostSpec, env: Record<string, string | undefined>): JobAuth | undefined {
  return spec.jobId !== undefined ? JobAuth.fromEnv(spec.jobId, env) : undefined;
}

/**
 * The entry point of an actor's own process or worker thread (`spawnActor` starts it). It builds the transport
 * and the store from their ModuleRefs, constructs the actor class, calls its optional
 * `onActorStart(context)`, serves it, and reports `{ ready }` or `{ failed }` to the supervisor. The process
 * exits when its supervisor goes away (IPC disconnect) or on SIGTERM (after `onActorStop()`).
 */
export interface ActorHostSpec {
  name: string;
  epoch: number;
  actor: ModuleRef;
  transport: ModuleRef;
  store: ModuleRef;
  listenUrl: string;
  mailbox: 'serial' | 'reentrant';
  /** The job id of the supervisor's `auth`; the secret is in this process's environment (SHOAL_JOB_SECRET). */
  jobId?: string;
}

/** What an actor's optional `onActorStart(ctx)` receives. */
export interface ActorContext {
  name: string;
  /** Incarnation number: 1 for the first start, higher after restarts. */
  epoch: number;
  store: Store;
}

/** Optional lifecycle hooks an actor class may implement. */
export interface ActorLifecycle {
  onActorStart?(ctx: ActorContext): unknown;
  onActorStop?(): unknown;
}

export const ACTOR_SPEC_ENV = 'SHOAL_ACTOR_SPEC';
export const actorHostPath = fileURLToPath(import.meta.url);

/** Start an actor from a spec in the current process/thread. Returns the running server and instance. */
export async function hostActor(spec: ActorHostSpec, auth?: JobAuth): Promise<{ server: ActorServer; instance: ActorLifecycle; transport: Transport; store: Store }> {
  const transport = await instantiate<Transport>(spec.transport, auth);
  const store = await instantiate<Store>(spec.store, auth);
  const instance = await instantiate<ActorLifecycle>(spec.actor);
  await instance.onActorStart?.({ name: spec.name, epoch: spec.epoch, store });
  const server = await ActorServer.start(instance, {
    name: spec.name,
    epoch: spec.epoch,
    store,
    transport,
    listenUrl: spec.listenUrl,
    mailbox: spec.mailbox,
  });
  return { server, instance, transport, store };
}

async function mainProcess(): Promise<void> {
  const spec = JSON.parse(process.env[ACTOR_SPEC_ENV] ?? '') as ActorHostSpec;
  // The supervisor (a launcher) is gone: remove the job's names it cannot remove any more, then exit.
  const supervisor = process.ppid;
  process.on('disconnect', () => {
    sweepLeftovers({ ownerPid: supervisor });
    process.exit(3);
  });
  try {
    const h = await hostActor(spec, authOf(spec, process.env));
    const stop = async () => {
      await h.server.stop();
      await h.instance.onActorStop?.();
      await h.transport.close?.();
      await h.store.close?.();
      process.exit(0);
    };
    process.on('SIGTERM', () => void stop());
    process.on('message', (m) => {
      if ((m as { stop?: boolean }).stop) void stop();
    });
    process.send?.({ ready: true, epoch: spec.epoch });
  } catch (e) {
    process.send?.({ failed: errorInfo(e) }, () => process.exit(2));
    if (!process.send) process.exit(2);
  }
}

async function mainThread(): Promise<void> {
  const spec = (workerData as { shoalActor: ActorHostSpec }).shoalActor;
  try {
    const h = await hostActor(spec, authOf(spec, process.env));
    parentPort!.on('message', (m) => {
      if ((m as { stop?: boolean }).stop) {
        void (async () => {
          await h.server.stop();
          await h.instance.onActorStop?.();
          await h.transport.close?.();
          await h.store.close?.();
          process.exit(0);
        })();
      }
    });
    parentPort!.postMessage({ ready: true, epoch: spec.epoch });
  } catch (e) {
    parentPort!.postMessage({ failed: errorInfo(e) });
  }
}

if (!isMainThread && (workerData as { shoalActor?: unknown } | undefined)?.shoalActor) void mainThread();
else if (isMainThread && process.argv[1] === actorHostPath) void mainProcess();
