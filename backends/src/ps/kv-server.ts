import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { Errors, loadKernels, localHostId, ShoalError, type ActorContext, type ReduceKernels } from '@shoal/core';
import { openSharedRegion, unlinkSharedRegion } from '@shoal/core/transport';
import { currentCaller, decodeMessage, encodeMessage, externalRef } from '@shoal/core/actor';
import { allocFloat, DEFAULT_BIG_KEY_BOUND, describeSpec, sameSpec, sliceKey, type FloatArray, type KeySlice, type KeySpec } from './key-layout.js';
import { assignUpdater, createUpdater, type ServerUpdater, type UpdaterSpec } from './updaters.js';

/**
 * One parameter-server shard (ps-lite's `KVServer` plus its default request handle), run as an actor:
 * `ActorSupervisor.spawn({ actor: { module: '@shoal/backends', export: 'KVServer', args: [options] }, mailbox:
 * 'reentrant', ... })`. Workers reach it through `KVWorker`.
 *
 * Consistency:
 * - `sync`: a key's round completes when all `numWorkers` workers pushed it; the merged (summed) gradient is
 *   folded in by the updater, then every push of the round is acknowledged. A push for a later round waits for
 *   the current one, so workers may pipeline.
 * - `async`: each push is applied on arrival; with `staleness` s, a worker's push number c waits until every
 *   worker has had at least c - s pushes applied (bounded staleness, SSP).
 * Every push carries the worker's per-key counter, so a push resent after a server restart is recognised and
 * applied exactly once. A pull carries `need` (sync: the round count, async: the worker's own push count) and
 * waits until the server has reached it: a pull after a push sees that push.
 *
 * Durability: with `checkpointPath`, `checkpoint()` writes the shard atomically (temp file, fsync, rename) and a
 * new incarnation starts from it. With `durable: true` every acknowledgement waits for a write that includes the
 * update (group commit: one write covers all updates applied meanwhile), so an acknowledged update survives a
 * crash.
 */
export interface KVServerOptions {
  serverIndex: number;
  numServers: number;
  numWorkers: number;
  mode: 'sync' | 'async';
  /** Async only: how many pushes a worker may be ahead of the slowest worker. Default unbounded. */
  staleness?: number;
  /** Update rule for keys declared with `update: 'optimizer'`. Default `assign`. */
  updater?: UpdaterSpec;
  checkpointPath?: string;
  /** Acknowledge an update only once a checkpoint that includes it is on disk. Needs `checkpointPath`. */
  durable?: boolean;
  /** Limit for every wait on the server (a pull's `need`, init, gather, staleness). Default 60 s. */
  timeoutMs?: number;
  bigKeyBound?: number;
}

interface Waiter {
  ready: () => boolean;
  run: () => void;
  fail: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface Ack {
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface Slot {
  spec: KeySpec;
  slice: KeySlice;
  data: FloatArray;
  state: Record<string, FloatArray>;
  /** Updates applied (sync: rounds; async: pushes from all workers). */
  version: number;
  /** Pushes applied per worker. */
  clock: number[];
  updater: ServerUpdater;
  // sync round in progress
  pushed: Uint8Array;
  pushedCount: number;
  acks: Ack[];
  /**
   * Dense keys: each worker's gradient for the round in progress, held until the round completes (then summed in
   * rank order, chunk by chunk, in the update's pass), with the function that frees it (see `rx`).
   */
  grads: (FloatArray | null)[];
  gradRelease: ((() => void) | null)[];
  /**
   * Same-host data plane (`attachShared`): per worker, views of its staging buffers for this server's slice.
   * A push may leave its gradient there (sent as null); a pull with `shared` gets the values written into `out`.
   */
  shared: (SharedViews | null)[];
  /**
   * Per worker (sync): the version the round's update wrote into `shared[r].out` for the pushPull that asked for
   * it (-1: none). That pushPull's reply consumes it; every other shared pull copies.
   */
  outAt: number[];
  /** Per worker (sync): a pushPull waits for this version with a shared reply: the update writes `out` in its pass. */
  wantOut: number[];
  /** Row-sparse keys: the round's merged rows (full local table, `touched` marks the rows in it). */
  merge: FloatArray | null;
  /**
   * Dense keys: one receive buffer per worker that pushes land in straight from the transport (`recvTargets`),
   * reused every round instead of a fresh buffer per message. `rxBusy[r]` from the hand-out until the push's data
   * is merged or applied; `rxHanded[r]` from the hand-out until `push` sees the request; `rxGen[r]` counts
   * hand-outs, so a late release of an earlier one is a no-op.
   */
  rx: (FloatArray | null)[];
  rxBusy: Uint8Array;
  rxHanded: Uint8Array;
  rxGen: number[];
  // row-sparse merge
  touched: Uint8Array | null;
  touchedList: number[];
  last: { rowIds: Int32Array; rows: FloatArray } | null;
  waiters: Waiter[];
}

const noop = () => {};

/** A worker's staging views of one key slice, and the connection that attached them (the only one that may use them). */
interface SharedViews {
  grad: FloatArray;
  out: FloatArray;
  caller: string | undefined;
}

interface CheckpointFile {
  format: 'shoal-ps-shard';
  version: 1;
  serverIndex: number;
  numServers: number;
  numWorkers: number;
  mode: string;
  keys: { spec: KeySpec; slice: KeySlice; data: FloatArray; state: Record<string, FloatArray>; version: number; clock: number[] }[];
}

export interface KVServerStats {
  serverIndex: number;
  keys: number;
  pushes: number;
  pulls: number;
  updates: number;
  checkpoints: number;
  /** Dense push slices received straight into the server's receive buffers (transports with `recvInto`). */
  directPushes: number;
  restoredFrom: string | null;
  /** CPU time of the server's process so far (user + system), microseconds. */
  cpuUs: number;
}

export class KVServer {
  private readonly slots = new Map<string, Slot>();
  private readonly keyWaiters: Waiter[] = [];
  private readonly gathers = new Map<string, { values: unknown[]; count: number; p: Promise<unknown[]>; resolve: (v: unknown[]) => void; reject: (e: unknown) => void }>();
  private updater: ServerUpdater = assignUpdater;
  private readonly ready: Promise<void>;
  private readonly timeoutMs: number;
  private pendingDurable: Ack[] = [];
  private flushScheduled = false;
  private readonly counters = { pushes: 0, pulls: 0, updates: 0, checkpoints: 0, directPushes: 0 };
  private restoredFrom: string | null = null;
  private epoch = 0;
  private readonly kernels: ReduceKernels = loadKernels();
  /** Connection id -> worker rank, for workers that said hello with their rank. */
  private readonly callerRank = new Map<string, number>();
  /** Names of the staging regions each connection attached (see `onCallerClosed`). */
  private readonly regionNames = new Map<string, string[]>();
  /** Workers whose connection went away: sync rounds, gathers and staleness waits cannot complete. */
  private readonly lost = new Map<number, ShoalError>();

  constructor(private readonly o: KVServerOptions) {
    const bad = (k: string, d: string) => Errors.invalidArg(`KVServer options.${k}`, d);
    if (!Number.isInteger(o.numServers) || o.numServers < 1) throw bad('numServers', `must be a positive integer, got ${o.numServers}`);
    if (!Number.isInteger(o.serverIndex) || o.serverIndex < 0 || o.serverIndex >= o.numServers) throw bad('serverIndex', `must be in [0, ${o.numServers}), got ${o.serverIndex}`);
    if (!Number.isInteger(o.numWorkers) || o.numWorkers < 1) throw bad('numWorkers', `must be a positive integer, got ${o.numWorkers}`);
    if (o.mode !== 'sync' && o.mode !== 'async') throw bad('mode', `must be sync|async, got ${JSON.stringify(o.mode)}`);
    if (o.durable && !o.checkpointPath) throw bad('durable', 'needs options.checkpointPath');
    if (o.staleness !== undefined && (!Number.isInteger(o.staleness) || o.staleness < 0)) throw bad('staleness', `must be an integer >= 0, got ${o.staleness}`);
    if (o.timeoutMs !== undefined && !(o.timeoutMs > 0)) throw bad('timeoutMs', `must be positive, got ${o.timeoutMs}`);
    // Node clamps timers above 2^31-1 ms (Infinity included) to 1 ms: keep waits finite.
    this.timeoutMs = Math.min(o.timeoutMs ?? 60_000, 2 ** 31 - 1);
    if (o.checkpointPath && existsSync(o.checkpointPath)) this.restore(o.checkpointPath);
    this.ready = createUpdater(o.updater ?? { type: 'assign' }).then(async (u) => {
      this.updater = u;
      for (const s of this.slots.values()) if (s.spec.update !== 'assign') s.updater = s.spec.updater ? await createUpdater(s.spec.updater) : u;
    });
  }

  /** Actor hook: wait for the updater module, remember the incarnation. */
  async onActorStart(ctx: ActorContext): Promise<void> {
    this.epoch = ctx.epoch;
    await this.ready;
  }

  /**
   * The server's configuration, so workers can check they joined the job they think they did. A worker that
   * gives its `rank` is watched: if its connection goes away, everything waiting for it fails at once (see
   * `onCallerClosed`).
   */
  hello(rank?: number): { serverIndex: number; numServers: number; numWorkers: number; mode: string; bigKeyBound: number; epoch: number; pid: number; hostId: string } {
    if (rank !== undefined) {
      this.checkRank(rank);
      const caller = currentCaller();
      if (caller) this.callerRank.set(caller, rank);
      this.lost.delete(rank);
    }
    return {
      serverIndex: this.o.serverIndex,
      numServers: this.o.numServers,
      numWorkers: this.o.numWorkers,
      mode: this.o.mode,
      bigKeyBound: this.o.bigKeyBound ?? DEFAULT_BIG_KEY_BOUND,
      epoch: this.epoch,
      pid: process.pid,
      hostId: localHostId(),
    };
  }

  /**
   * Same-host data plane (BytePS's shared-memory path, ps-lite's IPC van): worker `rank` created region `name`
   * (`bytes` long) holding, per dense key, a gradient and an output buffer the size of the whole key; `entries`
   * give the byte offsets of this server's slice in each. After this, a push may send null for such a key's
   * gradient (it is read from the region) and a pull or pushPull with `shared` gets its values written there
   * instead of into the reply. ERR_TRANSPORT when the region cannot be mapped (another host, another /dev/shm):
   * the worker then keeps sending data in messages.
   */
  attachShared(rank: number, name: string, bytes: number, entries: { key: string; grad: number; out: number }[]): { keys: number } {
    this.checkRank(rank);
    if (typeof name !== 'string') throw Errors.invalidArg('attachShared name', `must be a string, got ${typeof name}`);
    if (!Number.isSafeInteger(bytes) || bytes < 1) throw Errors.invalidArg('attachShared bytes', `must be a positive integer, got ${JSON.stringify(bytes)}`);
    if (!Array.isArray(entries)) throw Errors.invalidArg('attachShared entries', 'must be an array');
    const caller = currentCaller();
    const views = entries.map((e) => {
      const slot = this.slot(e.key);
      if (slot.spec.rows) throw Errors.invalidArg(`key ${e.key}`, 'is row-sparse: it has no shared buffers');
      const d = slot.data;
      const len = d.byteLength;
      for (const off of [e.grad, e.out]) {
        if (!Number.isSafeInteger(off) || off < 0 || off % d.BYTES_PER_ELEMENT !== 0 || off + len > bytes) {
          throw Errors.invalidArg(`shared buffer of key ${e.key}`, `offset ${off} (+${len} bytes) from worker ${rank} is not an aligned place inside ${bytes} bytes`);
        }
      }
      return { slot, grad: e.grad, out: e.out };
    });
    const region = openSharedRegion(name, bytes);
    if (caller !== undefined) {
      // if the worker dies before it removed the name (while servers map it), this server removes it then
      const names = this.regionNames.get(caller) ?? [];
      names.push(name);
      this.regionNames.set(caller, names);
    }
    for (const v of views) {
      const Ctor = v.slot.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor;
      const n = v.slot.data.length;
      // A second KVWorker of this rank (another connection) takes the key over: the first one's requests that name
      // staging buffers are then refused (ERR_STATE) instead of reading the newer worker's buffers.
      v.slot.shared[rank] = { grad: new Ctor(region.buffer, v.grad, n), out: new Ctor(region.buffer, v.out, n), caller };
      v.slot.outAt[rank] = -1;
      v.slot.wantOut[rank] = -1;
    }
    return { keys: views.length };
  }

  /**
   * Declare keys (every worker calls this with the same specs; rank 0 also sends the initial values of this
   * server's slices). A key already present (declared before, or restored from a checkpoint) keeps its value.
   * Returns, per key, the counter this worker resumes from: the rounds applied (sync) or this worker's pushes
   * applied (async).
   */
  async init(rank: number, specs: KeySpec[], slices: KeySlice[], values: (FloatArray | null)[] | null): Promise<{ resume: number[] }> {
    await this.ready;
    this.checkRank(rank);
    // Keys with their own optimizer (built before the loop, so the loop runs without yielding).
    const own = await Promise.all(specs.map((sp) => (sp.updater && sp.update !== 'assign' ? createUpdater(sp.updater) : null)));
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i]!;
      const want = sliceKey(spec, this.o.numServers, this.o.bigKeyBound).find((s) => s.server === this.o.serverIndex);
      const got = slices[i]!;
      if (!want || want.start !== got.start || want.end !== got.end) {
        throw Errors.mismatch(`layout of key ${spec.key}`, `worker ${rank} sent slice [${got.start}, ${got.end}) to server ${this.o.serverIndex}, expected ${want ? `[${want.start}, ${want.end})` : 'none'}`);
      }
      const old = this.slots.get(spec.key);
      if (old) {
        if (!sameSpec(old.spec, spec)) throw Errors.mismatch(`key ${spec.key}`, `server has ${describeSpec(old.spec)}, worker ${rank} declared ${describeSpec(spec)}`);
        continue;
      }
      const v = values?.[i];
      if (v) {
        if (v.length !== got.end - got.start) throw Errors.invalidArg(`init value of key ${spec.key}`, `has ${v.length} elements, slice needs ${got.end - got.start}`);
        const data = allocFloat(spec.dtype, v.length);
        data.set(v);
        this.slots.set(spec.key, this.newSlot(spec, got, data, own[i] ?? undefined));
      }
    }
    this.pumpKeys();
    const missing = specs.filter((s) => !this.slots.has(s.key));
    if (missing.length) {
      await this.waitFor(
        this.keyWaiters,
        () => missing.every((s) => this.slots.has(s.key)),
        `init of keys [${missing.slice(0, 3).map((s) => s.key).join(', ')}] on server ${this.o.serverIndex} (waiting for rank 0's values)`,
      );
    }
    for (const s of specs) {
      const slot = this.slots.get(s.key)!;
      if (!sameSpec(slot.spec, s)) throw Errors.mismatch(`key ${s.key}`, `rank 0 declared ${describeSpec(slot.spec)}, worker ${rank} declared ${describeSpec(s)}`);
    }
    const sync = this.o.mode === 'sync';
    return { resume: specs.map((s) => (sync ? this.slots.get(s.key)!.version : this.slots.get(s.key)!.clock[rank]!)) };
  }

  private newSlot(spec: KeySpec, slice: KeySlice, data: FloatArray, updater?: ServerUpdater): Slot {
    return {
      spec,
      slice,
      data,
      state: {},
      version: 0,
      clock: new Array<number>(this.o.numWorkers).fill(0),
      updater: spec.update === 'assign' ? assignUpdater : (updater ?? this.updater),
      pushed: new Uint8Array(this.o.numWorkers),
      pushedCount: 0,
      acks: [],
      grads: new Array<FloatArray | null>(this.o.numWorkers).fill(null),
      gradRelease: new Array<(() => void) | null>(this.o.numWorkers).fill(null),
      shared: new Array<SharedViews | null>(this.o.numWorkers).fill(null),
      outAt: new Array<number>(this.o.numWorkers).fill(-1),
      wantOut: new Array<number>(this.o.numWorkers).fill(-1),
      merge: null,
      rx: new Array<FloatArray | null>(this.o.numWorkers).fill(null),
      rxBusy: new Uint8Array(this.o.numWorkers),
      rxHanded: new Uint8Array(this.o.numWorkers),
      rxGen: new Array<number>(this.o.numWorkers).fill(0),
      touched: null,
      touchedList: [],
      last: null,
      waiters: [],
    };
  }

  /**
   * Push dense gradients: `grads[i]` is this server's slice of key `keys[i]`, `counters[i]` the worker's count
   * of earlier pushes of that key. Resolves once every push is applied (and durable, if so configured).
   */
  push(rank: number, keys: string[], counters: number[], grads: (FloatArray | null)[]): Promise<void> {
    this.checkRank(rank);
    this.counters.pushes++;
    if (keys.length !== grads.length || keys.length !== counters.length) throw Errors.badFrame(`push to server ${this.o.serverIndex}`, 'keys, counters and grads differ in length');
    // Receive buffers handed out for this request: released once their data is merged or applied.
    const rels = keys.map((k, i) => this.rxRelease(this.slots.get(k), rank, grads[i]!));
    // Check every key first, so a bad request changes nothing.
    let slots: Slot[];
    const gs: FloatArray[] = [];
    try {
      slots = keys.map((k, i) => {
        const slot = this.slot(k);
        if (slot.spec.rows) throw Errors.invalidArg(`key ${slot.spec.key}`, 'is row-sparse: use rowSparsePush');
        // null: the gradient is in the worker's staging buffer (same-host data plane)
        const g = grads[i] ?? this.sharedOf(slot, rank).grad;
        gs.push(g);
        if (g.length !== slot.data.length || g.constructor !== slot.data.constructor) {
          throw Errors.mismatch(`gradient of key ${slot.spec.key}`, `worker ${rank} pushed ${g.constructor.name}[${g.length}], server slice is ${slot.data.constructor.name}[${slot.data.length}]`);
        }
        return slot;
      });
    } catch (e) {
      for (const r of rels) r();
      throw e;
    }
    const ps = slots.map((slot, i) => {
      const g = gs[i]!;
      const rel = rels[i]!;
      const p = this.pushOne(
        slot,
        rank,
        counters[i]!,
        (s) => this.holdDense(s, rank, g, rel),
        (s) => {
          this.updateDense(s, [g], []);
          rel();
        },
      );
      // Whatever way the push ends (a resend already applied, a lost worker, an error), its buffer is free then;
      // a release after the data was merged is a no-op.
      p.then(rel, rel);
      return p;
    });
    return Promise.all(ps).then(() => undefined);
  }

  /**
   * Actor hook (see ActorServer): a push's gradients of dense keys this server holds land in the key's receive
   * buffer for that worker (`Slot.rx`) when it is free, instead of a fresh buffer per message.
   */
  recvTargets(method: string, args: unknown[], externalBytes: readonly number[]): (Uint8Array | undefined)[] | undefined {
    if (method !== 'push' && method !== 'pushPull') return undefined;
    const [rank, keys, , grads] = args as [unknown, unknown, unknown, unknown];
    if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank >= this.o.numWorkers || !Array.isArray(keys) || !Array.isArray(grads)) return undefined;
    const out: (Uint8Array | undefined)[] = [];
    for (let i = 0; i < grads.length && i < keys.length; i++) {
      const ref = externalRef(grads[i]);
      const slot = ref && this.slots.get(keys[i] as string);
      if (!ref || !slot || slot.spec.rows || slot.rxBusy[rank] || slot.rxHanded[rank]) continue;
      if (ref.type !== slot.data.constructor.name || externalBytes[ref.index] !== slot.data.byteLength) continue;
      const rx = (slot.rx[rank] ??= allocFloat(slot.spec.dtype, slot.data.length));
      slot.rxBusy[rank] = 1;
      slot.rxHanded[rank] = 1;
      slot.rxGen[rank]!++;
      out[ref.index] = new Uint8Array(rx.buffer, rx.byteOffset, rx.byteLength);
    }
    return out;
  }

  /**
   * For a push of `rank` to `slot` carrying `g`: if a receive buffer was handed out for it, a function freeing it
   * (idempotent), and frees it now when the transport did not use it; otherwise a no-op. Requests of one worker
   * arrive in order on its connection, so the hand-out seen here is this request's.
   */
  private rxRelease(slot: Slot | undefined, rank: number, g: FloatArray): () => void {
    if (!slot || !slot.rxHanded[rank]) return noop;
    slot.rxHanded[rank] = 0;
    const gen = slot.rxGen[rank]!;
    const release = () => {
      if (slot.rxGen[rank] === gen) slot.rxBusy[rank] = 0;
    };
    if (g?.buffer === slot.rx[rank]?.buffer) {
      this.counters.directPushes++;
      return release;
    }
    release();
    return noop;
  }

  /**
   * Push row-sparse gradient rows of key `key`: `rowIds` global, sorted, unique and inside this server's row
   * range; `rows` packed `rowIds.length * rowSize` values. Sync mode: every worker pushes every round (possibly
   * with no rows).
   */
  rowSparsePush(rank: number, key: string, counter: number, rowIds: Int32Array, rows: FloatArray): Promise<void> {
    this.checkRank(rank);
    this.counters.pushes++;
    const slot = this.slot(key);
    const local = this.localRows(slot, rowIds, rank);
    const rs = slot.spec.rows!.rowSize;
    if (rows.length !== rowIds.length * rs || rows.constructor !== slot.data.constructor) {
      throw Errors.mismatch(`rows of key ${key}`, `worker ${rank} pushed ${rows.constructor.name}[${rows.length}] for ${rowIds.length} rows of ${rs}`);
    }
    return this.pushOne(
      slot,
      rank,
      counter,
      (s) => this.mergeRows(s, local, rows),
      (s) => {
        s.last = { rowIds, rows: s.updater.readOnlyGrad ? rows : rows.slice() };
        s.updater({ key: s.spec.key, weights: s.data, grad: rows, rowIds: local, rowSize: rs, state: s.state, step: s.version, kernels: this.kernels });
      },
    );
  }

  private pushOne(slot: Slot, rank: number, counter: number, merge: (s: Slot) => void, applyAsync: (s: Slot) => void): Promise<void> {
    const sync = this.o.mode === 'sync';
    const done = () => (sync ? counter < slot.version : counter < slot.clock[rank]!);
    if (done()) return Promise.resolve(); // a resend of an applied push (after a restart)
    const gone = sync || this.o.staleness !== undefined ? this.lostError() : undefined;
    if (gone) return Promise.reject(gone);
    const at = sync ? slot.version : slot.clock[rank]!;
    if (sync && counter > at + 1) {
      // Workers pipeline at most one round ahead; more means this server lost rounds (restarted from a
      // checkpoint older than what it acknowledged, i.e. without `durable`).
      throw Errors.state(`push #${counter} of key ${slot.spec.key} from worker ${rank} is ahead of server ${this.o.serverIndex} (at round ${at}): the server lost updates (restarted from an older checkpoint?)`);
    }
    const ready = () =>
      done() ||
      (sync
        ? counter === slot.version && !slot.pushed[rank]
        : counter === slot.clock[rank]! && (this.o.staleness === undefined || counter - Math.min(...slot.clock) <= this.o.staleness));
    return new Promise<void>((resolve, reject) => {
      const run = () => {
        if (done()) return resolve();
        try {
          if (sync) {
            merge(slot);
            slot.pushed[rank] = 1;
            slot.pushedCount++;
            slot.clock[rank]!++;
            slot.acks.push({ resolve, reject });
            if (slot.pushedCount === this.o.numWorkers) this.completeRound(slot);
          } else {
            applyAsync(slot);
            slot.clock[rank]!++;
            slot.version++;
            this.counters.updates++;
            this.acknowledge([{ resolve, reject }]);
            this.pump(slot);
          }
        } catch (e) {
          reject(e);
        }
      };
      if (ready()) run();
      else this.enqueue(slot.waiters, ready, run, reject, `push #${counter} of key ${slot.spec.key} from worker ${rank} on server ${this.o.serverIndex}`);
    });
  }

  /** Sync: keep a worker's gradient until its round completes (`grads`), with the function that frees it. */
  private holdDense(slot: Slot, rank: number, g: FloatArray, release: () => void): void {
    slot.grads[rank] = g;
    slot.gradRelease[rank] = release;
  }

  /** Free the held gradients of the round (after its update, or when it is abandoned). */
  private dropHeld(slot: Slot): void {
    for (let r = 0; r < slot.grads.length; r++) {
      slot.grads[r] = null;
      const rel = slot.gradRelease[r];
      slot.gradRelease[r] = null;
      rel?.();
    }
  }

  /**
   * Fold the sum of `gs` (in the order given: rank order for a sync round) into the weights with the key's
   * updater, then copy the new values into `outs` (workers' staging buffers). An element-wise updater runs chunk
   * by chunk, so the sum, the update and the copies of one chunk stay in cache: one pass over memory. The
   * gradients are only read (they may be a worker's shared memory); the sum goes to the server's scratch.
   */
  private updateDense(slot: Slot, gs: readonly FloatArray[], outs: readonly FloatArray[]): void {
    const w = slot.data;
    const n = w.length;
    const u = slot.updater;
    if (u.linear) {
      this.kernels.sumUpdate(u.linear.axpy, w, gs, outs, u.linear.axpy ? u.linear.factor : 1);
      return;
    }
    const names = u.elementwiseState;
    const chunk = names ? KVServer.CHUNK : n;
    if (names) for (const name of names) slot.state[name] ??= allocFloat(slot.spec.dtype, n);
    const scratch = this.scratchFor(slot.spec.dtype, Math.min(n, chunk));
    for (let off = 0; off < n; off += chunk) {
      const end = Math.min(n, off + chunk);
      const m = scratch.subarray(0, end - off);
      m.set(gs[0]!.subarray(off, end));
      for (let r = 1; r < gs.length; r++) this.kernels.reduce('sum', m, gs[r]!.subarray(off, end));
      const wv = end - off === n ? w : w.subarray(off, end);
      let state = slot.state;
      if (names && wv !== w) {
        state = {};
        for (const name of names) state[name] = slot.state[name]!.subarray(off, end);
      }
      u({ key: slot.spec.key, weights: wv, grad: m, state, step: slot.version, kernels: this.kernels });
      for (const o of outs) o.set(wv, off);
    }
  }

  /** Elements per chunk of an element-wise update (128 KiB of float32: the chunk's arrays stay in L2). */
  static readonly CHUNK = 32768;
  private scratch32: Float32Array | null = null;
  private scratch64: Float64Array | null = null;

  private scratchFor(dtype: KeySpec['dtype'], n: number): FloatArray {
    if (dtype === 'float64') {
      if (!this.scratch64 || this.scratch64.length < n) this.scratch64 = new Float64Array(Math.max(n, 1));
      return this.scratch64;
    }
    if (!this.scratch32 || this.scratch32.length < n) this.scratch32 = new Float32Array(Math.max(n, 1));
    return this.scratch32;
  }

  /** The worker's staging views of `slot` (ERR_STATE when it attached none: a push or pull that needs them). */
  private sharedOf(slot: Slot, rank: number, caller = currentCaller()): SharedViews {
    const v = slot.shared[rank];
    if (!v) throw Errors.state(`worker ${rank} has no shared buffers for key ${slot.spec.key} on server ${this.o.serverIndex} (attachShared first)`);
    if (v.caller !== caller) throw Errors.state(`the shared buffers of worker ${rank} for key ${slot.spec.key} on server ${this.o.serverIndex} belong to another connection of that rank`);
    return v;
  }

  private mergeRows(slot: Slot, local: Int32Array, rows: FloatArray): void {
    const rs = slot.spec.rows!.rowSize;
    const nLocal = slot.slice.rowEnd! - slot.slice.rowStart!;
    if (!slot.merge) slot.merge = allocFloat(slot.spec.dtype, nLocal * rs);
    if (!slot.touched) slot.touched = new Uint8Array(nLocal);
    const fresh = new Int32Array(local.length);
    const n = this.kernels.rows('merge', slot.merge, rows, local, rs, slot.touched, fresh);
    for (let i = 0; i < n; i++) slot.touchedList.push(fresh[i]!);
  }

  private completeRound(slot: Slot): void {
    const acks = slot.acks;
    slot.acks = [];
    try {
      if (slot.spec.rows) {
        const rs = slot.spec.rows.rowSize;
        const local = Int32Array.from(slot.touchedList).sort();
        const packed = allocFloat(slot.spec.dtype, local.length * rs);
        if (local.length) this.kernels.rows('take', packed, slot.merge!, local, rs); // packed rows, merge rows zeroed
        for (let i = 0; i < local.length; i++) slot.touched![local[i]!] = 0;
        slot.touchedList = [];
        // `packed` is kept as the round's merged rows (rowSparsePullLast): a rule that may write its gradient gets a copy
        const grad = slot.updater.readOnlyGrad ? packed : packed.slice();
        slot.updater({ key: slot.spec.key, weights: slot.data, grad, rowIds: local, rowSize: rs, state: slot.state, step: slot.version, kernels: this.kernels });
        const global = new Int32Array(local.length);
        for (let i = 0; i < local.length; i++) global[i] = local[i]! + slot.slice.rowStart!;
        slot.last = { rowIds: global, rows: packed };
      } else {
        // Workers whose pushPull waits for this round with a shared reply get the values in the update's pass.
        const next = slot.version + 1;
        const outs: FloatArray[] = [];
        const wrote: number[] = [];
        for (let r = 0; r < this.o.numWorkers; r++) {
          const sh = slot.shared[r];
          if (sh && slot.wantOut[r] === next) (outs.push(sh.out), wrote.push(r));
        }
        try {
          this.updateDense(slot, slot.grads as FloatArray[], outs);
          for (const r of wrote) {
            slot.outAt[r] = next;
            slot.wantOut[r] = -1;
          }
        } finally {
          this.dropHeld(slot);
        }
      }
    } catch (e) {
      for (const a of acks) a.reject(e);
      throw e;
    } finally {
      slot.version++;
      slot.pushed.fill(0);
      slot.pushedCount = 0;
      this.counters.updates++;
    }
    this.acknowledge(acks);
    this.pump(slot);
  }

  /** Resolve acknowledgements, after a durable write if configured (group commit). */
  private acknowledge(acks: Ack[]): void {
    if (!this.o.durable) {
      for (const a of acks) a.resolve();
      return;
    }
    this.pendingDurable.push(...acks);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const batch = this.pendingDurable;
      this.pendingDurable = [];
      try {
        this.writeCheckpoint();
      } catch (e) {
        for (const a of batch) a.reject(e);
        return;
      }
      for (const a of batch) a.resolve();
    });
  }

  /**
   * Push then pull in one request: apply (or merge) `grads` as `push` does, then reply with the values once the
   * server has reached `counters[i] + 1` for each key. Saves the push acknowledgement and one request.
   */
  pushPull(rank: number, keys: string[], counters: number[], grads: (FloatArray | null)[], shared = false): Promise<(FloatArray | null)[]> {
    const needs = counters.map((c) => c + 1);
    if (!(shared && this.o.mode === 'sync')) return this.push(rank, keys, counters, grads).then(() => this.pull(rank, keys, needs, shared));
    // The round's update writes this worker's values in its pass: marked before the push runs (it may complete
    // the round at once), unmarked when the push is refused or fails.
    this.checkRank(rank);
    const caller = currentCaller();
    const slots = keys.map((k) => this.slot(k));
    for (const s of slots) this.sharedOf(s, rank, caller);
    slots.forEach((s, i) => (s.wantOut[rank] = needs[i]!));
    const unmark = () => slots.forEach((s, i) => s.wantOut[rank] === needs[i] && (s.wantOut[rank] = -1));
    let pushed: Promise<void>;
    try {
      pushed = this.push(rank, keys, counters, grads);
    } catch (e) {
      unmark();
      throw e;
    }
    return pushed.then(
      () => this.pullInto(rank, slots, needs, caller, true),
      (e: unknown) => {
        unmark();
        throw e;
      },
    );
  }

  /**
   * Pull dense values: this server's slices of `keys`, after the server has reached `needs[i]` for each (sync:
   * rounds applied; async: this worker's pushes applied). The reply is a consistent snapshot at a version >=
   * `need`.
   */
  pull(rank: number, keys: string[], needs: number[], shared = false): (FloatArray | null)[] | Promise<(FloatArray | null)[]> {
    this.checkRank(rank);
    this.counters.pulls++;
    const slots = keys.map((k) => this.slot(k));
    for (const s of slots) if (s.spec.rows) throw Errors.invalidArg(`key ${s.spec.key}`, 'is row-sparse: use rowSparsePull');
    if (shared) {
      const caller = currentCaller();
      for (const s of slots) this.sharedOf(s, rank, caller);
      return this.pullInto(rank, slots, needs, caller, false);
    }
    // Sync mode: the stored arrays go out uncopied; they cannot change before the reply is sent, because the
    // next round needs this worker's next push. Async mode: any push may land meanwhile, so send a snapshot.
    const read = () => (this.o.mode === 'sync' ? slots.map((s) => s.data) : slots.map((s) => s.data.slice()));
    return this.afterReached(rank, slots, needs, read);
  }

  /**
   * A shared pull: once the server reached `needs`, copy the values into the worker's staging outputs in this
   * turn of the event loop (no update can land between the copy and the reply) and reply nulls. `fused`: the
   * pull of a sync pushPull whose round's update may already have written them (`outAt`: consumed here).
   */
  private pullInto(rank: number, slots: Slot[], needs: number[], caller: string | undefined, fused: boolean): (FloatArray | null)[] | Promise<(FloatArray | null)[]> {
    const read = () =>
      slots.map((s) => {
        const sh = this.sharedOf(s, rank, caller);
        const written = fused && s.outAt[rank] === s.version;
        s.outAt[rank] = -1;
        if (!written) sh.out.set(s.data);
        return null;
      });
    return this.afterReached(rank, slots, needs, read);
  }

  /**
   * Pull rows of a row-sparse key: `rowIds` (global, inside this server's range) or, with `rowIds` null, the
   * merged rows of the last completed round (sorted global ids and their summed pushes).
   */
  rowSparsePull(rank: number, key: string, need: number, rowIds: Int32Array | null): { rowIds: Int32Array; rows: FloatArray } | Promise<{ rowIds: Int32Array; rows: FloatArray }> {
    this.checkRank(rank);
    this.counters.pulls++;
    const slot = this.slot(key);
    const local = rowIds ? this.localRows(slot, rowIds, rank, false) : null;
    const read = () => {
      if (!local) return slot.last ?? { rowIds: new Int32Array(0), rows: allocFloat(slot.spec.dtype, 0) };
      const rs = slot.spec.rows!.rowSize;
      const out = allocFloat(slot.spec.dtype, local.length * rs);
      if (local.length) this.kernels.rows('gather', out, slot.data, local, rs);
      return { rowIds: rowIds!, rows: out };
    };
    return this.afterReached(rank, [slot], [need], read);
  }

  /**
   * Collect one value from every worker under `tag` and return them all, in rank order, to every caller
   * (barriers, scalar sums, agreement checks). ERR_TIMEOUT if some worker does not arrive.
   */
  gather(rank: number, tag: string, value: unknown): Promise<unknown[]> {
    this.checkRank(rank);
    const gone = this.lostError();
    if (gone) return Promise.reject(gone);
    let g = this.gathers.get(tag);
    if (!g) {
      let resolve!: (v: unknown[]) => void;
      let reject!: (e: unknown) => void;
      const p = new Promise<unknown[]>((a, b) => {
        resolve = a;
        reject = b;
      });
      g = { values: new Array(this.o.numWorkers).fill(undefined), count: 0, p, resolve, reject };
      this.gathers.set(tag, g);
      const timer = setTimeout(() => {
        if (this.gathers.get(tag) !== g) return;
        this.gathers.delete(tag);
        const missing = g!.values.map((v, i) => (v === undefined ? i : -1)).filter((i) => i >= 0);
        reject(Errors.timeout(`gather ${tag} on server ${this.o.serverIndex} (missing workers ${missing.join(', ')})`, this.timeoutMs));
      }, this.timeoutMs);
      p.then(() => clearTimeout(timer), () => clearTimeout(timer));
    }
    if (g.values[rank] !== undefined) throw Errors.state(`worker ${rank} joined gather ${tag} twice`);
    g.values[rank] = { v: value };
    g.count++;
    const p = g.p;
    if (g.count === this.o.numWorkers) {
      this.gathers.delete(tag);
      g.resolve(g.values.map((x) => (x as { v: unknown }).v));
    }
    return p;
  }

  /** Write the shard now (atomically). Returns the path and size. */
  checkpoint(): { path: string; bytes: number } {
    if (!this.o.checkpointPath) throw Errors.state(`server ${this.o.serverIndex} has no checkpointPath`);
    return this.writeCheckpoint();
  }

  stats(): KVServerStats {
    const cpu = process.cpuUsage();
    return { serverIndex: this.o.serverIndex, keys: this.slots.size, ...this.counters, restoredFrom: this.restoredFrom, cpuUs: cpu.user + cpu.system };
  }

  /** Progress of keys on this server (for tests and resuming workers). */
  versions(keys: string[]): { version: number[]; clock: number[][] } {
    const s = keys.map((k) => this.slot(k));
    return { version: s.map((x) => x.version), clock: s.map((x) => [...x.clock]) };
  }

  private writeCheckpoint(): { path: string; bytes: number } {
    const path = this.o.checkpointPath!;
    const file: CheckpointFile = {
      format: 'shoal-ps-shard',
      version: 1,
      serverIndex: this.o.serverIndex,
      numServers: this.o.numServers,
      numWorkers: this.o.numWorkers,
      mode: this.o.mode,
      keys: [...this.slots.values()].map((s) => ({ spec: s.spec, slice: s.slice, data: s.data, state: s.state, version: s.version, clock: s.clock })),
    };
    const frame = encodeMessage(file);
    const tmp = `${path}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w');
    try {
      let off = 0;
      while (off < frame.byteLength) off += writeSync(fd, frame, off, frame.byteLength - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    try {
      const dfd = openSync(dirname(path), 'r');
      fsyncSync(dfd);
      closeSync(dfd);
    } catch {
      // directory fsync is not supported everywhere; the rename is still atomic
    }
    this.counters.checkpoints++;
    return { path, bytes: frame.byteLength };
  }

  private restore(path: string): void {
    const bytes = readFileSync(path);
    let f: CheckpointFile;
    try {
      f = decodeMessage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as CheckpointFile;
    } catch (e) {
      throw Errors.data(path, `is not a readable parameter-server checkpoint (${(e as Error).message})`);
    }
    if (f.format !== 'shoal-ps-shard') throw Errors.data(path, 'is not a shoal parameter-server checkpoint');
    if (f.serverIndex !== this.o.serverIndex || f.numServers !== this.o.numServers || f.numWorkers !== this.o.numWorkers) {
      throw Errors.data(path, `was written by server ${f.serverIndex}/${f.numServers} for ${f.numWorkers} workers, this is server ${this.o.serverIndex}/${this.o.numServers} for ${this.o.numWorkers}`);
    }
    for (const k of f.keys) {
      const slot = this.newSlot(k.spec, k.slice, k.data.slice());
      slot.version = k.version;
      slot.clock = [...k.clock];
      for (const [n, v] of Object.entries(k.state)) slot.state[n] = v.slice();
      this.slots.set(k.spec.key, slot);
    }
    this.restoredFrom = path;
  }

  private reached(slot: Slot, rank: number, need: number): boolean {
    return this.o.mode === 'sync' ? slot.version >= need : slot.clock[rank]! >= need;
  }

  /** `read()` once every slot has reached its need for `rank`: at once when they have (no extra turn), else later. */
  private afterReached<T>(rank: number, slots: readonly Slot[], needs: readonly number[], read: () => T): T | Promise<T> {
    if (slots.every((s, i) => this.reached(s, rank, needs[i]!))) return read();
    return Promise.all(slots.map((s, i) => this.whenReached(s, rank, needs[i]!))).then(read);
  }

  private whenReached(slot: Slot, rank: number, need: number): Promise<void> {
    if (this.reached(slot, rank, need)) return Promise.resolve();
    const gone = this.o.mode === 'sync' ? this.lostError() : undefined;
    if (gone) return Promise.reject(gone);
    return new Promise((resolve, reject) =>
      this.enqueue(slot.waiters, () => this.reached(slot, rank, need), resolve, reject, `pull of key ${slot.spec.key} by worker ${rank} (needs update ${need}, server ${this.o.serverIndex} is at ${slot.version})`),
    );
  }

  private enqueue(list: Waiter[], ready: () => boolean, run: () => void, fail: (e: unknown) => void, what: string): void {
    const w: Waiter = {
      ready,
      run,
      fail,
      timer: setTimeout(() => {
        const i = list.indexOf(w);
        if (i >= 0) list.splice(i, 1);
        fail(Errors.timeout(what, this.timeoutMs));
      }, this.timeoutMs),
    };
    list.push(w);
  }

  private waitFor(list: Waiter[], ready: () => boolean, what: string): Promise<void> {
    return new Promise((resolve, reject) => this.enqueue(list, ready, resolve, reject, what));
  }

  /** Run every waiter of `slot` that became ready, in arrival order, until none is. */
  private pump(slot: Slot): void {
    for (let progress = true; progress; ) {
      progress = false;
      for (let i = 0; i < slot.waiters.length; i++) {
        const w = slot.waiters[i]!;
        if (!w.ready()) continue;
        slot.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.run();
        progress = true;
        break;
      }
    }
  }

  private pumpKeys(): void {
    for (let i = 0; i < this.keyWaiters.length; ) {
      const w = this.keyWaiters[i]!;
      if (w.ready()) {
        this.keyWaiters.splice(i, 1);
        clearTimeout(w.timer);
        w.run();
      } else i++;
    }
  }

  private slot(key: string): Slot {
    const s = this.slots.get(key);
    if (!s) throw Errors.invalidArg(`key ${JSON.stringify(key)}`, `is not initialised on server ${this.o.serverIndex} (call init first)`);
    return s;
  }

  private checkRank(rank: number): void {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.o.numWorkers) throw Errors.invalidArg('rank', `must be in [0, ${this.o.numWorkers}), got ${rank}`);
  }

  /** Global row ids -> local row numbers, checking range (and order/uniqueness for pushes). */
  private localRows(slot: Slot, rowIds: Int32Array, rank: number, strict = true): Int32Array {
    if (!slot.spec.rows) throw Errors.invalidArg(`key ${slot.spec.key}`, 'is dense: use push/pull');
    const r0 = slot.slice.rowStart!;
    const r1 = slot.slice.rowEnd!;
    const out = new Int32Array(rowIds.length);
    for (let i = 0; i < rowIds.length; i++) {
      const r = rowIds[i]!;
      if (r < r0 || r >= r1) throw Errors.invalidArg(`row id ${r} of key ${slot.spec.key}`, `from worker ${rank} is outside server ${this.o.serverIndex}'s rows [${r0}, ${r1})`);
      if (strict && i > 0 && r <= rowIds[i - 1]!) throw Errors.invalidArg(`row ids of key ${slot.spec.key}`, `from worker ${rank} must be sorted and unique (${rowIds[i - 1]} then ${r})`);
      out[i] = r - r0;
    }
    return out;
  }

  /**
   * Actor hook: a caller's connection went away. If it was a worker, everything that needs that worker (a sync
   * round, a gather, a staleness wait) fails now with ERR_PEER_CLOSED naming it, on every other worker, instead
   * of timing out; later such requests fail the same way until the worker says hello again.
   */
  onCallerClosed(caller: string): void {
    for (const name of this.regionNames.get(caller) ?? []) unlinkSharedRegion(name); // normally removed already
    this.regionNames.delete(caller);
    // the staging buffers that connection attached: unmapped once nothing here refers to them
    for (const s of this.slots.values()) {
      s.shared.forEach((v, r) => {
        if (v?.caller !== caller) return;
        s.shared[r] = null;
        s.outAt[r] = -1;
        s.wantOut[r] = -1;
      });
    }
    const rank = this.callerRank.get(caller);
    if (rank === undefined) return;
    this.callerRank.delete(caller);
    if ([...this.callerRank.values()].includes(rank)) return; // the worker has another live connection
    const err = Errors.peerClosed(`parameter server ${this.o.serverIndex}`, `worker ${rank} disconnected`);
    this.lost.set(rank, err);
    const blocking = this.o.mode === 'sync' || this.o.staleness !== undefined;
    for (const s of this.slots.values()) {
      if (!blocking) continue;
      for (const w of s.waiters.splice(0)) (clearTimeout(w.timer), w.fail(err));
      if (this.o.mode === 'sync' && !s.pushed[rank]) {
        for (const a of s.acks.splice(0)) a.reject(err);
        s.pushed.fill(0);
        s.pushedCount = 0;
        this.dropHeld(s);
        s.merge = null;
        s.touchedList = [];
        if (s.touched) s.touched.fill(0);
      }
    }
    for (const [tag, g] of this.gathers) {
      if (g.values[rank] !== undefined) continue;
      this.gathers.delete(tag);
      g.reject(err);
    }
  }

  /** The first lost worker's error, if any worker this server depends on is gone. */
  private lostError(): ShoalError | undefined {
    for (const e of this.lost.values()) return e;
    return undefined;
  }

  /** Actor hook: fail everything still waiting (the actor is stopping). */
  onActorStop(): void {
    const err = new ShoalError('ERR_CLOSED', `parameter server ${this.o.serverIndex} is stopping`);
    for (const s of this.slots.values()) for (const w of s.waiters.splice(0)) (clearTimeout(w.timer), w.fail(err));
    for (const w of this.keyWaiters.splice(0)) (clearTimeout(w.timer), w.fail(err));
  }
}
