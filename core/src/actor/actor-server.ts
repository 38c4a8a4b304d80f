import { AsyncLocalStorage } from 'node:async_hooks';
import { Errors } from '../errors.js';
import type { Store } from '../store/store.js';
import { asText } from '../store/store.js';
import { checkIncomingLimit, type Connection, type Listener, type Transport } from '../transport/transport.js';
import { encodeParts, FramePool, type EncodedMessage } from './codec.js';
import { DEFAULT_EXTERNAL_MIN_BYTES, errorInfo, recvParts, sendParts, type RecvTargets } from './rpc.js';
import { checkArgs, remoteSpecOf, type ArgCheck } from './remote.js';

/**
 * Serving one actor instance to any number of callers over a pair transport.
 *
 * Addressing (the runtime assumes nothing about machines): an actor named `n` publishes in the store
 *   `actor/n/epoch`            the current incarnation e (a restart bumps it)
 *   `actor/n/e/door/i`         the URL caller number i dials
 * A caller takes a number with `add('actor/n/e/callers', 1)`, waits for its door and dials it. The actor keeps a
 * window of doors listening so several callers can connect at once; each accepted door opens the next.
 *
 * Remote surface: only the methods the class declares in its static `remote` (see `remoteMethods`), each
 * argument checked before the method runs; anything else gets an error reply.
 *
 * Receive buffers: an actor may define `recvTargets(method, args, externalBytes)`, called (with `currentCaller()`
 * set) when a request's frame has arrived and before its big arrays (external segments) are received: `args`
 * holds placeholders for those arrays (`externalRef(args[i])` gives the segment index), and it may return a buffer
 * per segment index to receive that segment straight into (transports with `recvInto`; others ignore it). The
 * method then gets views of those buffers. It is a hint: the actor must check, in the method, whether an argument
 * is one of its buffers.
 *
 * Incoming bound: an actor class may declare `static readonly callerBound = { bytes, reason }`, the largest message
 * (a frame, or one array segment) any caller may send before it says more; a larger one closes that caller's
 * connection at once with one warning naming the peer and the sizes, before anything is reserved for its body
 * (transports with `limitIncoming`; segments announced in a frame are checked here before they are received). A
 * method may raise the bound of its own caller with `raiseCallerBound` (the parameter server does when a worker
 * declares its keys), before it replies: the caller sends what needs the larger bound only after the reply. Without
 * `callerBound` messages are bounded only by the transport's maximum.
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
  /**
   * Where to listen, e.g. `tcp://10.0.0.5:0` or `mem://auto`. Every door listens anew, so a URL naming a fixed
   * address (a unix socket) needs `{door}` (replaced by `<epoch>-<door number>`) and, when several actors share
   * the template, `{actor}`: `ipc:///tmp/job7/{actor}-{door}.sock`.
   */
  listenUrl: string;
  mailbox?: 'serial' | 'reentrant';
  /** Doors kept open at once (default 4). */
  doorWindow?: number;
  /** Arrays in replies of at least this many bytes are sent uncopied (default 64 KiB). */
  externalMinBytes?: number;
}

/** Lifecycle hooks an actor may define; the runtime calls them, callers cannot. */
const HOOKS = new Set(['onActorStart', 'onActorStop', 'onCallerClosed', 'recvTargets']);

/** An actor's bound on the messages of one caller (see the module comment). */
export interface CallerBound {
  /** The largest message (a frame or one array segment), bytes. */
  bytes: number;
  /** What bounds it, for the error (e.g. `the keys this worker declared`). */
  reason: string;
}

/** One caller's connection, its id and its bound (undefined: the actor sets none). */
interface CallerState {
  id: string;
  conn: Connection;
  bound: CallerBound | undefined;
}

/** The caller of the actor method running now (see `currentCaller`). */
const callerContext = new AsyncLocalStorage<CallerState>();

/**
 * Inside an actor method: an id for the connection that made this call (stable for the connection's life). An
 * actor that defines `onCallerClosed(id)` is told when that connection goes away (the caller closed or died), so
 * it can stop waiting for it. Undefined outside an actor call.
 */
export function currentCaller(): string | undefined {
  return callerContext.getStore()?.id;
}

/**
 * Inside an actor method: let the caller making this call send messages of up to `bytes` from now on (never lowers
 * the bound; see the module comment). Returns the bound now in force (Infinity for an actor without
 * `callerBound`). Throws ERR_STATE outside an actor call.
 */
export function raiseCallerBound(bytes: number, reason: string): number {
  const c = callerContext.getStore();
  if (!c) throw Errors.state('raiseCallerBound must be called inside an actor method');
  checkIncomingLimit(bytes, reason);
  if (c.bound === undefined) return Infinity;
  if (bytes > c.bound.bytes) {
    c.bound = { bytes, reason };
    c.conn.limitIncoming?.(bytes, reason);
  }
  return c.bound.bytes;
}

/** The `callerBound` an actor's class declares, checked (undefined when it declares none). */
function callerBoundOf(instance: object, name: string): CallerBound | undefined {
  const b = (instance.constructor as { callerBound?: unknown } | undefined)?.callerBound as CallerBound | undefined;
  if (b === undefined) return undefined;
  if (b === null || typeof b !== 'object') throw Errors.invalidArg(`actor ${name} callerBound`, 'must be { bytes, reason }');
  checkIncomingLimit(b.bytes, b.reason);
  return { bytes: b.bytes, reason: b.reason };
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
  private readonly callers = new WeakMap<Connection, CallerState>();
  /** The class's `callerBound`: every caller's bound until a method raises it. */
  private readonly initialBound: CallerBound | undefined;
  private nextCaller = 0;
  private readonly listeners = new Set<Listener>();
  private nextDoor = 0;
  private stopped = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** The remote methods (the class's `static remote`, see `remoteMethods`) and their argument checks. */
  private readonly methods: Map<string, readonly ArgCheck[]>;

  private constructor(
    private readonly instance: object,
    private readonly opts: ServeActorOptions,
  ) {
    const spec = remoteSpecOf(instance);
    if (!spec) throw Errors.invalidArg(`actor ${opts.name}`, `(class ${instance.constructor?.name ?? '?'}) declares no remote methods: give the class a static \`remote = remoteMethods<Class>({ ... })\``);
    const names = new Map<string, readonly ArgCheck[]>();
    for (const [k, checks] of Object.entries(spec)) {
      if (HOOKS.has(k)) throw Errors.invalidArg(`actor ${opts.name} remote method ${k}`, 'is a lifecycle hook: only the runtime calls it');
      if (typeof (instance as Record<string, unknown>)[k] !== 'function') throw Errors.invalidArg(`actor ${opts.name} remote method ${k}`, 'is not a method of the instance');
      if (!Array.isArray(checks)) throw Errors.invalidArg(`actor ${opts.name} remote method ${k}`, 'needs an array of argument checks');
      names.set(k, checks);
    }
    this.methods = names;
    this.initialBound = callerBoundOf(instance, opts.name);
    const hook = (instance as { recvTargets?: (m: string, a: unknown[], x: readonly number[]) => readonly (Uint8Array | undefined)[] | undefined }).recvTargets;
    if (typeof hook === 'function') {
      this.targets = (value, xs) => {
        const q = value as { k?: string; m?: string; a?: unknown[] };
        if (q.k !== 'q' || typeof q.m !== 'string' || !Array.isArray(q.a) || !names.has(q.m)) return undefined;
        return hook.call(instance, q.m, q.a, xs);
      };
    }
  }

  /**
   * Start serving `instance` (the methods its class declares remote): open the first doors,
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
    const url = this.opts.listenUrl.replaceAll('{door}', `${this.opts.epoch}-${i}`).replaceAll('{actor}', this.opts.name);
    // the bound applies from the connection's first byte where the transport can (a frame right behind the handshake)
    const l = await this.opts.transport.listen(url, this.initialBound ? { incomingLimit: this.initialBound } : undefined);
    this.listeners.add(l);
    await this.opts.store.set(actorKeys.door(this.opts.name, this.opts.epoch, i), l.url);
    void l.accept({ timeoutMs: Infinity }).then(
      (conn) => {
        this.listeners.delete(l);
        void l.close().catch(() => {});
        if (this.stopped) return void conn.close().catch(() => {});
        this.conns.add(conn);
        void this.serve(conn);
        void this.openDoor().catch((e: Error) => process.emitWarning(`actor ${this.opts.name}: cannot open its next door: ${e.message}`));
      },
      () => {
        this.listeners.delete(l);
      },
    );
  }

  /** The actor's `recvTargets` hook applied to a request (see the module comment), or undefined without one. */
  private readonly targets: RecvTargets | undefined;

  private async serve(conn: Connection): Promise<void> {
    const caller = `${this.opts.epoch}:${this.nextCaller++}`;
    const state: CallerState = { id: caller, conn, bound: this.initialBound };
    this.callers.set(conn, state);
    if (state.bound) conn.limitIncoming?.(state.bound.bytes, state.bound.reason);
    // the actor's recvTargets hook sees `currentCaller()` as its method will
    const hook = this.targets;
    const targets: RecvTargets | undefined = hook && ((v, xs) => callerContext.run(state, () => hook(v, xs)));
    const bound = () => state.bound;
    for (;;) {
      let req: { k: string; id: number; m: string; a: unknown[] };
      try {
        req = (await recvParts(conn, targets, bound)).value as typeof req;
        const q = req as unknown as { k?: unknown; id?: unknown } | null;
        if (q === null || typeof q !== 'object' || q.k !== 'q' || typeof q.id !== 'number') throw Errors.badFrame(`request to actor ${this.opts.name}`, 'is not a request message');
      } catch (e) {
        // The caller went away, or sent a frame we cannot read (then caller and actor disagree on the protocol).
        if ((e as { code?: string }).code === 'ERR_BAD_FRAME') process.emitWarning(`actor ${this.opts.name}: dropping caller ${conn.remote}: ${(e as Error).message}`);
        this.conns.delete(conn);
        void conn.close().catch(() => {});
        if (!this.stopped) {
          try {
            (this.instance as { onCallerClosed?: (id: string) => void }).onCallerClosed?.(caller);
          } catch (err) {
            process.emitWarning(`actor ${this.opts.name}: onCallerClosed failed: ${(err as Error).message}`);
          }
        }
        return;
      }
      if (this.opts.mailbox === 'reentrant') void this.run(conn, req);
      else this.queue = this.queue.then(() => this.run(conn, req));
    }
  }

  private async run(conn: Connection, req: { id: number; m: string; a: unknown[] }): Promise<void> {
    let enc: EncodedMessage;
    let pool = this.pools.get(conn);
    if (!pool) this.pools.set(conn, (pool = new FramePool()));
    try {
      const checks = typeof req.m === 'string' ? this.methods.get(req.m) : undefined;
      if (!checks) throw Errors.invalidArg(`method ${JSON.stringify(req.m)}`, `is not a remote method of actor ${this.opts.name}`);
      checkArgs(this.opts.name, req.m, checks, req.a);
      const fn = (this.instance as Record<string, (...a: unknown[]) => unknown>)[req.m]!;
      // A plain return value is encoded in the same turn the method ran (a consistent snapshot of any state it
      // returns); a promise is awaited first.
      const r = callerContext.run(this.callers.get(conn) ?? { id: '?', conn, bound: undefined }, () => fn.apply(this.instance, req.a));
      const v = r !== null && typeof r === 'object' && typeof (r as { then?: unknown }).then === 'function' ? await r : r;
      // Big arrays in the result are sent from the actor's memory: an actor returning live state must not
      // change it before the reply is out (KVServer: guaranteed by its round structure; it copies otherwise).
      enc = encodeParts({ k: 'r', id: req.id, v }, { pool, externalMinBytes: this.opts.externalMinBytes ?? DEFAULT_EXTERNAL_MIN_BYTES });
    } catch (e) {
      enc = encodeParts({ k: 'e', id: req.id, e: errorInfo(e) });
    }
    if (conn.closed) return;
    await sendParts(conn, enc, pool, { timeoutMs: Infinity }).catch(() => {});
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
