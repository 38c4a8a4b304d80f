/**
 * The `nng` transport: nng's PAIR1 protocol over `tcp://host:port` (`:0` picks a free port, reported in
 * `listener.url`) and `ipc:///path`, through the small N-API addon in `core/native/nng` over Debian's libnng 1.5.2
 * (build it with `npm run build:native -w @shoal/core`; needs the libnng-dev package). The bytes on the wire are
 * nng's own (SP handshake, then length-prefixed frames with the PAIR1 hop-count header), so any nng PAIR1 peer,
 * e.g. `nngcat --pair1`, can talk to it.
 *
 * The addon drives libnng's stream layer (nng_stream_*) instead of an nng_pair1 socket: libnng 1.5.2's SP
 * transports hang forever in nng_close() when either end closes during a large transfer (a partial read/write is
 * resubmitted on an aio that close already stopped; fixed upstream in nng a1bc737b). See
 * core/native/nng/README.md.
 *
 * Pair semantics: a listener keeps the first peer whose SP handshake succeeds and drops every later connection
 * before the handshake (so a second dialer's `dial` keeps retrying and times out). `dial` retries with backoff
 * (`reconnectMinMs` doubling up to `reconnectMaxMs`) until the timeout.
 *
 * Async model: native completions (aio callbacks on nng's threads) reach the JS thread through a thread-safe
 * function; nothing blocks the JS thread. The native side reads continuously and hands every message to JS as soon
 * as it is complete; `recv` takes from that inbox, so a timed-out or aborted recv consumes nothing. Over tcp, small
 * messages skip nng's threads: the JS thread writes a lone small frame straight to the socket (its send resolves at
 * once) and reads headers and small frames itself from a poll on its event loop, as net does; payloads above
 * 64 KiB are still read by nng's threads (core/native/nng/src/jsrx.cc).
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
import { Errors } from '../errors.js';
import { authenticateDialer, authenticateListener } from '../security/connection-auth.js';
import { JobAuth } from '../security/job-auth.js';
import { loadNngAddon, type NngAddon } from './nng-addon.js';
import { PairHandle } from './nng-pair.js';
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
