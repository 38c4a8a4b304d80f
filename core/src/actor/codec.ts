import { Errors } from '../errors.js';

/**
 * Structured binary encoding for actor messages: a small JSON header plus raw byte segments, so typed arrays
 * (gradients, weights, row ids) never go through JSON.
 *
 * Frame layout (little endian):
 *   u32 magic 'SHA1' | u32 headerBytes | header (UTF-8 JSON) | pad to 8 | segment 0 | pad to 8 | segment 1 ...
 * The header is `{ v: <value with placeholders>, s: [byteLength, ...] }`. A typed array (or ArrayBuffer) in the
 * value becomes the placeholder `{ "\u0000b": <segment index>, "t": <type name> }`.
 *
 * Supported values: JSON values (null, boolean, number, string, arrays, plain objects), every typed array,
 * DataView-free ArrayBuffers, and `undefined` inside objects (dropped, as JSON does). Anything else (Map, Set,
 * class instances with methods, functions, bigint) is refused with ERR_BAD_FRAME naming the path.
 *
 * Ownership: `encodeMessage` copies every segment into one new frame (the caller keeps its arrays). Typed arrays
 * returned by `decodeMessage` are views into the frame when the frame is 8-byte aligned (zero copy), copies
 * otherwise; either way they belong to the receiver.
 */
const MAGIC = 0x31414853; // 'SHA1'
const TAG = '\u0000b';

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

/** Encode `value` into one frame (from `pool` when given). See the module comment for what is supported. */
export function encodeMessage(value: unknown, pool?: FramePool): Uint8Array {
  const segs: Uint8Array[] = [];
  const v = lower(value, segs, '$');
  const header = new TextEncoder().encode(JSON.stringify({ v, s: segs.map((s) => s.byteLength) }));
  let total = align8(8 + header.byteLength);
  for (const s of segs) total += align8(s.byteLength);
  // Not zero-filled (one pass less over big frames); every byte is written below, padding included.
  const frame = pool ? pool.take(total) : new Uint8Array(Buffer.allocUnsafeSlow(total).buffer, 0, total);
  const dv = new DataView(frame.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, header.byteLength, true);
  frame.set(header, 8);
  let off = 8 + header.byteLength;
  frame.fill(0, off, align8(off));
  off = align8(off);
  for (const s of segs) {
    frame.set(s, off);
    off += s.byteLength;
    frame.fill(0, off, align8(off));
    off = align8(off);
  }
  return frame;
}

function lower(x: unknown, segs: Uint8Array[], path: string): unknown {
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
    segs.push(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    return { [TAG]: segs.length - 1, t: name };
  }
  if (x instanceof ArrayBuffer) {
    segs.push(new Uint8Array(x));
    return { [TAG]: segs.length - 1, t: 'ArrayBuffer' };
  }
  if (Array.isArray(x)) return x.map((e, i) => lower(e, segs, `${path}[${i}]`));
  const proto = Object.getPrototypeOf(x);
  if (proto !== Object.prototype && proto !== null) {
    throw Errors.badFrame('actor codec', `cannot encode ${proto?.constructor?.name ?? 'object'} at ${path} (plain objects only)`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, e] of Object.entries(x)) {
    if (e === undefined) continue;
    out[k] = lower(e, segs, `${path}.${k}`);
  }
  return out;
}

/** Decode one frame produced by `encodeMessage`. Throws ERR_BAD_FRAME on a malformed frame. */
export function decodeMessage(frame: Uint8Array): unknown {
  if (frame.byteLength < 8) throw Errors.badFrame('actor codec', `frame of ${frame.byteLength} bytes is too short`);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) throw Errors.badFrame('actor codec', 'bad magic (not an actor message)');
  const hlen = dv.getUint32(4, true);
  if (8 + hlen > frame.byteLength) throw Errors.badFrame('actor codec', `header length ${hlen} exceeds frame ${frame.byteLength}`);
  let header: { v: unknown; s: number[] };
  try {
    header = JSON.parse(new TextDecoder().decode(frame.subarray(8, 8 + hlen)));
  } catch (e) {
    throw Errors.badFrame('actor codec', `header is not JSON: ${(e as Error).message}`);
  }
  const aligned = frame.byteOffset % 8 === 0;
  const segs: Uint8Array[] = [];
  let off = align8(8 + hlen);
  for (const len of header.s) {
    if (off + len > frame.byteLength) throw Errors.badFrame('actor codec', `segment overruns frame (${off}+${len} > ${frame.byteLength})`);
    segs.push(frame.subarray(off, off + len));
    off += align8(len);
  }
  return raise(header.v, segs, aligned);
}

function raise(x: unknown, segs: Uint8Array[], aligned: boolean): unknown {
  if (x === null || typeof x !== 'object') return x;
  if (Array.isArray(x)) {
    for (let i = 0; i < x.length; i++) x[i] = raise(x[i], segs, aligned);
    return x;
  }
  const o = x as Record<string, unknown>;
  if (TAG in o) {
    const seg = segs[o[TAG] as number];
    if (!seg) throw Errors.badFrame('actor codec', `missing segment ${String(o[TAG])}`);
    const t = o.t as string;
    if (t === 'ArrayBuffer') return seg.slice().buffer;
    const C = CTORS[t];
    if (!C) throw Errors.badFrame('actor codec', `unknown typed array ${t}`);
    const bytes = aligned ? seg : seg.slice();
    if (bytes.byteLength % C.BYTES_PER_ELEMENT !== 0) throw Errors.badFrame('actor codec', `${t} segment of ${bytes.byteLength} bytes`);
    return new C(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / C.BYTES_PER_ELEMENT);
  }
  if ('\u0000u' in o) return undefined;
  if ('\u0000n' in o) return Number(o['\u0000n']);
  for (const k of Object.keys(o)) o[k] = raise(o[k], segs, aligned);
  return o;
}
