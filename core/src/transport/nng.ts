/**
 * The `nng` transport: nng's PAIR1 protocol over `tcp://host:port` (`:0` picks a free port, reported in
 * `listener.url`) and `ipc:///path`, through the small N-API addon in `core/native/nng` over Debian's libnng 1.5.2
 * (build it with `npm run build:native -w @shoal/core`; needs the libnng-dev package). The bytes on the wire are
 * nng's own (SP handshake, then length-prefixed frames with the PAIR1 hop-count header), so any nng PAIR1 peer,
 * e.g. `nngcat --pair1`, can talk to it.
 *
 * The addon drives libnng's stream layer (nng_stream_*) instead of an nng_pair1 socket: libnng 1.5.2's SP
 * transports hang forever in nng_close() when either end closes during a large transfer (a partial read/write is
 * resubmitted on an aio that close already stopped; fixed upstream in nng a1bc737b). See addon.cc.
 *
 * Pair semantics: a listener keeps the first peer whose SP handshake succeeds and drops every later connection
 * before the handshake (so a second dialer's `dial` keeps retrying and times out). `dial` retries with backoff
 * (`reconnectMinMs` doubling up to `reconnectMaxMs`) until the timeout.
 *
 * Async model: native completions (aio callbacks on nng's threads) reach the JS thread through a thread-safe
 * function; nothing blocks the JS thread or polls. The native side reads continuously and hands every message to
 * JS as soon as it is complete; `recv` takes from that inbox, so a timed-out or aborted recv consumes nothing.
 *
 * Buffers: `send` is zero-copy for messages above 16 KiB: nng writes straight from the caller's bytes, and the
 * promise resolves once they have been handed to the kernel; the caller must not modify them before that. Sends
 * queue natively (up to 8 MiB / 256 messages ahead, the rest here); sends issued in the same tick are handed over
 * together and each write gathers several of them: runs of small messages are framed and copied into one buffer,
 * larger ones go out as their own iovs.
 *
 * Receive: the addon reads as much as the kernel has into a 256 KiB buffer and hands every complete message of up
 * to 64 KiB from that read to JS in one block, each an 8-byte-aligned slice of it (a kept small message keeps
 * its block alive); larger messages are read straight into their own buffer (zero copy). The caller owns what
 * `recv` returns.
 *
 * Receive backpressure: while more than `recvHighWaterBytes` of received messages wait unclaimed, the native side
 * stops reading until `recv` has drained half of them; the peer's sends then wait in TCP.
 *
 * Failure: when the peer closes or dies, pending and later recvs reject ERR_PEER_CLOSED (after the messages
 * already received), and sends too. A send that times out or is aborted after it started writing fails the
 * connection (half a frame may be on the wire). A frame larger than `maxMessageBytes` (or malformed) fails the
 * connection with ERR_BAD_FRAME. `close` runs natively on a helper thread and is awaited at most `closeTimeoutMs`.
 */
import { createRequire } from 'node:module';
import { Errors, type ShoalError } from '../errors.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import { Inbox } from './inbox.js';
import { AUTH_MAX_MESSAGE_BYTES, authenticateDialer, authenticateListener } from '../security/connection-auth.js';
import { JobAuth } from '../security/job-auth.js';
import { parseNetUrl } from './url.js';
import { checkIncomingLimit, DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type Listener, type Transport } from './transport.js';

export interface NngTransportOptions {
  /**
   * The job's identity: the first messages of every connection are the job handshake
   * (security/connection-auth.ts); until it passes, frames above 64 bytes fail the connection. Default: a
   * secret of this transport object alone (`JobAuth.ephemeral()`).
   */
  auth?: JobAuth;
  /**
   * Skip the job handshake: only for talking to plain nng PAIR1 peers (`nngcat`) in tests. Never in a job: such a
   * listener takes any peer that connects.
   */
  unauthenticated?: boolean;
  /** How long the job handshake may take once connected. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Largest message this end accepts; a larger frame fails the connection (ERR_BAD_FRAME). Default 2 GiB - 1. */
  maxMessageBytes?: number;
  /** Dial retry backoff: first and largest wait between attempts, in ms. Defaults 5 and 100. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Upper bound on `close()` waiting for the native close. Default 10 s. */
  closeTimeoutMs?: number;
  /** Stop reading from the peer while this many bytes of received messages wait for `recv`. Default 256 MiB. */
  recvHighWaterBytes?: number;
  /** Path of the compiled addon. Default: core/native/nng/build/Release/shoal_nng.node. */
  addonPath?: string;
}

export const NNG_DEFAULT_MAX_MESSAGE_BYTES = 2 ** 31 - 1;

/** The addon's surface (core/native/nng/src/addon.cc). */
interface NativePair {
  listen(url: string): number;
  dial(url: string): void;
  send(id: number, data: Uint8Array, flush: boolean): void;
  setRxPaused(paused: boolean): void;
  setMaxMessage(bytes: number): void;
  close(): void;
  ref(): void;
  unref(): void;
}
type EventFn = (kind: number, id: number, rv: number, data: Uint8Array | undefined, lens: Uint32Array | undefined) => void;
interface NngAddon {
  NngPair: new (onEvent: EventFn, maxMessageBytes: number) => NativePair;
  strerror(rv: number): string;
  constants: {
    EV_CONNECTED: number;
    EV_MSG: number;
    EV_RX_END: number;
    EV_SEND: number;
    EV_DIAL_FAIL: number;
    EV_CLOSED: number;
    EV_BAD_FRAME: number;
    EV_MSGS: number;
    ECLOSED: number;
    ECONNSHUT: number;
    ECONNRESET: number;
    ETIMEDOUT: number;
    version: string;
  };
}

/** Load the addon (Node caches it per process). Throws ERR_TRANSPORT saying how to build it when missing. */
export function loadNngAddon(addonPath?: string): NngAddon {
  const path = addonPath ?? new URL('../../native/nng/build/Release/shoal_nng.node', import.meta.url).pathname;
  try {
    return createRequire(import.meta.url)(path) as NngAddon;
  } catch (e) {
    throw Errors.transport(
      'nng',
      `cannot load the nng addon at ${path} (${(e as Error).message}); build it with \`npm rebuild @shoal/core\` (installed package) or \`npm run build:native -w @shoal/core\` (checkout); needs the libnng-dev package`,
      e,
    );
  }
}

type Settings = Required<Omit<NngTransportOptions, 'addonPath' | 'auth'>> & { auth: JobAuth | null };

/** The nng transport. An ordinary object: create one and pass it down. */
export class NngTransport implements Transport {
  readonly name = 'nng';
  readonly schemes = ['tcp', 'ipc'] as const;
  /** libnng version string, e.g. '1.5.2'. */
  readonly nngVersion: string;
  private readonly addon: NngAddon;
  private readonly settings: Settings;

  /** Loads the addon: throws ERR_TRANSPORT when it is not built. */
  constructor(options: NngTransportOptions = {}) {
    const max = options.maxMessageBytes ?? NNG_DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isSafeInteger(max) || max < 0) throw Errors.invalidArg('options.maxMessageBytes', `must be a non-negative integer, got ${max}`);
    const settings: Settings = {
      maxMessageBytes: max,
      reconnectMinMs: options.reconnectMinMs ?? 5,
      reconnectMaxMs: options.reconnectMaxMs ?? 100,
      closeTimeoutMs: options.closeTimeoutMs ?? 10_000,
      recvHighWaterBytes: options.recvHighWaterBytes ?? 256 * 2 ** 20,
      auth: options.unauthenticated === true ? null : (options.auth ?? JobAuth.ephemeral()),
      unauthenticated: options.unauthenticated === true,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    };
    if (settings.auth !== null && !(settings.auth instanceof JobAuth)) throw Errors.invalidArg('options.auth', 'must be a JobAuth');
    for (const k of ['reconnectMinMs', 'reconnectMaxMs', 'closeTimeoutMs'] as const) {
      const v = settings[k];
      if (!Number.isInteger(v) || v < 1 || v > 2 ** 31 - 1) throw Errors.invalidArg(`options.${k}`, `must be an integer in 1..2^31-1, got ${v}`);
    }
    if (!(settings.recvHighWaterBytes > 0)) throw Errors.invalidArg('options.recvHighWaterBytes', `must be positive, got ${settings.recvHighWaterBytes}`);
    this.settings = settings;
    this.addon = loadNngAddon(options.addonPath);
    this.nngVersion = this.addon.constants.version;
  }

  async listen(url: string, opts?: IoOptions): Promise<Listener> {
    checkUrl(url);
    if (opts?.signal?.aborted) throw Errors.aborted(`listen on ${url}`, opts.signal.reason);
    const h = new PairHandle(this.addon, this.settings, `listener ${url}`);
    let port: number;
    try {
      port = h.native.listen(url);
    } catch (e) {
      await h.close().catch(() => {});
      throw Errors.transport(url, `cannot listen: ${(e as Error).message}`, e);
    }
    const bound = url.startsWith('tcp://') && port > 0 ? url.replace(/:\d+\/?$/, `:${port}`) : url;
    h.where = `listener ${bound}`;
    return new NngListener(h, bound, this.addon, this.settings);
  }

  async dial(url: string, opts?: IoOptions): Promise<Connection> {
    checkUrl(url);
    const what = `dial ${url}`;
    if (opts?.signal?.aborted) throw Errors.aborted(what, opts.signal.reason);
    const h = new PairHandle(this.addon, this.settings, `dialer of ${url}`);
    try {
      await h.dial(url, what, opts);
    } catch (e) {
      await h.close().catch(() => {});
      throw e;
    }
    const conn = new NngConnection(h, url);
    const auth = this.settings.auth;
    if (auth) {
      // Authenticate, then accept messages of any size (up to maxMessageBytes) from the proven listener.
      await authenticateDialer(conn, auth, url, this.settings.handshakeTimeoutMs, () => h.native.setMaxMessage(this.settings.maxMessageBytes));
    }
    return conn;
  }
}

/** Factory for registries and child processes: `createNngTransport({ maxMessageBytes })`. */
export function createNngTransport(options?: NngTransportOptions): NngTransport {
  return new NngTransport(options ?? {});
}

function checkUrl(url: string): void {
  parseNetUrl(url);
}

/**
 * Sends handed to the native queue at once (at least one): bytes and messages. Those are committed (a timeout on
 * one fails the connection); later ones wait here and can still be withdrawn.
 */
const NATIVE_WINDOW_BYTES = 8 * 2 ** 20;
const NATIVE_WINDOW_MESSAGES = 256;

interface PendingSend {
  id: number;
  data: Uint8Array;
  what: string;
  started: boolean;
  done: Deferred<void>;
}

/** One native pair end and its state (JS thread only). Shared by a listener and the connection it yields. */
class PairHandle {
  readonly native: NativePair;
  where: string;
  connected = false;
  /** Why receiving ended (peer closed, bad frame); set once. */
  rxEnd: ShoalError | undefined;
  /** A data plane's lower bound on messages (`limitIncoming`). */
  limit: { bytes: number; reason: string } | undefined;
  closing = false;
  private readonly inbox = new Inbox();
  private rxPaused = false;
  private readonly sends: PendingSend[] = [];
  private nextId = 1;
  private busy = 0;
  private onConnect: ((err?: number) => void) | undefined;
  private readonly closedDone: Deferred<void> = deferred();
  private closePromise: Promise<void> | undefined;

  /** The transport's limit (what authenticated peers may send unless a data plane lowers it). */
  get maxMessageBytes(): number {
    return this.settings.maxMessageBytes;
  }

  constructor(
    private readonly addon: NngAddon,
    private readonly settings: Settings,
    where: string,
  ) {
    this.where = where;
    // Until the job handshake passes, only its small messages are accepted.
    const max = settings.auth ? Math.min(AUTH_MAX_MESSAGE_BYTES, settings.maxMessageBytes) : settings.maxMessageBytes;
    this.native = new addon.NngPair((kind, id, rv, data, lens) => this.onEvent(kind, id, rv, data, lens), max);
  }

  /** Keep the event loop alive while something waits on the native side. */
  hold(): void {
    if (this.busy++ === 0 && !this.closing) this.native.ref();
  }
  release(): void {
    if (--this.busy === 0 && !this.closing) this.native.unref();
  }

  private deliver(m: Uint8Array): void {
    if (this.inbox.deliver(m)) return;
    if (!this.rxPaused && this.inbox.queuedBytes > this.settings.recvHighWaterBytes && !this.closing) {
      this.rxPaused = true;
      this.native.setRxPaused(true);
    }
  }

  private onEvent(kind: number, id: number, rv: number, data: Uint8Array | undefined, lens: Uint32Array | undefined): void {
    const k = this.addon.constants;
    switch (kind) {
      case k.EV_MSG:
        return this.deliver(data!);
      case k.EV_MSGS: {
        // Small messages of one read share one block, each 8-byte aligned (typed-array views work).
        let off = 0;
        for (const len of lens!) {
          this.deliver(data!.subarray(off, off + len));
          off += (len + 7) & ~7;
        }
        return;
      }
      case k.EV_SEND:
        return this.onSendDone(id, rv);
      case k.EV_CONNECTED:
        this.connected = true;
        this.onConnect?.();
        return this.pump();
      case k.EV_DIAL_FAIL:
        return this.onConnect?.(rv);
      case k.EV_RX_END:
        return this.endRx(Errors.peerClosed(this.where, this.closing ? undefined : this.addon.strerror(rv)));
      case k.EV_BAD_FRAME:
        if (rv === 1 && this.limit) return this.endRx(Errors.badFrame(this.where, `a message above ${this.limit.reason} (${this.limit.bytes} bytes): the peer sent more than this job can legitimately send`));
        return this.endRx(
          Errors.badFrame(
            this.where,
            rv === 1 ? `message larger than maxMessageBytes (${this.settings.maxMessageBytes})` : rv === 2 ? 'frame without a PAIR1 header' : 'unknown frame type',
          ),
        );
      case k.EV_CLOSED:
        return this.closedDone.resolve();
    }
  }

  private endRx(err: ShoalError): void {
    if (this.rxEnd || this.closing) return;
    this.rxEnd = err;
    this.inbox.failAll(err);
    // Queued sends cannot reach a gone peer; the one in flight fails on its own.
    for (const s of this.sends.filter((x) => !x.started)) this.finishSend(s, err);
  }

  /** Dial until connected; rejects ERR_TIMEOUT (with the last error) / ERR_ABORTED / ERR_CLOSED. */
  async dial(url: string, what: string, opts: IoOptions | undefined): Promise<void> {
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const signal = opts?.signal;
    const deadline = Date.now() + timeoutMs;
    let backoff = this.settings.reconnectMinMs;
    let attempts = 0;
    let last = 'no attempt made';
    this.hold();
    try {
      for (;;) {
        attempts++;
        const rv = await withDeadline(
          what,
          new Promise<number | undefined>((resolve) => {
            this.onConnect = resolve;
            this.native.dial(url);
          }),
          { timeoutMs: Math.max(0, deadline - Date.now()), signal },
        ).catch((e: ShoalError) => {
          throw e.code === 'ERR_TIMEOUT' ? Errors.timeout(`${what} (${attempts} attempts, last: ${last})`, timeoutMs, { url }) : e;
        });
        if (rv === undefined) return;
        last = this.addon.strerror(rv);
        const wait = Math.min(backoff, deadline - Date.now());
        if (wait <= 0) throw Errors.timeout(`${what} (${attempts} attempts, last: ${last})`, timeoutMs, { url });
        backoff = Math.min(backoff * 2, this.settings.reconnectMaxMs);
        await withDeadline(what, new Promise((r) => setTimeout(r, wait)), { timeoutMs: Infinity, signal });
      }
    } finally {
      this.onConnect = undefined;
      this.release();
    }
  }

  /** Wait for a listener's peer. */
  waitConnected(what: string, opts: IoOptions | undefined): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.closing) return Promise.reject(Errors.closed(this.where));
    const d = deferred<void>();
    this.onConnect = () => d.resolve();
    this.closeHook = () => d.reject(Errors.closed(this.where));
    this.hold();
    return withDeadline(what, d.promise, opts, () => {
      this.onConnect = undefined;
    }).finally(() => {
      this.closeHook = undefined;
      this.release();
    });
  }
  private closeHook: (() => void) | undefined;

  recv(what: string, opts: IoOptions | undefined): Promise<Uint8Array> {
    const m = this.inbox.take();
    if (m) {
      if (this.rxPaused && this.inbox.queuedBytes <= this.settings.recvHighWaterBytes / 2 && !this.closing) {
        this.rxPaused = false;
        this.native.setRxPaused(false);
      }
      return Promise.resolve(m);
    }
    if (this.rxEnd) return Promise.reject(this.rxEnd);
    this.hold();
    return this.inbox.wait(what, opts).finally(() => this.release());
  }

  send(data: Uint8Array, what: string, opts: IoOptions | undefined): Promise<void> {
    if (this.rxEnd) return Promise.reject(this.rxEnd.code === 'ERR_BAD_FRAME' ? this.rxEnd : Errors.peerClosed(this.where));
    const s: PendingSend = { id: this.nextId, data, what, started: false, done: deferred() };
    this.nextId = this.nextId >= 0xfffffff0 ? 1 : this.nextId + 1;
    this.sends.push(s);
    this.hold();
    this.schedulePump();
    return withDeadline(what, s.done.promise, opts, () => {
      if (!s.started) {
        this.sends.splice(this.sends.indexOf(s), 1);
        this.release();
        return;
      }
      // Half a frame may be on the wire: the stream is unusable. Fail the connection (the peer sees it closed).
      this.fail();
    });
  }

  /** Hand queued sends to the native queue, up to the window. */
  private pump(): void {
    if (!this.connected || this.closing) return;
    // Started sends are always the head of `sends` (started in order, finished from the head): skip them.
    let end = this.nativeCount;
    let count = this.nativeCount;
    let bytes = this.nativeBytes;
    for (; end < this.sends.length; end++) {
      const len = this.sends[end]!.data.byteLength;
      if (count > 0 && (count >= NATIVE_WINDOW_MESSAGES || bytes + len > NATIVE_WINDOW_BYTES)) break;
      count++;
      bytes += len;
    }
    for (let i = this.nativeCount; i < end; i++) {
      const s = this.sends[i]!;
      s.started = true;
      this.nativeCount++;
      this.nativeBytes += s.data.byteLength;
      try {
        this.native.send(s.id, s.data, i === end - 1); // one write for the whole run
      } catch (e) {
        this.nativeCount--;
        this.nativeBytes -= s.data.byteLength;
        this.finishSend(s, Errors.transport(this.where, `${s.what}: ${(e as Error).message}`, e));
        return;
      }
    }
  }

  /** Pump once after the current synchronous code, so sends issued together leave in one write. */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }
  private pumpScheduled = false;
  private nativeCount = 0;
  private nativeBytes = 0;

  private finishSend(s: PendingSend, err?: unknown): void {
    const i = this.sends.indexOf(s);
    if (i < 0) return;
    this.sends.splice(i, 1);
    this.release();
    if (err) s.done.reject(err);
    else s.done.resolve();
  }

  /** Every native-queued send up to and including `lastId` finished (rv 0) or failed (rv). */
  private onSendDone(lastId: number, rv: number): void {
    const k = this.addon.constants;
    const done: PendingSend[] = [];
    for (const x of this.sends) {
      if (!x.started) break;
      done.push(x);
      if (x.id === lastId) break;
    }
    let err: ShoalError | undefined;
    if (rv !== 0) {
      if (this.closing) err = Errors.closed(`connection (${this.where})`);
      else if (this.rxEnd?.code === 'ERR_BAD_FRAME') err = this.rxEnd;
      else if (this.rxEnd || rv === k.ECONNSHUT || rv === k.ECONNRESET || rv === k.ECLOSED) err = Errors.peerClosed(this.where, this.addon.strerror(rv));
      else err = Errors.transport(this.where, `send: ${this.addon.strerror(rv)}`);
    }
    this.sends.splice(0, done.length);
    for (const x of done) {
      this.nativeCount--;
      this.nativeBytes -= x.data.byteLength;
      this.release();
      if (err) x.done.reject(err);
      else x.done.resolve();
    }
    this.pump();
  }

  /** The stream is unusable (a send was cut mid-frame): close it natively, recvs see ERR_PEER_CLOSED-like end. */
  private fail(): void {
    if (this.closing) return;
    this.endRx(Errors.transport(this.where, 'connection failed: a send was abandoned mid-frame (timeout or abort)') as ShoalError);
    void this.close().catch(() => {});
  }

  /** Close natively (helper thread), reject everything pending with ERR_CLOSED, wait at most closeTimeoutMs. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    this.closeHook?.();
    const err = Errors.closed(`connection (${this.where})`);
    this.inbox.failAll(err);
    for (const s of this.sends.filter((x) => !x.started)) this.finishSend(s, err);
    this.native.close(); // the send in flight completes with ECLOSED before EV_CLOSED
    const ms = this.settings.closeTimeoutMs;
    this.closePromise = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(Errors.transport(this.where, `native close did not finish within ${ms} ms`)), ms);
      void this.closedDone.promise.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.closePromise;
  }
}

/**
 * The listening end. A peer that fails the job handshake is closed, counted and logged, and the listener listens
 * again on the same address (the native side stops listening once a peer connects), so it never takes the slot.
 */
class NngListener implements Listener {
  private conn: NngConnection | undefined;
  private closedFlag = false;
  private accepting = false;
  private rejectedPeers = 0;
  constructor(
    private h: PairHandle,
    readonly url: string,
    private readonly addon: NngAddon,
    private readonly settings: Settings,
  ) {}

  async accept(opts?: IoOptions): Promise<Connection> {
    if (this.closedFlag) throw Errors.closed(`listener ${this.url}`);
    if (this.conn || this.accepting) throw Errors.state(`listener ${this.url} already yielded its one connection (pair semantics)`);
    this.accepting = true;
    const deadline = Date.now() + (opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    try {
      for (;;) {
        const left = deadline - Date.now();
        await this.h.waitConnected(`accept on ${this.url}${this.rejectedPeers ? ` (${this.rejectedPeers} peer(s) rejected)` : ''}`, { timeoutMs: Math.max(0, left), signal: opts?.signal });
        if (this.closedFlag) throw Errors.closed(`listener ${this.url}`);
        const conn = new NngConnection(this.h, `dialer of ${this.url}`);
        const auth = this.settings.auth;
        if (!auth) return (this.conn = conn);
        const h = this.h;
        try {
          await authenticateListener(conn, auth, `dialer of ${this.url}`, this.settings.handshakeTimeoutMs, () => h.native.setMaxMessage(this.settings.maxMessageBytes));
          return (this.conn = conn);
        } catch (e) {
          this.rejectedPeers++;
          auth.log.reject(`nng listener ${this.url}`, (e as Error).message);
          if (this.closedFlag) throw Errors.closed(`listener ${this.url}`);
          // Listen again on the same address for the real peer (its dial retries meanwhile).
          const next = new PairHandle(this.addon, this.settings, `listener ${this.url}`);
          try {
            next.native.listen(this.url);
          } catch (e2) {
            await next.close().catch(() => {});
            throw Errors.transport(this.url, `cannot listen again after rejecting a peer: ${(e2 as Error).message}`, e2);
          }
          this.h = next;
        }
      }
    } finally {
      this.accepting = false;
    }
  }

  /** Closes the native end unless it was handed to a connection (which then owns it). */
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    if (!this.conn) await this.h.close();
  }
}

class NngConnection implements Connection {
  readonly transport = 'nng';
  private closedSelf = false;
  constructor(
    private readonly h: PairHandle,
    readonly remote: string,
  ) {
    h.where = `nng connection to ${remote}`;
  }
  get closed(): boolean {
    return this.closedSelf;
  }

  async send(data: Uint8Array, opts?: IoOptions): Promise<void> {
    if (!(data instanceof Uint8Array)) {
      if (!ArrayBuffer.isView(data)) throw Errors.invalidArg('data', 'must be a Uint8Array');
      const v = data as ArrayBufferView;
      data = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    }
    const what = `send ${data.byteLength} B to ${this.remote}`;
    if (opts?.signal?.aborted) throw Errors.aborted(what, opts.signal.reason);
    if (this.closedSelf) throw Errors.closed(`connection to ${this.remote}`);
    await this.h.send(data, what, opts);
  }

  async recv(opts?: IoOptions): Promise<Uint8Array> {
    if (this.closedSelf) throw Errors.closed(`connection to ${this.remote}`);
    const what = `recv from ${this.remote}`;
    if (opts?.signal?.aborted) throw Errors.aborted(what, opts.signal.reason);
    return this.h.recv(what, opts);
  }

  limitIncoming(maxBytes: number, reason: string): void {
    checkIncomingLimit(maxBytes, reason);
    if (maxBytes >= this.h.maxMessageBytes) return;
    this.h.limit = { bytes: maxBytes, reason };
    this.h.native.setMaxMessage(maxBytes);
  }

  async close(): Promise<void> {
    this.closedSelf = true;
    await this.h.close();
  }
}
