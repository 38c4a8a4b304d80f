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
 * Requests `{ id, op: 'set'|'get'|'wait'|'add', key?, keys?, delta?, timeoutMs? }`; replies
 * `{ id, ok: true, n? }` (+ value bytes for `get`) or `{ id, ok: false, code, message, details }`.
 * Waits are pushed by the server when the last awaited key is set (no polling); the server times them out and
 * names the missing keys. A client keeps a backstop timer in case the server stops answering.
 *
 * One TCP connection per client; requests are pipelined and answered by id. A client whose server dies gets
 * ERR_PEER_CLOSED on every pending and later call; the server drops a client's waits when it disconnects and
 * keeps serving the others.
 */
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { Errors, ShoalError, type ShoalErrorCode } from '../errors.js';
import { FrameDecoder, NET_FRAME_MAGIC as FRAME_MAGIC } from '../transport/framing.js';
import { parseNetUrl } from '../transport/url.js';
import { dataEvents } from '../transport/net-direct-input.js';
import { dialerHandshake, listenerHandshake } from '../transport/net-handshake.js';
import type { JobAuth } from '../security/job-auth.js';
import { boundedTimeout } from '../util.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from '../transport/transport.js';
import { asBytes, PrefixStore, type Store } from './store.js';

/** Largest request (key names plus value) by default. Store values are addresses and small blobs. */
export const STORE_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** What a client accepts: a reply carries at most one value, plus its header. */
const CLIENT_MAX_MESSAGE_BYTES = 2 * STORE_MAX_MESSAGE_BYTES;
const HANDSHAKE_TIMEOUT_MS = 10_000;

interface Request {
  id: number;
  op: 'set' | 'get' | 'wait' | 'add';
  key?: string;
  keys?: string[];
  delta?: number;
  timeoutMs?: number;
}
interface Reply {
  id: number;
  ok: boolean;
  n?: number;
  code?: ShoalErrorCode;
  message?: string;
  details?: Record<string, unknown>;
}

function encode(header: object, value?: Uint8Array): Buffer[] {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const vlen = value?.byteLength ?? 0;
  const head = Buffer.allocUnsafe(12);
  head.writeUInt32LE(FRAME_MAGIC, 0);
  head.writeUInt32LE(4 + json.length + vlen, 4);
  head.writeUInt32LE(json.length, 8);
  return value && vlen > 0 ? [head, json, Buffer.from(value.buffer, value.byteOffset, vlen)] : [head, json];
}

function writeFrame(sock: net.Socket, header: object, value?: Uint8Array): void {
  const parts = encode(header, value);
  sock.cork();
  for (const p of parts) sock.write(p);
  sock.uncork();
}

function decode<T>(payload: Uint8Array, where: string): { header: T; value: Uint8Array } {
  if (payload.byteLength < 4) throw Errors.badFrame(where, `store message of ${payload.byteLength} bytes has no header`);
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const jlen = dv.getUint32(0, true);
  if (4 + jlen > payload.byteLength) throw Errors.badFrame(where, `store header length ${jlen} exceeds the message (${payload.byteLength} bytes)`);
  let header: T;
  try {
    header = JSON.parse(new TextDecoder().decode(payload.subarray(4, 4 + jlen))) as T;
  } catch (e) {
    throw Errors.badFrame(where, `store header is not JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || typeof (header as { id?: unknown }).id !== 'number') {
    throw Errors.badFrame(where, 'store header has no numeric id');
  }
  return { header, value: payload.subarray(4 + jlen) };
}

export interface TcpStoreServerOptions {
  /** The job's identity: clients must prove they know its secret (and the server proves it to them). */
  auth: JobAuth;
  /**
   * Interface to bind. Default 127.0.0.1 (loopback: a local job); a multi-host job names the interface the
   * workers reach (`shoal run --host`). Nothing binds all interfaces unless asked to (`0.0.0.0`).
   */
  host?: string;
  /** Port; 0 (default) picks a free one, reported in `url`. */
  port?: number;
  /** Host written into `url` when `host` is a wildcard. Default: `host`, or 127.0.0.1 for 0.0.0.0. */
  advertiseHost?: string;
  /** Largest request accepted (bytes); a larger frame closes the client. Default 4 MiB. */
  maxMessageBytes?: number;
  /** Keys the store holds at most (quota; ERR_QUOTA past it). Default 65 536. */
  maxKeys?: number;
  /** Bytes of keys plus values the store holds at most (quota). Default 64 MiB. */
  maxBytes?: number;
  /** Connections at once (authenticated or in their handshake); more are closed on arrival. Default 1024. */
  maxClients?: number;
}

type StoreLimits = Required<Pick<TcpStoreServerOptions, 'maxMessageBytes' | 'maxKeys' | 'maxBytes' | 'maxClients'>>;

function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw Errors.invalidArg(`options.${name}`, `must be a positive integer, got ${v}`);
  return v;
}

interface Waiter {
  client: ServerClient;
  id: number;
  keys: string[];
  /** Key whose value is returned (get), or undefined (wait). */
  getKey: string | undefined;
  timer: NodeJS.Timeout | undefined;
}

interface ServerClient {
  sock: net.Socket;
  name: string;
  waiters: Set<Waiter>;
}

/** The launcher side: holds the key space, answers clients, pushes completed waits. */
export class TcpStoreServer {
  private readonly data = new Map<string, Uint8Array>();
  /** Waiters indexed by every key they still miss. */
  private readonly byKey = new Map<string, Set<Waiter>>();
  private readonly clients = new Set<ServerClient>();
  /** Sockets in their handshake. */
  private readonly handshaking = new Set<net.Socket>();
  private closed = false;
  /** Bytes of keys and values held (the `maxBytes` quota). */
  private heldBytes = 0;

  private constructor(
    private readonly server: net.Server,
    /** `tcp://host:port` to give workers (SHOAL_STORE). */
    readonly url: string,
    private readonly auth: JobAuth,
    private readonly limits: StoreLimits,
  ) {
    server.on('connection', (sock) => this.onConnection(sock));
    // An accept error (EMFILE...) concerns one would-be client; the server keeps listening for the others.
    server.on('error', () => {});
  }

  /** Listen and resolve once bound. Throws ERR_TRANSPORT naming the address if it cannot bind. */
  static async start(options: TcpStoreServerOptions): Promise<TcpStoreServer> {
    if (!options?.auth) throw Errors.invalidArg('options.auth', 'is required: the store only serves clients that know the job secret');
    const limits: StoreLimits = {
      maxMessageBytes: positiveInt('maxMessageBytes', options.maxMessageBytes ?? STORE_MAX_MESSAGE_BYTES),
      maxKeys: positiveInt('maxKeys', options.maxKeys ?? 65_536),
      maxBytes: positiveInt('maxBytes', options.maxBytes ?? 64 * 1024 * 1024),
      maxClients: positiveInt('maxClients', options.maxClients ?? 1024),
    };
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw Errors.invalidArg('options.port', `must be 0..65535, got ${port}`);
    const server = net.createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(Errors.transport(`store ${host}:${port}`, `cannot listen: ${e.message}`, e)));
      server.listen({ host, port }, () => resolve());
    });
    const bound = (server.address() as net.AddressInfo).port;
    const adv = options.advertiseHost ?? (host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host);
    return new TcpStoreServer(server, `tcp://${adv.includes(':') ? `[${adv}]` : adv}:${bound}`, options.auth, limits);
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.clients.size;
  }

  /** Keys held (for tests and the quota). */
  get keyCount(): number {
    return this.data.size;
  }

  private onConnection(sock: net.Socket): void {
    sock.on('error', () => {});
    if (this.closed) {
      sock.destroy();
      return;
    }
    const name = `${sock.remoteAddress}:${sock.remotePort}`;
    const where = `store client ${name}`;
    if (this.clients.size + this.handshaking.size >= this.limits.maxClients) {
      sock.destroy();
      this.auth.log.reject(where, `more than ${this.limits.maxClients} store connections at once`);
      return;
    }
    sock.setNoDelay(true);
    this.handshaking.add(sock);
    const jobTls = this.auth.tls;
    const secured = jobTls ? jobTls.accept(sock, where, HANDSHAKE_TIMEOUT_MS) : Promise.resolve(sock);
    secured
      .then((s) => {
        const hs = { auth: this.auth, maxMessageBytes: this.limits.maxMessageBytes, where, timeoutMs: HANDSHAKE_TIMEOUT_MS };
        return listenerHandshake(s, dataEvents(s), hs).then((r) => ({ s, r }), (e: unknown) => {
          s.destroy();
          throw e;
        });
      })
      .then(
        ({ s, r }) => {
          this.handshaking.delete(sock);
          if (this.closed) return void s.destroy();
          this.auth.log.accepted++;
          this.serveClient(s, name, where, r.leftover);
        },
        (e: unknown) => {
          this.handshaking.delete(sock);
          sock.destroy();
          if (!this.closed) this.auth.log.reject(where, e instanceof Error ? e.message : String(e));
        },
      );
  }

  private serveClient(sock: net.Socket, name: string, where: string, leftover: Buffer): void {
    sock.setKeepAlive(true, 10_000);
    const client: ServerClient = { sock, name, waiters: new Set() };
    this.clients.add(client);
    const decoder = new FrameDecoder(this.limits.maxMessageBytes, where, (m) => {
      try {
        const { header, value } = decode<Request>(m, where);
        this.handle(client, header, value);
      } catch (e) {
        // A client speaking garbage loses its connection; the store and the other clients carry on.
        sock.destroy(e instanceof Error ? e : undefined);
      }
    });
    sock.on('close', () => {
      this.clients.delete(client);
      for (const w of client.waiters) this.dropWaiter(w);
    });
    if (leftover.byteLength > 0 && decoder.push(leftover)) return void sock.destroy();
    sock.on('data', (chunk: Buffer) => {
      if (decoder.push(chunk)) sock.destroy();
    });
    sock.resume();
  }

  /**
   * Store `value` under `key` unless that would pass the key or byte quota (ERR_QUOTA naming the limit). Keys are
   * counted in UTF-16 units, close enough to bytes for a quota.
   */
  private put(key: string, value: Uint8Array, what: string): void {
    const old = this.data.get(key);
    const delta = value.byteLength - (old ? old.byteLength : -key.length);
    if (!old && this.data.size >= this.limits.maxKeys) {
      throw Errors.quota(what, `the store holds ${this.data.size} keys, its quota (maxKeys)`, { maxKeys: this.limits.maxKeys });
    }
    if (this.heldBytes + delta > this.limits.maxBytes) {
      throw Errors.quota(what, `the store would hold ${this.heldBytes + delta} bytes, above its quota of ${this.limits.maxBytes} (maxBytes)`, { maxBytes: this.limits.maxBytes });
    }
    this.data.set(key, value);
    this.heldBytes += delta;
  }

  private reply(client: ServerClient, r: Reply, value?: Uint8Array): void {
    if (!client.sock.destroyed) writeFrame(client.sock, r, value);
  }

  private fail(client: ServerClient, id: number, e: ShoalError): void {
    this.reply(client, { id, ok: false, code: e.code, message: e.message, details: { ...e.context } });
  }

  private handle(client: ServerClient, req: Request, value: Uint8Array): void {
    const { id } = req;
    switch (req.op) {
      case 'set': {
        if (typeof req.key !== 'string') throw Errors.badFrame('store set', 'missing key');
        try {
          this.put(req.key, value.slice(), `store set ${req.key.slice(0, 200)}`);
        } catch (e) {
          this.fail(client, id, e as ShoalError);
          return;
        }
        this.reply(client, { id, ok: true });
        this.wake(req.key);
        return;
      }
      case 'add': {
        if (typeof req.key !== 'string' || !Number.isSafeInteger(req.delta)) throw Errors.badFrame('store add', 'missing key or integer delta');
        const cur = this.data.get(req.key);
        const prev = cur ? Number(new TextDecoder().decode(cur)) : 0;
        if (!Number.isSafeInteger(prev)) {
          this.fail(client, id, Errors.data(`store add ${req.key}`, 'the current value is not an integer counter'));
          return;
        }
        const n = prev + req.delta!;
        try {
          this.put(req.key, new TextEncoder().encode(String(n)), `store add ${req.key.slice(0, 200)}`);
        } catch (e) {
          this.fail(client, id, e as ShoalError);
          return;
        }
        this.reply(client, { id, ok: true, n });
        this.wake(req.key);
        return;
      }
      case 'get':
      case 'wait': {
        const keys = req.op === 'get' ? [req.key] : req.keys;
        if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string')) throw Errors.badFrame(`store ${req.op}`, 'missing keys');
        if (keys.length > this.limits.maxKeys) throw Errors.badFrame(`store ${req.op}`, `waits for ${keys.length} keys, more than the store may hold`);
        const getKey = req.op === 'get' ? (req.key as string) : undefined;
        const missing = (keys as string[]).filter((k) => !this.data.has(k));
        if (missing.length === 0) {
          this.complete(client, id, getKey);
          return;
        }
        // timeoutMs < 0 (or absent): no server-side limit; the wait ends when the keys appear or the client leaves.
        const ms = typeof req.timeoutMs === 'number' && req.timeoutMs >= 0 ? req.timeoutMs : Infinity;
        const w: Waiter = {
          client,
          id,
          keys: keys as string[],
          getKey,
          timer: boundedTimeout(() => {
            this.dropWaiter(w);
            const still = w.keys.filter((k) => !this.data.has(k));
            const shown = still.slice(0, 8).join(', ') + (still.length > 8 ? `, ... (${still.length} missing)` : '');
            this.fail(client, id, Errors.timeout(`store ${req.op} for [${shown}]`, ms, { missing: still }));
          }, ms),
        };
        client.waiters.add(w);
        for (const k of missing) {
          let set = this.byKey.get(k);
          if (!set) this.byKey.set(k, (set = new Set()));
          set.add(w);
        }
        return;
      }
      default:
        throw Errors.badFrame('store request', `unknown op ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  private complete(client: ServerClient, id: number, getKey: string | undefined): void {
    if (getKey === undefined) this.reply(client, { id, ok: true });
    else this.reply(client, { id, ok: true }, this.data.get(getKey));
  }

  private wake(key: string): void {
    const set = this.byKey.get(key);
    if (!set) return;
    for (const w of [...set]) {
      if (w.keys.every((k) => this.data.has(k))) {
        this.dropWaiter(w);
        this.complete(w.client, w.id, w.getKey);
      }
    }
  }

  private dropWaiter(w: Waiter): void {
    clearTimeout(w.timer);
    w.client.waiters.delete(w);
    for (const k of w.keys) {
      const set = this.byKey.get(k);
      if (!set) continue;
      set.delete(w);
      if (set.size === 0) this.byKey.delete(k);
    }
  }

  /** Stop serving: every client connection is closed (its pending calls reject ERR_PEER_CLOSED). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.clients) {
      for (const w of c.waiters) this.dropWaiter(w);
      c.sock.destroy();
    }
    for (const sock of this.handshaking) sock.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

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
