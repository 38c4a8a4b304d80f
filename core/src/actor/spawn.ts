import { fork, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { Errors } from '../errors.js';
import { clampTimerMs } from '../util.js';
import type { Store } from '../store/store.js';
import type { Transport } from '../transport/transport.js';
import { DEFAULT_TIMEOUT_MS } from '../transport/transport.js';
import { ActorClient } from './actor-handle.js';
import { ACTOR_SPEC_ENV, actorHostPath, type ActorHostSpec, type ActorLifecycle } from './actor-host.js';
import { ActorServer } from './actor-server.js';
import { instantiate, type ModuleRef } from './module-ref.js';
import type { JobAuth } from '../security/job-auth.js';
import type { RemoteErrorInfo } from './rpc.js';

/**
 * Supervision: start an actor where the launcher placed it, watch it, restart it by policy.
 *
 * - `placement: 'process'`: a child Node process runs `actor-host.js`; the actor class, the transport and the
 *   store are rebuilt there from ModuleRefs (so the child can be any process that reaches the same store).
 * - `placement: 'thread'`: the same in a worker thread.
 * - `placement: 'local'`: the actor runs in this process over the given transport/store objects (fast tests
 *   over `MemoryNetwork`); `kill()` then drops every connection, as a crash would.
 *
 * When an actor exits without being asked to, callers see ERR_PEER_CLOSED naming it on every pending and later
 * call; with `restart.maxRestarts > 0` the supervisor starts a new incarnation (epoch + 1) after `backoffMs`,
 * and callers `reconnect(epoch + 1)`. Restoring state is the actor's job: give it a checkpoint path in its
 * constructor args and let it load the last checkpoint when it starts.
 */
export interface SpawnActorOptions {
  /** Unique name in the store's namespace. */
  name: string;
  /** The actor class: `new (import(module)[export])(...args)`. Args must be JSON values. */
  actor: ModuleRef;
  placement: 'process' | 'thread' | 'local';
  /** The supervisor's store (readiness, epochs); also the local actor's store. */
  store: Store;
  /** Needed for 'local' placement: the transport the actor listens on. */
  transport?: Transport;
  /** Needed for 'process'/'thread': how the child builds its transport and store. */
  remote?: { transport: ModuleRef; store: ModuleRef };
  /** Listen URL for the actor's doors, e.g. `tcp://127.0.0.1:0` (default `mem://auto` for local). */
  listenUrl?: string;
  mailbox?: 'serial' | 'reentrant';
  restart?: { maxRestarts: number; backoffMs?: number };
  /** Start-up timeout (default 30 s). */
  timeoutMs?: number;
  /** Extra environment for a child process. */
  env?: Record<string, string>;
  /**
   * The job's identity, for 'process'/'thread' placement with a `remote` that needs it (`netRemote`,
   * `shmRemote`): the child gets the secret in its environment only, and its job id in the spec.
   */
  auth?: JobAuth;
  /** Node flags for a child process (default `--enable-source-maps`), e.g. `--cpu-prof`. */
  execArgv?: string[];
}

export interface ActorExit {
  epoch: number;
  code: number | null;
  signal: string | null;
  /** True when the supervisor asked it to stop. */
  expected: boolean;
}

export class ActorSupervisor {
  private epochNo = 0;
  private child: ChildProcess | undefined;
  private worker: Worker | undefined;
  private local: ActorServer | undefined;
  private localInstance: ActorLifecycle | undefined;
  private stopping = false;
  private restartsDone = 0;
  private readonly exitListeners: ((e: ActorExit) => void)[] = [];
  private readonly exitsLog: ActorExit[] = [];
  private restartPromise: Promise<void> | undefined;

  private constructor(private readonly opts: SpawnActorOptions) {}

  /** Spawn the actor and wait until it serves (ERR_TIMEOUT, or ERR_REMOTE if its constructor threw). */
  static async spawn(opts: SpawnActorOptions): Promise<ActorSupervisor> {
    if (opts.placement === 'local' && !opts.transport) throw Errors.invalidArg('options.transport', 'is required for local placement');
    if (opts.placement !== 'local' && !opts.remote) throw Errors.invalidArg('options.remote', `is required for ${opts.placement} placement`);
    const s = new ActorSupervisor(opts);
    await s.startOne();
    return s;
  }

  get name(): string {
    return this.opts.name;
  }
  get epoch(): number {
    return this.epochNo;
  }
  get restarts(): number {
    return this.restartsDone;
  }
  /** Pid of the actor's process (this process for local/thread placement). */
  get pid(): number {
    return this.child?.pid ?? process.pid;
  }
  /** Exits seen so far. */
  get exits(): readonly ActorExit[] {
    return this.exitsLog;
  }
  onExit(cb: (e: ActorExit) => void): void {
    this.exitListeners.push(cb);
  }

  /**
   * Connect a new caller to the current incarnation over `transport` (default: the supervisor's own, which only
   * local placement has).
   */
  connect<T>(timeoutMs = this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, transport = this.opts.transport): Promise<ActorClient<T>> {
    if (!transport) return Promise.reject(Errors.state(`connecting to actor ${this.name} needs a transport: pass one to connect()`));
    return ActorClient.connect<T>(this.name, { store: this.opts.store, transport, timeoutMs });
  }

  /** Wait until a restart in progress (if any) has finished. */
  async settled(): Promise<void> {
    while (this.restartPromise) await this.restartPromise;
  }

  private async startOne(): Promise<void> {
    const epoch = await this.opts.store.add(`actor/${this.opts.name}/incarnations`, 1);
    const timeoutMs = clampTimerMs(this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const mailbox = this.opts.mailbox ?? 'serial';
    if (this.opts.placement === 'local') {
      const instance = await instantiate<ActorLifecycle>(this.opts.actor);
      await instance.onActorStart?.({ name: this.name, epoch, store: this.opts.store });
      this.local = await ActorServer.start(instance, {
        name: this.name,
        epoch,
        store: this.opts.store,
        transport: this.opts.transport!,
        listenUrl: this.opts.listenUrl ?? 'mem://auto',
        mailbox,
      });
      this.localInstance = instance;
      this.epochNo = epoch;
      return;
    }
    const spec: ActorHostSpec = {
      name: this.name,
      epoch,
      actor: this.opts.actor,
      transport: this.opts.remote!.transport,
      store: this.opts.remote!.store,
      listenUrl: this.opts.listenUrl ?? 'tcp://127.0.0.1:0',
      mailbox,
      ...(this.opts.auth ? { jobId: this.opts.auth.jobId } : {}),
    };
    const secretEnv = this.opts.auth?.childEnv() ?? {};
    await new Promise<void>((resolve, reject) => {
      let started = false;
      const timer = setTimeout(() => {
        if (started) return;
        started = true;
        this.killNow('SIGKILL');
        reject(Errors.timeout(`starting actor ${this.name}`, timeoutMs));
      }, timeoutMs);
      const onMsg = (m: { ready?: boolean; failed?: RemoteErrorInfo }) => {
        if (started) return;
        if (m.ready) {
          started = true;
          clearTimeout(timer);
          this.epochNo = epoch;
          resolve();
        } else if (m.failed) {
          started = true;
          clearTimeout(timer);
          reject(Errors.remote(`starting actor ${this.name}`, m.failed.message, { remoteStack: m.failed.stack }));
        }
      };
      const onExit = (code: number | null, signal: string | null) => {
        if (!started) {
          started = true;
          clearTimeout(timer);
          reject(Errors.remote(`actor ${this.name}`, `exited during start-up (code ${code}, signal ${signal})`));
          return;
        }
        this.handleExit({ epoch, code, signal, expected: this.stopping });
      };
      if (this.opts.placement === 'process') {
        const child = fork(actorHostPath, [], {
          env: { ...process.env, ...this.opts.env, ...secretEnv, [ACTOR_SPEC_ENV]: JSON.stringify(spec) },
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          execArgv: this.opts.execArgv ?? ['--enable-source-maps'],
        });
        this.child = child;
        child.on('message', onMsg);
        child.on('exit', onExit);
        child.on('error', (e) => {
          if (started) return process.emitWarning(`actor ${this.name}: ${e.message}`);
          started = true;
          clearTimeout(timer);
          reject(Errors.transport(`actor ${this.name}`, `cannot start its process: ${e.message}`, e));
        });
      } else {
        const w = new Worker(actorHostPath, { workerData: { shoalActor: spec }, env: { ...process.env, ...this.opts.env, ...secretEnv } });
        this.worker = w;
        w.on('message', onMsg);
        w.on('error', (e) => process.emitWarning(`actor ${this.name} thread error: ${e.message}`));
        w.on('exit', (code) => onExit(code, null));
      }
    });
  }

  private handleExit(e: ActorExit): void {
    this.exitsLog.push(e);
    for (const cb of this.exitListeners) cb(e);
    const policy = this.opts.restart;
    if (e.expected || this.stopping || !policy || this.restartsDone >= policy.maxRestarts) return;
    this.restartsDone++;
    const p: Promise<void> = (async () => {
      await new Promise((r) => setTimeout(r, policy.backoffMs ?? 100));
      if (!this.stopping) await this.startOne();
    })()
      .catch((err: unknown) => process.emitWarning(`actor ${this.name}: restart failed: ${(err as Error).message}`))
      .finally(() => {
        if (this.restartPromise === p) this.restartPromise = undefined;
      });
    this.restartPromise = p;
  }

  private killNow(signal: NodeJS.Signals): void {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    if (this.worker) void this.worker.terminate();
  }

  /**
   * Kill the actor as a crash would (SIGKILL for a process, terminate for a thread, dropped connections for a
   * local actor). The restart policy applies.
   */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.opts.placement === 'local') {
      const s = this.local;
      this.local = undefined;
      await s?.stop();
      this.handleExit({ epoch: this.epochNo, code: null, signal, expected: false });
      return;
    }
    const exited = this.waitExit();
    this.killNow(signal);
    await exited;
  }

  private waitExit(): Promise<void> {
    const c = this.child;
    if (c) {
      if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
      return new Promise((r) => c.once('exit', () => r()));
    }
    const w = this.worker;
    if (w) return new Promise((r) => w.once('exit', () => r()));
    return Promise.resolve();
  }

  /** Stop for good (no restart): ask the actor to stop, SIGKILL it after `graceMs`. Idempotent. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    await this.restartPromise?.catch(() => {});
    if (this.opts.placement === 'local') {
      await this.local?.stop();
      await this.localInstance?.onActorStop?.();
      this.local = undefined;
      return;
    }
    const exited = this.waitExit();
    if (this.child && this.child.exitCode === null && this.child.signalCode === null && this.child.connected) this.child.send({ stop: true });
    this.worker?.postMessage({ stop: true });
    const t = setTimeout(() => this.killNow('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  }
}
