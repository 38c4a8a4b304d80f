/**
 * The `net` transport: Node's `net` module over `tcp://host:port` (TCP, `:0` picks a free port) and
 * `ipc:///path` (unix domain socket), with pair semantics (see transport.ts).
 *
 * Wire format (little-endian):
 * - handshake, once each way right after connect: 8 bytes `SHOALNET`, u32 version (1), u32 the sender's
 *   maximum message size. The dialer speaks first; the listener answers only to a valid handshake, so a stray
 *   connection (a port scanner, a wrong peer) never takes the listener's one slot.
 * - then frames: u32 magic `SHLF` (0x464c4853), u32 payload length, payload. A frame with a wrong magic or a
 *   length above the receiver's `maxMessageBytes` fails the connection with ERR_BAD_FRAME.
 *
 * Send path: headers and payloads of every send issued in the same tick go out as one corked writev (no copy of
 * the payloads); `send` resolves when Node has handed the payload to the kernel, so the caller may reuse it. Outstanding sends queue in order; a send's
 * promise is the backpressure. A send that times out or is aborted after it started writing fails the connection
 * (half a frame may be on the wire), and the peer sees ERR_PEER_CLOSED.
 *
 * Receive path: a frame decoder copies socket chunks straight into one buffer of the announced length
 * (one allocation per message, no concatenation). On the dialing side the kernel reads large message bodies
 * directly into that buffer (Node's `onread`; about 5x less user CPU per GiB than 'data' events). Node offers
 * `onread` only to `net.connect`: an accepted socket hands its handle to a socket created with it
 * (`adoptWithDirectInput`), so both ends read the same way. Messages up to 4 KiB are carved, 8-byte
 * aligned, out of a 256 KiB slab that is never reused (so typed-array views work and the caller owns them). When more than
 * `recvHighWaterBytes` of received messages wait unclaimed, the socket is paused until `recv` drains them.
 */
import { unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { Errors, ShoalError, isShoalError } from '../errors.js';
import { deferred, enqueueWaiter, withDeadline, type Deferred } from '../util.js';
import { DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type Listener, type Transport } from './transport.js';

export interface NetTransportOptions {
  /** Largest message this end accepts (and announces to its peer). Default 2 GiB - 1; at most 4 GiB - 1. */
  maxMessageBytes?: number;
  /** Pause reading when this many bytes of received messages wait for `recv`. Default 256 MiB. */
  recvHighWaterBytes?: number;
  /** How long a listener waits for a connected socket's handshake before dropping it. Default 10 s. */
  handshakeTimeoutMs?: number;
  /**
   * Where received messages above 4 KiB are assembled. Called with the message length; must return a writable
   * `Uint8Array` of exactly that length that nothing else touches until `recv` hands it back (the receiver then
   * owns it). Lets a caller recycle large buffers (a fresh 64 MiB buffer is page-faulted in on every message).
   * Default: a new buffer per message.
   */
  allocate?: (bytes: number) => Uint8Array;
}

export const NET_DEFAULT_MAX_MESSAGE_BYTES = 2 ** 31 - 1;
type Settings = Required<Omit<NetTransportOptions, 'allocate'>> & Pick<NetTransportOptions, 'allocate'>;
const MAX_FRAME_LENGTH = 2 ** 32 - 1;
/** Magic of every frame header: 'SHLF' as a little-endian u32. */
export const NET_FRAME_MAGIC = 0x464c4853;
const FRAME_MAGIC = NET_FRAME_MAGIC;
const FRAME_HEADER_BYTES = 8;
const HANDSHAKE_MAGIC = Buffer.from('SHOALNET', 'latin1');
const HANDSHAKE_BYTES = 16;
const PROTOCOL_VERSION = 1;
/** Largest batch of sends coalesced into one writev. */
const MAX_BATCH_MESSAGES = 64;
const MAX_BATCH_BYTES = 256 * 1024;

/** Node timers overflow (and fire at once) above 2^31-1 ms: an infinite or huge wait gets no timer. */
function maybeTimer(ms: number, fn: () => void): NodeJS.Timeout | undefined {
  return ms <= 2 ** 31 - 1 ? setTimeout(fn, Math.max(0, ms)) : undefined;
}

/** Parsed `tcp://host:port` or `ipc:///path`. */
export type NetAddress = { scheme: 'tcp'; host: string; port: number } | { scheme: 'ipc'; path: string };

/** Parse a net transport URL. Throws RangeError naming the problem. */
export function parseNetUrl(url: string): NetAddress {
  if (url.startsWith('ipc://')) {
    const path = url.slice('ipc://'.length);
    if (!path) throw Errors.invalidArg('url', `must name a socket path, got ${JSON.stringify(url)}`);
    return { scheme: 'ipc', path };
  }
  if (!url.startsWith('tcp://')) throw Errors.invalidArg('url', `must be tcp://host:port or ipc:///path, got ${JSON.stringify(url)}`);
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(url);
  if (!m) throw Errors.invalidArg('url', `must be tcp://host:port, got ${JSON.stringify(url)}`);
  const port = Number(m[2]);
  if (port > 65535) throw Errors.invalidArg('url', `port must be 0..65535, got ${port} in ${url}`);
  return { scheme: 'tcp', host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function formatTcpUrl(host: string, port: number): string {
  return `tcp://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

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

  constructor(
    private readonly maxMessageBytes: number,
    private readonly where: string,
    private readonly onMessage: (m: Uint8Array) => void,
    private readonly allocate?: (bytes: number) => Uint8Array,
  ) {}

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

function handshakeBytes(maxMessageBytes: number): Buffer {
  const b = Buffer.alloc(HANDSHAKE_BYTES);
  HANDSHAKE_MAGIC.copy(b, 0);
  b.writeUInt32LE(PROTOCOL_VERSION, 8);
  b.writeUInt32LE(maxMessageBytes, 12);
  return b;
}

interface Handshake {
  peerMaxMessageBytes: number;
  /** Bytes that followed the handshake in the same chunk (the start of the first frame). */
  leftover: Buffer;
}

/** Receives what a socket reads. */
interface ReadSink {
  /** A buffer to read straight into (the rest of a large message), or null to read into the scratch buffer. */
  target(): Uint8Array | null;
  /** Bytes read into the scratch buffer: valid only during the call. */
  bytes(chunk: Uint8Array): void;
  /** `n` bytes were read straight into `buf`, a buffer `target()` returned (maybe before a `recvInto` moved the message). */
  direct(n: number, buf: Uint8Array): void;
}

/** `recvInto` takes over a message in progress only while at most this much of it has arrived (copied over). */
const RETARGET_MAX_COPY = 1 << 20;

/** Reads smaller than this go through the scratch buffer (which may also pick up the next frame's header). */
const DIRECT_READ_MIN = 64 * 1024;

/**
 * The read side of a socket, through Node's `onread` option (given to `net.connect` for a dialed socket, and to
 * the socket an accepted one's handle moves to, see `adoptWithDirectInput`): large message bodies are read by the kernel straight into the buffer `recv` returns, with no
 * per-read allocation and no copy. Until a sink is attached, bytes are kept and replayed to it.
 */
class DirectInput {
  private readonly scratch = Buffer.allocUnsafe(64 * 1024);
  private sink: ReadSink | null = null;
  private queued: Buffer[] = [];
  readonly onread = {
    buffer: (): Uint8Array => this.sink?.target() ?? this.scratch,
    callback: (n: number, buf: Uint8Array): boolean => {
      if (buf !== this.scratch) this.sink!.direct(n, buf);
      else if (this.sink) this.sink.bytes(this.scratch.subarray(0, n));
      else this.queued.push(Buffer.from(this.scratch.subarray(0, n)));
      return true;
    },
  };

  attach(sink: ReadSink | null): void {
    this.sink = sink;
    if (!sink) return;
    const q = this.queued;
    this.queued = [];
    for (const b of q) sink.bytes(b);
  }
}

/**
 * Give an accepted socket the dialed side's read path: Node offers `onread` only to `net.connect`, so the paused
 * accepted socket (`pauseOnConnect`) hands its handle to a new `net.Socket` created with `onread` (the same
 * constructor path `net.connect` takes), and the old wrapper, without a handle, is destroyed (the server's
 * connection count drops as usual). Relies on `Socket._handle`, unchanged for many Node versions; when it is not
 * there the accepted socket keeps 'data' events (null).
 */
function adoptWithDirectInput(sock: net.Socket, input: DirectInput): net.Socket | null {
  const s = sock as unknown as { _handle?: unknown };
  const handle = s._handle;
  if (handle === null || typeof handle !== 'object' || sock.readableFlowing === true) return null;
  try {
    s._handle = null;
    sock.destroy();
    return new net.Socket({ handle, readable: true, writable: true, onread: input.onread } as unknown as net.SocketConstructorOpts);
  } catch {
    return null;
  }
}

/** How `readHandshake` gets bytes: a 'data' listener, or a DirectInput sink. */
type Subscribe = (onData: (chunk: Buffer) => void) => () => void;

function dataEvents(sock: net.Socket): Subscribe {
  return (onData) => {
    sock.on('data', onData);
    sock.resume();
    return () => {
      sock.off('data', onData);
      sock.pause();
    };
  };
}

function directEvents(input: DirectInput): Subscribe {
  return (onData) => {
    input.attach({ target: () => null, bytes: (c) => onData(Buffer.from(c)), direct: () => {} });
    return () => input.attach(null);
  };
}

/**
 * Read the 16-byte handshake from `sock`. On success the socket's bytes are no longer consumed (paused, or
 * queued by its DirectInput) until the caller attaches its own reader.
 */
function readHandshake(sock: net.Socket, subscribe: Subscribe, where: string, timeoutMs: number): Promise<Handshake> {
  return new Promise<Handshake>((resolve, reject) => {
    let got: Buffer = Buffer.alloc(0);
    let unsubscribe = () => {};
    const cleanup = () => {
      clearTimeout(timer);
      unsubscribe();
      sock.off('close', onClose);
      sock.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      got = got.length === 0 ? chunk : Buffer.concat([got, chunk]);
      if (got.length < HANDSHAKE_BYTES) return;
      cleanup();
      if (!got.subarray(0, 8).equals(HANDSHAKE_MAGIC)) {
        reject(Errors.badFrame(where, `not a shoal net peer (handshake bytes ${got.subarray(0, 8).toString('hex')})`));
        return;
      }
      const version = got.readUInt32LE(8);
      if (version !== PROTOCOL_VERSION) {
        reject(Errors.badFrame(where, `peer speaks net protocol version ${version}, this end ${PROTOCOL_VERSION}`));
        return;
      }
      resolve({ peerMaxMessageBytes: got.readUInt32LE(12), leftover: got.subarray(HANDSHAKE_BYTES) });
    };
    const onClose = () => {
      cleanup();
      reject(Errors.peerClosed(where, 'connection closed during the handshake'));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(Errors.peerClosed(where, `socket error during the handshake: ${e.message}`, e));
    };
    const timer = maybeTimer(timeoutMs, () => {
      cleanup();
      reject(Errors.timeout(`handshake on ${where}`, timeoutMs));
    });
    sock.on('close', onClose);
    sock.on('error', onError);
    unsubscribe = subscribe(onData);
  });
}

interface PendingSend {
  reject(e: unknown): void;
}

/** One end of a net pair. Created by NetTransport.dial / NetListener.accept. */
class NetConnection implements Connection {
  readonly transport = 'net';
  /** Bytes the kernel read straight into message buffers (the `onread` path; 0 with 'data' events). */
  directBytes = 0;
  private readonly inbox: Uint8Array[] = [];
  private inboxHead = 0;
  private inboxBytes = 0;
  private readonly waiters: Deferred<Uint8Array>[] = [];
  private readonly sends = new Set<PendingSend>();
  private readonly decoder: FrameDecoder;
  private failure: ShoalError | null = null;
  private closedSelf = false;
  private paused = false;
  private corked = false;
  private corkBytes = 0;
  private corkCount = 0;
  private tickPending = false;
  private readonly onTick = () => {
    this.tickPending = false;
    this.flush();
  };
  private readonly socketClosed: Promise<void>;

  constructor(
    private readonly sock: net.Socket,
    readonly remote: string,
    private readonly peerMaxMessageBytes: number,
    private readonly opts: Settings,
    leftover: Uint8Array,
    input: DirectInput | null,
  ) {
    this.decoder = new FrameDecoder(opts.maxMessageBytes, `net connection to ${remote}`, (m) => this.deliver(m), opts.allocate);
    this.socketClosed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', (e: Error) => this.fail(Errors.peerClosed(this.remote, `socket error: ${e.message}`, e)));
    sock.on('close', () => this.fail(this.peerGoneError()));
    sock.on('end', () => this.fail(this.peerGoneError()));
    if (leftover.byteLength > 0) this.onData(leftover);
    if (input) {
      input.attach({
        target: () => (this.paused || this.failure ? null : this.decoder.directTarget(DIRECT_READ_MIN)),
        bytes: (chunk) => this.onData(chunk),
        direct: (n, buf) => {
          this.directBytes += n;
          this.decoder.advance(n, buf);
          this.checkHighWater();
        },
      });
    } else {
      sock.on('data', (chunk: Buffer) => this.onData(chunk));
    }
    if (!this.failure) sock.resume();
  }

  get closed(): boolean {
    return this.closedSelf;
  }

  private peerGoneError(): ShoalError {
    const p = this.decoder.partial;
    return Errors.peerClosed(this.remote, p ? `in the middle of a message (${p.got} of ${p.want} bytes received)` : undefined);
  }

  private onData(chunk: Uint8Array): void {
    const err = this.decoder.push(chunk);
    if (err) {
      this.fail(err);
      return;
    }
    this.checkHighWater();
  }

  private checkHighWater(): void {
    if (!this.paused && this.inboxBytes > this.opts.recvHighWaterBytes) {
      this.paused = true;
      this.sock.pause();
    }
  }

  private deliver(m: Uint8Array): void {
    const w = this.waiters.shift();
    if (w) {
      w.resolve(m);
      return;
    }
    this.inbox.push(m);
    this.inboxBytes += m.byteLength;
  }

  private takeInbox(): Uint8Array | undefined {
    if (this.inboxHead >= this.inbox.length) return undefined;
    const m = this.inbox[this.inboxHead]!;
    this.inbox[this.inboxHead++] = undefined as unknown as Uint8Array;
    if (this.inboxHead > 1024 && this.inboxHead * 2 > this.inbox.length) {
      this.inbox.splice(0, this.inboxHead);
      this.inboxHead = 0;
    }
    this.inboxBytes -= m.byteLength;
    if (this.paused && this.inboxBytes <= this.opts.recvHighWaterBytes / 2 && !this.failure) {
      this.paused = false;
      this.sock.resume();
    }
    return m;
  }

  /** Terminal failure (peer gone, bad frame, broken send): every waiter rejects, the socket is destroyed. */
  private fail(err: ShoalError): void {
    if (this.failure || this.closedSelf) return;
    this.failure = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
    for (const s of [...this.sends]) s.reject(err);
    this.sends.clear();
    this.sock.destroy();
  }

  private flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.sock.uncork();
  }

  send(data: Uint8Array, opts?: IoOptions): Promise<void> {
    if (opts?.signal?.aborted) return Promise.reject(Errors.aborted(`send to ${this.remote}`, opts.signal.reason));
    if (this.closedSelf) return Promise.reject(Errors.closed(`net connection to ${this.remote}`));
    if (this.failure) return Promise.reject(this.failure);
    if (data.byteLength > this.peerMaxMessageBytes) {
      return Promise.reject(Errors.invalidArg('data.byteLength', `(${data.byteLength}) exceeds the peer's maxMessageBytes (${this.peerMaxMessageBytes}) on ${this.remote}`));
    }
    const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
    header.writeUInt32LE(FRAME_MAGIC, 0);
    header.writeUInt32LE(data.byteLength, 4);
    const d = deferred<void>();
    const entry: PendingSend = { reject: d.reject };
    this.sends.add(entry);
    const done = (err?: Error | null) => {
      if (!this.sends.delete(entry)) return; // already rejected by close/fail
      if (err) d.reject(this.failure ?? Errors.peerClosed(this.remote, `write failed: ${err.message}`, err));
      else d.resolve();
    };
    const sock = this.sock;
    if (!this.corked) {
      // Coalesce the sends issued before the next tick into one writev (one syscall for many small messages).
      // Batches are capped: Node completes a writev's callbacks together, so one huge batch would stall the
      // sender until all of it is on the wire.
      this.corked = true;
      this.corkBytes = 0;
      this.corkCount = 0;
      sock.cork();
      if (!this.tickPending) {
        this.tickPending = true;
        process.nextTick(this.onTick);
      }
    }
    if (data.byteLength === 0) {
      sock.write(header, done);
    } else {
      sock.write(header);
      sock.write(data, done);
    }
    this.corkBytes += FRAME_HEADER_BYTES + data.byteLength;
    if (++this.corkCount >= MAX_BATCH_MESSAGES || this.corkBytes >= MAX_BATCH_BYTES) this.flush();
    return withDeadline(`send of ${data.byteLength} bytes to ${this.remote}`, d.promise, opts, (err) => {
      // Part of the frame may already be on the wire: the stream cannot be resynchronised.
      if (this.sends.delete(entry)) this.fail(Errors.peerClosed(this.remote, `connection dropped after an unfinished send (${err.message})`));
    });
  }

  recv(opts?: IoOptions): Promise<Uint8Array> {
    if (opts?.signal?.aborted) return Promise.reject(Errors.aborted(`recv from ${this.remote}`, opts.signal.reason));
    if (this.closedSelf) return Promise.reject(Errors.closed(`net connection to ${this.remote}`));
    if (this.waiters.length === 0) {
      const m = this.takeInbox();
      if (m) return Promise.resolve(m);
    }
    if (this.failure) return Promise.reject(this.failure);
    return enqueueWaiter(this.waiters, `recv from ${this.remote}`, opts);
  }

  /**
   * `recv`, with the message landing in `dst` when it is the next one to arrive and has `dst`'s length (above the
   * slab size); otherwise (a message already waiting, other waiters first, another length) a plain `recv`. The
   * caller compares what it got. `dst` may be written until the promise settles. Only for waits without a deadline
   * or signal (the RPC reader's, `timeoutMs: Infinity`): the socket picks the buffer of its next read ahead of time,
   * so a wait that gave up could still see one read land in `dst`; with a deadline this is a plain `recv`.
   */
  recvInto(dst: Uint8Array, opts?: IoOptions): Promise<Uint8Array> {
    const open = this.waiters.length === 0 && this.inboxHead >= this.inbox.length && !this.failure && !this.closedSelf;
    if (!open || opts?.timeoutMs !== Infinity || opts.signal) return this.recv(opts);
    this.decoder.target(dst);
    const p = this.recv(opts);
    // the connection failed or closed first (no more reads): no later message may land in `dst`
    p.catch(() => this.decoder.untarget(dst));
    return p;
  }

  async close(): Promise<void> {
    if (this.closedSelf) return;
    this.closedSelf = true;
    const err = Errors.closed(`net connection to ${this.remote}`);
    for (const w of this.waiters.splice(0)) w.reject(err);
    for (const s of [...this.sends]) s.reject(err);
    this.sends.clear();
    this.sock.destroy();
    await Promise.race([this.socketClosed, new Promise((r) => setTimeout(r, 1_000).unref())]);
  }
}

class NetListener implements Listener {
  url = '';
  private readonly pending: Deferred<NetConnection> = deferred();
  private paired = false;
  private handedOut = false;
  private closedFlag = false;
  private conn: NetConnection | undefined;
  private rejectedHandshakes = 0;
  /** Sockets still in their handshake, destroyed if the listener closes first. */
  private readonly handshaking = new Set<net.Socket>();
  private lastRejection = '';

  constructor(
    private readonly server: net.Server,
    private readonly addr: NetAddress,
    private readonly opts: Settings,
  ) {
    this.pending.promise.catch(() => {});
    server.on('connection', (sock) => this.onConnection(sock));
  }

  private onConnection(accepted: net.Socket): void {
    accepted.on('error', () => {}); // handshake errors are reported through readHandshake
    if (this.paired || this.closedFlag) {
      accepted.destroy();
      return;
    }
    const remote = this.addr.scheme === 'tcp' ? `${accepted.remoteAddress}:${accepted.remotePort} (accepted on ${this.url})` : `peer on ${this.url}`;
    // The dialed side's read path (large bodies read by the kernel straight into the message buffer), else 'data'.
    const input = new DirectInput();
    const adopted = adoptWithDirectInput(accepted, input);
    const sock = adopted ?? accepted;
    if (adopted) sock.on('error', () => {});
    sock.setNoDelay(true);
    this.handshaking.add(sock);
    readHandshake(sock, adopted ? directEvents(input) : dataEvents(sock), remote, this.opts.handshakeTimeoutMs).then(
      (hs) => {
        this.handshaking.delete(sock);
        if (this.paired || this.closedFlag) {
          sock.destroy();
          return;
        }
        this.paired = true;
        this.server.close(); // pair semantics: one peer, stop listening
        sock.write(handshakeBytes(this.opts.maxMessageBytes));
        sock.setKeepAlive(true, 10_000);
        this.conn = new NetConnection(sock, remote, hs.peerMaxMessageBytes, this.opts, hs.leftover, adopted ? input : null);
        this.pending.resolve(this.conn);
      },
      (e: unknown) => {
        this.handshaking.delete(sock);
        if (this.closedFlag) return;
        this.rejectedHandshakes++;
        this.lastRejection = e instanceof Error ? e.message : String(e);
        sock.destroy();
      },
    );
  }

  accept(opts?: IoOptions): Promise<Connection> {
    if (this.closedFlag) return Promise.reject(Errors.closed(`listener ${this.url}`));
    if (this.handedOut) return Promise.reject(Errors.state(`listener ${this.url} already accepted its one peer (pair semantics)`));
    return withDeadline(`accept on ${this.url}`, this.pending.promise, opts).then(
      (c) => {
        this.handedOut = true;
        return c;
      },
      (e: unknown) => {
        if (isShoalError(e, 'ERR_TIMEOUT') && this.rejectedHandshakes > 0) {
          throw new ShoalError('ERR_TIMEOUT', `${e.message} (${this.rejectedHandshakes} connection(s) dropped for a bad handshake; last: ${this.lastRejection})`, { ...e.context });
        }
        throw e;
      },
    );
  }

  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.pending.reject(Errors.closed(`listener ${this.url}`));
    for (const sock of this.handshaking) sock.destroy();
    if (this.conn && !this.handedOut) await this.conn.close();
    if (this.server.listening) await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function listenOnce(server: net.Server, addr: NetAddress): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => {
      server.off('listening', onListening);
      reject(e);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if (addr.scheme === 'tcp') server.listen({ host: addr.host, port: addr.port, backlog: 16 });
    else server.listen({ path: addr.path, backlog: 16 });
  });
}

/** True when a unix socket file exists but nobody accepts on it (a crashed process left it behind). */
function isStaleSocket(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

const RETRYABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'EAGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/** The `net` transport. An ordinary object: create one per process (or per test) and pass it down. */
export class NetTransport implements Transport {
  readonly name = 'net';
  readonly schemes = ['tcp', 'ipc'] as const;
  private readonly opts: Settings;

  constructor(options: NetTransportOptions = {}) {
    const max = options.maxMessageBytes ?? NET_DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isInteger(max) || max < 0 || max > MAX_FRAME_LENGTH) {
      throw Errors.invalidArg('options.maxMessageBytes', `must be an integer in 0..${MAX_FRAME_LENGTH}, got ${max}`);
    }
    const hw = options.recvHighWaterBytes ?? 256 * 1024 * 1024;
    if (!(hw > 0)) throw Errors.invalidArg('options.recvHighWaterBytes', `must be positive, got ${hw}`);
    const hs = options.handshakeTimeoutMs ?? 10_000;
    if (!(hs > 0)) throw Errors.invalidArg('options.handshakeTimeoutMs', `must be positive, got ${hs}`);
    if (options.allocate !== undefined && typeof options.allocate !== 'function') {
      throw Errors.invalidArg('options.allocate', `must be a function, got ${typeof options.allocate}`);
    }
    this.opts = { maxMessageBytes: max, recvHighWaterBytes: hw, handshakeTimeoutMs: hs, allocate: options.allocate };
  }

  async listen(url: string, opts?: IoOptions): Promise<Listener> {
    const addr = parseNetUrl(url);
    if (opts?.signal?.aborted) throw Errors.aborted(`listen on ${url}`, opts.signal.reason);
    const server = net.createServer({ noDelay: true, pauseOnConnect: true });
    try {
      await listenOnce(server, addr);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (addr.scheme === 'ipc' && code === 'EADDRINUSE' && (await isStaleSocket(addr.path))) {
        try {
          unlinkSync(addr.path);
          await listenOnce(server, addr);
        } catch (e2) {
          throw Errors.transport(url, `cannot listen: ${(e2 as Error).message}`, e2);
        }
      } else {
        throw Errors.transport(url, `cannot listen: ${(e as Error).message}`, e);
      }
    }
    const l = new NetListener(server, addr, this.opts);
    if (addr.scheme === 'tcp') {
      const bound = server.address() as net.AddressInfo;
      l.url = formatTcpUrl(addr.host, bound.port);
    } else {
      l.url = `ipc://${addr.path}`;
    }
    return l;
  }

  async dial(url: string, opts?: IoOptions): Promise<Connection> {
    const addr = parseNetUrl(url);
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const signal = opts?.signal;
    let backoff = 5;
    let lastError = 'no attempt made';
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw Errors.aborted(`dial ${url}`, signal.reason);
      const left = deadline - Date.now();
      if (left <= 0) throw Errors.timeout(`dial ${url} (${attempt - 1} attempts, last: ${lastError})`, timeoutMs, { url });
      try {
        return await this.attempt(url, addr, left, signal);
      } catch (e) {
        if (isShoalError(e, 'ERR_ABORTED') || isShoalError(e, 'ERR_BAD_FRAME')) throw e;
        const code = (e as NodeJS.ErrnoException).code;
        if (!isShoalError(e) && !(code && RETRYABLE.has(code))) throw Errors.transport(url, `dial failed: ${(e as Error).message}`, e);
        lastError = (e as Error).message;
      }
      const wait = Math.min(backoff, Math.max(0, deadline - Date.now()));
      backoff = Math.min(backoff * 2, 200);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, wait);
        function done() {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  /** One connect + handshake, bounded by `ms` and `signal`. Rejects with the socket error to retry on. */
  private attempt(url: string, addr: NetAddress, ms: number, signal: AbortSignal | undefined): Promise<Connection> {
    return new Promise<Connection>((resolve, reject) => {
      const input = new DirectInput();
      const sock =
        addr.scheme === 'tcp'
          ? net.connect({ host: addr.host, port: addr.port, noDelay: true, onread: input.onread })
          : net.connect({ path: addr.path, onread: input.onread });
      let settled = false;
      const finish = (err: unknown, conn?: Connection) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        sock.off('error', onConnectError);
        if (err) {
          sock.destroy();
          reject(err);
        } else resolve(conn!);
      };
      const onAbort = () => finish(Errors.aborted(`dial ${url}`, signal?.reason));
      const onConnectError = (e: Error) => finish(e);
      const timer = maybeTimer(ms, () => finish(Errors.timeout(`connect to ${url}`, ms)));
      signal?.addEventListener('abort', onAbort, { once: true });
      sock.on('error', onConnectError);
      sock.once('connect', () => {
        sock.setNoDelay(true);
        sock.setKeepAlive(true, 10_000);
        sock.write(handshakeBytes(this.opts.maxMessageBytes));
        readHandshake(sock, directEvents(input), url, ms).then(
          (hs) => {
            if (settled) {
              sock.destroy();
              return;
            }
            const remote = addr.scheme === 'tcp' ? `${url} (from ${sock.localAddress}:${sock.localPort})` : url;
            finish(null, new NetConnection(sock, remote, hs.peerMaxMessageBytes, this.opts, hs.leftover, input));
          },
          (e: unknown) => finish(e),
        );
      });
    });
  }
}

/** Factory for registries and child processes: `createNetTransport({ maxMessageBytes })`. */
export function createNetTransport(options?: NetTransportOptions): NetTransport {
  return new NetTransport(options ?? {});
}
