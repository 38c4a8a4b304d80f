import { Errors } from '../errors.js';

/**
 * Structured binary encoding for actor messages: a small JSON header plus raw byte segments, so typed arrays
 * (gradients, weights, row ids) never go through JSON.
 *
 * A message is one frame, optionally followed by external segments sent as messages of their own:
 *   frame: u32 magic 'SHA2' | u32 headerBytes | u32 externalCount | u32 0 | header (UTF-8 JSON) | pad to 8 |
 *          packed segment 0 | pad to 8 | packed segment 1 ...
 *   then `externalCount` messages, each the raw bytes of one external segment.
 * The header is `{ v: <value with placeholders>, s: [packed byteLength...], x: [external byteLength...] }`. A
 * typed array (or ArrayBuffer) in the value becomes `{ "\u0000b": <packed index>, "t": <type> }` or
 * `{ "\u0000x": <external index>, "t": <type> }`. With `externalMinBytes`, arrays at least that big are sent as
 * external segments straight from the caller's memory (no copy into a frame); smaller ones are packed.
 *
 * Supported values: JSON values (null, boolean, number, string, arrays, plain objects), every typed array,
 * ArrayBuffers, and `undefined` inside objects (dropped, as JSON does); non-finite numbers are kept. Anything
 * else (Map, Set, class instances, functions, bigint) is refused with ERR_BAD_FRAME naming the path.
 *
 * Ownership: packed segments are copied into the frame. External segments are views of the caller's arrays:
 * they must stay unchanged until their sends resolve. Typed arrays returned by decoding are views into the
 * received messages when suitably aligned (zero copy), copies otherwise; either way they belong to the receiver.
 */
const MAGIC = 0x32414853; // 'SHA2'
const TAG = '\u0000b';
const XTAG = '\u0000x';
const PREAMBLE = 16;

type TypedArrayCtor =
  | Int8ArrayConstructor
  | Uint8ArrayConstructor
  | Uint8ClampedArrayConstructor
  | Int16ArrayConstructor
  | Uint16ArrayConstructor
  | Int32ArrayConstructor
  | Uint32ArrayConstructor
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | BigInt64ArrayConstructor
  | BigUint64ArrayConstructor;

const CTORS: Record<string, TypedArrayCtor> = {
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
};

const align8 = (n: number) => (n + 7) & ~7;

/**
 * Recycles big frame buffers on one connection: a frame goes back with `give` once the transport's `send` has
 * resolved (the transport no longer needs it), and the next frame of a similar size reuses it, sparing the
 * allocation, the kernel's page zeroing and the garbage collector. Small frames are not pooled.
 */
export class FramePool {
  private readonly free: ArrayBuffer[] = [];
  constructor(
    private readonly maxBuffers = 2,
    private readonly minBytes = 64 * 1024,
  ) {}
  take(n: number): Uint8Array {
    if (n >= this.minBytes) {
      // best fit among buffers at most 2x the request
      let best = -1;
      for (let i = 0; i < this.free.length; i++) {
        const b = this.free[i]!.byteLength;
        if (b >= n && b <= 2 * n && (best < 0 || b < this.free[best]!.byteLength)) best = i;
      }
      if (best >= 0) return new Uint8Array(this.free.splice(best, 1)[0]!, 0, n);
    }
    return new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
  }
  give(frame: Uint8Array): void {
    if (frame.byteLength < this.minBytes || frame.byteOffset !== 0) return;
    this.free.push(frame.buffer as ArrayBuffer);
    if (this.free.length > this.maxBuffers) this.free.shift();
  }
}

export interface EncodedMessage {
  /** The frame (from the pool when one was given). */
  frame: Uint8Array;
  /** External segments to send, in order, right after the frame. */
  external: Uint8Array[];
}

export interface EncodeOptions {
  pool?: FramePool;
  /**
   * Typed arrays of at least this many bytes become external segments. Default: never. With it, smaller arrays
   * are packed only while the packed bytes stay under half of it; later ones go external too. So a frame stays
   * small (a transport's small-message path) whatever the arrays' sizes: a frame whose size changed from message
   * to message above a transport's small limit would each time need a fresh buffer (the shm transport keeps
   * collected receive buffers by exact size: variable big frames filled its 128 MiB per connection; issue #16).
   */
  externalMinBytes?: number;
}

/** Encode `value` into a frame plus external segments. See the module comment. */
export function encodeParts(value: unknown, opts: EncodeOptions = {}): EncodedMessage {
  const min = opts.externalMinBytes ?? Infinity;
  const st: LowerState = { packed: [], external: [], min, packBudget: min / 2, packedBytes: 0 };
  const v = lower(value, st, '$');
  const header = new TextEncoder().encode(JSON.stringify({ v, s: st.packed.map((x) => x.byteLength), x: st.external.map((x) => x.byteLength) }));
  let total = align8(PREAMBLE + header.byteLength);
  for (const x of st.packed) total += align8(x.byteLength);
  // Not zero-filled (one pass less over big frames); every byte is written below, padding included.
  const frame = opts.pool ? opts.pool.take(total) : new Uint8Array(Buffer.allocUnsafeSlow(total).buffer, 0, total);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, header.byteLength, true);
  dv.setUint32(8, st.external.length, true);
  dv.setUint32(12, 0, true);
  frame.set(header, PREAMBLE);
  let off = PREAMBLE + header.byteLength;
  frame.fill(0, off, align8(off));
  off = align8(off);
  for (const x of st.packed) {
    frame.set(x, off);
    off += x.byteLength;
    frame.fill(0, off, align8(off));
    off = align8(off);
  }
  return { frame, external: st.external };
}

/** Encode `value` into one self-contained frame (every array packed; from `pool` when given). */
export function encodeMessage(value: unknown, pool?: FramePool): Uint8Array {
  return encodeParts(value, { pool }).frame;
}

/** How many external segment messages follow this frame (ERR_BAD_FRAME if it is not an actor frame). */
export function externalCount(frame: Uint8Array): number {
  if (frame.byteLength < PREAMBLE) throw Errors.badFrame('actor codec', `frame of ${frame.byteLength} bytes is too short`);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw Errors.badFrame('actor codec', 'bad magic (not an actor message)');
  return dv.getUint32(8, true);
}

interface LowerState {
  packed: Uint8Array[];
  external: Uint8Array[];
  min: number;
  /** Packed bytes allowed in the frame (arrays beyond go external). */
  packBudget: number;
  packedBytes: number;
}

function lower(x: unknown, st: LowerState, path: string): unknown {
  if (x === null || typeof x === 'boolean' || typeof x === 'string') return x;
  if (typeof x === 'number') {
    if (!Number.isFinite(x)) return { '\u0000n': String(x) };
    return x;
  }
  if (x === undefined) return { '\u0000u': 1 };
  if (typeof x !== 'object') throw Errors.badFrame('actor codec', `cannot encode ${typeof x} at ${path}`);
  if (ArrayBuffer.isView(x)) {
    if (x instanceof DataView) throw Errors.badFrame('actor codec', `cannot encode DataView at ${path}`);
    const name = x.constructor.name;
    if (!(name in CTORS)) throw Errors.badFrame('actor codec', `cannot encode ${name} at ${path}`);
    const bytes = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    if (x.byteLength >= st.min || (x.byteLength > 0 && st.packedBytes + x.byteLength > st.packBudget)) {
      st.external.push(bytes);
      return { [XTAG]: st.external.length - 1, t: name };
    }
    st.packedBytes += x.byteLength;
    st.packed.push(bytes);
    return { [TAG]: st.packed.length - 1, t: name };
  }
  if (x instanceof ArrayBuffer) {
    st.packed.push(new Uint8Array(x));
    return { [TAG]: st.packed.length - 1, t: 'ArrayBuffer' };
  }
  if (Array.isArray(x)) return x.map((e, i) => lower(e, st, `${path}[${i}]`));
  const proto = Object.getPrototypeOf(x);
  if (proto !== Object.prototype && proto !== null) {
    throw Errors.badFrame('actor codec', `cannot encode ${proto?.constructor?.name ?? 'object'} at ${path} (plain objects only)`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, e] of Object.entries(x)) {
    if (e === undefined) continue;
    out[k] = lower(e, st, `${path}.${k}`);
  }
  return out;
}

/** Decode a frame produced by `encodeMessage` (no external segments). Throws ERR_BAD_FRAME when malformed. */
export function decodeMessage(frame: Uint8Array): unknown {
  return decodeParts(frame, []);
}

/** Decode a frame and the external segment messages that followed it. Throws ERR_BAD_FRAME when malformed. */
export function decodeParts(frame: Uint8Array, external: readonly Uint8Array[]): unknown {
  return finishDecode(parseFrame(frame), external);
}

/**
 * A frame read up to its external segments: `v` is the value with placeholders in place of arrays (see
 * `externalRef`), `x` the byte lengths of the external segments that follow. Lets a receiver choose where each
 * external segment lands (e.g. `Connection.recvInto`) before receiving it; `finishDecode` completes it.
 */
export interface ParsedFrame {
  v: unknown;
  x: number[];
  segs: Uint8Array[];
}

/** Read a frame's header and packed segments. Throws ERR_BAD_FRAME when malformed. */
export function parseFrame(frame: Uint8Array): ParsedFrame {
  const nx = externalCount(frame);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const hlen = dv.getUint32(4, true);
  if (PREAMBLE + hlen > frame.byteLength) throw Errors.badFrame('actor codec', `header length ${hlen} exceeds frame ${frame.byteLength}`);
  let header: { v: unknown; s: number[]; x: number[] };
  try {
    header = JSON.parse(new TextDecoder().decode(frame.subarray(PREAMBLE, PREAMBLE + hlen)));
  } catch (e) {
    throw Errors.badFrame('actor codec', `header is not JSON: ${(e as Error).message}`);
  }
  const segs: Uint8Array[] = [];
  let off = align8(PREAMBLE + hlen);
  for (const len of header.s) {
    if (off + len > frame.byteLength) throw Errors.badFrame('actor codec', `segment overruns frame (${off}+${len} > ${frame.byteLength})`);
    segs.push(frame.subarray(off, off + len));
    off += align8(len);
  }
  const x = header.x ?? [];
  if (x.length !== nx) throw Errors.badFrame('actor codec', `frame announces ${nx} external segments, header lists ${x.length}`);
  return { v: header.v, x, segs };
}

/**
 * In a parsed frame's value: the external segment index and type of an array sent as an external segment, or
 * undefined for anything else.
 */
export function externalRef(x: unknown): { index: number; type: string } | undefined {
  if (x === null || typeof x !== 'object' || !(XTAG in x)) return undefined;
  const o = x as Record<string, unknown>;
  return { index: o[XTAG] as number, type: o.t as string };
}

/** Complete a parsed frame with its external segments (consumes `parsed`). Throws ERR_BAD_FRAME when malformed. */
export function finishDecode(parsed: ParsedFrame, external: readonly Uint8Array[]): unknown {
  if (parsed.x.length !== external.length) throw Errors.badFrame('actor codec', `frame announces ${parsed.x.length} external segments, got ${external.length}`);
  parsed.x.forEach((len, i) => {
    if (external[i]!.byteLength !== len) throw Errors.badFrame('actor codec', `external segment ${i} has ${external[i]!.byteLength} bytes, header says ${len}`);
  });
  return raise(parsed.v, parsed.segs, external);
}

function raise(x: unknown, segs: Uint8Array[], ext: readonly Uint8Array[]): unknown {
  if (x === null || typeof x !== 'object') return x;
  if (Array.isArray(x)) {
    for (let i = 0; i < x.length; i++) x[i] = raise(x[i], segs, ext);
    return x;
  }
  const o = x as Record<string, unknown>;
  if (TAG in o || XTAG in o) {
    const seg = TAG in o ? segs[o[TAG] as number] : ext[o[XTAG] as number];
    if (!seg) throw Errors.badFrame('actor codec', `missing segment ${String(o[TAG] ?? o[XTAG])}`);
    const t = o.t as string;
    if (t === 'ArrayBuffer') return seg.slice().buffer;
    const C = CTORS[t];
    if (!C) throw Errors.badFrame('actor codec', `unknown typed array ${t}`);
    if (seg.byteLength % C.BYTES_PER_ELEMENT !== 0) throw Errors.badFrame('actor codec', `${t} segment of ${seg.byteLength} bytes`);
    const bytes = seg.byteOffset % C.BYTES_PER_ELEMENT === 0 ? seg : seg.slice();
    return new C(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / C.BYTES_PER_ELEMENT);
  }
  if ('\u0000u' in o) return undefined;
  if ('\u0000n' in o) return Number(o['\u0000n']);
  for (const k of Object.keys(o)) o[k] = raise(o[k], segs, ext);
  return o;
}
