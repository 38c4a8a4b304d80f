import { Errors } from '../errors.js';
import { clampTimerMs } from '../util.js';
import type { Store } from '../store/store.js';
import { asText } from '../store/store.js';
import type { Transport } from '../transport/transport.js';
import { DEFAULT_TIMEOUT_MS } from '../transport/transport.js';
import { actorEpoch, actorKeys } from './actor-server.js';
import { RpcClient, type CallOptions, type RpcStats } from './rpc.js';

/** The async view of an actor class `T`: every method returns a promise of its awaited result. */
export type ActorMethods<T> = {
  [K in keyof T as K extends `_${string}` ? never : T[K] extends (...a: never[]) => unknown ? K : never]: T[K] extends (
    ...a: infer A
  ) => infer R
    ? (...a: A) => Promise<Awaited<R>>
    : never;
};

/** A caller's typed handle on an actor of class `T` (`handle.api.method(...)` returns a promise). */
export type ActorHandle<T> = ActorClient<T>;

export interface ConnectActorOptions {
  store: Store;
  transport: Transport;
  /** Timeout for finding and dialing the actor, and the default per-call timeout. */
  timeoutMs?: number;
}

/**
 * A caller's connection to one actor. `handle.api` is the typed proxy (`await handle.api.push(...)`);
 * `handle.call(name, args)` is the untyped form. One ActorClient is one caller: its calls reach the actor in
 * call order. When the actor dies every pending and later call rejects with ERR_PEER_CLOSED naming it;
 * `reconnect()` dials its current incarnation (after a restart) and keeps the same `api` object working.
 */
export class ActorClient<T> {
  readonly api: ActorMethods<T>;
  private rpc!: RpcClient;
  private epochNo = -1;
  private readonly base: RpcStats = { bytesSent: 0, bytesReceived: 0, calls: 0 };
  private readonly deadListeners: ((err: Error) => void)[] = [];

  private constructor(
    readonly name: string,
    private readonly opts: ConnectActorOptions,
  ) {
    this.api = new Proxy({} as ActorMethods<T>, {
      get: (_t, prop) => {
        if (typeof prop !== 'string' || prop === 'then') return undefined;
        return (...args: unknown[]) => this.call(prop, args);
      },
    });
  }

  /** Find actor `name` through the store (waiting up to `timeoutMs` for it to come up) and connect. */
  static async connect<T>(name: string, opts: ConnectActorOptions): Promise<ActorClient<T>> {
    const c = new ActorClient<T>(name, opts);
    await c.reconnect();
    return c;
  }

  get epoch(): number {
    return this.epochNo;
  }

  /** Set when the connection to the actor is gone; calls then reject with it until `reconnect()`. */
  get deadError(): Error | undefined {
    return this.rpc.deadError;
  }

  /** `cb` runs each time the connection to the actor breaks (the actor died or the network failed). */
  onDisconnect(cb: (err: Error) => void): void {
    this.deadListeners.push(cb);
  }

  /** See `RpcClient.limitOutgoing`; for the current connection (a reconnect starts without a bound). */
  limitOutgoing(bytes: number, reason: string): void {
    this.rpc.limitOutgoing(bytes, reason);
  }

  call(method: string, args: readonly unknown[], io?: CallOptions): Promise<unknown> {
    return this.rpc.call(method, args, io);
  }

  /**
   * (Re)connect to the actor's current incarnation. With `minEpoch`, wait (up to the timeout) until the actor
   * has been restarted at least to that epoch: use `client.epoch + 1` after the actor died.
   */
  async reconnect(minEpoch = 0): Promise<void> {
    const timeoutMs = clampTimerMs(this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const deadline = Date.now() + timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    let epoch = await actorEpoch(this.opts.store, this.name, left());
    while (epoch < minEpoch) {
      if (Date.now() >= deadline) throw Errors.timeout(`waiting for actor ${this.name} to restart (epoch >= ${minEpoch})`, timeoutMs);
      await new Promise((r) => setTimeout(r, 20));
      epoch = await actorEpoch(this.opts.store, this.name, left());
    }
    const i = (await this.opts.store.add(actorKeys.callers(this.name, epoch), 1)) - 1;
    const url = asText(await this.opts.store.get(actorKeys.door(this.name, epoch, i), left()));
    const conn = await this.opts.transport.dial(url, { timeoutMs: left() });
    const old = this.rpc;
    if (old) {
      const o = old.stats();
      this.base.bytesSent += o.bytesSent;
      this.base.bytesReceived += o.bytesReceived;
      this.base.calls += o.calls;
    }
    this.rpc = new RpcClient(conn, { name: `actor ${this.name} (epoch ${epoch})`, timeoutMs });
    this.rpc.onDead = (err) => {
      for (const cb of this.deadListeners) cb(err);
    };
    this.epochNo = epoch;
    if (old) await old.close();
  }

  /** Bytes and calls over every connection this client has had (reconnects included). */
  stats(): RpcStats {
    const s = this.rpc.stats();
    return { bytesSent: this.base.bytesSent + s.bytesSent, bytesReceived: this.base.bytesReceived + s.bytesReceived, calls: this.base.calls + s.calls };
  }

  async close(): Promise<void> {
    await this.rpc?.close();
  }
}
