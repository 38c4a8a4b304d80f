import { Errors, type FloatArray, type ReduceKernels, type ShoalError } from '@shoal/core';
import type { DenseUpdate } from './dense-update.js';
import type { GroupCommit } from './shard-checkpoint.js';
import type { Slot } from './slot.js';

export interface RoundsOptions {
  serverIndex: number;
  numWorkers: number;
  mode: 'sync' | 'async';
  staleness?: number;
  /** Limit of every wait (a round's pushes, a pull's need). */
  timeoutMs: number;
}

/**
 * The consistency rules of a server shard (ps-lite's request handle), per key:
 * - `sync`: a key's round completes when all workers pushed it; the merged (summed) gradient is folded in by the
 *   updater, then every push of the round is acknowledged. A push for a later round waits for the current one.
 * - `async`: each push is applied on arrival; with `staleness` s, a worker's push number c waits until every
 *   worker has had at least c - s pushes applied, and a pull after push c waits until every worker has had
 *   c + 1 - s applied (bounded staleness, SSP: s = 0 reads exactly what a sync round gives).
 * Pushes carry the worker's per-key counter, so a resend after a server restart is applied once; pulls wait for
 * their `need` (`afterReached`). Every wait names, when it times out, the workers it was waiting for.
 */
export class Rounds {
  /** Updates applied, and the wall time spent applying them (ms; read by the server's metrics). */
  readonly counters = { updates: 0, applyMs: 0 };
  /** Told of every update applied: the key and its start and end (`performance.now()`); the server's timeline. */
  onApplied?: (key: string, startMs: number, endMs: number) => void;

  constructor(
    private readonly o: RoundsOptions,
    private readonly kernels: ReduceKernels,
    private readonly dense: DenseUpdate,
    private readonly commit: GroupCommit,
    private readonly lostError: () => ShoalError | undefined,
  ) {}

  /**
   * Worker `rank`'s push number `counter` of `slot`: `merge` adds it to the sync round (the round's update runs
   * when it completes it), `applyAsync` applies it at once in async mode. Resolves once applied (and durable).
   */
  push(slot: Slot, rank: number, counter: number, merge: (s: Slot) => void, applyAsync: (s: Slot) => void): Promise<void> {
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
    const staleness = this.o.staleness;
    const ready = () =>
      done() ||
      (sync
        ? counter === slot.version && !slot.round.pushed[rank]
        : counter === slot.clock[rank]! && (staleness === undefined || counter - Math.min(...slot.clock) <= staleness));
    return new Promise<void>((resolve, reject) => {
      const run = () => {
        if (done()) return resolve();
        try {
          if (sync) {
            merge(slot);
            slot.clock[rank]!++;
            if (slot.round.join(rank, { resolve, reject })) this.completeRound(slot);
            else slot.round.arm(this.o.timeoutMs, () => `sync round ${slot.version + 1} of key ${slot.spec.key} on server ${this.o.serverIndex}`);
          } else {
            const t0 = performance.now();
            applyAsync(slot);
            const t1 = performance.now();
            this.counters.applyMs += t1 - t0;
            this.onApplied?.(slot.spec.key, t0, t1);
            slot.clock[rank]!++;
            slot.version++;
            this.counters.updates++;
            this.commit.acknowledge([{ resolve, reject }]);
            slot.waiters.pump();
          }
        } catch (e) {
          reject(e);
        }
      };
      if (ready()) run();
      else slot.waiters.add(ready, run, reject, () => `push #${counter} of key ${slot.spec.key} from worker ${rank} on server ${this.o.serverIndex}${this.waitingFor(slot, rank, counter)}`);
    });
  }

  /** ` (waiting for workers ...)`: whom a wait of worker `rank` for `need` on `slot` depends on now. */
  waitingFor(slot: Slot, rank: number, need: number): string {
    let ranks: number[];
    if (this.o.mode === 'sync') ranks = slot.round.missing();
    else if (this.o.staleness !== undefined) ranks = slot.clock.flatMap((c, r) => (c < need - this.o.staleness! ? [r] : []));
    else ranks = slot.clock[rank]! < need ? [rank] : [];
    return ranks.length ? `: waiting for worker${ranks.length > 1 ? 's' : ''} ${ranks.join(', ')}` : '';
  }

  /** The round's update (all workers pushed): apply the merged gradient, acknowledge, wake the waiters. */
  private completeRound(slot: Slot): void {
    const acks = slot.round.takeAcks();
    const t0 = performance.now();
    try {
      if (slot.spec.rows) this.updateRows(slot);
      else this.updateDense(slot);
    } catch (e) {
      for (const a of acks) a.reject(e);
      throw e;
    } finally {
      slot.version++;
      slot.round.reset();
      this.counters.updates++;
      const t1 = performance.now();
      this.counters.applyMs += t1 - t0;
      this.onApplied?.(slot.spec.key, t0, t1);
    }
    this.commit.acknowledge(acks);
    slot.waiters.pump();
  }

  private updateRows(slot: Slot): void {
    const rs = slot.spec.rows!.rowSize;
    const { local, packed } = slot.rows.take(this.kernels);
    // `packed` is kept as the round's merged rows (rowSparsePullLast): a rule that may write its gradient gets a copy
    const grad = slot.updater.readOnlyGrad ? packed : packed.slice();
    slot.updater({ key: slot.spec.key, weights: slot.data, grad, rowIds: local, rowSize: rs, state: slot.state, step: slot.version, kernels: this.kernels });
    const global = new Int32Array(local.length);
    for (let i = 0; i < local.length; i++) global[i] = local[i]! + slot.slice.rowStart!;
    slot.rows.last = { rowIds: global, rows: packed };
  }

  private updateDense(slot: Slot): void {
    // Workers whose pushPull waits for this round with a shared reply get the values in the update's pass.
    const next = slot.version + 1;
    const outs: FloatArray[] = [];
    const wrote: number[] = [];
    const sh = slot.shared;
    for (let r = 0; r < this.o.numWorkers; r++) {
      const v = sh.views[r];
      if (v && sh.wantOut[r] === next) (outs.push(v.out), wrote.push(r));
    }
    try {
      this.dense.apply(slot, slot.round.grads as FloatArray[], outs);
      for (const r of wrote) {
        sh.outAt[r] = next;
        sh.wantOut[r] = -1;
      }
    } finally {
      slot.round.dropHeld();
    }
  }

  /**
   * Whether a pull of worker `rank` needing update `need` may be answered. Sync: the key's round `need` is
   * applied. Async: this worker's pushes before `need` are applied and, with `staleness` s, every worker has had
   * at least `need - s` pushes applied (SSP's read rule): the values a worker computes its next gradient from miss
   * at most the last s pushes of any other worker, so s = 0 reads what a sync round gives.
   */
  reached(slot: Slot, rank: number, need: number): boolean {
    if (this.o.mode === 'sync') return slot.version >= need;
    if (slot.clock[rank]! < need) return false;
    return this.o.staleness === undefined || Math.min(...slot.clock) >= need - this.o.staleness;
  }

  /** `read()` once every slot has reached its need for `rank`: at once when they have (no extra turn), else later. */
  afterReached<T>(rank: number, slots: readonly Slot[], needs: readonly number[], read: () => T): T | Promise<T> {
    if (slots.every((s, i) => this.reached(s, rank, needs[i]!))) return read();
    return Promise.all(slots.map((s, i) => this.whenReached(s, rank, needs[i]!))).then(read);
  }

  private whenReached(slot: Slot, rank: number, need: number): Promise<void> {
    if (this.reached(slot, rank, need)) return Promise.resolve();
    const gone = this.o.mode === 'sync' || this.o.staleness !== undefined ? this.lostError() : undefined;
    if (gone) return Promise.reject(gone);
    return slot.waiters.wait(
      () => this.reached(slot, rank, need),
      () => `pull of key ${slot.spec.key} by worker ${rank} (needs update ${need}, server ${this.o.serverIndex} is at ${slot.version})${this.waitingFor(slot, rank, need)}`,
    );
  }
}
