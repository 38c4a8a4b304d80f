// One native nng pair end (PairHandle): sends with their window, the inbox, connect and close (see nng.ts).
import { Errors, type ShoalError } from '../errors.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import { Inbox } from './inbox.js';
import { AUTH_MAX_MESSAGE_BYTES } from '../security/connection-auth.js';
import type { JobAuth } from '../security/job-auth.js';
import type { NativePair, NngAddon } from './nng-addon.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from './transport.js';

/** What a pair end needs of the transport's settings (`NngTransportOptions`, defaults applied). */
export interface PairSettings {
  auth: JobAuth | null;
  maxMessageBytes: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  closeTimeoutMs: number;
  recvHighWaterBytes: number;
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
export class PairHandle {
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
    private readonly settings: PairSettings,
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
      let inline: boolean;
      try {
        inline = this.native.send(s.id, s.data, i === end - 1); // one write for the whole run
      } catch (e) {
        this.nativeCount--;
        this.nativeBytes -= s.data.byteLength;
        this.finishSend(s, Errors.transport(this.where, `${s.what}: ${(e as Error).message}`, e));
        return;
      }
      if (inline) {
        // A lone small frame written from this thread: already in the kernel, no EV_SEND will cover it (the last
        // of the run, so removing it from `sends` shifts nothing this loop still reads).
        this.nativeCount--;
        this.nativeBytes -= s.data.byteLength;
        this.finishSend(s);
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
