import { openSharedRegion, unlinkSharedRegion } from '@shoal/core/transport';
import { Errors, type FloatArray } from '@shoal/core';
import type { KeySpec } from '../key-layout.js';
import type { SharedEntry } from '../protocol.js';

/** What the data plane needs of a key slice (a `Slot` has it). */
export interface SharedKey {
  spec: KeySpec;
  data: FloatArray;
  shared: SharedSlot;
}

/**
 * The same-host data plane on the server side (BytePS's shared-memory path, ps-lite's IPC van): a worker's
 * staging region, mapped here, holds per dense key a gradient and an output buffer; a push may leave its gradient
 * there (sent as null) and a pull with `shared` gets its values written there instead of into the reply.
 */

/** A worker's staging views of one key slice, and the connection that attached them (the only one that may use them). */
export interface SharedViews {
  grad: FloatArray;
  out: FloatArray;
  caller: string | undefined;
}

/** One dense key's shared views per worker, and which round's values the update wrote into them. */
export class SharedSlot {
  readonly views: (SharedViews | null)[];
  /**
   * Per worker (sync): the version the round's update wrote into `views[r].out` for the pushPull that asked for
   * it (-1: none). That pushPull's reply consumes it; every other shared pull copies.
   */
  readonly outAt: number[];
  /** Per worker (sync): a pushPull waits for this version with a shared reply: the update writes `out` in its pass. */
  readonly wantOut: number[];

  constructor(numWorkers: number) {
    this.views = new Array<SharedViews | null>(numWorkers).fill(null);
    this.outAt = new Array<number>(numWorkers).fill(-1);
    this.wantOut = new Array<number>(numWorkers).fill(-1);
  }

  set(rank: number, v: SharedViews | null): void {
    this.views[rank] = v;
    this.outAt[rank] = -1;
    this.wantOut[rank] = -1;
  }

  /** Forget the views connection `caller` attached (it went away). */
  dropCaller(caller: string): void {
    this.views.forEach((v, r) => v?.caller === caller && this.set(r, null));
  }
}

/** The worker's staging views of `slot` (ERR_STATE when it attached none, or another connection of the rank did). */
export function sharedOf(slot: SharedKey, rank: number, caller: string | undefined, serverIndex: number): SharedViews {
  const v = slot.shared.views[rank];
  if (!v) throw Errors.state(`worker ${rank} has no shared buffers for key ${slot.spec.key} on server ${serverIndex} (attachShared first)`);
  if (v.caller !== caller) throw Errors.state(`the shared buffers of worker ${rank} for key ${slot.spec.key} on server ${serverIndex} belong to another connection of that rank`);
  return v;
}

/** Names of the staging regions each connection attached, removed when the connection goes away. */
export class SharedRegions {
  private readonly names = new Map<string, string[]>();

  /**
   * Map region `name` (`bytes` long) of worker `rank` and point the slots of `entries` at it. Checks everything
   * first (a bad request changes nothing). ERR_TRANSPORT when the region cannot be mapped (another host, another
   * /dev/shm): the worker then keeps sending data in messages.
   */
  attach(slotOf: (key: string) => SharedKey, rank: number, name: string, bytes: number, entries: readonly SharedEntry[], caller: string | undefined): { keys: number } {
    if (typeof name !== 'string') throw Errors.invalidArg('attachShared name', `must be a string, got ${typeof name}`);
    if (!Number.isSafeInteger(bytes) || bytes < 1) throw Errors.invalidArg('attachShared bytes', `must be a positive integer, got ${JSON.stringify(bytes)}`);
    if (!Array.isArray(entries)) throw Errors.invalidArg('attachShared entries', 'must be an array');
    const views = entries.map((e) => {
      const slot = slotOf(e.key);
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
      const names = this.names.get(caller) ?? [];
      names.push(name);
      this.names.set(caller, names);
    }
    for (const v of views) {
      const Ctor = v.slot.data.constructor as Float32ArrayConstructor | Float64ArrayConstructor;
      const n = v.slot.data.length;
      // A second KVWorker of this rank (another connection) takes the key over: the first one's requests that name
      // staging buffers are then refused (ERR_STATE) instead of reading the newer worker's buffers.
      v.slot.shared.set(rank, { grad: new Ctor(region.buffer, v.grad, n), out: new Ctor(region.buffer, v.out, n), caller });
    }
    return { keys: views.length };
  }

  /** Connection `caller` went away: remove the names it left, unmap its views (once nothing refers to them). */
  dropCaller(caller: string, slots: Iterable<SharedKey>): void {
    for (const name of this.names.get(caller) ?? []) unlinkSharedRegion(name); // normally removed already
    this.names.delete(caller);
    for (const s of slots) s.shared.dropCaller(caller);
  }
}
