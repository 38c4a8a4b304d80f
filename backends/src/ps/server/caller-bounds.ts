import { raiseCallerBound, type CallerBound } from '@shoal/core/actor';
import { Errors } from '@shoal/core';
import { describeSpec, sameSpec, sliceKey, validateKeySpec, type KeySpec } from '../key-layout.js';

/**
 * The server's bound on what one connection may send (issue #15): a worker's messages are bounded by the keys it
 * declared, so a peer announcing a larger frame is dropped at the header, before anything is reserved for it.
 *
 * - Before a connection declared any key, a message (a frame, or one array segment of it) may be at most
 *   `PS_CONTROL_BYTES`: enough for hello, the declarations themselves (the worker sends them in batches of at
 *   most `DECLARE_BATCH_BYTES` of specs), gathers of scalars and collective signatures, stats and the small keys'
 *   values packed into a frame (at most half the 64 KiB array threshold, see `encodeParts`).
 * - `declare(specs)` raises it to the largest of: this server's largest slice of a declared key (a dense push or
 *   pull slice, init values and restored optimizer state, a row-sparse push's rows, all sent as one segment each;
 *   a row-sparse key's per-row f64 state counts too), and the control bound plus
 *   an allowance per declared key for the frames that name keys (a push names each key once, a guarded request in
 *   its signature and its call, init in its spec). Keys on other servers count for the allowance too: server 0
 *   gathers every collective's signature. The bound only rises; a connection declares again after a reconnect.
 *
 * A declared key the server already holds must match its spec (ERR_MISMATCH): a connection cannot raise its bound
 * by misdescribing a key of the job. A new key's size is the worker's word: authentication (the job secret) is what
 * keeps strangers out; the bound keeps a member's bug or a forged header from costing the server its memory.
 */
export const PS_CONTROL_BYTES = 1 << 20;

/** A declaration request's specs stay under this many bytes of JSON (the worker splits longer lists). */
export const DECLARE_BATCH_BYTES = 256 * 1024;

/** The bound of a connection that declared nothing (`KVServer.callerBound`). */
export const PS_CALLER_BOUND: CallerBound = Object.freeze({ bytes: PS_CONTROL_BYTES, reason: "the parameter server's control-plane bound (no keys declared on this connection)" });

/** Times one frame may name a key, and the bytes per key beyond its name (counter, placeholder, spec, slice, shape). */
const NAMES_PER_KEY = 3;
const BYTES_PER_KEY = 256;

interface Declared {
  keys: Map<string, KeySpec>;
  /** Frame allowance of the declared keys. */
  meta: number;
  /** This server's largest slice of a declared key, bytes. */
  largest: number;
}

export class CallerBounds {
  private readonly callers = new Map<string, Declared>();

  constructor(
    private readonly serverIndex: number,
    private readonly numServers: number,
    private readonly bigKeyBound: number | undefined,
  ) {}

  /**
   * Connection `caller` (worker `rank`) declares `specs`: raise its bound (see the module comment) and return the
   * bound in force. `held(key)`: the spec of a key the server already holds.
   */
  declare(caller: string, rank: number, specs: readonly KeySpec[], held: (key: string) => KeySpec | undefined): number {
    let d = this.callers.get(caller);
    if (!d) this.callers.set(caller, (d = { keys: new Map(), meta: 0, largest: 0 }));
    for (const spec of specs) validateKeySpec(spec);
    for (const spec of specs) {
      const have = held(spec.key) ?? d.keys.get(spec.key);
      if (have && !sameSpec(have, spec)) throw Errors.mismatch(`key ${spec.key}`, `server ${this.serverIndex} has ${describeSpec(have)}, worker ${rank} declared ${describeSpec(spec)}`);
    }
    for (const spec of specs) {
      if (d.keys.has(spec.key)) continue;
      d.keys.set(spec.key, spec);
      const mine = sliceKey(spec, this.numServers, this.bigKeyBound).find((s) => s.server === this.serverIndex);
      // the slice's values (or an optimizer state array restored at init); a row-sparse key's per-row state is f64
      if (mine) d.largest = Math.max(d.largest, (mine.end - mine.start) * (spec.dtype === 'float64' ? 8 : 4), ((mine.rowEnd ?? 0) - (mine.rowStart ?? 0)) * 8);
      d.meta += NAMES_PER_KEY * Buffer.byteLength(JSON.stringify(spec.key)) + BYTES_PER_KEY;
    }
    const bytes = Math.max(d.largest, PS_CONTROL_BYTES + d.meta);
    const reason = `the keys worker ${rank} declared (${d.keys.size} keys; largest slice on server ${this.serverIndex}: ${d.largest} bytes)`;
    return raiseCallerBound(bytes, reason);
  }

  /** The connection is gone. */
  forget(caller: string): void {
    this.callers.delete(caller);
  }
}
