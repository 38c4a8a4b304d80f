/**
 * The launcher's rendezvous store over TCP (torchrun's TCPStore): `TcpStoreServer` runs in the launcher, every
 * worker opens a `TcpStore` client on `SHOAL_STORE` (`tcp://host:port`).
 *
 * Security: every connection runs the net transport's authenticated handshake (net-handshake.ts) with the job's
 * `JobAuth` before a single frame is parsed; a client that fails it is closed, counted and logged, and never
 * reads or writes a key. Requests are limited to `maxMessageBytes` (4 MiB), the key space to `maxKeys` keys and
 * `maxBytes` bytes of keys and values (a write past either gets ERR_QUOTA, the connection stays), and the server
 * to `maxClients` connections at once.
 *
 * Wire format after the handshake: SHLF frames (framing.ts) whose payload is `u32 jsonLength, JSON header, value bytes`.
 * Requests `{ id, op: 'set'|'get'|'wait'|'add'|'clock', key?, keys?, delta?, timeoutMs? }`; replies
 * `{ id, ok: true, n?, us? }` (+ value bytes for `get`; `us` the server's host clock for `clock`) or
 * `{ id, ok: false, code, message, details }`.
 * Waits are pushed by the server when the last awaited key is set (no polling); the server times them out and
 * names the missing keys. A client keeps a backstop timer in case the server stops answering.
 *
 * One TCP connection per client; requests are pipelined and answered by id. A client whose server dies gets
 * ERR_PEER_CLOSED on every pending and later call; the server drops a client's waits when it disconnects and
 * keeps serving the others.
 *
 * This file holds the client; the server is in tcp-server.ts and the wire format in tcp-wire.ts.
 */
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { Errors, ShoalError } from '../errors.js';
import { FrameDecoder } from '../transport/framing.js';
import { parseNetUrl } from '../transport/url.js';
import { dataEvents } from '../transport/net-direct-input.js';
import { dialerHandshake } from '../transport/net-handshake.js';
import type { JobAuth } from '../security/job-auth.js';
import { boundedTimeout } from '../util.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from '../transport/transport.js';
import { asBytes, PrefixStore, type Store } from './store.js';
import { CLIENT_MAX_MESSAGE_BYTES, decode, HANDSHAKE_TIMEOUT_MS, writeFrame, type Reply, type Request } from './tcp-wire.js';

export interface TcpStoreOptions {
  /** The job's identity: the client proves it knows the secret, and checks that the server does. */
  auth: JobAuth;
  /** How long `connect` keeps retrying while the server is not up yet. Default 30 s. */
  connectTimeoutMs?: number;
  /** Default for `get`/`wait` without a timeout, and the bound on `set`/`add` replies. Default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface Pending {
  resolve(r: { header: Reply; value: Uint8Array }): void;
  reject(e: unknown): void;
  timer: NodeJS.Timeout | undefined;
}

/** Timeouts on the wire: a finite number of ms, or -1 for none (JSON has no Infinity). */
function wireTimeout(ms: number): number {
  if (Number.isNaN(ms) || ms < 0) throw Errors.invalidArg('timeoutMs', `must be >= 0, got ${ms}`);
  return Number.isFinite(ms) ? ms : -1;
}

/** Extra time the client gives the server to report its own timeout before giving up on it. */
const BACKSTOP_MS = 5_000;

/** A worker's handle on the launcher's store. Create with `TcpStore.connect(url)`. */
export class TcpStore implements Store {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private failure: ShoalError | null = null;
  private closedSelf = false;

  private constructor(
    private readonly sock: net.Socket,
    readonly url: string,
    private readonly timeoutMs: number,
    leftover: Buffer,
  ) {
    const where = `store ${url}`;
    const decoder = new FrameDecoder(CLIENT_MAX_MESSAGE_BYTES, where, (m) => {
      let msg: { header: Reply; value: Uint8Array };
      try {
        msg = decode<Reply>(m, where);
      } catch (e) {
        this.fail(e as ShoalError);
        return;
      }
      const p = this.pending.get(msg.header.id);
      if (!p) return; // answered after the client gave up on it
      this.pending.delete(msg.header.id);
      clearTimeout(p.timer);
      p.resolve(msg);
    });
    const onChunk = (chunk: Buffer) => {
      const err = decoder.push(chunk);
      if (err) this.fail(err);
    };
    if (leftover.byteLength > 0) onChunk(leftover);
    sock.on('data', onChunk);
    sock.resume();
    sock.on('error', (e) => this.fail(Errors.peerClosed(where, `the store server connection failed: ${e.message}`, e)));
    sock.on('close', () => this.fail(Errors.peerClosed(where, 'the store server went away')));
  }

  /** Connect to a `TcpStoreServer`, retrying until it is up or `connectTimeoutMs` passes (ERR_TIMEOUT). */
  static async connect(url: string, options: TcpStoreOptions): Promise<TcpStore> {
    if (!options?.auth) throw Errors.invalidArg('options.auth', 'is required: the store only serves clients that know the job secret');
    const addr = parseNetUrl(url);
    if (addr.scheme !== 'tcp') throw Errors.invalidArg('url', `of a TcpStore must be tcp://host:port, got ${url}`);
    const connectMs = options.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + connectMs;
    let backoff = 10;
    let last = '';
    for (;;) {
      if (options.signal?.aborted) throw Errors.aborted(`connect to store ${url}`, options.signal.reason);
      try {
        const jobTls = options.auth.tls;
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          // With the job's TLS (`--tls`): TLS 1.3 with the pinned job certificate, checked before the handshake.
          const s = jobTls ? jobTls.connect({ host: addr.host, port: addr.port }) : net.connect({ host: addr.host, port: addr.port, noDelay: true });
          const t = boundedTimeout(() => {
            s.destroy();
            reject(new Error('connect timed out'));
          }, Math.max(1, deadline - Date.now()));
          s.once(jobTls ? 'secureConnect' : 'connect', () => {
            clearTimeout(t);
            s.removeAllListeners('error');
            s.on('error', () => {});
            try {
              if (jobTls) jobTls.checkPeer(s as tls.TLSSocket, `store ${url}`);
            } catch (e) {
              s.destroy();
              reject(e);
              return;
            }
            s.setNoDelay(true);
            resolve(s);
          });
          s.once('error', (e) => {
            clearTimeout(t);
            s.destroy();
            reject(e);
          });
        });
        let leftover: Buffer;
        try {
          const hs = { auth: options.auth, maxMessageBytes: CLIENT_MAX_MESSAGE_BYTES, where: `store ${url}`, timeoutMs: Math.max(1, Math.min(HANDSHAKE_TIMEOUT_MS, deadline - Date.now())) };
          ({ leftover } = await dialerHandshake(sock, dataEvents(sock), hs));
        } catch (e) {
          sock.destroy();
          throw e;
        }
        sock.setKeepAlive(true, 10_000);
        return new TcpStore(sock, url, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, leftover);
      } catch (e) {
        // A server that is up but cannot prove the job secret, or speaks another protocol: no use retrying.
        if (e instanceof ShoalError && (e.code === 'ERR_AUTH' || e.code === 'ERR_BAD_FRAME')) throw e;
        last = (e as Error).message;
      }
      if (Date.now() + backoff > deadline) throw Errors.timeout(`connect to store ${url} (last error: ${last})`, connectMs, { url });
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 250);
    }
  }

  private fail(err: ShoalError): void {
    if (this.failure) return;
    this.failure = this.closedSelf ? Errors.closed(`store client for ${this.url}`) : err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.failure);
    }
    this.pending.clear();
    this.sock.destroy();
  }

  private call(req: Omit<Request, 'id'>, value: Uint8Array | undefined, replyWithinMs: number, what: string): Promise<{ header: Reply; value: Uint8Array }> {
    if (this.closedSelf) return Promise.reject(Errors.closed(`store client for ${this.url}`));
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = boundedTimeout(() => {
        this.pending.delete(id);
        reject(Errors.timeout(`${what} (no answer from the store server ${this.url})`, replyWithinMs));
      }, replyWithinMs);
      this.pending.set(id, {
        resolve: (r) => {
          if (r.header.ok) resolve(r);
          else reject(new ShoalError(r.header.code ?? 'ERR_REMOTE', r.header.message ?? 'store server error', { ...r.header.details, store: this.url }));
        },
        reject,
        timer,
      });
      writeFrame(this.sock, { ...req, id }, value);
    });
  }

  async set(key: string, value: Uint8Array | string): Promise<void> {
    await this.call({ op: 'set', key }, asBytes(value), this.timeoutMs, `store set ${key}`);
  }

  async get(key: string, timeoutMs = this.timeoutMs): Promise<Uint8Array> {
    const r = await this.call({ op: 'get', key, timeoutMs: wireTimeout(timeoutMs) }, undefined, timeoutMs + BACKSTOP_MS, `store get ${key}`);
    return r.value.slice();
  }

  async wait(keys: readonly string[], timeoutMs = this.timeoutMs): Promise<void> {
    if (keys.length === 0) return;
    await this.call({ op: 'wait', keys: [...keys], timeoutMs: wireTimeout(timeoutMs) }, undefined, timeoutMs + BACKSTOP_MS, `store wait for [${keys.slice(0, 8).join(', ')}]`);
  }

  async add(key: string, delta: number): Promise<number> {
    if (!Number.isSafeInteger(delta)) throw Errors.invalidArg('delta', `must be a safe integer, got ${delta}`);
    const r = await this.call({ op: 'add', key, delta }, undefined, this.timeoutMs, `store add ${key}`);
    return r.header.n as number;
  }

  /** The server's host clock (monotonic) in microseconds (one round trip; `estimateClockOffset` takes several). Bound: pass it as is. */
  readonly clock = async (): Promise<number> => {
    const r = await this.call({ op: 'clock' }, undefined, this.timeoutMs, 'store clock');
    if (typeof r.header.us !== 'number' || !Number.isFinite(r.header.us)) throw Errors.badFrame(`store ${this.url}`, 'clock reply without a number');
    return r.header.us;
  };

  prefixed(prefix: string): Store {
    return new PrefixStore(this, prefix);
  }

  /** Close the connection; pending calls reject ERR_CLOSED. Idempotent. */
  async close(): Promise<void> {
    if (this.closedSelf) return;
    this.closedSelf = true;
    this.fail(Errors.closed(`store client for ${this.url}`));
  }
}

/** Options-object form for call sites that build a store from `WorkerOptions.storeUrl`. */
export function connectTcpStore(url: string, opts: IoOptions & { auth: JobAuth; connectTimeoutMs?: number }): Promise<TcpStore> {
  return TcpStore.connect(url, { auth: opts.auth, timeoutMs: opts.timeoutMs, connectTimeoutMs: opts.connectTimeoutMs ?? opts.timeoutMs, signal: opts.signal });
}
