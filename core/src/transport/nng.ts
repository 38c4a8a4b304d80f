/**
 * The `nng` transport: PAIR1 sockets of libnng (Debian's 1.5.2) through the small N-API addon in
 * `core/native/nng` (build it with `npm run build:native -w @shoal/core`; needs libnng-dev). URLs are nng's:
 * `tcp://host:port` (`:0` picks a free port, reported in `listener.url`) and `ipc:///path`. The wire is plain SP
 * PAIR1, so any nng/nanomsg peer (e.g. `nngcat --pair1`) can talk to it.
 *
 * Model (see transport.ts): one nng socket per pair end. A listener's socket accepts exactly one pipe (PAIR1
 * rejects more); a dialer's socket keeps retrying in the background until it gets a pipe that survives
 * `dialSettleMs` (a second dialer to a taken listener is connected and then dropped at once by the listener's
 * PAIR1, so an immediately dropped pipe does not count).
 *
 * Async model: every send and recv is one nng_aio; its completion comes back on the JS thread through a
 * thread-safe function (no polling, no blocking). Timeouts are nng aio timeouts, so a timed-out recv consumes
 * nothing; an AbortSignal cancels the aio. When the connected pipe goes away (peer closed or died), pending ops
 * are cancelled and every later recv rejects ERR_PEER_CLOSED once the messages already received are drained.
 *
 * Buffers: `send` copies the caller's bytes once into a new nng message (so the caller may reuse its buffer as
 * soon as the promise resolves, in fact as soon as `send` returns); `recv` returns a Uint8Array over the received
 * nng message itself (zero copy) that the caller owns; the message is freed when the array is collected.
 *
 * Close: done on a native helper thread (cancel and wait for in-flight aios, then nng_close), so the JS thread
 * never blocks; `close()` waits for it at most `closeTimeoutMs` (libnng 1.5.2 can hang in nng_close while a large
 * TCP send is in flight; cancelling our aios first avoids it in the cases we test).
 */
import { createRequire } from 'node:module';
import { Errors, ShoalError } from '../errors.js';
import { deferred, type Deferred } from '../util.js';
import { DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type Listener, type Transport } from './transport.js';

export interface NngTransportOptions {
  /** Largest message a socket accepts (NNG_OPT_RECVMAXSZ). Larger ones drop the connection. Default 2 GiB - 1. */
  maxMessageBytes?: number;
  /** Dialer reconnect backoff, first and largest wait in ms. Defaults 10 and 100. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** How long a dialed pipe must stay up before `dial` resolves (see the module doc). Default 20 ms. */
  dialSettleMs?: number;
  /** Upper bound on `close()` waiting for the native close. Default 10 s. */
  closeTimeoutMs?: number;
  /** Path of the compiled addon. Default: core/native/nng/build/Release/shoal_nng.node. */
  addonPath?: string;
}

export const NNG_DEFAULT_MAX_MESSAGE_BYTES = 2 ** 31 - 1;

/** The addon's surface (core/native/nng/src/addon.cc). */
interface NativeSocket {
  listen(url: string): number;
  dial(url: string, reconnectMinMs: number, reconnectMaxMs: number): void;
  send(id: number, data: Uint8Array, timeoutMs: number): void;
  recv(id: number, timeoutMs: number): void;
  tryRecv(): Uint8Array | null;
  cancel(id: number): boolean;
  closeEndpoints(): void;
  close(): void;
  ref(): void;
  unref(): void;
}
type EventFn = (kind: number, id: number, rv: number, data: Uint8Array | undefined) => void;
interface NngAddon {
  NngSocket: new (onEvent: EventFn, maxMessageBytes: number) => NativeSocket;
  strerror(rv: number): string;
  constants: {
    EV_RECV: number;
    EV_SEND: number;
    EV_PIPE_ADD: number;
    EV_PIPE_REM: number;
    EV_CLOSED: number;
    ETIMEDOUT: number;
    ECANCELED: number;
    ECLOSED: number;
    EADDRINUSE: number;
    version: string;
  };
}

/** Load the addon (Node caches it per process). Throws ERR_TRANSPORT with the fix when it is not built. */
export function loadNngAddon(addonPath?: string): NngAddon {
  const path = addonPath ?? new URL('../../native/nng/build/Release/shoal_nng.node', import.meta.url).pathname;
  try {
    return createRequire(import.meta.url)(path) as NngAddon;
  } catch (e) {
    throw Errors.transport(
      'nng',
      `cannot load the nng addon at ${path} (${(e as Error).message}); build it with \`npm run build:native -w @shoal/core\` (needs the libnng-dev package)`,
      e,
    );
  }
}

type Settings = Required<Omit<NngTransportOptions, 'addonPath'>>;

/** The nng transport. An ordinary object: create one and pass it down. */
export class NngTransport implements Transport {
  readonly name = 'nng';
  readonly schemes = ['tcp', 'ipc'] as const;
  /** libnng version string, e.g. '1.5.2'. */
  readonly nngVersion: string;
  private readonly addon: NngAddon;
  private readonly settings: Settings;

  constructor(options: NngTransportOptions = {}) {
    const max = options.maxMessageBytes ?? NNG_DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isSafeInteger(max) || max < 1) throw Errors.invalidArg('options.maxMessageBytes', `must be a positive integer, got ${max}`);
    const settings: Settings = {
      maxMessageBytes: max,
      reconnectMinMs: options.reconnectMinMs ?? 10,
      reconnectMaxMs: options.reconnectMaxMs ?? 100,
      dialSettleMs: options.dialSettleMs ?? 20,
      closeTimeoutMs: options.closeTimeoutMs ?? 10_000,
    };
    for (const k of ['reconnectMinMs', 'reconnectMaxMs', 'dialSettleMs', 'closeTimeoutMs'] as const) {
      const v = settings[k];
      if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1) throw Errors.invalidArg(`options.${k}`, `must be an integer in 0..2^31-1, got ${v}`);
    }
    this.settings = settings;
    this.addon = loadNngAddon(options.addonPath);
    this.nngVersion = this.addon.constants.version;
  }

  async listen(url: string, opts?: IoOptions): Promise<Listener> {
    checkUrl(url);
    if (opts?.signal?.aborted) throw Errors.aborted(`listen on ${url}`, opts.signal.reason);
    const sock = new SocketHandle(this.addon, this.settings, url);
    let port: number;
    try {
      port = sock.native.listen(url);
    } catch (e) {
      await sock.close();
      throw Errors.transport(url, `cannot listen: ${(e as Error).message}`, e);
    }
    const bound = url.startsWith('tcp://') && port > 0 ? url.replace(/:\d+\/?$/, `:${port}`) : url;
    sock.where = `listener ${bound}`;
    return new NngListener(sock, bound);
  }

  async dial(url: string, opts?: IoOptions): Promise<Connection> {
    checkUrl(url);
    const what = `dial ${url}`;
    if (opts?.signal?.aborted) throw Errors.aborted(what, opts.signal.reason);
    const sock = new SocketHandle(this.addon, this.settings, url);
    sock.where = `dialer of ${url}`;
    try {
      sock.native.dial(url, this.settings.reconnectMinMs, this.settings.reconnectMaxMs);
    } catch (e) {
      await sock.close();
      throw Errors.transport(url, `cannot dial: ${(e as Error).message}`, e);
    }
    try {
      await sock.waitPipe(what, opts, this.settings.dialSettleMs);
    } catch (e) {
      await sock.close();
      throw e;
    }
    return new NngConnection(sock, url);
  }
}

/** Factory for registries and child processes: `createNngTransport({ maxMessageBytes })`. */
export function createNngTransport(options?: NngTransportOptions): NngTransport {
  return new NngTransport(options ?? {});
}

function checkUrl(url: string): void {
  if (typeof url !== 'string' || !/^(tcp:\/\/.+:\d+\/?|ipc:\/\/.+)$/.test(url)) {
    throw Errors.invalidArg('url', `must be tcp://host:port or ipc:///path, got ${JSON.stringify(url)}`);
  }
}

interface PendingOp {
  kind: 'send' | 'recv';
  what: string;
  timeoutMs: number;
  resolve: (v: Uint8Array | undefined) => void;
  reject: (e: unknown) => void;
  /** Why we cancelled it, if we did. */
  cancelled?: 'abort' | 'peer' | 'closed';
  abortReason?: unknown;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * One native socket and its event routing (JS thread only). Shared by a listener and the connection it yields.
 */
class SocketHandle {
  readonly native: NativeSocket;
  where: string;
  private readonly ops = new Map<number, PendingOp>();
  private nextId = 1;
  private busy = 0;
  private pipeId = 0;
  private pipeWaiter: ((pipeId: number) => void) | undefined;
  private pipeRemovedWaiter: ((pipeId: number) => void) | undefined;
  peerGone = false;
  closing = false;
  private readonly closedDone: Deferred<void> = deferred();
  private closePromise: Promise<void> | undefined;

  constructor(
    private readonly addon: NngAddon,
    private readonly settings: Settings,
    url: string,
  ) {
    this.where = url;
    this.native = new addon.NngSocket((kind, id, rv, data) => this.onEvent(kind, id, rv, data), settings.maxMessageBytes);
  }

  private hold(): void {
    if (this.busy++ === 0 && !this.closing) this.native.ref();
  }
  private release(): void {
    if (--this.busy === 0 && !this.closing) this.native.unref();
  }

  private onEvent(kind: number, id: number, rv: number, data: Uint8Array | undefined): void {
    const c = this.addon.constants;
    if (kind === c.EV_RECV || kind === c.EV_SEND) this.onOpDone(id, rv, data);
    else if (kind === c.EV_PIPE_ADD) {
      if (this.pipeId !== 0) return;
      if (this.pipeWaiter) this.pipeWaiter(id);
      else this.pipeId = id; // a listener's peer arrived before accept() was called
    } else if (kind === c.EV_PIPE_REM) {
      if (this.pipeRemovedWaiter) this.pipeRemovedWaiter(id);
      if (id === this.pipeId && this.pipeId !== 0) this.onPeerGone();
    } else if (kind === c.EV_CLOSED) this.closedDone.resolve();
  }

  private onOpDone(id: number, rv: number, data: Uint8Array | undefined): void {
    const op = this.ops.get(id);
    if (!op) return;
    this.ops.delete(id);
    if (op.onAbort) op.signal?.removeEventListener('abort', op.onAbort);
    this.release();
    const c = this.addon.constants;
    if (rv === 0) return op.resolve(data);
    if (rv === c.ETIMEDOUT) return op.reject(Errors.timeout(op.what, op.timeoutMs));
    if (op.cancelled === 'abort') return op.reject(Errors.aborted(op.what, op.abortReason));
    if (op.cancelled === 'closed' || (this.closing && (rv === c.ECANCELED || rv === c.ECLOSED))) {
      return op.reject(Errors.closed(`connection (${this.where})`));
    }
    if (op.cancelled === 'peer' || this.peerGone) {
      if (op.kind === 'recv') {
        const m = this.drainOne();
        if (m) return op.resolve(m);
      }
      return op.reject(Errors.peerClosed(this.where));
    }
    op.reject(Errors.transport(this.where, `${op.what}: ${this.addon.strerror(rv)}`));
  }

  /** A message already queued in the socket (received before the peer went away), if any. */
  drainOne(): Uint8Array | undefined {
    if (this.closing) return undefined;
    return this.native.tryRecv() ?? undefined;
  }

  private onPeerGone(): void {
    if (this.peerGone) return;
    this.peerGone = true;
    for (const [id, op] of this.ops) {
      op.cancelled ??= 'peer';
      this.native.cancel(id);
    }
    // Stop a dialer from reconnecting to whatever listens on the address next.
    if (!this.closing) this.native.closeEndpoints();
  }

  /** Start one send or recv; resolves with the message (recv) or undefined (send). */
  startOp(kind: 'send' | 'recv', what: string, opts: IoOptions | undefined, data?: Uint8Array): Promise<Uint8Array | undefined> {
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(Errors.aborted(what, signal.reason));
    if (!(timeoutMs >= 0)) return Promise.reject(Errors.invalidArg('timeoutMs', `must be >= 0, got ${timeoutMs}`));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffff0 ? 1 : this.nextId + 1;
    const nativeTimeout = Number.isFinite(timeoutMs) ? Math.min(Math.round(timeoutMs), 2 ** 31 - 2) : -1;
    return new Promise<Uint8Array | undefined>((resolve, reject) => {
      const op: PendingOp = { kind, what, timeoutMs, resolve, reject };
      try {
        if (kind === 'send') this.native.send(id, data!, nativeTimeout);
        else this.native.recv(id, nativeTimeout);
      } catch (e) {
        reject(Errors.transport(this.where, `${what}: ${(e as Error).message}`, e));
        return;
      }
      this.ops.set(id, op);
      this.hold();
      if (signal) {
        op.signal = signal;
        op.onAbort = () => {
          if (!this.ops.has(id)) return;
          op.cancelled ??= 'abort';
          op.abortReason = signal.reason;
          this.native.cancel(id);
        };
        signal.addEventListener('abort', op.onAbort, { once: true });
      }
    });
  }

  /**
   * Wait for the socket's first pipe; with `settleMs` > 0 the pipe must also stay up that long (else wait for the
   * next one). Rejects ERR_TIMEOUT / ERR_ABORTED / ERR_CLOSED.
   */
  waitPipe(what: string, opts: IoOptions | undefined, settleMs: number): Promise<void> {
    const timeoutMs = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const signal = opts?.signal;
    if (this.pipeId !== 0) return Promise.resolve();
    if (this.closing) return Promise.reject(Errors.closed(this.where));
    if (signal?.aborted) return Promise.reject(Errors.aborted(what, signal.reason));
    return new Promise<void>((resolve, reject) => {
      let candidate = 0;
      let settleTimer: NodeJS.Timeout | undefined;
      const finish = (err?: unknown) => {
        clearTimeout(timer);
        clearTimeout(settleTimer);
        signal?.removeEventListener('abort', onAbort);
        this.pipeWaiter = undefined;
        this.pipeRemovedWaiter = undefined;
        this.closeWaiter = undefined;
        this.release();
        if (err) reject(err);
        else resolve();
      };
      const accept = (pipe: number) => {
        this.pipeId = pipe;
        finish();
      };
      this.pipeWaiter = (pipe) => {
        if (settleMs <= 0) return accept(pipe);
        if (candidate !== 0) return;
        candidate = pipe;
        settleTimer = setTimeout(() => accept(candidate), settleMs);
      };
      this.pipeRemovedWaiter = (pipe) => {
        if (pipe !== candidate) return;
        candidate = 0;
        clearTimeout(settleTimer);
      };
      this.closeWaiter = () => finish(Errors.closed(this.where));
      const onAbort = () => finish(Errors.aborted(what, signal?.reason));
      const timer = setTimeout(() => finish(Errors.timeout(what, timeoutMs)), Number.isFinite(timeoutMs) ? timeoutMs : 2 ** 31 - 1);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.hold();
    });
  }
  private closeWaiter: (() => void) | undefined;

  get connected(): boolean {
    return this.pipeId !== 0;
  }

  /** Cancel everything, close the native socket on its helper thread, wait (bounded) for it. Idempotent. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    this.closeWaiter?.();
    for (const op of this.ops.values()) op.cancelled ??= 'closed';
    // The native close cancels every in-flight aio and waits for its callback before nng_close; their
    // completions (ECANCELED) arrive before EV_CLOSED and reject with ERR_CLOSED.
    this.native.close();
    const ms = this.settings.closeTimeoutMs;
    this.closePromise = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(Errors.transport(this.where, `nng close did not finish within ${ms} ms (libnng close hang?)`)),
        ms,
      );
      this.closedDone.promise.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.closePromise;
  }
}

class NngListener implements Listener {
  private conn: NngConnection | undefined;
  private closedFlag = false;
  constructor(
    private readonly sock: SocketHandle,
    readonly url: string,
  ) {}

  async accept(opts?: IoOptions): Promise<Connection> {
    if (this.closedFlag) throw Errors.closed(`listener ${this.url}`);
    if (this.conn) throw Errors.state(`listener ${this.url} already yielded its one connection (pair semantics)`);
    try {
      await this.sock.waitPipe(`accept on ${this.url}`, opts, 0);
    } catch (e) {
      if (this.closedFlag && e instanceof ShoalError && e.code === 'ERR_CLOSED') throw Errors.closed(`listener ${this.url}`);
      throw e;
    }
    if (this.closedFlag) throw Errors.closed(`listener ${this.url}`);
    this.conn = new NngConnection(this.sock, `dialer of ${this.url}`);
    return this.conn;
  }

  /** Closes the socket unless it was handed to a connection (which then owns it). */
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    if (!this.conn) await this.sock.close();
  }
}

class NngConnection implements Connection {
  readonly transport = 'nng';
  private closedSelf = false;
  constructor(
    private readonly sock: SocketHandle,
    readonly remote: string,
  ) {
    sock.where = `nng connection to ${remote}`;
  }
  get closed(): boolean {
    return this.closedSelf;
  }

  async send(data: Uint8Array, opts?: IoOptions): Promise<void> {
    if (!(data instanceof Uint8Array)) {
      if (ArrayBuffer.isView(data)) data = new Uint8Array((data as ArrayBufferView).buffer, (data as ArrayBufferView).byteOffset, (data as ArrayBufferView).byteLength);
      else throw Errors.invalidArg('data', 'must be a Uint8Array');
    }
    if (opts?.signal?.aborted) throw Errors.aborted(`send to ${this.remote}`, opts.signal.reason);
    if (this.closedSelf) throw Errors.closed(`connection to ${this.remote}`);
    if (this.sock.peerGone) throw Errors.peerClosed(this.sock.where);
    await this.sock.startOp('send', `send ${data.byteLength} B to ${this.remote}`, opts, data);
  }

  async recv(opts?: IoOptions): Promise<Uint8Array> {
    if (this.closedSelf) throw Errors.closed(`connection to ${this.remote}`);
    if (opts?.signal?.aborted) throw Errors.aborted(`recv from ${this.remote}`, opts.signal.reason);
    if (this.sock.peerGone) {
      const m = this.sock.drainOne();
      if (m) return m;
      throw Errors.peerClosed(this.sock.where);
    }
    return (await this.sock.startOp('recv', `recv from ${this.remote}`, opts))!;
  }

  async close(): Promise<void> {
    this.closedSelf = true;
    await this.sock.close();
  }
}
