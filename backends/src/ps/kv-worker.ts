// Over 500 lines: the KVWorker API, one method per user call over ps/worker/: one surface, kept whole.
import { ActorClient, Errors, isShoalError, type Store, type Transport } from '@shoal/core';
import { allocFloat, DEFAULT_BIG_KEY_BOUND, KeyLayout, type FloatArray, type KeySpec } from './key-layout.js';
import type { KVServer } from './kv-server.js';
import type { GuardedCall, KeyState, PsReplies, PsRequests, RowsReply } from './protocol.js';
import { joinKeyState, sliceKeyState, type KeyExport } from './worker/key-state.js';
import { mergeRows } from '../row-sparse.js';
import { GuardedBatches } from './worker/guarded-batch.js';
import { PullOrder } from './worker/pull-order.js';
import { collect, perServer, splitPart, type ServerPart } from './worker/requests.js';
import { landValues, ServerLinks } from './worker/server-links.js';
import { StagingPlane } from './worker/staging.js';

/**
 * The worker side of the parameter server (ps-lite's `KVWorker` on its `Customer`): slices batched key
 * operations over the servers with the shared `KeyLayout`, sends one request per server, and tracks each key's
 * push counter so pulls wait for the pushes before them and resent pushes are applied once. The parts live in
 * `worker/`: the links to the servers with resend after a restart (`server-links.ts`), the same-host staging
 * buffers (`staging.ts`), push-after-pull ordering (`pull-order.ts`) and request splitting (`requests.ts`); the
 * requests themselves are those of `protocol.ts`.
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
   * Over messages (servers off this worker's host, or `sharedMemory: false`), a server's part of a dense `pull` or
   * `pushPull` goes as concurrent requests of at least this many bytes of values each, cut at key boundaries
   * (default 0: one request per server). The server answers each request once its keys' round is complete, so the
   * values of the first keys travel back while the gradients of later ones still arrive: push and pull overlap on
   * a full-duplex link instead of taking turns. Pays where the servers' link is the limit (a 1 Gbit/s link: 1.3x
   * rounds/s at 1 MiB, 1.4x at 16 MiB with 64 KiB); costs where the CPU is (loopback or 10 Gbit/s: 0.35-0.65x),
   * hence off by default. Figures: bench/README.md, "cluster".
   */
  requestBytes?: number;
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
  /** The servers' consistency mode (from their hello; default `sync`). */
  mode?: 'sync' | 'async';
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

/** `KVWorkerOptions.requestBytes`'s default: one request per server (splitting costs CPU, see the option). */
export const DEFAULT_REQUEST_BYTES = 0;

export const defaultServerName = (i: number) => `ps-server-${i}`;

/**
 * A collective's signature check riding on its data requests (`PsRequests.guarded`, one round trip instead of a
 * gather and then the data): every server that gets a part of the collective, and server 0 always, joins gather
 * `tag` with `sig` and runs the part only when all workers' signatures agree.
 */
export interface Guard {
  tag: string;
  op: string;
  sig: unknown;
  /** Throws the collective's error from the gathered signatures when they disagree (as the servers found). */
  check(all: unknown[]): void;
}

export class KVWorker {
  readonly rank: number;
  readonly numWorkers: number;
  /** The servers' mode: `sync` rounds, or `async` (each push applied on arrival, see `KVServerOptions.mode`). */
  readonly mode: 'sync' | 'async';
  readonly layout: KeyLayout;
  /** Pushes issued per key (the counter the next push carries). */
  private readonly issued = new Map<string, number>();
  private readonly links: ServerLinks;
  private readonly staging: StagingPlane;
  private readonly order = new PullOrder();
  private readonly batches: GuardedBatches;
  private readonly requestBytes: number;

  constructor(o: KVWorkerOptions) {
    if (!Number.isInteger(o.numWorkers) || o.numWorkers < 1) throw Errors.invalidArg('numWorkers', `must be a positive integer, got ${o.numWorkers}`);
    if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.numWorkers) throw Errors.invalidArg('rank', `must be in [0, ${o.numWorkers}), got ${o.rank}`);
    if (o.servers.length < 1) throw Errors.invalidArg('servers', 'must name at least one server');
    this.rank = o.rank;
    this.numWorkers = o.numWorkers;
    this.mode = o.mode ?? 'sync';
    if (o.requestBytes !== undefined && !(Number.isInteger(o.requestBytes) && o.requestBytes >= 0)) throw Errors.invalidArg('requestBytes', `must be a non-negative integer, got ${o.requestBytes}`);
    this.requestBytes = o.requestBytes ?? DEFAULT_REQUEST_BYTES;
    this.layout = new KeyLayout(o.servers.length, o.bigKeyBound ?? DEFAULT_BIG_KEY_BOUND);
    this.links = new ServerLinks(o.servers, o.rank, !!o.resendAfterRestart, {
      dropped: (s) => this.staging.dropped(s),
      restored: (s) => this.staging.restored(s),
    });
    this.staging = new StagingPlane(o, this.layout, this.links);
    this.batches = new GuardedBatches(this.links, o.rank);
  }

  /**
   * Connect to servers `ps-server-0..S-1` found through the store, check they were started for this job
   * (server count, worker count: ERR_CONFIG otherwise) and adopt their big-key bound, so the layout agrees.
   */
  static async connect(o: ConnectKVWorkerOptions): Promise<KVWorker> {
    const name = o.serverName ?? defaultServerName;
    // Calls wait a little longer than the servers do: a request that cannot complete gets the server's
    // ERR_TIMEOUT, which names the workers it waited for, rather than a bare call timeout here.
    const timeoutMs = o.timeoutMs === undefined ? undefined : o.timeoutMs + Math.min(2000, Math.max(100, o.timeoutMs / 4));
    const servers = await Promise.all(
      Array.from({ length: o.numServers }, (_, i) => ActorClient.connect<KVServer>(name(i), { store: o.store, transport: o.transport, timeoutMs })),
    );
    try {
      const hellos = await Promise.all(servers.map((c) => c.api.hello(o.rank)));
      hellos.forEach((h, i) => servers[i]!.limitOutgoing(h.callerBound, `server ${i}'s bound before keys are declared (KVWorker.declare)`));
      hellos.forEach((h, i) => {
        const bad = (what: string, theirs: unknown, ours: unknown) =>
          Errors.config(what, `server ${name(i)} has ${what} = ${String(theirs)}, worker ${o.rank} expects ${String(ours)}`);
        if (h.serverIndex !== i) throw bad('serverIndex', h.serverIndex, i);
        if (h.numServers !== o.numServers) throw bad('numServers', h.numServers, o.numServers);
        if (h.numWorkers !== o.numWorkers) throw bad('numWorkers', h.numWorkers, o.numWorkers);
        if (o.bigKeyBound !== undefined && h.bigKeyBound !== o.bigKeyBound) throw bad('bigKeyBound', h.bigKeyBound, o.bigKeyBound);
        if (h.bigKeyBound !== hellos[0]!.bigKeyBound) throw bad('bigKeyBound', h.bigKeyBound, hellos[0]!.bigKeyBound);
        if (h.mode !== hellos[0]!.mode) throw bad('mode', h.mode, hellos[0]!.mode);
      });
      return new KVWorker({ ...o, servers, bigKeyBound: hellos[0]!.bigKeyBound, serverHosts: hellos.map((h) => h.hostId), mode: hellos[0]!.mode === 'async' ? 'async' : 'sync' });
    } catch (e) {
      await Promise.all(servers.map((c) => c.close()));
      throw e;
    }
  }

  get numServers(): number {
    return this.links.size;
  }

  /**
   * Declare keys on every worker (same specs, same order); rank 0's `values` become the initial values (other
   * ranks' values are ignored). Keys a server already holds (from a checkpoint) keep their values, and this
   * worker's counters resume from the server. Resolves when every key exists on its servers. `restore` (rank 0,
   * optional): per key, a checkpoint's optimizer state and round count (`exportKeys`); every worker's counters
   * then resume from that round.
   */
  async init(specs: readonly KeySpec[], values?: readonly FloatArray[], restore?: readonly (KeyState | null)[]): Promise<void> {
    if (restore !== undefined && (this.rank !== 0 || restore.length !== specs.length)) throw Errors.invalidArg('restore', `is rank 0's, one entry per key (${specs.length})`);
    const restoreOf: (KeyState | null)[][] = Array.from({ length: this.numServers }, () => []);
    if (this.rank === 0 && (!values || values.length !== specs.length)) throw Errors.invalidArg('values', `rank 0 must give one initial value per key (${specs.length})`);
    await this.declare(specs);
    const per = perServer(this.numServers);
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
        const r = restore?.[i];
        restoreOf[sl.server]!.push(r ? sliceKeyState(spec, sl, r) : null);
      }
    }
    await Promise.all(
      per.map(async (p, s) => {
        if (p.specs.length === 0) return;
        const args: PsRequests['init'] = [this.rank, p.specs, p.slices, this.rank === 0 ? p.values : null];
        if (restore !== undefined) args.push(restoreOf[s]!);
        const r = await this.links.call(s, 'init', args);
        p.specs.forEach((spec, i) => this.issued.set(spec.key, Math.max(this.issued.get(spec.key) ?? 0, r.resume[i]!)));
      }),
    );
    await this.staging.attach(specs);
  }

  /**
   * Tell every server the keys this worker will send values of, so each raises its bound on this worker's messages
   * to fit them (issue #15, `server/caller-bounds.ts`); keys declared before are skipped. `init` does it first:
   * call it yourself only when a message naming many keys (a collective's signature) goes out before their init.
   */
  declare(specs: readonly KeySpec[]): Promise<void> {
    return this.links.declare(specs);
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
    return this.staging.buffers(key);
  }

  /** Whether every server reaches this worker's dense values through the same-host staging buffers (see `buffers`). */
  get sharedPlane(): boolean {
    return this.staging.everyServerLocal;
  }

  /**
   * Push gradients (full-size, one per key). Resolves when every server acknowledged (applied) them. The arrays
   * are copied (into the request, or into the staging buffers) before this returns its promise.
   */
  async push(keys: readonly string[], grads: readonly FloatArray[]): Promise<void> {
    if (keys.length !== grads.length) throw Errors.invalidArg('grads', `must have one array per key (${keys.length}), got ${grads.length}`);
    const per = perServer(this.numServers);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const spec = this.layout.spec(key);
      if (spec.rows) throw Errors.invalidArg(`key ${key}`, 'is row-sparse: use rowSparsePush');
      const g = grads[i]!;
      if (g.length !== spec.size) throw Errors.invalidArg(`gradient of key ${key}`, `has ${g.length} elements, key has ${spec.size}`);
    }
    const use = this.staging.claim(keys, true, false);
    await this.staging.with(keys, use, true, false, async () => {
      this.collect(per, keys, grads, undefined, use, true);
      const before = this.order.after(keys);
      if (before) await before;
      await Promise.all(
        per.map((p, s) => {
          if (!p.keys.length) return undefined;
          const sent: PsRequests['push'] = [this.rank, p.keys, p.counters, p.arrays];
          return use?.[s] ? this.links.call(s, 'push', [this.rank, p.keys, p.counters, p.keys.map(() => null)], undefined, { args: sent }) : this.links.call(s, 'push', sent);
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
    const use = this.staging.claim(keys, false, true);
    await this.staging.with(keys, use, false, true, async () => {
      const per = perServer(this.numServers);
      this.collect(per, keys, undefined, res, use, false);
      await this.landDense('pull', keys, per, use, (p, shared) => (shared ? [this.rank, p.keys, p.counters, true] : [this.rank, p.keys, p.counters]));
    });
    return res;
  }

  /**
   * Push then pull the same keys in one round trip per server (`outs` may be the gradient arrays themselves; as
   * for `pull`, leave them alone until the promise settles).
   */
  async pushPull(keys: readonly string[], grads: readonly FloatArray[], outs?: readonly FloatArray[], guard?: Guard): Promise<FloatArray[]> {
    if (keys.length !== grads.length) throw Errors.invalidArg('grads', `must have one array per key (${keys.length}), got ${grads.length}`);
    if (guard && !this.guardable) throw Errors.state('guarded requests need a KVWorker without resendAfterRestart');
    const res = this.denseOutputs(keys, outs, 'use rowSparsePush/rowSparsePull', grads);
    const use = this.staging.claim(keys, true, true);
    await this.staging.with(keys, use, true, true, async () => {
      const per = perServer(this.numServers);
      const counted = keys.map((k) => this.issued.get(k));
      this.collect(per, keys, grads, res, use, true);
      // Refused by the servers (the signatures disagree): nothing was pushed, the counters go back.
      const refused = () => keys.forEach((k, i) => (counted[i] === undefined ? this.issued.delete(k) : this.issued.set(k, counted[i]!)));
      // One request per server; the server has received every gradient before it replies, and only its reply
      // lands in `outs`, so `outs` may be the gradient arrays themselves.
      await this.landDense(
        'pushPull',
        keys,
        per,
        use,
        (p, shared) => (shared ? [this.rank, p.keys, p.counters, p.keys.map(() => null), true] : [this.rank, p.keys, p.counters, p.arrays]),
        this.order.after(keys),
        guard && { guard, refused },
      );
    });
    return res;
  }

  private collect(per: ServerPart[], keys: readonly string[], grads: readonly FloatArray[] | undefined, outs: readonly FloatArray[] | undefined, use: boolean[] | null, count: boolean): void {
    collect(this.layout, this.issued, (k) => this.staging.buffers(k), per, keys, grads, outs, use, count);
  }

  /**
   * One `method` request to every server with a part of `keys` (after `before`, when given), each reply landed in
   * its targets (from the staging buffers for servers in `use`); registered as the pending pull of `keys` until
   * it settles.
   */
  private async landDense<M extends 'pull' | 'pushPull'>(
    method: M,
    keys: readonly string[],
    per: ServerPart[],
    use: boolean[] | null,
    args: (p: ServerPart, shared: boolean) => PsRequests[M],
    before?: Promise<unknown>,
    guarded?: { guard: Guard; refused: () => void },
  ): Promise<void> {
    const done = (async () => {
      if (before) await before;
      await Promise.all(
        per.map(async (p, s) => {
          if (guarded) {
            // Server 0 always checks the signatures, also without a part (see `Guard`).
            if (!p.keys.length && s !== 0) return;
            const calls: GuardedCall[] = p.keys.length ? [[method, args(p, !!use?.[s])] as GuardedCall] : [];
            if (use?.[s]) this.links.sharedCalls++;
            const got = await this.guardedCall(s, guarded.guard, calls, guarded.refused);
            if (p.keys.length) landValues(method, s, p.keys, got[0] as (FloatArray | null)[], p.targets, p.staged);
            return;
          }
          if (!p.keys.length) return;
          if (use?.[s]) {
            const plain = { args: args(p, false), replyInto: p.targets };
            landValues(method, s, p.keys, (await this.links.call(s, method, args(p, true), undefined, plain)) as (FloatArray | null)[], p.targets, p.staged);
            return;
          }
          await Promise.all(
            splitPart(p, this.requestBytes).map(async (q) => landValues(method, s, q.keys, (await this.links.call(s, method, args(q, false), q.targets)) as (FloatArray | null)[], q.targets, q.staged)),
          );
        }),
      );
    })();
    this.order.track(keys, done);
    await done;
  }

  /** Whether `Guard`s may be passed: not with `resendAfterRestart` (a restarted server has lost its gathers). */
  get guardable(): boolean {
    return !this.links.resends;
  }

  /**
   * One guarded request to server `s` (see `Guard`): the calls' replies. When the servers refuse, `refused()` runs
   * (nothing was applied) and `guard.check` throws the collective's error.
   */
  private async guardedCall(s: number, guard: Guard, calls: GuardedCall[], refused: () => void): Promise<unknown[]> {
    let r: PsReplies['guarded'];
    try {
      r = await this.batches.call(s, [guard.tag, guard.op, guard.sig, calls]);
    } catch (e) {
      if (isShoalError(e, 'ERR_MISMATCH')) refused(); // the gather itself failed (another operation at this tag)
      throw e;
    }
    if (r.values !== null) return r.values;
    refused();
    guard.check(r.all);
    throw Errors.state(`server ${s} refused ${guard.op} (${guard.tag}) but the signatures agree here`);
  }

  /**
   * Push rows of a row-sparse key. `rowIds` may be unsorted and repeat (duplicates are summed here, so each
   * row crosses the wire once). In sync mode every worker must call this once per round (an empty push is fine).
   */
  async rowSparsePush(key: string, rowIds: Int32Array, rows: FloatArray): Promise<void> {
    const pushes = this.sparsePushes(key, rowIds, rows);
    const slices = this.layout.slicesOf(key);
    await Promise.all(pushes.map((a, j) => this.links.call(slices[j]!.server, 'rowSparsePush', a)));
  }

  /**
   * Checked, merged and counted rows of a row-sparse push (see `rowSparsePush`): the request of each of the key's
   * slices, in slice order.
   */
  private sparsePushes(key: string, rowIds: Int32Array, rows: FloatArray): PsRequests['rowSparsePush'][] {
    const spec = this.layout.spec(key);
    if (!spec.rows) throw Errors.invalidArg(`key ${key}`, 'is dense: use push');
    const { numRows, rowSize } = spec.rows;
    if (rows.length !== rowIds.length * rowSize) throw Errors.invalidArg(`rows of key ${key}`, `must have rowIds.length * ${rowSize} = ${rowIds.length * rowSize} values, got ${rows.length}`);
    const { ids, rows: packed } = mergeRows(rowIds, rows, rowSize, numRows, `key ${key}`);
    const c = this.issued.get(key) ?? 0;
    this.issued.set(key, c + 1);
    let lo = 0;
    return this.layout.slicesOf(key).map((sl) => {
      let hi = lo;
      while (hi < ids.length && ids[hi]! < sl.rowEnd!) hi++;
      const a = lo;
      lo = hi;
      return [this.rank, key, c, ids.subarray(a, hi), packed.subarray(a * rowSize, hi * rowSize)];
    });
  }

  /**
   * `rowSparsePush` then `rowSparsePullLast` of the round it completes, in one guarded request per server (see
   * `Guard`): the merged rows of the round, sorted by row id.
   */
  async rowSparsePushPullLast(key: string, rowIds: Int32Array, rows: FloatArray, guard: Guard): Promise<{ rowIds: Int32Array; rows: FloatArray }> {
    if (!this.guardable) throw Errors.state('guarded requests need a KVWorker without resendAfterRestart');
    const pushes = this.sparsePushes(key, rowIds, rows);
    const c = pushes[0]![2];
    const refused = () => void this.issued.set(key, c);
    const slices = this.layout.slicesOf(key);
    const calls = slices.map((sl, j) => [sl.server, [['rowSparsePush', pushes[j]!], ['rowSparsePull', [this.rank, key, c + 1, null]]]] as [number, GuardedCall[]]);
    if (!slices.some((sl) => sl.server === 0)) calls.push([0, []]);
    const got = await Promise.all(calls.map(([s, cs]) => this.guardedCall(s, guard, cs, refused)));
    return this.concatRows(key, got.slice(0, slices.length).map((v) => v[1] as RowsReply));
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
        const got = await this.links.call(sl.server, 'rowSparsePull', [this.rank, key, need, Int32Array.from(a.ids)]);
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
    return this.concatRows(key, await Promise.all(this.layout.slicesOf(key).map((sl) => this.links.call(sl.server, 'rowSparsePull', [this.rank, key, need, null]))));
  }

  /** The slices' rows of row-sparse key `key`, one after another (slices are row ranges in order). */
  private concatRows(key: string, parts: readonly RowsReply[]): { rowIds: Int32Array; rows: FloatArray } {
    const spec = this.layout.spec(key);
    if (!spec.rows) throw Errors.invalidArg(`key ${key}`, 'is dense');
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

  /**
   * Every worker contributes `value` under `tag`; returns all values in rank order (server 0 collects). `op` names
   * the operation: if workers reach `tag` with different operations, all of them get ERR_MISMATCH at once.
   */
  async gather<T>(tag: string, value: T, op?: string): Promise<T[]> {
    return (await this.links.call(0, 'gather', op === undefined ? [this.rank, tag, value] : [this.rank, tag, value, op])) as T[];
  }

  /**
   * A copy of each key's value and optimizer state from the servers, for a checkpoint the workers keep (restore it
   * with `init(specs, values, restore)` on fresh servers). Sync mode: call it between this worker's push of a
   * round settling and its next push; no other worker can move the keys past that round meanwhile.
   */
  async exportKeys(keys: readonly string[]): Promise<KeyExport[]> {
    return Promise.all(keys.map(async (key) => {
      const spec = this.layout.spec(key);
      const slices = this.layout.slicesOf(key);
      return joinKeyState(spec, slices, await Promise.all(slices.map((sl) => this.links.call(sl.server, 'exportKey', [key]))));
    }));
  }

  /** Ask every server to write its checkpoint now. */
  async checkpoint(): Promise<{ path: string; bytes: number }[]> {
    return Promise.all(this.links.clients.map((_, s) => this.links.call(s, 'checkpoint', [])));
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
    return { ...this.links.stats(), sharedCalls: this.links.sharedCalls };
  }

  /** The client of server `s` (e.g. for `server(s).api.stats()`). */
  server(s: number): ActorClient<KVServer> {
    return this.links.clients[s]!;
  }

  async close(): Promise<void> {
    this.staging.close();
    await this.links.close();
  }
}
