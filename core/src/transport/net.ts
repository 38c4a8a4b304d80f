/**
 * The `net` transport: Node's `net` module over `tcp://host:port` (TCP, `:0` picks a free port) and
 * `ipc:///path` (unix domain socket, created owner-only), with pair semantics (see transport.ts).
 *
 * Files: the handshake and authentication (`net-handshake.ts`), the listener (`net-listener.ts`), a connected
 * pair end (`net-connection.ts`), the socket read path (`net-direct-input.ts`), SHLF framing (`framing.ts`,
 * shared with the rendezvous store) and URLs (`url.ts`).
 *
 * Wire format (little-endian):
 * - a handshake right after connect (net-handshake.ts): protocol version, each side's maximum message size,
 *   and a mutual challenge-response over the job secret (`options.auth`). The listener takes as its pair's
 *   peer only a connection that passed it, so a stray connection (a port scanner, a wrong peer, a process that
 *   is not in the job) never takes the listener's one slot and never gets a frame parsed.
 * - then frames: u32 magic `SHLF` (0x464c4853), u32 payload length, payload. A frame with a wrong magic or a
 *   length above the receiver's `maxMessageBytes` fails the connection with ERR_BAD_FRAME.
 *
 * Send path: headers and payloads of every send issued in the same tick go out as one corked writev (no copy of
 * the payloads); `send` resolves when Node has handed the payload to the kernel, so the caller may reuse it.
 * Outstanding sends queue in order; a send's promise is the backpressure. A send that times out or is aborted
 * after it started writing fails the connection (half a frame may be on the wire), and the peer sees
 * ERR_PEER_CLOSED. When the peer closes, receives fail at once but sends already handed to the socket settle by
 * their own write callbacks: the peer may have read them (with TLS those callbacks come after the peer's FIN
 * may be read).
 *
 * Receive path: a frame decoder copies socket chunks straight into one buffer of the announced length
 * (one allocation per message, no concatenation). The kernel reads large message bodies directly into that
 * buffer (Node's `onread`; about 5x less user CPU per GiB than 'data' events). Node offers `onread` only to
 * `net.connect`: an accepted socket hands its handle to a socket created with it (`adoptWithDirectInput`), so
 * both ends read the same way. Messages up to 4 KiB are carved, 8-byte aligned, out of a 256 KiB slab that is
 * never reused (so typed-array views work and the caller owns them). When more than `recvHighWaterBytes` of
 * received messages wait unclaimed, the socket is paused until `recv` drains them. A receiver done with a large
 * message may give its buffer back (`release`): later messages of that length land in it (`recvPoolBytes`).
 */
import { unlinkSync } from 'node:fs';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { Errors, isShoalError } from '../errors.js';
import { JobAuth } from '../security/job-auth.js';
import { boundedTimeout } from '../util.js';
import { MAX_FRAME_LENGTH } from './framing.js';
import { NetConnection } from './net-connection.js';
import { dataEvents, DirectInput, directEvents } from './net-direct-input.js';
import { dialerHandshake } from './net-handshake.js';
import { isStaleSocket, listenOnce, NetListener, type NetListenerSettings } from './net-listener.js';
import { checkIncomingLimit, DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type ListenOptions, type Listener, type Transport } from './transport.js';
import { formatTcpUrl, parseNetUrl, type NetAddress } from './url.js';

export { FrameDecoder, NET_FRAME_MAGIC } from './framing.js';
export { parseNetUrl, type NetAddress } from './url.js';

export interface NetTransportOptions {
  /**
   * The job's identity (its id and secret): every connection proves it to its peer and checks the peer's proof
   * before anything else. Default: a secret of this transport object alone (`JobAuth.ephemeral()`), so ends
   * created by the same object connect and nothing else can; processes of one job pass the job's.
   */
  auth?: JobAuth;
  /** Largest message this end accepts (and announces to its peer). Default 2 GiB - 1; at most 4 GiB - 1. */
  maxMessageBytes?: number;
  /** Pause reading when this many bytes of received messages wait for `recv`. Default 256 MiB. */
  recvHighWaterBytes?: number;
  /** How long a listener waits for a connected socket's handshake before dropping it. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Connections a listener lets run their handshake at once; more are closed on arrival. Default 64. */
  maxPendingConnections?: number;
  /**
   * Where received messages above 4 KiB are assembled. Called with the message length; must return a writable
   * `Uint8Array` of exactly that length that nothing else touches until `recv` hands it back (the receiver then
   * owns it). Lets a caller recycle large buffers (a fresh 64 MiB buffer is page-faulted in on every message).
   * Default: a new buffer per message.
   */
  allocate?: (bytes: number) => Uint8Array;
  /**
   * Receive buffers given back with `Connection.release` (a collective done reducing a segment) are kept, per
   * connection, up to this many bytes, and later messages of the same length land in them: no fresh buffer to
   * page-fault in and zero, no garbage, and memory still in cache. Default 64 MiB (`NET_DEFAULT_RECV_POOL_BYTES`);
   * 0 turns it off. Not used for `allocate`'s buffers.
   */
  recvPoolBytes?: number;
}

export const NET_DEFAULT_MAX_MESSAGE_BYTES = 2 ** 31 - 1;

/**
 * Default `recvPoolBytes`. The pool only keeps buffers a receiver gave back, so it holds at most what was live at
 * once. A 2-rank allreduce exchange (window 16, 1 MiB segments) holds up to 2 * 16 + 1 segments at once: the peer
 * sends ahead of what it has reduced of ours as well as of what we have reduced of its. With 16 MiB, about one
 * 1 MiB segment in eight was a fresh buffer (page faults, then garbage that triggered a mark-compact every ~0.3 s);
 * 64 MiB over net on loopback: CPU per call 47.3 -> 37.5 ms, fresh buffers ~219 -> ~20 per run, mark-compacts
 * 27 -> 6 (n=2, load ~5).
 */
export const NET_DEFAULT_RECV_POOL_BYTES = 64 << 20;

const RETRYABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'EAGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/** The `net` transport. An ordinary object: create one per process (or per test) and pass it down. */
export class NetTransport implements Transport {
  readonly name = 'net';
  readonly schemes = ['tcp', 'ipc'] as const;
  private readonly opts: NetListenerSettings;

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
    const pool = options.recvPoolBytes ?? NET_DEFAULT_RECV_POOL_BYTES;
    if (!Number.isInteger(pool) || pool < 0) throw Errors.invalidArg('options.recvPoolBytes', `must be a non-negative integer, got ${pool}`);
    const pending = options.maxPendingConnections ?? 64;
    if (!Number.isInteger(pending) || pending < 1) throw Errors.invalidArg('options.maxPendingConnections', `must be a positive integer, got ${pending}`);
    if (options.auth !== undefined && !(options.auth instanceof JobAuth)) throw Errors.invalidArg('options.auth', 'must be a JobAuth');
    this.opts = {
      auth: options.auth ?? JobAuth.ephemeral(),
      maxMessageBytes: max,
      recvHighWaterBytes: hw,
      handshakeTimeoutMs: hs,
      maxPendingConnections: pending,
      allocate: options.allocate,
      recvPoolBytes: pool,
    };
  }

  async listen(url: string, opts?: ListenOptions): Promise<Listener> {
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
    if (opts?.incomingLimit) checkIncomingLimit(opts.incomingLimit.bytes, opts.incomingLimit.reason);
    const l = new NetListener(server, addr, this.opts, opts?.incomingLimit);
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
        if (isShoalError(e, 'ERR_ABORTED') || isShoalError(e, 'ERR_BAD_FRAME') || isShoalError(e, 'ERR_AUTH')) throw e;
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
      // With the job's TLS (`--tls`), TCP connections are TLS 1.3 with the pinned job certificate; TLS sockets
      // read through 'data' events (Node's `onread` reads the raw socket, not the decrypted stream).
      const jobTls = addr.scheme === 'tcp' ? this.opts.auth.tls : undefined;
      const input = jobTls ? null : new DirectInput();
      const sock = addr.scheme === 'tcp' && jobTls
        ? jobTls.connect({ host: addr.host, port: addr.port })
        : addr.scheme === 'tcp'
          ? net.connect({ host: addr.host, port: addr.port, noDelay: true, onread: input!.onread })
          : net.connect({ path: addr.path, onread: input!.onread });
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
      const timer = boundedTimeout(() => finish(Errors.timeout(`connect to ${url}`, ms)), ms);
      signal?.addEventListener('abort', onAbort, { once: true });
      sock.on('error', onConnectError);
      sock.once(jobTls ? 'secureConnect' : 'connect', () => {
        sock.setNoDelay(true);
        sock.setKeepAlive(true, 10_000);
        if (jobTls) {
          try {
            jobTls.checkPeer(sock as tls.TLSSocket, url);
          } catch (e) {
            finish(e);
            return;
          }
        }
        const subscribe = input ? directEvents(input) : dataEvents(sock);
        dialerHandshake(sock, subscribe, { auth: this.opts.auth, maxMessageBytes: this.opts.maxMessageBytes, where: url, timeoutMs: ms }).then(
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
