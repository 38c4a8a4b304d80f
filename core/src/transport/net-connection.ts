import type * as net from 'node:net';
import { Errors, type ShoalError } from '../errors.js';
import { deferred, withDeadline } from '../util.js';
import { FRAME_HEADER_BYTES, FrameDecoder, writeFrameHeader } from './framing.js';
import { Inbox } from './inbox.js';
import { DIRECT_READ_MIN, type DirectInput } from './net-direct-input.js';
import { checkIncomingLimit, type Connection, type IoOptions } from './transport.js';

/**
 * One end of a net pair, after its handshake (see net.ts for the wire format and the send and receive paths).
 * Created by NetTransport.dial / NetListener.accept.
 */

/** Settings a connection needs from its transport. */
export interface NetConnectionSettings {
  maxMessageBytes: number;
  recvHighWaterBytes: number;
  allocate?: (bytes: number) => Uint8Array;
  /** Bytes of given-back receive buffers (`release`) kept for later messages. */
  recvPoolBytes: number;
}

/** Largest batch of sends coalesced into one writev. */
const MAX_BATCH_MESSAGES = 64;
const MAX_BATCH_BYTES = 256 * 1024;

interface PendingSend {
  reject(e: unknown): void;
}

export class NetConnection implements Connection {
  readonly transport = 'net';
  /** Bytes the kernel read straight into message buffers (the `onread` path; 0 with 'data' events). */
  directBytes = 0;
  /** Messages decoded so far (the ordinal of the next one to complete). */
  private delivered = 0;
  private readonly inbox = new Inbox();
  private readonly sends = new Set<PendingSend>();
  private readonly decoder: FrameDecoder;
  private failure: ShoalError | null = null;
  /**
   * Set when the peer finished sending (its FIN: it closed its end) while sends of ours were still in flight:
   * receives fail with it at once, and the connection fails with it once those sends settle (see `onPeerEnd`).
   */
  private peerEnded: ShoalError | null = null;
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
    private readonly opts: NetConnectionSettings,
    leftover: Uint8Array,
    input: DirectInput | null,
    /** The bound from the first byte (`ListenOptions.incomingLimit`), before `leftover` is parsed. */
    limit?: { bytes: number; reason: string },
  ) {
    this.decoder = new FrameDecoder(opts.maxMessageBytes, `net connection to ${remote}`, (m) => this.deliver(m), opts.allocate, opts.recvPoolBytes);
    if (limit) this.decoder.limit(limit.bytes, limit.reason);
    this.socketClosed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', (e: Error) => this.fail(Errors.peerClosed(this.remote, `socket error: ${e.message}`, e)));
    sock.on('close', () => this.fail(this.peerGoneError()));
    sock.on('end', () => this.onPeerEnd());
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
    if (!this.paused && this.inbox.queuedBytes > this.opts.recvHighWaterBytes) {
      this.paused = true;
      this.sock.pause();
    }
  }

  private deliver(m: Uint8Array): void {
    this.delivered++;
    this.inbox.deliver(m);
  }

  private takeInbox(): Uint8Array | undefined {
    const m = this.inbox.take();
    if (m === undefined) return undefined;
    if (this.paused && this.inbox.queuedBytes <= this.opts.recvHighWaterBytes / 2 && !this.failure) {
      this.paused = false;
      this.sock.resume();
    }
    return m;
  }

  /**
   * The peer closed its end (FIN): nothing more will arrive, so pending and later receives reject at once. Sends
   * already handed to the socket are not failed by it: the peer may have read them before it closed (the last
   * step of a collective: it got our segment, finished, and closed). With TLS a send's write callback comes a
   * turn of the event loop after its bytes went to the kernel, so the peer's FIN can be read first; failing
   * that send then broke a collective that had completed on every rank. Those sends settle through their own
   * write callbacks (a peer that did not read them resets the connection: 'error'), bounded by their deadlines;
   * then the connection fails. No new send starts.
   */
  private onPeerEnd(): void {
    if (this.failure || this.closedSelf || this.peerEnded) return;
    const err = this.peerGoneError();
    if (this.sends.size === 0) {
      this.fail(err);
      return;
    }
    this.peerEnded = err;
    this.inbox.failAll(err);
  }

  /** Terminal failure (peer gone, bad frame, broken send): every waiter rejects, the socket is destroyed. */
  private fail(err: ShoalError): void {
    if (this.failure || this.closedSelf) return;
    this.failure = err;
    this.peerEnded = null;
    this.inbox.failAll(err);
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
    if (this.failure || this.peerEnded) return Promise.reject(this.failure ?? this.peerEnded);
    if (data.byteLength > this.peerMaxMessageBytes) {
      return Promise.reject(Errors.invalidArg('data.byteLength', `(${data.byteLength}) exceeds the peer's maxMessageBytes (${this.peerMaxMessageBytes}) on ${this.remote}`));
    }
    const header = writeFrameHeader(Buffer.allocUnsafe(FRAME_HEADER_BYTES), data.byteLength);
    const d = deferred<void>();
    const entry: PendingSend = { reject: d.reject };
    this.sends.add(entry);
    const done = (err?: Error | null) => {
      if (!this.sends.delete(entry)) return; // already rejected by close/fail
      if (err) d.reject(this.failure ?? Errors.peerClosed(this.remote, `write failed: ${err.message}`, err));
      else d.resolve();
      if (this.peerEnded && this.sends.size === 0) this.fail(this.peerEnded);
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
    if (this.inbox.waiting === 0) {
      const m = this.takeInbox();
      if (m) return Promise.resolve(m);
    }
    if (this.failure || this.peerEnded) return Promise.reject(this.failure ?? this.peerEnded);
    return this.inbox.wait(`recv from ${this.remote}`, opts);
  }

  /**
   * `recv`, with the message landing in `dst` when it has `dst`'s length (above the slab size) and has not fully
   * arrived yet; otherwise (a message already waiting, another length) a plain `recv`. Several may be posted
   * behind other receives, each for the message it will get (the decoder counts frames), so a receiver can post
   * its buffers before the frames arrive. The caller compares what it got. `dst` may be written until the promise
   * settles. Only for waits without a deadline or signal (`timeoutMs: Infinity`; a caller bounds the wait by
   * closing the connection, as a process group does): the socket picks the buffer of its next read ahead of time,
   * so a wait that gave up could still see one read land in `dst`; with a deadline this is a plain `recv`.
   */
  recvInto(dst: Uint8Array, opts?: IoOptions): Promise<Uint8Array> {
    const open = this.inbox.queued === 0 && !this.failure && !this.peerEnded && !this.closedSelf;
    if (!open || opts?.timeoutMs !== Infinity || opts.signal) return this.recv(opts);
    this.decoder.target(dst, this.delivered + this.inbox.waiting);
    const p = this.recv(opts);
    // the connection failed or closed first (no more reads): no later message may land in `dst`
    p.catch(() => this.decoder.untarget(dst));
    return p;
  }

  /** See `Connection.release`: a large message buffer goes back to this connection's receive pool. */
  release(buf: Uint8Array): void {
    if (!this.closedSelf && !this.failure) this.decoder.recycle(buf);
  }

  limitIncoming(maxBytes: number, reason: string): void {
    checkIncomingLimit(maxBytes, reason);
    const err = this.decoder.limit(maxBytes, reason);
    if (err) this.fail(err);
  }

  async close(): Promise<void> {
    if (this.closedSelf) return;
    this.closedSelf = true;
    const err = Errors.closed(`net connection to ${this.remote}`);
    this.inbox.failAll(err);
    for (const s of [...this.sends]) s.reject(err);
    this.sends.clear();
    this.sock.destroy();
    await Promise.race([this.socketClosed, new Promise((r) => setTimeout(r, 1_000).unref())]);
  }
}
