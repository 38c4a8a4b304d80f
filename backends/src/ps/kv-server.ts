// Over 500 lines: the shell of PS_REMOTE, one short method per request over ps/server/: one table, kept whole.
import { existsSync } from 'node:fs';
import { currentCaller, externalRef } from '@shoal/core/actor';
import type { Timeline } from '@shoal/core/telemetry';
import { clampTimerMs } from '@shoal/core/util';
import { Errors, loadKernels, localHostId, ShoalError, type ActorContext, type FloatArray, type ReduceKernels } from '@shoal/core';
import { allocFloat, DEFAULT_BIG_KEY_BOUND, describeSpec, sameSpec, sliceKey, type KeySlice, type KeySpec } from './key-layout.js';
import { CallerBounds, PS_CALLER_BOUND, PS_CONTROL_BYTES } from './server/caller-bounds.js';
import { PS_REMOTE, type GuardedCall, type GuardedItem, type GuardedOutcome, type KeyState, type PsReplies, type PsServerApi, type RowsReply, type ServerHello, type ServerStats, type SharedEntry } from './protocol.js';
import { DenseUpdate, UPDATE_CHUNK } from './server/dense-update.js';
import { Gathers, runGuarded, settleGuarded } from './server/gathers.js';
import { Members } from './server/members.js';
import { Rounds } from './server/rounds.js';
import { localRows } from './server/row-merge.js';
import { recordApplies, ServerMetrics, type ServerMetricsOptions, type TraceRequest } from './server/server-metrics.js';
import { GroupCommit, readSlots, writeSlots } from './server/shard-checkpoint.js';
import { sharedOf, SharedRegions } from './server/shared-plane.js';
import { newSlot, type Slot } from './server/slot.js';
import { WaitQueue } from './server/waiters.js';
import { assignUpdater, createUpdater, type ServerUpdater, type UpdaterSpec } from './updaters.js';

/**
 * One parameter-server shard (ps-lite's `KVServer` plus its default request handle), run as an actor:
 * `ActorSupervisor.spawn({ actor: { module: '@shoal/backends', export: 'KVServer', args: [options] }, mailbox:
 * 'reentrant', ... })`. Workers reach it through `KVWorker`; the requests and replies are those of `protocol.ts`,
 * and only those are remote (`KVServer.remote`).
 *
 * This class checks requests and routes them; the parts live in `server/`: the consistency rules (`rounds.ts`:
 * sync rounds, async clocks and staleness), receive buffers, the shared-memory data plane, row merging, the
 * dense update, gathers, the workers' connections (`members.ts`), waiters and the shard checkpoint.
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
  /** Write this server's load as TensorBoard curves under `<logdir>/server-<i>` (see `ServerMetrics`). */
  metrics?: ServerMetricsOptions;
  /** `shoal run --timeline FILE`: record each update applied (`apply`, per key) in the part `FILE.server-<i>.jsonl`. */
  timeline?: string;
}

export type KVServerStats = ServerStats;

export class KVServer implements PsServerApi {
  /** The remote surface: the requests of `protocol.ts`, each argument checked before the method runs. */
  static readonly remote = PS_REMOTE;
  /** A connection's messages before it declares keys (`declare`); see `server/caller-bounds.ts`. */
  static readonly callerBound = PS_CALLER_BOUND;
  /** Elements per chunk of an element-wise update. */
  static readonly CHUNK = UPDATE_CHUNK;

  private readonly slots = new Map<string, Slot>();
  private readonly keyWaiters: WaitQueue;
  private readonly gathers: Gathers;
  private readonly members: Members;
  private readonly bounds: CallerBounds;
  private readonly regions = new SharedRegions();
  private readonly rounds: Rounds;
  private readonly dense: DenseUpdate;
  private updater: ServerUpdater = assignUpdater;
  private readonly ready: Promise<void>;
  private readonly timeoutMs: number;
  private readonly counters = { pushes: 0, pulls: 0, checkpoints: 0, directPushes: 0 };
  private restoredFrom: string | null = null;
  private epoch = 0;
  private readonly kernels: ReduceKernels = loadKernels();
  private readonly onDirect = () => void this.counters.directPushes++;
  /** Set with `options.metrics`: counters of bytes and queued requests, sampled into TensorBoard curves. */
  private readonly metrics?: ServerMetrics;
  private readonly timeline?: Timeline;
  private readonly traceRequest?: TraceRequest;

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
    this.timeoutMs = clampTimerMs(o.timeoutMs ?? 60_000);
    this.keyWaiters = new WaitQueue(this.timeoutMs);
    this.gathers = new Gathers(o.numWorkers, o.serverIndex, this.timeoutMs);
    this.members = new Members(o.numWorkers, o.serverIndex);
    this.bounds = new CallerBounds(o.serverIndex, o.numServers, o.bigKeyBound);
    const commit = new GroupCommit(!!o.durable, () => void this.writeCheckpoint());
    this.dense = new DenseUpdate(this.kernels);
    this.rounds = new Rounds({ ...o, timeoutMs: this.timeoutMs }, this.kernels, this.dense, commit, () => this.members.lostError());
    if (o.checkpointPath && existsSync(o.checkpointPath)) this.restore(o.checkpointPath);
    if (o.metrics) this.metrics = new ServerMetrics(o.serverIndex, o.metrics, () => this.rounds.counters);
    if (o.timeline) ({ timeline: this.timeline, traceRequest: this.traceRequest } = recordApplies(o.timeline, o.serverIndex, this.rounds));
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
   * gives its `rank` binds its connection to that rank (its later requests must name it) and is watched: if its
   * connection goes away, everything waiting for it fails at once (see `onCallerClosed`).
   */
  hello(rank?: number): ServerHello {
    if (rank !== undefined) this.members.bind(currentCaller(), rank);
    return {
      serverIndex: this.o.serverIndex,
      numServers: this.o.numServers,
      numWorkers: this.o.numWorkers,
      mode: this.o.mode,
      bigKeyBound: this.o.bigKeyBound ?? DEFAULT_BIG_KEY_BOUND,
      callerBound: PS_CONTROL_BYTES,
      epoch: this.epoch,
      pid: process.pid,
      hostId: localHostId(),
    };
  }

  /**
   * Same-host data plane: worker `rank` created region `name` (`bytes` long) holding, per dense key, a gradient
   * and an output buffer the size of the whole key; `entries` give the byte offsets of this server's slice in
   * each (see `SharedRegions.attach`).
   */
  attachShared(rank: number, name: string, bytes: number, entries: SharedEntry[]): { keys: number } {
    this.members.sender(currentCaller(), rank);
    return this.regions.attach((k) => this.slot(k), rank, name, bytes, entries, currentCaller());
  }

  /** This connection will send values of `specs`: raise its bound on messages (`server/caller-bounds.ts`). */
  declare(rank: number, specs: KeySpec[]): { bound: number } {
    this.members.sender(currentCaller(), rank);
    return { bound: this.bounds.declare(currentCaller()!, rank, specs, (k) => this.slots.get(k)?.spec) };
  }

  /**
   * Declare keys (every worker calls this with the same specs; rank 0 also sends the initial values of this
   * server's slices). A key already present (declared before, or restored from a checkpoint) keeps its value.
   * Returns, per key, the counter this worker resumes from: the rounds applied (sync) or this worker's pushes
   * applied (async).
   */
  async init(rank: number, specs: KeySpec[], slices: KeySlice[], values: (FloatArray | null)[] | null, restore?: (KeyState | null)[] | null): Promise<{ resume: number[] }> {
    this.members.sender(currentCaller(), rank);
    await this.ready;
    if (specs.length !== slices.length || (values && values.length !== specs.length) || (restore && restore.length !== specs.length)) throw Errors.badFrame(`init on server ${this.o.serverIndex}`, 'specs, slices and values differ in length');
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
        const slot = this.newSlot(spec, want, data, own[i] ?? undefined);
        const r = restore?.[i];
        if (r) restoreKeyState(slot, r, this.o.serverIndex);
        this.slots.set(spec.key, slot);
      }
    }
    this.keyWaiters.pump();
    const missing = specs.filter((s) => !this.slots.has(s.key));
    if (missing.length) {
      await this.keyWaiters.wait(
        () => missing.every((s) => this.slots.has(s.key)),
        () => `init of keys [${missing.slice(0, 3).map((s) => s.key).join(', ')}] on server ${this.o.serverIndex}: waiting for worker 0's values`,
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
    const u = spec.update === 'assign' ? assignUpdater : (updater ?? this.updater);
    return newSlot(spec, slice, data, u, this.o.numWorkers, this.timeoutMs);
  }

  /**
   * Push dense gradients: `grads[i]` is this server's slice of key `keys[i]` (null: in the worker's staging
   * buffer), `counters[i]` the worker's count of earlier pushes of that key. Resolves once every push is applied
   * (and durable, if so configured).
   */
  push(rank: number, keys: string[], counters: number[], grads: (FloatArray | null)[]): Promise<void> {
    const caller = currentCaller();
    // Receive buffers handed out for this request: released once their data is merged or applied.
    const rels = keys.map((k, i) => this.slots.get(k)?.rx.release(rank, grads[i] ?? null, this.onDirect) ?? noop);
    // Check every key first, so a bad request changes nothing.
    let slots: Slot[];
    const gs: FloatArray[] = [];
    try {
      this.members.sender(caller, rank);
      this.counters.pushes++;
      if (keys.length !== grads.length || keys.length !== counters.length) throw Errors.badFrame(`push to server ${this.o.serverIndex}`, 'keys, counters and grads differ in length');
      slots = keys.map((k, i) => {
        const slot = this.slot(k);
        if (slot.spec.rows) throw Errors.invalidArg(`key ${slot.spec.key}`, 'is row-sparse: use rowSparsePush');
        const g = grads[i] ?? sharedOf(slot, rank, caller, this.o.serverIndex).grad;
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
    if (this.metrics) this.metrics.received(gs.reduce((a, g) => a + g.byteLength, 0));
    const ps = slots.map((slot, i) => {
      const g = gs[i]!;
      const rel = rels[i]!;
      const p = this.rounds.push(
        slot,
        rank,
        counters[i]!,
        (s) => s.round.hold(rank, g, rel),
        (s) => {
          this.dense.apply(s, [g], []);
          rel();
        },
      );
      // Whatever way the push ends (a resend already applied, a lost worker, an error), its buffer is free then;
      // a release after the data was merged is a no-op.
      p.then(rel, rel);
      return p;
    });
    return this.tracked(Promise.all(ps).then(() => undefined));
  }

  /**
   * Actor hook (see ActorServer): a push's gradients of dense keys this server holds land in the key's receive
   * buffer for that worker when it is free, instead of a fresh buffer per message.
   */
  recvTargets(method: string, args: unknown[], externalBytes: readonly number[]): (Uint8Array | undefined)[] | undefined {
    if (method !== 'push' && method !== 'pushPull') return undefined;
    const [rank, keys, , grads] = args as [unknown, unknown, unknown, unknown];
    if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank >= this.o.numWorkers || !Array.isArray(keys) || !Array.isArray(grads)) return undefined;
    if (!this.members.speaksFor(currentCaller(), rank)) return undefined; // refused by push: no buffer of that rank
    const out: (Uint8Array | undefined)[] = [];
    for (let i = 0; i < grads.length && i < keys.length; i++) {
      const ref = externalRef(grads[i]);
      const slot = ref && typeof keys[i] === 'string' ? this.slots.get(keys[i] as string) : undefined;
      if (!ref || !slot || slot.spec.rows) continue;
      if (ref.type !== slot.data.constructor.name || externalBytes[ref.index] !== slot.data.byteLength) continue;
      const buf = slot.rx.handOut(rank, slot.spec.dtype, slot.data.length);
      if (buf) out[ref.index] = buf;
    }
    return out;
  }

  /**
   * Push row-sparse gradient rows of key `key`: `rowIds` global, sorted, unique and inside this server's row
   * range; `rows` packed `rowIds.length * rowSize` values. Sync mode: every worker pushes every round (possibly
   * with no rows).
   */
  rowSparsePush(rank: number, key: string, counter: number, rowIds: Int32Array, rows: FloatArray): Promise<void> {
    this.members.sender(currentCaller(), rank);
    this.counters.pushes++;
    const slot = this.slot(key);
    const local = localRows(slot, rowIds, rank, this.o.serverIndex);
    const rs = slot.spec.rows!.rowSize;
    if (rows.length !== rowIds.length * rs || rows.constructor !== slot.data.constructor) {
      throw Errors.mismatch(`rows of key ${key}`, `worker ${rank} pushed ${rows.constructor.name}[${rows.length}] for ${rowIds.length} rows of ${rs}`);
    }
    this.metrics?.received(rowIds.byteLength + rows.byteLength);
    return this.tracked(this.rounds.push(
      slot,
      rank,
      counter,
      (s) => s.rows.add(local, rows, this.kernels),
      (s) => {
        s.rows.last = { rowIds, rows: s.updater.readOnlyGrad ? rows : rows.slice() };
        s.updater({ key: s.spec.key, weights: s.data, grad: rows, rowIds: local, rowSize: rs, state: s.state, step: s.version, kernels: this.kernels });
      },
    ));
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
    const caller = currentCaller();
    let slots: Slot[];
    try {
      this.members.sender(caller, rank);
      slots = keys.map((k) => this.slot(k));
      for (const s of slots) sharedOf(s, rank, caller, this.o.serverIndex);
    } catch (e) {
      for (let i = 0; i < keys.length; i++) this.slots.get(keys[i]!)?.rx.release(rank, grads[i] ?? null, this.onDirect)();
      throw e;
    }
    slots.forEach((s, i) => (s.shared.wantOut[rank] = needs[i]!));
    const unmark = () => slots.forEach((s, i) => s.shared.wantOut[rank] === needs[i] && (s.shared.wantOut[rank] = -1));
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
    const caller = currentCaller();
    this.members.sender(caller, rank);
    this.counters.pulls++;
    if (keys.length !== needs.length) throw Errors.badFrame(`pull from server ${this.o.serverIndex}`, 'keys and needs differ in length');
    const slots = keys.map((k) => this.slot(k));
    for (const s of slots) if (s.spec.rows) throw Errors.invalidArg(`key ${s.spec.key}`, 'is row-sparse: use rowSparsePull');
    if (shared) {
      for (const s of slots) sharedOf(s, rank, caller, this.o.serverIndex);
      return this.pullInto(rank, slots, needs, caller, false);
    }
    // Sync mode: the stored arrays go out uncopied; they cannot change before the reply is sent, because the
    // next round needs this worker's next push. Async mode: any push may land meanwhile, so send a snapshot.
    const read = () => (this.metrics?.sent(slots.reduce((a, s) => a + s.data.byteLength, 0)), this.o.mode === 'sync' ? slots.map((s) => s.data) : slots.map((s) => s.data.slice()));
    return this.tracked(this.rounds.afterReached(rank, slots, needs, read));
  }

  /**
   * A shared pull: once the server reached `needs`, copy the values into the worker's staging outputs in this
   * turn of the event loop (no update can land between the copy and the reply) and reply nulls. `fused`: the
   * pull of a sync pushPull whose round's update may already have written them (`outAt`: consumed here).
   */
  private pullInto(rank: number, slots: Slot[], needs: number[], caller: string | undefined, fused: boolean): (FloatArray | null)[] | Promise<(FloatArray | null)[]> {
    const read = () =>
      slots.map((s) => {
        this.metrics?.sent(s.data.byteLength);
        const sh = sharedOf(s, rank, caller, this.o.serverIndex);
        const written = fused && s.shared.outAt[rank] === s.version;
        s.shared.outAt[rank] = -1;
        if (!written) sh.out.set(s.data);
        return null;
      });
    return this.rounds.afterReached(rank, slots, needs, read);
  }

  /**
   * Pull rows of a row-sparse key: `rowIds` (global, inside this server's range) or, with `rowIds` null, the
   * merged rows of the last completed round (sorted global ids and their summed pushes).
   */
  rowSparsePull(rank: number, key: string, need: number, rowIds: Int32Array | null): RowsReply | Promise<RowsReply> {
    this.members.sender(currentCaller(), rank);
    this.counters.pulls++;
    const slot = this.slot(key);
    const local = rowIds ? localRows(slot, rowIds, rank, this.o.serverIndex, false) : null;
    const read = (): RowsReply => {
      let reply = slot.rows.last ?? { rowIds: new Int32Array(0), rows: allocFloat(slot.spec.dtype, 0) };
      if (local) {
        const rs = slot.spec.rows!.rowSize;
        reply = { rowIds: rowIds!, rows: allocFloat(slot.spec.dtype, local.length * rs) };
        if (local.length) this.kernels.rows('gather', reply.rows, slot.data, local, rs);
      }
      this.metrics?.sent(reply.rowIds.byteLength + reply.rows.byteLength);
      return reply;
    };
    return this.tracked(this.rounds.afterReached(rank, [slot], [need], read));
  }

  /**
   * Collect one value from every worker under `tag` and return them all, in rank order, to every caller
   * (barriers, scalar sums, agreement checks). `op` names the operation: workers reaching one tag with different
   * operations all get ERR_MISMATCH at once. ERR_TIMEOUT naming the missing workers if some do not arrive.
   */
  gather(rank: number, tag: string, value: unknown, op?: string): Promise<unknown[]> {
    this.members.sender(currentCaller(), rank);
    const gone = this.members.lostError();
    if (gone) return Promise.reject(gone);
    return this.tracked(this.gathers.gather(rank, tag, value, op));
  }

  /**
   * A collective in one round trip (see `PsRequests.guarded`): join gather `tag` with `sig`; once every worker
   * has, start `calls` in order (as separate requests would be) when the signatures agree, else run nothing and
   * reply `values: null` (each worker then throws the same ERR_MISMATCH / ERR_NAN from `all`).
   */
  guarded(rank: number, tag: string, op: string, sig: unknown, calls: GuardedCall[]): Promise<PsReplies['guarded']> {
    const p = this.guardedRun(rank, tag, op, sig, calls);
    return this.traceRequest ? this.traceRequest(rank, 1, p) : p;
  }

  private guardedRun(rank: number, tag: string, op: string, sig: unknown, calls: GuardedCall[]): Promise<PsReplies['guarded']> {
    return runGuarded(this.gather(rank, tag, sig, op), op, calls, ([m, a]) => (this[m] as (...x: unknown[]) => unknown).apply(this, a));
  }

  /**
   * Several guarded collectives in one request (see `PsRequests.guardedMany`): each runs as `guarded` would, in
   * order; the reply holds each one's outcome once all have settled.
   */
  guardedMany(rank: number, items: GuardedItem[]): Promise<GuardedOutcome[]> {
    const p = Promise.all(items.map(([tag, op, sig, calls]) => settleGuarded(() => this.guardedRun(rank, tag, op, sig, calls))));
    return this.traceRequest ? this.traceRequest(rank, items.length, p) : p;
  }

  /** Write the shard now (atomically) to the configured checkpoint path. Returns the path and size. */
  checkpoint(): { path: string; bytes: number } {
    if (!this.o.checkpointPath) throw Errors.state(`server ${this.o.serverIndex} has no checkpointPath`);
    return this.writeCheckpoint();
  }

  /**
   * A copy of this server's slice of `key` (value, optimizer state, rounds applied), for a checkpoint taken from
   * the workers (`KVWorker.exportKeys`). Consistent at a sync round boundary: between a worker's push of round r
   * settling and its next push, the key cannot move past round r.
   */
  exportKey(key: string): PsReplies['exportKey'] {
    const s = this.slot(key);
    return { data: s.data.slice(), version: s.version, state: Object.fromEntries(Object.entries(s.state).map(([n, a]) => [n, a.slice()])) };
  }

  stats(): KVServerStats {
    const r = process.resourceUsage();
    return { serverIndex: this.o.serverIndex, keys: this.slots.size, ...this.counters, updates: this.rounds.counters.updates, restoredFrom: this.restoredFrom, cpuUs: r.userCPUTime + r.systemCPUTime, sleeps: r.voluntaryContextSwitches };
  }

  /** Progress of keys on this server (for tests and resuming workers). */
  versions(keys: string[]): { version: number[]; clock: number[][] } {
    const s = keys.map((k) => this.slot(k));
    return { version: s.map((x) => x.version), clock: s.map((x) => [...x.clock]) };
  }

  /**
   * Sizes of the server's bookkeeping (open gathers, waiting requests): constant from round to round in a steady
   * job. For tests that pin memory (not remote).
   */
  bookkeeping(): { gathers: number; waiters: number; keys: number } {
    let waiters = this.keyWaiters.size;
    for (const s of this.slots.values()) waiters += s.waiters.size;
    return { gathers: this.gathers.size, waiters, keys: this.slots.size };
  }

  private writeCheckpoint(): { path: string; bytes: number } {
    const path = this.o.checkpointPath!;
    const bytes = writeSlots(path, this.o, this.slots.values());
    this.counters.checkpoints++;
    return { path, bytes };
  }

  private restore(path: string): void {
    for (const slot of readSlots(path, this.o, (spec, slice, data) => this.newSlot(spec, slice, data))) this.slots.set(slot.spec.key, slot);
    this.restoredFrom = path;
  }

  private slot(key: string): Slot {
    const s = this.slots.get(key);
    if (!s) throw Errors.invalidArg(`key ${JSON.stringify(key)}`, `is not initialised on server ${this.o.serverIndex} (call init first)`);
    return s;
  }

  /**
   * Actor hook: a caller's connection went away. If it was a worker, everything that needs that worker (a sync
   * round, a gather, a staleness wait) fails now with ERR_PEER_CLOSED naming it, on every other worker, instead
   * of timing out; later such requests fail the same way until the worker says hello again.
   */
  onCallerClosed(caller: string): void {
    this.bounds.forget(caller);
    this.regions.dropCaller(caller, this.slots.values());
    const lost = this.members.drop(caller);
    if (!lost) return;
    const { rank, err } = lost;
    if (this.o.mode === 'sync' || this.o.staleness !== undefined) {
      for (const s of this.slots.values()) {
        s.waiters.failAll(err);
        if (this.o.mode === 'sync' && !s.round.pushed[rank]) {
          s.round.abandon(err);
          s.rows.reset();
        }
      }
    }
    this.gathers.failMissing(rank, err);
  }

  /** A request's reply, counted in the metrics' queue until it settles. */
  private readonly tracked = <T>(r: T): T => (this.metrics ? this.metrics.track(r) : r);

  /** Actor hook: fail everything still waiting (the actor is stopping), write the last metrics. */
  async onActorStop(): Promise<void> {
    const err = new ShoalError('ERR_CLOSED', `parameter server ${this.o.serverIndex} is stopping`);
    for (const s of this.slots.values()) {
      s.waiters.failAll(err);
      s.round.abandon(err);
    }
    this.keyWaiters.failAll(err);
    await Promise.all([this.metrics?.close().catch(() => {}), this.timeline?.close().catch(() => {})]);
  }
}

const noop = () => {};

/** Give a new slot a checkpoint's optimizer state and round count (sync rounds: every worker's clock is there too). */
function restoreKeyState(slot: Slot, r: KeyState, serverIndex: number): void {
  const elems = slot.slice.end - slot.slice.start;
  const rows = slot.slice.rowEnd !== undefined ? slot.slice.rowEnd - slot.slice.rowStart! : -1;
  for (const [n, a] of Object.entries(r.state)) {
    if (a.length !== elems && a.length !== rows) throw Errors.invalidArg(`restored state ${n} of key ${slot.spec.key}`, `has ${a.length} values, server ${serverIndex}'s slice needs ${elems}${rows >= 0 ? ` (or ${rows}, one per row)` : ''}`);
    slot.state[n] = a.slice();
  }
  slot.version = r.version;
  slot.clock.fill(r.version);
}
