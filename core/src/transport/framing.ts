import { Errors, type ShoalError } from '../errors.js';
import { aboveLimitError } from './transport.js';

/**
 * SHLF framing, shared by the net transport and the rendezvous store (little-endian):
 * u32 magic `SHLF` (0x464c4853), u32 payload length, payload. A frame with a wrong magic or a length above the
 * receiver's limit fails the stream with ERR_BAD_FRAME; the limit is checked before anything is allocated, and a
 * body's buffer is only as large as the frame announces (below the limit).
 */

/** Magic of every frame header: 'SHLF' as a little-endian u32. */
export const NET_FRAME_MAGIC = 0x464c4853;
const FRAME_MAGIC = NET_FRAME_MAGIC;
export const FRAME_HEADER_BYTES = 8;
/** Largest length a header can carry. */
export const MAX_FRAME_LENGTH = 2 ** 32 - 1;

/** Write a frame header for a `length`-byte payload at `buf[offset..offset+8)`. */
export function writeFrameHeader(buf: Buffer, length: number, offset = 0): Buffer {
  buf.writeUInt32LE(FRAME_MAGIC, offset);
  buf.writeUInt32LE(length, offset + 4);
  return buf;
}

/** `recvInto` takes over a message in progress only while at most this much of it has arrived (copied over). */
const RETARGET_MAX_COPY = 1 << 20;

const SLAB_BYTES = 256 * 1024;
const SLAB_MAX_MESSAGE = 4096;

/**
 * Incremental decoder of `SHLF` frames. `push` each socket chunk; complete messages go to `onMessage` in order.
 * Returns an ERR_BAD_FRAME error (and stops decoding) on a bad header. Messages handed out are never written
 * again by the decoder: the receiver owns them.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFill = 0;
  private body: Uint8Array | null = null;
  private bodyFill = 0;
  private slab: Uint8Array = new Uint8Array(0);
  private slabUsed = 0;
  private failed: ShoalError | null = null;
  /** Frames whose header has been read (the ordinal of the next frame to begin). */
  private begun = 0;
  /** Where a frame not yet begun lands if its length matches (see `target`), by frame ordinal. */
  private readonly ahead = new Map<number, Uint8Array>();
  /** Large buffers this decoder allocated and handed out: the only ones `recycle` takes back. */
  private readonly mine = new WeakSet<ArrayBufferLike>();
  /** Given-back buffers by length, most recent last (reused first: likeliest still in cache). */
  private readonly pool = new Map<number, Uint8Array[]>();
  private pooledBytes = 0;
  /** A data plane's lower bound (`limit`), checked before a body is allocated. */
  private lowered: { bytes: number; reason: string } | undefined;

  /**
   * `poolBytes`: at most this many bytes of given-back buffers (`recycle`) are kept for later messages of the same
   * length (0: none).
   */
  constructor(
    private readonly maxMessageBytes: number,
    private readonly where: string,
    private readonly onMessage: (m: Uint8Array) => void,
    private readonly allocate?: (bytes: number) => Uint8Array,
    private readonly poolBytes = 0,
  ) {}

  /**
   * The receiver is done with `m`, a message this decoder handed out (`Connection.release`): a later message of
   * the same length may land in it. Ignored for buffers it did not allocate (slab slices, `target`/`allocate`
   * buffers, foreign memory), for one already given back, and above `poolBytes`.
   */
  recycle(m: Uint8Array): void {
    const len = m.byteLength;
    if (len <= SLAB_MAX_MESSAGE || m.byteOffset !== 0 || m.buffer.byteLength !== len || !this.mine.has(m.buffer)) return;
    if (this.pooledBytes + len > this.poolBytes) return;
    this.mine.delete(m.buffer); // in the pool until handed out again: a second release of it is ignored
    let list = this.pool.get(len);
    if (!list) this.pool.set(len, (list = []));
    list.push(m);
    this.pooledBytes += len;
  }

  /**
   * Accept at most `bytes` per message from the next header on (`Connection.limitIncoming`). A message in progress
   * that is larger (its header arrived before the bound was set, e.g. right behind the handshake) fails the stream
   * at once and its buffer is dropped: returns that error, or null.
   */
  limit(bytes: number, reason: string): ShoalError | null {
    this.lowered = bytes < this.maxMessageBytes ? { bytes, reason } : undefined;
    if (this.lowered && this.body && this.body.byteLength > bytes && !this.failed) {
      this.failed = aboveLimitError(this.where, this.body.byteLength, this.lowered);
      this.body = null;
      return this.failed;
    }
    return null;
  }

  /** Bytes of a partially received message, for error messages; undefined between frames. */
  get partial(): { got: number; want: number } | undefined {
    if (this.body) return { got: this.bodyFill, want: this.body.byteLength };
    if (this.headerFill > 0) return { got: this.headerFill, want: FRAME_HEADER_BYTES };
    return undefined;
  }

  /**
   * The unfilled rest of the current message when at least `min` bytes of it are missing, so the socket can read
   * straight into it (then call `advance`); null between frames or near the end of a message.
   */
  directTarget(min: number): Uint8Array | null {
    if (!this.body || this.failed) return null;
    return this.body.byteLength - this.bodyFill >= min ? this.body.subarray(this.bodyFill) : null;
  }

  /**
   * Land message number `ordinal` (counting every frame this decoder has seen or will see, from 0) in `dst` when
   * its length matches (`Connection.recvInto`): the message in progress, when only its start has arrived (that
   * part is copied over and the rest is read straight into `dst`), or one not begun yet, however far ahead (so a
   * receiver can post several buffers before their frames arrive). The caller makes sure that message is the one
   * its receiver gets. A hint: a message of another length gets its own buffer. Returns whether `dst` was taken
   * for the message in progress.
   */
  target(dst: Uint8Array, ordinal: number): boolean {
    if (this.failed || dst.byteLength <= SLAB_MAX_MESSAGE) return false;
    if (ordinal >= this.begun) {
      this.ahead.set(ordinal, dst);
      return false;
    }
    if (this.body && ordinal === this.begun - 1) {
      if (this.body.byteLength !== dst.byteLength || this.bodyFill > RETARGET_MAX_COPY) return false;
      dst.set(this.body.subarray(0, this.bodyFill));
      this.body = dst;
      return true;
    }
    return false;
  }

  /** The `recvInto` that gave `dst` ended without its message: give `dst` back (the message gets its own buffer). */
  untarget(dst: Uint8Array): void {
    for (const [k, v] of this.ahead) if (v === dst) this.ahead.delete(k);
    if (this.body === dst) {
      const own = this.alloc(dst.byteLength);
      own.set(dst.subarray(0, this.bodyFill));
      this.body = own;
    }
  }

  /**
   * `n` bytes were read into `from`, the last `directTarget()`. The socket asks for its next buffer right after a
   * read, before a `recvInto` can move the message to the caller's buffer (`target`): such a read landed in the
   * old buffer and is copied over.
   */
  advance(n: number, from?: Uint8Array): void {
    const body = this.body!;
    if (from && (from.buffer !== body.buffer || from.byteOffset !== body.byteOffset + this.bodyFill)) body.set(from.subarray(0, n), this.bodyFill);
    this.bodyFill += n;
    if (this.bodyFill === body.byteLength) {
      this.body = null;
      this.onMessage(body);
    }
  }

  /** Decode `chunk` (not retained). Returns the connection-ending error (bad frame, failed allocation) or null. */
  push(chunk: Uint8Array): ShoalError | null {
    if (this.failed) return this.failed;
    let off = 0;
    const n = chunk.byteLength;
    while (off < n) {
      if (this.body === null) {
        let magic: number;
        let len: number;
        if (this.headerFill === 0 && n - off >= FRAME_HEADER_BYTES) {
          const dv = new DataView(chunk.buffer, chunk.byteOffset + off, FRAME_HEADER_BYTES);
          magic = dv.getUint32(0, true);
          len = dv.getUint32(4, true);
          off += FRAME_HEADER_BYTES;
        } else {
          const take = Math.min(FRAME_HEADER_BYTES - this.headerFill, n - off);
          this.header.set(chunk.subarray(off, off + take), this.headerFill);
          this.headerFill += take;
          off += take;
          if (this.headerFill < FRAME_HEADER_BYTES) break;
          this.headerFill = 0;
          magic = this.header.readUInt32LE(0);
          len = this.header.readUInt32LE(4);
        }
        if (magic !== FRAME_MAGIC) {
          this.failed = Errors.badFrame(this.where, `frame magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x${FRAME_MAGIC.toString(16)}`);
          return this.failed;
        }
        if (len > this.maxMessageBytes) {
          this.failed = Errors.badFrame(this.where, `frame announces ${len} bytes, above maxMessageBytes ${this.maxMessageBytes}`);
          return this.failed;
        }
        if (this.lowered && len > this.lowered.bytes) {
          this.failed = aboveLimitError(this.where, len, this.lowered);
          return this.failed;
        }
        const ordinal = this.begun++;
        let t: Uint8Array | undefined;
        if (this.ahead.size > 0) {
          t = this.ahead.get(ordinal);
          this.ahead.delete(ordinal);
        }
        if (len === 0) {
          this.onMessage(new Uint8Array(0));
          continue;
        }
        try {
          this.body = t && t.byteLength === len ? t : this.alloc(len);
        } catch (e) {
          this.failed = Errors.transport(this.where, `cannot allocate a ${len}-byte receive buffer: ${(e as Error).message}`, e);
          return this.failed;
        }
        this.bodyFill = 0;
      }
      const body = this.body;
      const take = Math.min(body.byteLength - this.bodyFill, n - off);
      body.set(chunk.subarray(off, off + take), this.bodyFill);
      this.bodyFill += take;
      off += take;
      if (this.bodyFill === body.byteLength) {
        this.body = null;
        this.onMessage(body);
      }
    }
    return null;
  }

  private alloc(len: number): Uint8Array {
    if (len > SLAB_MAX_MESSAGE) {
      if (this.allocate) {
        const u = this.allocate(len);
        if (!(u instanceof Uint8Array) || u.byteLength !== len) {
          throw Errors.invalidArg('options.allocate', `must return a Uint8Array of ${len} bytes, got ${u instanceof Uint8Array ? `${u.byteLength} bytes` : typeof u}`);
        }
        return u;
      }
      const list = this.pool.get(len);
      const reused = list?.pop();
      let u: Uint8Array;
      if (reused) {
        this.pooledBytes -= len;
        u = reused;
      } else {
        const b = Buffer.allocUnsafeSlow(len); // own ArrayBuffer, not zero-filled: every byte is written below
        u = new Uint8Array(b.buffer, b.byteOffset, len);
      }
      if (this.poolBytes > 0) this.mine.add(u.buffer);
      return u;
    }
    const aligned = (len + 7) & ~7;
    if (this.slabUsed + aligned > this.slab.byteLength) {
      const b = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.slab = new Uint8Array(b.buffer, b.byteOffset, SLAB_BYTES);
      this.slabUsed = 0;
    }
    const out = this.slab.subarray(this.slabUsed, this.slabUsed + len);
    this.slabUsed += aligned;
    return out;
  }
}
