import { ActorClient, Errors, isShoalError, localHostId, ShoalError, type ShoalErrorCode, type Store, type Transport } from '@shoal/core';
import { createSharedRegion, type SharedRegion } from '@shoal/core/transport';
import { allocFloat, DEFAULT_BIG_KEY_BOUND, floatArrayClass, KeyLayout, type FloatArray, type KeySpec } from './key-layout.js';
import type { KVServer } from './kv-server.js';
import { mergeRows } from '../row-sparse.js';

/**
 * The worker side of the parameter server (ps-lite's `KVWorker` on its `Customer`): slices batched key
 * operations over the servers with the shared `KeyLayout`, sends one request per server, and tracks each key's
 * push counter so pulls wait for the pushes before them and resent pushes are applied once.
 *
 * Example:
 *   const kv = await KVWorker.connect({ rank, numWorkers: 2, numServers: 2, store, transport });
 *   await kv.init([{ key: 'w', size: 4 }], [new Float32Array(4)]);
 *   await kv.push(['w'], [grad]);
 *   const [w] = await kv.pull(['w']);
 *
 * Not reentrant across ranks: one KVWorker per worker rank. Arrays passed in are copied into the request before
 * the call returns its promise; arrays returned belong to the caller.
 */
export interface KVWorkerOptions {
  rank: number;
  numWorkers: number;
  /** One client per server, in server order. */
  servers: ActorClient<KVServer>[];
  bigKeyBound?: number;
  /**
   * When a server dies, wait for its next incarnation (a supervisor restarting it from its checkpoint) and
   * resend the calls that failed; pushes carry counters, so none is applied twice. Default false: fail with
   * ERR_PEER_CLOSED naming the server.
   */
  resendAfterRestart?: boolean;
  /**
   * Same-host data plane (default true): for servers on this worker's host, each dense key gets a gradient and an
   * output buffer in a shared-memory region the servers map (`buffers(key)`); pushes and pulls then move only
   * small control messages, the server reads gradients from and writes values into those buffers in its update
   * pass. False: every value travels in messages.
   */
  sharedMemory?: boolean;
  /** Host id of each server (from its hello; `localHostId()` form). Servers on this host use the data plane. */
  serverHosts?: readonly string[];
  /** This worker's host id (default `localHostId()`; tests use another to act as a remote worker). */
  hostId?: string;
  /**
   * Names of this worker's staging regions start `shoal-${regionPrefix}-w${rank}-` (default 'ps'): give the job id,
   * and a launcher's sweep of its job's shared-memory names (`removeStaleSegments(jobId)`) also removes a region
   * a worker killed while the servers were mapping it left behind.
   */
  regionPrefix?: string;
}

export interface ConnectKVWorkerOptions extends Omit<KVWorkerOptions, 'servers'> {
  numServers: number;
  store: Store;
  transport: Transport;
  /** Actor name of server i (default `ps-server-${i}`). */
  serverName?: (i: number) => string;
  timeoutMs?: number;
}

export const defaultServerName = (i: number) => `ps-server-${i}`;

/** Codes a server error keeps when it reaches the worker (so ERR_MISMATCH stays ERR_MISMATCH). */
const PASS_THROUGH: ReadonlySet<string> = new Set(['ERR_MISMATCH', 'ERR_TIMEOUT', 'ERR_NAN', 'ERR_STATE', 'ERR_CLOSED', 'ERR_PEER_CLOSED']);

export class KVWorker {
  readonly rank: number;
  readonly numWorkers: number;
  readonly layout: KeyLayout;
  private readonly servers: ActorClient<KVServer>[];
  private readonly issued = new Map<string, number>();
  private readonly reconnecting = new Map<number, Promise<void>>();
  /** Same-host data plane: each dense key's staging buffers (full-size views into a shared region). */
  private readonly staging = new Map<string, { grad: FloatArray; out: FloatArray }>();
  /** Per server: the keys whose slices it reads from and writes into the staging buffers. */
  private readonly sharedKeys: Set<string>[];
  /** Keys whose staging gradient (resp. output) an operation in flight is using: others send data in messages. */
  private readonly gradBusy = new Set<string>();
  private readonly outBusy = new Set<string>();
  /** The staging regions, with what each server mapped of them (for a restarted server to map again). */
  private readonly regions: { region: SharedRegion; entries: Map<number, { key: string; grad: number; out: number }[]> }[] = [];
  private sharedCalls = 0;
  /** Keys retired from the data plane (see `retireShared`): never attached again. */
  private readonly retired = new Set<string>();

  constructor(private readonly o: KVWorkerOptions) {
    if (!Number.isInteger(o.numWorkers) || o.numWorkers < 1) throw Errors.invalidArg('numWorkers', `must be a positive integer, got ${o.numWorkers}`);
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.numWorkers) throw Errors.invalidArg('rank', `must be in [0, ${o.numWorkers}), got ${o.rank}`);
    if (o.servers.length < 1) throw Errors.invalidArg('servers', 'must name at least one server');
    this.rank = o.rank;
    this.numWorkers = o.numWorkers;
    this.servers = o.servers;
    this.layout = new KeyLayout(o.servers.length, o.bigKeyBound ?? DEFAULT_BIG_KEY_BOUND);
    this.sharedKeys = o.servers.map(() => new Set<string>());
    // Fail fast: when any server is lost (and we do not wait for restarts), every call in flight to any server
    // fails with that error, so a worker blocked on a healthy server (waiting for a round the lost server's
    // death stalled) does not sit out the timeout.
    if (!o.resendAfterRestart) {
      o.servers.forEach((c) =>
        c.onDisconnect((err) => {
          if (this.broken) return;
          this.broken = err;
          for (const f of this.inflight) f(err);
          this.inflight.clear();
        }),
      );
    }
  }

  private broken: Error | undefined;
  private readonly inflight = new Set<(e: Error) => void>();
  /**
   * Dense pulls (and pushPulls) still in flight, per key. In sync mode a server replies from its live weights
   * without a copy (large replies are copied into the link by its writer thread after the call returned), so it
   * must not apply this worker's next push to a key before the reply for that key has arrived here: a push waits
   * for the pulls of its keys issued before it (MXNet's per-key ordering of push after pull).
   */
  private readonly pulling = new Map<string, Promise<void>>();

  /** Register `done` as the pending pull of `keys` (cleared when it settles, unless a later pull replaced it). */
  private trackPull(keys: readonly string[], done: Promise<unknown>): void {
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    for (const k of keys) this.pulling.set(k, settled);
    void settled.then(() => {
      for (const k of keys) if (this.pulling.get(k) === settled) this.pulling.delete(k);
    });
  }

  /** Resolves once every pull of `keys` issued so far has settled (at once when there is none). */
  private afterPulls(keys: readonly string[]): Promise<unknown> | undefined {
    if (this.pulling.size === 0) return undefined;
    const waits = new Set<Promise<void>>();
    for (const k of keys) {
      const w = this.pulling.get(k);
      if (w) waits.add(w);
    }
    return waits.size ? Promise.all(waits) : undefined;
  }

  /**
   * Connect to servers `ps-server-0..S-1` found through the store, check they were started for this job
   * (server count, worker count: ERR_CONFIG otherwise) and adopt their big-key bound, so the layout agrees.
   */
  static async connect(o: ConnectKVWorkerOptions): Promise<KVWorker> {
    const name = o.serverName ?? defaultServerName;
    const servers = await Promise.all(
      Array.from({ length: o.numServers }, (_, i) => ActorClient.connect<KVServer>(name(i), { store: o.store, transport: o.transport, timeoutMs: o.timeoutMs })),
    );
    try {
      const hellos = await Promise.all(servers.map((c) => c.api.hello(o.rank)));
      hellos.forEach((h, i) => {
        const bad = (what: string, theirs: unknown, ours: unknown) =>
          Errors.config(what, `server ${name(i)} has ${what} = ${String(theirs)}, worker ${o.rank} expects ${String(ours)}`);
        if (h.serverIndex !== i) throw bad('serverIndex', h.serverIndex, i);
        if (h.numServers !== o.numServers) throw bad('numServers', h.numServers, o.numServers);
        if (h.numWorkers !== o.numWorkers) throw bad('numWorkers', h.numWorkers, o.numWorkers);
        if (o.bigKeyBound !== undefined && h.bigKeyBound !== o.bigKeyBound) throw bad('bigKeyBound', h.bigKeyBound, o.bigKeyBound);
        if (h.bigKeyBound !== hellos[0]!.bigKeyBound) throw bad('bigKeyBound', h.bigKeyBound, hellos[0]!.bigKeyBound);
      });
      return new KVWorker({ ...o, servers, bigKeyBound: hellos[0]!.bigKeyBound, serverHosts: hellos.map((h) => h.hostId) });
    } catch (e) {
      await Promise.all(servers.map((c) => c.close()));
      throw e;
    }
  }

  get numServers(): number {
    return this.servers.length;
  }

  /**
   * Declare keys on every worker (same specs, same order); rank 0's `values` become the initial values (other
   * ranks' values are ignored). Keys a server already holds (from a checkpoint) keep their values, and this
   * worker's counters resume from the server. Resolves when every key exists on its servers.
   */
  async init(specs: readonly KeySpec[], values?: readonly FloatArray[]): Promise<void> {
    if (this.rank === 0 && (!values || values.length !== specs.length)) throw Errors.invalidArg('values', `rank 0 must give one initial value per key (${specs.length})`);
    const per = this.perServer();
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i]!;
      const slices = this.layout.add(spec);
      const v = this.rank === 0 ? values![i]! : undefined;
      if (v && v.length !== spec.size) throw Errors.invalidArg(`init value of key ${spec.key}`, `has ${v.length} elements, spec says ${spec.size}`);
      for (const sl of slices) {
        const p = per[sl.server]!;
        p.specs.push(spec);
        p.slices.push(sl);
        p.values.push(v ? v.subarray(sl.start, sl.end) : null);
      }
    }
    await Promise.all(
      per.map(async (p, s) => {
        if (p.specs.length === 0) return;
        const r = (await this.callServer(s, 'init', [this.rank, p.specs, p.slices, this.rank === 0 ? p.values : null])) as { resume: number[] };
        p.specs.forEach((spec, i) => this.issued.set(spec.key, Math.max(this.issued.get(spec.key) ?? 0, r.resume[i]!)));
      }),
    );
    await this.attachShared(specs);
  }

  /**
   * Give the dense keys of `specs` that have none yet staging buffers in one new shared region, and let every
   * server on this host map it. The region's name is removed once they have (with `resendAfterRestart`: at
   * close, so a restarted server can map it again): nothing is left in /dev/shm if a process dies, and the
   * mappings live until both sides drop them. A server that cannot map it (another /dev/shm) is simply not used
   * that way.
   */
  private async attachShared(specs: readonly KeySpec[]): Promise<void> {
    if (this.o.sharedMemory === false || !this.o.serverHosts) return;
    const here = this.o.hostId ?? localHostId();
    const local = this.o.serverHosts.map((h) => h === here);
    const fresh = [...new Map(specs.filter((sp) => !sp.rows && !this.staging.has(sp.key)).map((sp) => [sp.key, sp])).values()];
    if (!local.some(Boolean) || fresh.length === 0) return;
    const align = (n: number) => Math.ceil(n / 64) * 64;
    let bytes = 0;
    const at = fresh.map((sp) => {
      const b = align(sp.size * floatArrayClass(sp.dtype).BYTES_PER_ELEMENT);
      const grad = bytes;
      bytes += 2 * b;
      return { grad, out: grad + b };
    });
    let region: SharedRegion;
    try {
      region = createSharedRegion(`${this.o.regionPrefix ?? 'ps'}-w${this.rank}`, Math.max(bytes, 64));
    } catch (e) {
      // no room in /dev/shm (or no shm at all): these keys' values travel in messages
      if (isShoalError(e, 'ERR_TRANSPORT')) return;
      throw e;
    }
    const mapped = new Map<number, { key: string; grad: number; out: number }[]>();
    this.regions.push({ region, entries: mapped }); // close() removes the name if it is still there
    try {
      fresh.forEach((sp, i) => {
        const Ctor = floatArrayClass(sp.dtype);
        this.staging.set(sp.key, { grad: new Ctor(region.buffer, at[i]!.grad, sp.size), out: new Ctor(region.buffer, at[i]!.out, sp.size) });
      });
      await Promise.all(
        this.servers.map(async (_, s) => {
          if (!local[s]) return;
          const entries: { key: string; grad: number; out: number }[] = [];
          fresh.forEach((sp, i) => {
            for (const sl of this.layout.slicesOf(sp.key)) {
              if (sl.server !== s) continue;
              const off = sl.start * floatArrayClass(sp.dtype).BYTES_PER_ELEMENT;
              entries.push({ key: sp.key, grad: at[i]!.grad + off, out: at[i]!.out + off });
            }
          });
          if (!entries.length) return;
          try {
            await this.callServer(s, 'attachShared', [this.rank, region.name, region.bytes, entries]);
          } catch (e) {
            if (isShoalError(e, 'ERR_REMOTE') && e.context.remoteCode === 'ERR_TRANSPORT') return; // cannot map it: messages
            throw e;
          }
          for (const e of entries) this.sharedKeys[s]!.add(e.key);
          mapped.set(s, entries);
        }),
      );
    } finally {
      // With resends after a restart the name stays until close(), so a restarted server can map the region
      // again (a killed worker's names: its servers remove them, and the launcher's sweep).
      if (!this.o.resendAfterRestart) region.unlink();
    }
  }

  /** A restarted server `s` (new incarnation, empty views): let it map this worker's regions again. */
  private async reattach(s: number): Promise<void> {
    for (const { region, entries } of this.regions) {
      const e = entries.get(s);
      if (!e) continue;
      try {
        await this.servers[s]!.call('attachShared', [this.rank, region.name, region.bytes, e]);
        for (const x of e) if (!this.retired.has(x.key)) this.sharedKeys[s]!.add(x.key);
      } catch {
        // it cannot (or is gone again): those keys stay on messages for this server
      }
    }
  }

  /**
   * The staging buffers of dense key `key` (same-host data plane; undefined when it has none): pass `grad` as the
   * key's gradient and `out` as its output to `push`/`pull`/`pushPull` and the worker copies nothing; the
   * servers read the gradient from and write the values into them. Write `grad` only while no push of the key is
   * in flight, and read `out` only after the pull settled. After an operation on the key failed without a reply
   * (timeout, lost server) a server may still read or write them: the key's values then travel in messages, and
   * the buffers are best not reused.
   */
  buffers(key: string): { grad: FloatArray; out: FloatArray } | undefined {
    return this.staging.get(key);
  }

  /**
   * Which servers this operation on `keys` may run over the staging buffers: servers holding every slice of
   * theirs there, when none of the keys' staging buffers this operation needs is in use. Marks them in use.
   */
  private claimShared(keys: readonly string[], grad: boolean, out: boolean): boolean[] | null {
    if (!this.staging.size) return null;
    if (new Set(keys).size !== keys.length) return null; // a key twice in one request: one staging buffer, two values
    for (const k of keys) {
      if (!this.staging.has(k) || (grad && this.gradBusy.has(k)) || (out && this.outBusy.has(k))) return null;
    }
    const per = this.servers.map(() => ({ any: false, all: true }));
    for (const k of keys) {
      for (const sl of this.layout.slicesOf(k)) {
        const p = per[sl.server]!;
        p.any = true;
        if (!this.sharedKeys[sl.server]!.has(k)) p.all = false;
      }
    }
    const use = per.map((p) => p.any && p.all);
    if (!use.some(Boolean)) return null;
    for (const k of keys) {
      if (grad) this.gradBusy.add(k);
      if (out) this.outBusy.add(k);
    }
    return use;
  }

  private releaseShared(keys: readonly string[], grad: boolean, out: boolean): void {
    for (const k of keys) {
      if (grad) this.gradBusy.delete(k);
      if (out) this.outBusy.delete(k);
    }
  }

  /**
   * An operation over the staging buffers of `keys` failed without a reply (a timeout, a lost server): a server
   * may still read the gradient buffer or write the output buffer later. Those keys leave the data plane for
   * good (their values travel in messages from now on), so no later operation shares the buffers with it.
   */
  private retireShared(keys: readonly string[]): void {
    for (const set of this.sharedKeys) for (const k of keys) set.delete(k);
    for (const k of keys) this.retired.add(k);
  }

  /** Run `op` with the staging buffers of `keys` claimed (`use`), releasing or retiring them after. */
  private async withShared<T>(keys: readonly string[], use: boolean[] | null, grad: boolean, out: boolean, op: () => Promise<T>): Promise<T> {
    if (!use) return op();
    try {
      return await op();
    } catch (e) {
      this.retireShared(keys);
      throw e;
    } finally {
      this.releaseShared(keys, grad, out);
    }
  }

  /**
   * Push gradients (full-size, one per key). Resolves when every server acknowledged (applied) them. The arrays
   * are copied (into the request, or into the staging buffers) before this returns its promise.
   */
  async push(keys: readonly string[], grads: readonly FloatArray[]): Promise<void> {
    if (keys.length !== grads.length) throw Errors.invalidArg('grads', `must have one array per key (${keys.length}), got ${grads.length}`);
    const per = this.perServer();
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const spec = this.layout.spec(key);
      if (spec.rows) throw Errors.invalidArg(`key ${key}`, 'is row-sparse: use rowSparsePush');
      const g = grads[i]!;
      if (g.length !== spec.size) throw Errors.invalidArg(`gradient of key ${key}`, `has ${g.length} elements, key has ${spec.size}`);
    }
    const use = this.claimShared(keys, true, false);
    await this.withShared(keys, use, true, false, async () => {
      this.collect(per, keys, grads, undefined, use, true);
      const before = this.afterPulls(keys);
      if (before) await before;
      await Promise.all(
        per.map((p, s) => {
          if (!p.keys.length) return undefined;
          const sent = [this.rank, p.keys, p.counters, p.arrays];
          return use?.[s] ? this.callServer(s, 'push', [this.rank, p.keys, p.counters, p.keys.map(() => null)], undefined, { args: sent }) : this.callServer(s, 'push', sent);
        }),
      );
    });
  }

  /**
   * Check that `keys` are dense keys (and `grads`, when given, their full size) and return the arrays the values
   * land in: `outs[i]` when given (checked to be full-size), else freshly allocated.
   */
  private denseOutputs(keys: readonly string[], outs: readonly FloatArray[] | undefined, sparseHint: string, grads?: readonly FloatArray[]): FloatArray[] {
    return keys.map((k, i) => {
      const spec = this.layout.spec(k);
      if (spec.rows) throw Errors.invalidArg(`key ${k}`, `is row-sparse: ${sparseHint}`);
      const g = grads?.[i];
      if (g && g.length !== spec.size) throw Errors.invalidArg(`gradient of key ${k}`, `has ${g.length} elements, key has ${spec.size}`);
      const o = outs?.[i];
      if (o && o.length !== spec.size) throw Errors.invalidArg(`output of key ${k}`, `has ${o.length} elements, key has ${spec.size}`);
      return o ?? allocFloat(spec.dtype, spec.size);
    });
  }

  /**
   * Pull values, waiting for this worker's earlier pushes. Writes into `outs[i]` when given (full-size), else
   * allocates. Returns the arrays. Big slices may be received straight into them (over the staging buffers or a
   * transport with `recvInto`), so `outs` must not be read or written until the promise settles; after a failure
   * they may hold part of the reply.
   */
  async pull(keys: readonly string[], outs?: readonly FloatArray[]): Promise<FloatArray[]> {
    const res = this.denseOutputs(keys, outs, 'use rowSparsePull');
    const use = this.claimShared(keys, false, true);
    await this.withShared(keys, use, false, true, async () => {
      const per = this.perServer();
      this.collect(per, keys, undefined, res, use, false);
      await this.landDense('pull', keys, per, use, (p, shared) => (shared ? [p.keys, p.counters, true] : [p.keys, p.counters]));
    });
    return res;
  }

  /**
   * Push then pull the same keys in one round trip per server (`outs` may be the gradient arrays themselves; as
   * for `pull`, leave them alone until the promise settles).
   */
  async pushPull(keys: readonly string[], grads: readonly FloatArray[], outs?: readonly FloatArray[]): Promise<FloatArray[]> {
    if (keys.length !== grads.length) throw Errors.invalidArg('grads', `must have one array per key (${keys.length}), got ${grads.length}`);
    const res = this.denseOutputs(keys, outs, 'use rowSparsePush/rowSparsePull', grads);
    const use = this.claimShared(keys, true, true);
    await this.withShared(keys, use, true, true, async () => {
      const per = this.perServer();
      this.collect(per, keys, grads, res, use, true);
      // One request per server; the server has received every gradient before it replies, and only its reply
      // lands in `outs`, so `outs` may be the gradient arrays themselves.
      await this.landDense(
        'pushPull',
        keys,
        per,
        use,
        (p, shared) => (shared ? [p.keys, p.counters, p.keys.map(() => null), true] : [p.keys, p.counters, p.arrays]),
        this.afterPulls(keys),
      );
    });
    return res;
  }

  /**
   * Split a dense operation on `keys` over the servers: per server the keys, counters (pushes: issued here;
   * pulls: the pushes so far), gradient slices and output slices. For servers in `use` the gradients are first
   * copied into the staging buffers (unless they are those buffers) and the slices point there, so a resend
   * after a server restart (which no longer knows the staging buffers) sends them from there.
   */
  private collect(
    per: ReturnType<KVWorker['perServer']>,
    keys: readonly string[],
    grads: readonly FloatArray[] | undefined,
    outs: readonly FloatArray[] | undefined,
    use: boolean[] | null,
    count: boolean,
  ): void {
    keys.forEach((key, i) => {
      const c = this.issued.get(key) ?? 0;
      if (count) this.issued.set(key, c + 1);
      const st = use ? this.staging.get(key) : undefined;
      const g = grads?.[i];
      for (const sl of this.layout.slicesOf(key)) {
        const p = per[sl.server]!;
        const shared = !!(st && use![sl.server]);
        p.keys.push(key);
        p.counters.push(c);
        if (g) {
          let arr = g.subarray(sl.start, sl.end);
          if (shared) {
            const dst = st!.grad.subarray(sl.start, sl.end);
            if (arr.buffer !== dst.buffer || arr.byteOffset !== dst.byteOffset) dst.set(arr);
            arr = dst;
          }
          p.arrays.push(arr);
        }
        if (outs) p.targets.push(outs[i]!.subarray(sl.start, sl.end));
        if (shared) p.staged.push(st!.out.subarray(sl.start, sl.end));
      }
    });
  }

  /**
   * One `method` request to every server with a part of `keys` (after `before`, when given), each reply landed in
   * its targets (from the staging buffers for servers in `use`); registered as the pending pull of `keys` until
   * it settles.
   */
  private async landDense(
    method: 'pull' | 'pushPull',
    keys: readonly string[],
    per: ReturnType<KVWorker['perServer']>,
    use: boolean[] | null,
    args: (p: ReturnType<KVWorker['perServer']>[number], shared: boolean) => unknown[],
    before?: Promise<unknown>,
  ): Promise<void> {
    const done = (async () => {
      if (before) await before;
      await Promise.all(
        per.map(async (p, s) => {
          if (!p.keys.length) return;
          const plain = { args: [this.rank, ...args(p, false)], replyInto: p.targets };
          const got = (await (use?.[s] ? this.callServer(s, method, [this.rank, ...args(p, true)], undefined, plain) : this.callServer(s, method, plain.args, p.targets))) as (FloatArray | null)[];
          landValues(method, s, p.keys, got, p.targets, p.staged);
        }),
      );
    })();
    this.trackPull(keys, done);
    await done;
  }

  /**
   * Push rows of a row-sparse key. `rowIds` may be unsorted and repeat (duplicates are summed here, so each
   * row crosses the wire once). In sync mode every worker must call this once per round (an empty push is fine).
   */
  async rowSparsePush(key: string, rowIds: Int32Array, rows: FloatArray): Promise<void> {
    const spec = this.layout.spec(key);
    if (!spec.rows) throw Errors.invalidArg(`key ${key}`, 'is dense: use push');
    const { numRows, rowSize } = spec.rows;
    if (rows.length !== rowIds.length * rowSize) throw Errors.invalidArg(`rows of key ${key}`, `must have rowIds.length * ${rowSize} = ${rowIds.length * rowSize} values, got ${rows.length}`);
    const { ids, rows: packed } = mergeRows(rowIds, rows, rowSize, numRows, `key ${key}`);
    const c = this.issued.get(key) ?? 0;
    this.issued.set(key, c + 1);
    let lo = 0;
    await Promise.all(
      this.layout.slicesOf(key).map((sl) => {
        let hi = lo;
        while (hi < ids.length && ids[hi]! < sl.rowEnd!) hi++;
        const a = lo;
        lo = hi;
        return this.callServer(sl.server, 'rowSparsePush', [this.rank, key, c, ids.subarray(a, hi), packed.subarray(a * rowSize, hi * rowSize)]);
      }),
    );
  }

  /** Pull rows `rowIds` (any order, repeats allowed) of a row-sparse key into `out` (or a new array). */
  async rowSparsePull(key: string, rowIds: Int32Array, out?: FloatArray): Promise<FloatArray> {
    const spec = this.layout.spec(key);
    if (!spec.rows) throw Errors.invalidArg(`key ${key}`, 'is dense: use pull');
    const { numRows, rowSize } = spec.rows;
    const res = out ?? allocFloat(spec.dtype, rowIds.length * rowSize);
    if (res.length !== rowIds.length * rowSize) throw Errors.invalidArg(`output of key ${key}`, `must have ${rowIds.length * rowSize} values, got ${res.length}`);
    const slices = this.layout.slicesOf(key);
    const ask: { ids: number[]; pos: number[] }[] = slices.map(() => ({ ids: [], pos: [] }));
    for (let i = 0; i < rowIds.length; i++) {
      const r = rowIds[i]!;
      if (!Number.isInteger(r) || r < 0 || r >= numRows) throw Errors.invalidArg(`row id ${r} of key ${key}`, `is outside [0, ${numRows})`);
      const j = slices.findIndex((s) => r < s.rowEnd!);
      ask[j]!.ids.push(r);
      ask[j]!.pos.push(i);
    }
    const need = this.issued.get(key) ?? 0;
    await Promise.all(
      slices.map(async (sl, j) => {
        const a = ask[j]!;
        if (!a.ids.length) return;
        const got = (await this.callServer(sl.server, 'rowSparsePull', [this.rank, key, need, Int32Array.from(a.ids)])) as { rows: FloatArray };
        for (let i = 0; i < a.pos.length; i++) res.set(got.rows.subarray(i * rowSize, (i + 1) * rowSize), a.pos[i]! * rowSize);
      }),
    );
    return res;
  }

  /**
   * The merged rows of the last completed sync round of a row-sparse key (after this worker's pushes): sorted
   * unique row ids touched by any worker and the sum of their pushes.
   */
  async rowSparsePullLast(key: string): Promise<{ rowIds: Int32Array; rows: FloatArray }> {
    const spec = this.layout.spec(key);
    if (!spec.rows) throw Errors.invalidArg(`key ${key}`, 'is dense');
    const need = this.issued.get(key) ?? 0;
    const parts = (await Promise.all(
      this.layout.slicesOf(key).map((sl) => this.callServer(sl.server, 'rowSparsePull', [this.rank, key, need, null])),
    )) as { rowIds: Int32Array; rows: FloatArray }[];
    const n = parts.reduce((a, p) => a + p.rowIds.length, 0);
    const rowIds = new Int32Array(n);
    const rows = allocFloat(spec.dtype, n * spec.rows.rowSize);
    let o = 0;
    for (const p of parts) {
      rowIds.set(p.rowIds, o);
      rows.set(p.rows, o * spec.rows.rowSize);
      o += p.rowIds.length;
    }
    return { rowIds, rows };
  }

  /** Every worker contributes `value` under `tag`; returns all values in rank order (server 0 collects). */
  async gather<T>(tag: string, value: T): Promise<T[]> {
    return (await this.callServer(0, 'gather', [this.rank, tag, value])) as T[];
  }

  /** Ask every server to write its checkpoint now. */
  async checkpoint(): Promise<{ path: string; bytes: number }[]> {
    return (await Promise.all(this.servers.map((_, s) => this.callServer(s, 'checkpoint', [])))) as { path: string; bytes: number }[];
  }

  /** Count of pushes this worker issued for `key`. */
  pushes(key: string): number {
    return this.issued.get(key) ?? 0;
  }

  /**
   * Bytes on the wire (request and reply frames) summed over all servers; `sharedCalls`: requests whose values
   * went through the staging buffers instead.
   */
  stats(): { bytesSent: number; bytesReceived: number; calls: number; sharedCalls: number } {
    const t = { bytesSent: 0, bytesReceived: 0, calls: 0, sharedCalls: this.sharedCalls };
    for (const c of this.servers) {
      const s = c.stats();
      t.bytesSent += s.bytesSent;
      t.bytesReceived += s.bytesReceived;
      t.calls += s.calls;
    }
    return t;
  }

  /** The client of server `s` (e.g. for `server(s).api.stats()`). */
  server(s: number): ActorClient<KVServer> {
    return this.servers[s]!;
  }

  async close(): Promise<void> {
    for (const r of this.regions) r.region.unlink();
    await Promise.all(this.servers.map((c) => c.close()));
  }

  private perServer() {
    return this.servers.map(() => ({
      keys: [] as string[],
      counters: [] as number[],
      arrays: [] as FloatArray[],
      targets: [] as FloatArray[],
      /** Staging output slices, when the reply comes through them (same order as `targets`). */
      staged: [] as FloatArray[],
      specs: [] as KeySpec[],
      slices: [] as ReturnType<KeyLayout['slicesOf']>,
      values: [] as (FloatArray | null)[],
    }));
  }

  /** Call server `s`; big arrays of the reply land straight in `replyInto` (see `CallOptions.replyInto`). */
  private async callServer(s: number, method: string, args: unknown[], replyInto?: readonly FloatArray[], resend?: { args: unknown[]; replyInto?: readonly FloatArray[] }): Promise<unknown> {
    let io = replyInto ? { replyInto } : undefined;
    if (resend) this.sharedCalls++;
    for (;;) {
      const c = this.servers[s]!;
      const epoch = c.epoch;
      try {
        if (this.o.resendAfterRestart) return await c.call(method, args, io);
        if (this.broken) throw this.broken;
        let fail!: (e: Error) => void;
        const lost = new Promise<never>((_, reject) => (fail = reject));
        this.inflight.add(fail);
        try {
          return await Promise.race([c.call(method, args, io), lost]);
        } finally {
          this.inflight.delete(fail);
        }
      } catch (e) {
        if (!this.o.resendAfterRestart || !isShoalError(e, 'ERR_PEER_CLOSED')) throw unwrapRemote(e);
        await this.reconnect(s, epoch + 1);
        // the new incarnation has not mapped the staging buffers: the data goes in the message
        if (resend) {
          args = resend.args;
          io = resend.replyInto ? { replyInto: resend.replyInto } : undefined;
        }
      }
    }
  }

  private reconnect(s: number, minEpoch: number): Promise<void> {
    const c = this.servers[s]!;
    if (c.epoch >= minEpoch) return Promise.resolve();
    let p = this.reconnecting.get(s);
    if (!p) {
      p = c
        .reconnect(minEpoch)
        .then(async () => {
          this.sharedKeys[s]!.clear();
          await c.api.hello(this.rank);
          await this.reattach(s);
        })
        .finally(() => this.reconnecting.delete(s));
      this.reconnecting.set(s, p);
    }
    return p;
  }
}

/**
 * Put a server's reply values into the caller's arrays: values that arrived straight in them (`replyInto`, or
 * the staging buffers when the caller passed those) are already there; others are copied.
 */
function landValues(what: string, s: number, keys: readonly string[], got: readonly (FloatArray | null)[], targets: readonly FloatArray[], staged: readonly FloatArray[]): void {
  if (got.length !== targets.length) throw Errors.badFrame(what, `server ${s} sent ${got.length} values, expected ${targets.length}`);
  got.forEach((g, i) => {
    const t = targets[i]!;
    if (g === null) {
      // written into the staging buffer by the server
      const st = staged[i];
      if (!st) throw Errors.badFrame(`${what} of ${keys[i]}`, `server ${s} replied through staging buffers this request did not use`);
      if (st.buffer !== t.buffer || st.byteOffset !== t.byteOffset) t.set(st);
      return;
    }
    if (g.length !== t.length) throw Errors.badFrame(`${what} of ${keys[i]}`, `server ${s} sent ${g.length} elements, expected ${t.length}`);
    if (g.buffer !== t.buffer || g.byteOffset !== t.byteOffset) t.set(g);
  });
}

/** A server-side ERR_MISMATCH (etc.) keeps its code on the worker; the ERR_REMOTE stays as the cause. */
function unwrapRemote(e: unknown): unknown {
  if (!isShoalError(e, 'ERR_REMOTE')) return e;
  const code = e.context.remoteCode;
  if (typeof code === 'string' && PASS_THROUGH.has(code)) return new ShoalError(code as ShoalErrorCode, e.message, e.context, e);
  return e;
}

