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
  /** Where the next message lands if its length matches (see `target`); cleared when it begins. */
  private nextTarget: Uint8Array | null = null;
  /** A data plane's lower bound (`limit`), checked before a body is allocated. */
  private lowered: { bytes: number; reason: string } | undefined;

  constructor(
    private readonly maxMessageBytes: number,
    private readonly where: string,
    private readonly onMessage: (m: Uint8Array) => void,
    private readonly allocate?: (bytes: number) => Uint8Array,
  ) {}

  /** Accept at most `bytes` per message from the next header on (`Connection.limitIncoming`). */
  limit(bytes: number, reason: string): void {
    this.lowered = bytes < this.maxMessageBytes ? { bytes, reason } : undefined;
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
   * Land the next message in `dst` when its length matches (`Connection.recvInto`): the message in progress, when
   * only its start has arrived (that part is copied over and the rest is read straight into `dst`), or else the
   * next one to begin. The caller makes sure that message is the one its receiver gets next. A hint: a message of
   * another length gets its own buffer. Returns whether `dst` was taken for the message in progress.
   */
  target(dst: Uint8Array): boolean {
    if (this.failed || dst.byteLength <= SLAB_MAX_MESSAGE) return false;
    if (this.body) {
      if (this.body.byteLength !== dst.byteLength || this.bodyFill > RETARGET_MAX_COPY) return false;
      dst.set(this.body.subarray(0, this.bodyFill));
      this.body = dst;
      return true;
    }
    if (this.headerFill === 0) this.nextTarget = dst;
    return false;
  }

  /** The `recvInto` that gave `dst` ended without its message: give `dst` back (the message gets its own buffer). */
  untarget(dst: Uint8Array): void {
    if (this.nextTarget === dst) this.nextTarget = null;
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
        if (len === 0) {
          this.onMessage(new Uint8Array(0));
          continue;
        }
        const t = this.nextTarget;
        this.nextTarget = null;
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
      const b = Buffer.allocUnsafeSlow(len); // own ArrayBuffer, not zero-filled: every byte is written below
      return new Uint8Array(b.buffer, b.byteOffset, len);
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
