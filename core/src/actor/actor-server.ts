import { Errors } from '../errors.js';
import type { Store } from '../store/store.js';
import { asText } from '../store/store.js';
import type { Connection, Listener, Transport } from '../transport/transport.js';
import { decodeMessage, encodeMessage, FramePool } from './codec.js';
import { errorInfo } from './rpc.js';

/**
 * Serving one actor instance to any number of callers over a pair transport.
 *
 * Addressing (the runtime assumes nothing about machines): an actor named `n` publishes in the store
 *   `actor/n/epoch`            the current incarnation e (a restart bumps it)
 *   `actor/n/e/door/i`         the URL caller number i dials
 * A caller takes a number with `add('actor/n/e/callers', 1)`, waits for its door and dials it. The actor keeps a
 * window of doors listening so several callers can connect at once; each accepted door opens the next.
 *
 * Mailbox: requests on one connection are started in arrival order. `mailbox: 'serial'` (the classic actor)
 * runs one call at a time across all callers; `'reentrant'` starts each call on arrival, so an async method
 * that awaits (e.g. a sync-mode push waiting for the other workers) lets later calls run meanwhile.
 */
export interface ServeActorOptions {
  name: string;
  epoch: number;
  store: Store;
  transport: Transport;
  /** Where to listen, e.g. `tcp://10.0.0.5:0` or `mem://auto`. */
  listenUrl: string;
  mailbox?: 'serial' | 'reentrant';
  /** Doors kept open at once (default 4). */
  doorWindow?: number;
}

export const actorKeys = {
  epoch: (name: string) => `actor/${name}/epoch`,
  callers: (name: string, epoch: number) => `actor/${name}/${epoch}/callers`,
  door: (name: string, epoch: number, i: number) => `actor/${name}/${epoch}/door/${i}`,
};

/** Read the current epoch of actor `name` (waits up to `timeoutMs` for it to be published). */
export async function actorEpoch(store: Store, name: string, timeoutMs: number): Promise<number> {
  return Number(asText(await store.get(actorKeys.epoch(name), timeoutMs)));
}

export class ActorServer {
  private readonly conns = new Set<Connection>();
  private readonly pools = new WeakMap<Connection, FramePool>();
  private readonly listeners = new Set<Listener>();
  private nextDoor = 0;
  private stopped = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly methods: Set<string>;

  private constructor(
    private readonly instance: object,
    private readonly opts: ServeActorOptions,
  ) {
    const names = new Set<string>();
    for (let p = Object.getPrototypeOf(instance); p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
      for (const k of Object.getOwnPropertyNames(p)) {
        if (k !== 'constructor' && !k.startsWith('_') && typeof (instance as Record<string, unknown>)[k] === 'function') names.add(k);
      }
    }
    for (const k of Object.keys(instance)) if (!k.startsWith('_') && typeof (instance as Record<string, unknown>)[k] === 'function') names.add(k);
    this.methods = names;
  }

  /**
   * Start serving `instance` (its public methods; names starting with `_` stay private): open the first doors,
   * then publish the epoch. Resolves once callers can connect.
   */
  static async start(instance: object, opts: ServeActorOptions): Promise<ActorServer> {
    const s = new ActorServer(instance, opts);
    const w = opts.doorWindow ?? 4;
    await Promise.all(Array.from({ length: w }, () => s.openDoor()));
    await opts.store.set(actorKeys.epoch(opts.name), String(opts.epoch));
    return s;
  }

  private async openDoor(): Promise<void> {
    if (this.stopped) return;
    const i = this.nextDoor++;
    const l = await this.opts.transport.listen(this.opts.listenUrl);
    this.listeners.add(l);
    await this.opts.store.set(actorKeys.door(this.opts.name, this.opts.epoch, i), l.url);
    void l.accept({ timeoutMs: Infinity }).then(
      (conn) => {
        this.listeners.delete(l);
        void l.close().catch(() => {});
        if (this.stopped) return void conn.close().catch(() => {});
        this.conns.add(conn);
        void this.serve(conn);
        void this.openDoor().catch(() => {});
      },
      () => {
        this.listeners.delete(l);
      },
    );
  }

  private async serve(conn: Connection): Promise<void> {
    for (;;) {
      let msg: Uint8Array;
      try {
        msg = await conn.recv({ timeoutMs: Infinity });
      } catch {
        this.conns.delete(conn);
        void conn.close().catch(() => {});
        return;
      }
      let req: { k: string; id: number; m: string; a: unknown[] };
      try {
        req = decodeMessage(msg) as typeof req;
      } catch (e) {
        // A frame we cannot read means the caller and we disagree on the protocol: drop the caller.
        process.emitWarning(`actor ${this.opts.name}: dropping caller ${conn.remote}: ${(e as Error).message}`);
        this.conns.delete(conn);
        void conn.close().catch(() => {});
        return;
      }
      if (this.opts.mailbox === 'reentrant') void this.run(conn, req);
      else this.queue = this.queue.then(() => this.run(conn, req));
    }
  }

  private async run(conn: Connection, req: { id: number; m: string; a: unknown[] }): Promise<void> {
    let frame: Uint8Array;
    let pool = this.pools.get(conn);
    if (!pool) this.pools.set(conn, (pool = new FramePool()));
    try {
      if (!this.methods.has(req.m)) throw Errors.invalidArg(`method ${JSON.stringify(req.m)}`, `is not a public method of actor ${this.opts.name}`);
      const fn = (this.instance as Record<string, (...a: unknown[]) => unknown>)[req.m]!;
      // A plain return value is encoded in the same turn the method ran (a consistent snapshot of any state it
      // returns); a promise is awaited first.
      const r = fn.apply(this.instance, req.a ?? []);
      const v = r !== null && typeof r === 'object' && typeof (r as { then?: unknown }).then === 'function' ? await r : r;
      frame = encodeMessage({ k: 'r', id: req.id, v }, pool);
    } catch (e) {
      frame = encodeMessage({ k: 'e', id: req.id, e: errorInfo(e) });
    }
    if (conn.closed) return;
    await conn.send(frame, { timeoutMs: Infinity }).then(
      () => pool.give(frame),
      () => {},
    );
  }

  /** Stop accepting, close every caller's connection (they see ERR_PEER_CLOSED). Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all([...this.listeners].map((l) => l.close().catch(() => {})));
    await Promise.all([...this.conns].map((c) => c.close().catch(() => {})));
    this.listeners.clear();
    this.conns.clear();
  }
}
