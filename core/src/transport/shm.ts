import { randomBytes } from 'node:crypto';
import { Errors, ShoalError, type ShoalErrorCode } from '../errors.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import { Inbox } from './inbox.js';
import { loadShmAddon, type NativeSegment, type ShmAddon } from './shm-addon.js';
import { authenticateDialer, authenticateListener } from '../security/connection-auth.js';
import { JobAuth } from '../security/job-auth.js';
import { parseShmUrl } from './url.js';
import { aboveLimitError, checkIncomingLimit, DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type Listener, type Transport } from './transport.js';

/**
 * Same-host transport over POSIX shared memory (core/native/shm): one segment per pair, a single-producer /
 * single-consumer ring per direction. Messages never cross the kernel: each byte is copied once into the ring
 * and once out of it (out of it on the JS thread, straight into the message buffer). Wake-ups take one hop, as
 * for a socket: a receiver with nothing to read arms its ring and its event loop watches an eventfd, which the
 * sender signals only when the ring is armed (the two eventfds are exchanged over a unix socket of the pair, in
 * the abstract namespace, so nothing is left on disk). A dead or closed peer closes that socket, so its death is
 * noticed at once; nothing spins while idle. Bodies above 64 KiB stream out of the ring into a buffer from the
 * `allocate` hook or a per-connection pool, filled across event-loop turns, so the JS thread never blocks.
 *
 * URLs: `shm://<name>`; `shm://auto` (or `shm://`) picks a unique name under the options' prefix.
 * Segment names carry the job id (`shoal-<job>-...`), and a segment is unlinked as soon as both ends have
 * mapped it, so a killed rank leaves nothing in /dev/shm; `removeStaleSegments(job)` (shm-addon.ts) clears the
 * only window (a listener killed before its peer attached).
 */
export interface ShmOptions {
  /**
   * The job's identity: the first messages of every pair are the job handshake (security/connection-auth.ts).
   * The segment is owner-only (0600) and the listener takes the wake socket only from the process that claimed
   * the segment (SO_PEERCRED), so only the same user's processes get that far; the handshake keeps apart jobs of
   * the same user. Default: a secret of this transport object alone (`JobAuth.ephemeral()`).
   */
  auth?: JobAuth;
  /** Bytes per direction; a power of two >= 4096. Messages larger than this stream through. Default 8 MiB. */
  ringBytes?: number;
  /** Largest message accepted; larger is ERR_BAD_FRAME. Default 2^40. */
  maxMessageBytes?: number;
  /** Busy-poll iterations of the writer thread waiting for ring space before it sleeps on the futex. Default 2000. */
  spin?: number;
  /**
   * Microseconds a `recv` may spin on the JS thread for a message to arrive before it returns to the event loop
   * (MPI-style polling). Only pays when every rank has a core to itself; the wake-up without it is one hop, like
   * a socket. Default 0.
   */
  pollMicros?: number;
  /**
   * Receive buffers for messages larger than 64 KiB come from this hook when set (like the net transport's
   * `allocate`): it must return a Uint8Array of exactly `bytes` bytes that the transport fills and hands to
   * `recv`'s caller, who owns it from then on. Lets callers recycle large buffers. Default: a malloc'd buffer,
   * freed when collected.
   */
  allocate?: (bytes: number) => Uint8Array;
  /**
   * Without `allocate`: bytes of collected receive buffers each connection keeps for reuse by later messages of
   * the same size (a fresh mapping costs page faults and zeroing: ~1 GB/s against memcpy's 4-10 here). Default
   * 128 MiB; 0 disables.
   */
  recvPoolBytes?: number;
  /** Name prefix, normally the job id. Default 'shoal'. */
  prefix?: string;
  /**
   * Raise glibc's mmap threshold to 512 MiB (process-wide) so that large malloc'd buffers (e.g. the messages
   * callers build to send) are recycled from the heap instead of being mapped and page-faulted afresh each time.
   * Receive buffers do not depend on it (see recvPoolBytes). Default true.
   */
  tuneMalloc?: boolean;
}


export function shmTransport(opts: ShmOptions = {}): Transport {
  return new ShmTransport(opts);
}

class ShmTransport implements Transport {
  readonly name = 'shm';
  readonly schemes = ['shm'] as const;
  private readonly addon: ShmAddon;
  private readonly ringBytes: number;
  private readonly maxMessage: number;
  private readonly spin: number;
  private readonly poolBytes: number;
  private readonly prefix: string;
  private readonly conn: ConnSettings;
  private readonly auth: JobAuth;
  private seq = 0;
  constructor(opts: ShmOptions) {
    if (opts.auth !== undefined && !(opts.auth instanceof JobAuth)) throw Errors.invalidArg('options.auth', 'must be a JobAuth');
    this.auth = opts.auth ?? JobAuth.ephemeral();
    this.ringBytes = opts.ringBytes ?? 8 << 20;
    if (!Number.isInteger(this.ringBytes) || this.ringBytes < 4096 || (this.ringBytes & (this.ringBytes - 1)) !== 0) {
      throw Errors.invalidArg('options.ringBytes', `must be a power of two >= 4096, got ${opts.ringBytes}`);
    }
    this.maxMessage = opts.maxMessageBytes ?? 2 ** 40;
    this.spin = opts.spin ?? 2000;
    this.poolBytes = opts.recvPoolBytes ?? 128 << 20;
    if (!(this.poolBytes >= 0)) throw Errors.invalidArg('options.recvPoolBytes', `must be >= 0, got ${opts.recvPoolBytes}`);
    const pollMicros = opts.pollMicros ?? 0;
    if (!(pollMicros >= 0)) throw Errors.invalidArg('options.pollMicros', `must be >= 0, got ${opts.pollMicros}`);
    if (opts.allocate !== undefined && typeof opts.allocate !== 'function') {
      throw Errors.invalidArg('options.allocate', `must be a function, got ${typeof opts.allocate}`);
    }
    this.conn = { pollMicros, allocate: opts.allocate };
    this.prefix = opts.prefix ?? 'shoal';
    if (!/^[A-Za-z0-9_.-]+$/.test(this.prefix)) throw Errors.invalidArg('options.prefix', `must match [A-Za-z0-9_.-]+, got ${this.prefix}`);
    this.addon = loadShmAddon();
    if (opts.tuneMalloc ?? true) this.addon.tuneMalloc(512 << 20);
  }

  private parse(url: string): string {
    return parseShmUrl(url);
  }

  async listen(url: string): Promise<Listener> {
    let name = this.parse(url);
    if (name === '' || name === 'auto') {
      name = `shoal-${this.prefix}-${process.pid}-${++this.seq}-${randomBytes(4).toString('hex')}`;
    }
    let seg: NativeSegment;
    try {
      seg = new this.addon.Segment(`/${name}`, true, this.ringBytes, this.maxMessage, this.spin, this.poolBytes);
    } catch (e) {
      throw Errors.transport(`listen shm://${name}`, (e as Error).message, e);
    }
    return new ShmListener(`shm://${name}`, seg, this.conn, this.auth);
  }

  async dial(url: string, opts?: IoOptions): Promise<Connection> {
    const name = this.parse(url);
    const timeout = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const start = Date.now();
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      let conn: ShmConnection | undefined;
      try {
        const seg = new this.addon.Segment(`/${name}`, false, 0, this.maxMessage, this.spin, this.poolBytes);
        conn = new ShmConnection(seg, `listener ${url}`, this.conn);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code !== 'ENOENT' && code !== 'ENOTREADY') throw Errors.transport(`dial ${url}`, (e as Error).message, e);
      }
      if (conn) {
        await authenticateDialer(conn, this.auth, `shm dialer of ${url}`, Math.max(1, timeout - (Date.now() - start)));
        return conn;
      }
      if (opts?.signal?.aborted) throw Errors.aborted(`dial ${url}`, opts.signal.reason);
      if (Date.now() - start >= timeout) throw Errors.timeout(`dial ${url}`, timeout);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

class ShmListener implements Listener {
  private state: 'open' | 'accepted' | 'closed' = 'open';
  constructor(
    readonly url: string,
    private readonly seg: NativeSegment,
    private readonly conn: ConnSettings,
    private readonly auth: JobAuth,
  ) {}
  async accept(opts?: IoOptions): Promise<Connection> {
    if (this.state !== 'open') throw Errors.state(`listener ${this.url} is ${this.state}: a pair accepts one peer`);
    const timeout = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const start = Date.now();
    for (let delay = 1; ; delay = Math.min(delay * 2, 10)) {
      if ((this.state as string) === 'closed') throw Errors.closed(`listener ${this.url}`);
      if (this.seg.attached()) {
        this.state = 'accepted';
        const conn = new ShmConnection(this.seg, `dialer of ${this.url}`, this.conn);
        try {
          await authenticateListener(conn, this.auth, `shm listener ${this.url}`, Math.max(1, timeout - (Date.now() - start)));
        } catch (e) {
          this.auth.log.reject(`shm listener ${this.url}`, (e as Error).message);
          throw e;
        }
        return conn;
      }
      if (opts?.signal?.aborted) throw Errors.aborted(`accept on ${this.url}`, opts.signal.reason);
      if (Date.now() - start >= timeout) throw Errors.timeout(`accept on ${this.url}`, timeout);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  async close(): Promise<void> {
    if (this.state === 'open') this.seg.close();
    this.state = 'closed';
  }
}

const EV_SEND_DONE = 1;
const EV_SEND_FAILED = 2;
/** Messages up to this size are copied out of the ring in one native call into a fresh V8 buffer. */
const SMALL_MAX = 64 << 10;
/** Stop taking messages out of the ring while this many received bytes wait unclaimed (the sender then blocks). */
const INBOX_HIGH_WATER = 64 << 20;

interface ConnSettings {
  pollMicros: number;
  allocate?: (bytes: number) => Uint8Array;
  /**
   * Without `allocate`: bytes of collected receive buffers each connection keeps for reuse by later messages of
   * the same size (a fresh mapping costs page faults and zeroing: ~1 GB/s against memcpy's 4-10 here). Default
   * 128 MiB; 0 disables.
   */
  recvPoolBytes?: number;
}

class ShmConnection implements Connection {
  readonly transport = 'shm';
  private readonly inbox = new Inbox();
  /** Destination buffers of waiters that came through `recvInto` (same order as `waiters`). */
  private readonly intos = new Map<Deferred<Uint8Array>, Uint8Array>();
  /**
   * Length of a large message whose header was taken while nobody waited: its body stays in the ring for one
   * event-loop turn, so a `recvInto` issued meanwhile (e.g. by the reader that just decoded the frame announcing
   * it) can land it straight in its buffer; after that turn it drains into a buffer of our own as before.
   */
  private heldLen = -1;
  private holdTimer: ReturnType<typeof setImmediate> | undefined;
  private releaseHeld = false;
  private readonly sends = new Map<number, { data: Uint8Array; done: Deferred<void> }>();
  private nextId = 1;
  private failure: ShoalError | undefined;
  private closedSelf = false;
  private eof = false;
  private pumping = false;
  /** The message whose body is streaming out of the ring, and how much of it has arrived. */
  private body: Uint8Array | undefined;
  private bodyFill = 0;
  /** A data plane's lower bound on messages (`limitIncoming`), checked before a body is allocated. */
  private limit: { bytes: number; reason: string } | undefined;
  constructor(
    private readonly seg: NativeSegment,
    readonly remote: string,
    private readonly conn: ConnSettings,
  ) {
    seg.start(
      (kind, id, err, code) => this.onSendEvent(kind, id, err, code),
      (eof) => this.onReadable(eof),
    );
    // Take what is already there and arm the ring: the receiver drains eagerly (up to INBOX_HIGH_WATER), so a
    // sender may await a message larger than the ring before the first recv here.
    this.pump();
  }
  get closed() {
    return this.closedSelf;
  }

  private deliver(m: Uint8Array) {
    const w = this.inbox.deliver(m);
    if (w) this.intos.delete(w);
  }

  private onReadable(eof: boolean) {
    if (eof) this.eof = true;
    this.pump();
  }

  /**
   * Moves whole messages from the ring to waiters or the inbox, on the JS thread, until the ring has nothing new;
   * then arms it so the peer's next write wakes the event loop. A body larger than what is in the ring is filled
   * across calls. After the peer's end closed (eof), running dry fails the connection.
   */
  private pump(): void {
    if (this.pumping || this.closedSelf || this.failure) return;
    this.pumping = true;
    try {
      for (;;) {
        if (!this.body) {
          if (this.inbox.waiting === 0 && this.inbox.queuedBytes >= INBOX_HIGH_WATER) return; // recv resumes
          if (this.heldLen < 0) {
            const r = this.seg.take(SMALL_MAX);
            const len = typeof r === 'number' ? r : r.byteLength;
            if (this.limit && len > this.limit.bytes) throw aboveLimitError(this.remote, len, this.limit);
            if (typeof r !== 'number') {
              this.deliver(r);
              continue;
            }
            if (r >= 0) this.heldLen = r;
          }
          if (this.heldLen >= 0) {
            const w = this.inbox.firstWaiter;
            if (!w && !this.releaseHeld) {
              // Hold the body in the ring for one turn (see heldLen); the timer's pump takes it if nobody asks.
              this.holdTimer ??= setImmediate(() => {
                this.holdTimer = undefined;
                if (this.heldLen < 0) return;
                this.releaseHeld = true;
                this.pump();
              });
              return;
            }
            const into = w && this.intos.get(w);
            this.body = into && into.byteLength === this.heldLen ? into : this.allocBody(this.heldLen);
            this.heldLen = -1;
            this.releaseHeld = false;
            if (this.holdTimer) clearImmediate(this.holdTimer);
            this.holdTimer = undefined;
            this.bodyFill = 0;
          }
        }
        if (this.body) {
          const n = this.seg.readInto(this.body, this.bodyFill);
          this.bodyFill += n;
          if (this.bodyFill === this.body.byteLength) {
            const m = this.body;
            this.body = undefined;
            this.deliver(m);
            continue;
          }
          if (n > 0) continue;
        }
        if (this.eof) {
          // The peer's socket end is closed and everything it wrote before has been taken.
          if (!this.seg.arm()) {
            const partial = this.body ? ` in the middle of a ${this.body.byteLength}-byte message` : '';
            this.fail(Errors.peerClosed(this.remote, `peer closed the shared-memory connection${partial}`));
            return;
          }
          continue;
        }
        if (!this.seg.arm()) return;
      }
    } catch (e) {
      const code = (e as { code?: string }).code;
      this.fail(
        e instanceof ShoalError ? e : code === 'ERR_BAD_FRAME' ? Errors.badFrame(this.remote, (e as Error).message) : Errors.transport(this.remote, (e as Error).message, e),
      );
    } finally {
      this.pumping = false;
    }
  }

  limitIncoming(maxBytes: number, reason: string): void {
    checkIncomingLimit(maxBytes, reason);
    this.limit = { bytes: maxBytes, reason };
  }

  private allocBody(len: number): Uint8Array {
    const hook = this.conn.allocate;
    if (!hook) return this.seg.alloc(len);
    const u = hook(len);
    if (!(u instanceof Uint8Array) || u.byteLength !== len) {
      throw Errors.invalidArg('options.allocate', `must return a Uint8Array of ${len} bytes, got ${u instanceof Uint8Array ? `${u.byteLength} bytes` : typeof u}`);
    }
    return u;
  }

  private fail(err: ShoalError) {
    if (this.failure) return;
    this.failure = err;
    this.intos.clear();
    this.inbox.failAll(err);
  }

  private onSendEvent(kind: number, id: number, err?: string, code?: string) {
    const s = this.sends.get(id);
    this.sends.delete(id);
    if (kind === EV_SEND_DONE) s?.done.resolve();
    else if (kind === EV_SEND_FAILED) s?.done.reject(this.toError(code, err ?? 'send failed'));
  }

  private toError(code: string | undefined, message: string): ShoalError {
    switch (code as ShoalErrorCode | undefined) {
      case 'ERR_PEER_CLOSED':
        return Errors.peerClosed(this.remote, message);
      case 'ERR_CLOSED':
        return Errors.closed(`connection to ${this.remote}`);
      case 'ERR_BAD_FRAME':
        return Errors.badFrame(this.remote, message);
      default:
        return Errors.transport(this.remote, message);
    }
  }

  send(data: Uint8Array, opts?: IoOptions): Promise<void> {
    if (this.closedSelf) return Promise.reject(Errors.closed(`connection to ${this.remote}`));
    if (opts?.signal?.aborted) return Promise.reject(Errors.aborted('send', opts.signal.reason));
    if (this.failure?.code === 'ERR_PEER_CLOSED') return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.seg.send(data, id)) return Promise.resolve();
    const done = deferred<void>();
    this.sends.set(id, { data, done });
    // A send that cannot complete in time means the peer stopped reading: the pair is unusable after that.
    return withDeadline(`send to ${this.remote}`, done.promise, opts, () => void this.close());
  }

  private takeInbox(): Uint8Array | undefined {
    return this.inbox.take();
  }

  recv(opts?: IoOptions): Promise<Uint8Array> {
    return this.recvImpl(undefined, opts);
  }

  /**
   * `recv`, landing a large message (> 64 KiB) of exactly `dst.byteLength` bytes straight in `dst` (then
   * resolving with `dst` itself) when its body is still in the ring; otherwise (another size, a small message, a
   * message already drained) it resolves with a buffer of its own, as `recv`. `dst` may be written until the
   * returned promise settles (a timed-out call's `dst` may have been written partly).
   */
  recvInto(dst: Uint8Array, opts?: IoOptions): Promise<Uint8Array> {
    return this.recvImpl(dst, opts);
  }

  private recvImpl(into: Uint8Array | undefined, opts?: IoOptions): Promise<Uint8Array> {
    if (this.closedSelf) return Promise.reject(Errors.closed(`connection to ${this.remote}`));
    const m = this.takeInbox();
    if (m) return Promise.resolve(m);
    if (this.failure) return Promise.reject(this.failure);
    if (opts?.signal?.aborted) return Promise.reject(Errors.aborted('recv', opts.signal.reason));
    const d = this.inbox.addWaiter();
    if (into) this.intos.set(d, into);
    // Whatever is in the ring already goes to the waiters now, without a trip through the event loop.
    this.pump();
    if (this.inbox.hasWaiter(d) && this.conn.pollMicros > 0 && !this.failure && this.seg.spin(this.conn.pollMicros)) this.pump();
    if (!this.inbox.hasWaiter(d)) return d.promise; // settled by the pump
    return withDeadline(`recv from ${this.remote}`, d.promise, opts, () => {
      this.inbox.removeWaiter(d);
      this.intos.delete(d);
      // A body already streaming into the cancelled caller's buffer moves to one of ours (the caller may reuse
      // its buffer now; the message goes to the next waiter or the inbox, as for a cancelled `recv`).
      if (into && this.body === into) {
        try {
          const b = this.allocBody(into.byteLength);
          b.set(into.subarray(0, this.bodyFill));
          this.body = b;
        } catch (e) {
          this.fail(e instanceof ShoalError ? e : Errors.transport(this.remote, (e as Error).message, e));
        }
      }
    });
  }

  async close(): Promise<void> {
    if (this.closedSelf) return;
    this.closedSelf = true;
    if (this.holdTimer) clearImmediate(this.holdTimer);
    this.holdTimer = undefined;
    this.seg.close();
    const err = Errors.closed(`connection to ${this.remote}`);
    this.inbox.failAll(err);
    for (const s of this.sends.values()) s.done.reject(err);
    this.sends.clear();
  }
}
