/**
 * Arrow IPC stream framing over a byte source that arrives in arbitrary pieces (a pipe gives 64 KiB, a socket
 * whatever the kernel had). Yields each IPC message (prefix + metadata + body) as one contiguous Uint8Array:
 * a view on the received piece when the message lies inside it, else one copy assembled from the pieces. The Arrow
 * reader then never joins buffers, and this layer knows exactly where the stream ends:
 *  - the end-of-stream marker is yielded and reading stops there (the source is not drained or destroyed);
 *  - input ending inside a message raises ERR_DATA (how many bytes of which message arrived);
 *  - input ending between messages without the marker raises ERR_DATA unless `requireEos` is false.
 * Every wait for the next piece is bounded by `idleTimeoutMs` (ERR_TIMEOUT) and `signal` (ERR_ABORTED).
 */
import { Errors } from '@shoal/core';
import { withDeadline } from '@shoal/core/util';

export interface FramerOptions {
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  requireEos?: boolean;
  /** Destroy the source when framing stops early or fails (true when this library opened it). */
  ownsSource?: boolean;
}

/** What the framer saw (read by the caller after the stream ends). */
export interface FramerState {
  bytes: number;
  messages: number;
  sawEos: boolean;
}

/** Body length of an IPC Message flatbuffer (field 3, int64; absent = 0). */
function bodyLengthOf(meta: Uint8Array, name: string, index: number): number {
  const dv = new DataView(meta.buffer, meta.byteOffset, meta.byteLength);
  const bad = (why: string) => Errors.data(name, `malformed Arrow IPC stream: message ${index} metadata is corrupt (${why})`);
  if (meta.byteLength < 8) throw bad('shorter than a flatbuffer root');
  const table = dv.getUint32(0, true);
  if (table + 4 > meta.byteLength) throw bad('root offset out of range');
  const vtable = table - dv.getInt32(table, true);
  if (vtable < 0 || vtable + 4 > meta.byteLength) throw bad('vtable offset out of range');
  const vtSize = dv.getUint16(vtable, true);
  if (vtSize < 4 || vtable + vtSize > meta.byteLength) throw bad('vtable size out of range');
  if (vtSize <= 10) return 0;
  const off = dv.getUint16(vtable + 10, true);
  if (off === 0) return 0;
  if (table + off + 8 > meta.byteLength) throw bad('bodyLength out of range');
  const len = dv.getBigInt64(table + off, true);
  if (len < 0n || len > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`bodyLength ${len}`);
  return Number(len);
}

/** Pieces received but not yet framed. */
class Pending {
  private pieces: Uint8Array[] = [];
  private head = 0; // offset into pieces[0]
  size = 0;
  push(p: Uint8Array): void {
    if (p.byteLength === 0) return;
    this.pieces.push(p);
    this.size += p.byteLength;
  }
  /** The next `n` bytes (n <= size) without consuming them; a view when they lie in one piece. */
  peek(n: number): Uint8Array {
    const first = this.pieces[0]!;
    if (first.byteLength - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = new Uint8Array(n);
    let at = 0;
    let off = this.head;
    for (const p of this.pieces) {
      const k = Math.min(p.byteLength - off, n - at);
      out.set(p.subarray(off, off + k), at);
      at += k;
      off = 0;
      if (at === n) break;
    }
    return out;
  }
  /** Consume `n` bytes (n <= size), returned contiguous as in `peek`. */
  take(n: number): Uint8Array {
    const out = this.peek(n);
    this.size -= n;
    let left = n;
    while (left > 0) {
      const avail = this.pieces[0]!.byteLength - this.head;
      if (avail > left) {
        this.head += left;
        left = 0;
      } else {
        left -= avail;
        this.pieces.shift();
        this.head = 0;
      }
    }
    return out;
  }
}

export async function* frameIpcMessages(
  src: AsyncIterable<Uint8Array>,
  name: string,
  state: FramerState,
  opts: FramerOptions,
): AsyncGenerator<Uint8Array> {
  const it = src[Symbol.asyncIterator]();
  const pending = new Pending();
  let ended = false;
  let clean = false;
  const io = { timeoutMs: opts.idleTimeoutMs ?? 60_000, ...(opts.signal ? { signal: opts.signal } : {}) };
  /** Read until at least `n` bytes are pending; false if the input ended first. */
  const fill = async (n: number): Promise<boolean> => {
    while (pending.size < n && !ended) {
      const r = await withDeadline(`reading ${name}`, it.next(), io);
      if (r.done) ended = true;
      else {
        const v = r.value instanceof Uint8Array ? r.value : new Uint8Array(r.value as ArrayBufferLike);
        state.bytes += v.byteLength;
        pending.push(v);
      }
    }
    return pending.size >= n;
  };
  try {
    for (;;) {
      const index = state.messages;
      if (!(await fill(4))) {
        if (pending.size === 0) {
          if (opts.requireEos !== false) {
            throw Errors.data(
              name,
              state.bytes === 0
                ? 'empty Arrow IPC stream: no schema message'
                : `truncated Arrow IPC stream: input ended after ${index} messages (${state.bytes} bytes) without the end-of-stream marker`,
            );
          }
          clean = true;
          return;
        }
        throw Errors.data(name, `truncated Arrow IPC stream: input ended inside the prefix of message ${index}`);
      }
      const head = pending.peek(4);
      let first = new DataView(head.buffer, head.byteOffset, 4).getInt32(0, true);
      let prefix = 4;
      if (first === -1) {
        if (!(await fill(8))) throw Errors.data(name, `truncated Arrow IPC stream: input ended inside the prefix of message ${index}`);
        const p8 = pending.peek(8);
        first = new DataView(p8.buffer, p8.byteOffset, 8).getInt32(4, true);
        prefix = 8;
      }
      if (first === 0) {
        // End-of-stream marker.
        yield pending.take(prefix);
        state.sawEos = true;
        clean = true;
        return;
      }
      if (first < 0) throw Errors.data(name, `malformed Arrow IPC stream: message ${index} has metadata length ${first}`);
      if (!(await fill(prefix + first))) {
        throw Errors.data(name, `truncated Arrow IPC stream: input ended inside the metadata of message ${index} (${pending.size} of ${prefix + first} bytes)`);
      }
      const meta = pending.peek(prefix + first).subarray(prefix);
      const total = prefix + first + bodyLengthOf(meta, name, index);
      if (!(await fill(total))) {
        throw Errors.data(name, `truncated Arrow IPC stream: input ended inside message ${index} (${pending.size} of ${total} bytes)`);
      }
      state.messages++;
      yield pending.take(total);
    }
  } finally {
    if (!clean || opts.ownsSource) {
      const d = src as unknown as { destroy?: () => void };
      if (typeof d.destroy === 'function') d.destroy();
      else void Promise.resolve(it.return?.()).catch(() => undefined);
    }
  }
}
