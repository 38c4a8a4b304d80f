/**
 * The launcher's rendezvous store over TCP (torchrun's TCPStore): `TcpStoreServer` runs in the launcher, every
 * worker opens a `TcpStore` client on `SHOAL_STORE` (`tcp://host:port`).
 *
 * Wire format: SHLF frames (see net.ts) whose payload is `u32 jsonLength, JSON header, value bytes`.
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
import { Errors, ShoalError, type ShoalErrorCode } from '../errors.js';
import { FrameDecoder, NET_FRAME_MAGIC as FRAME_MAGIC } from '../transport/framing.js';
import { parseNetUrl } from '../transport/url.js';
import { boundedTimeout } from '../util.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from '../transport/transport.js';
import { asBytes, PrefixStore, type Store } from './store.js';

/** Largest request or reply (key names plus value). Store values are addresses and small blobs. */
const STORE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

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
  /** Interface to bind. Default 127.0.0.1; use 0.0.0.0 (and give workers a routable host) for multi-host jobs. */
  host?: string;
  /** Port; 0 (default) picks a free one, reported in `url`. */
  port?: number;
  /** Host written into `url` when `host` is a wildcard. Default: `host`, or 127.0.0.1 for 0.0.0.0. */
  advertiseHost?: string;
}

interface Waiter {
  client: ServerClient;
  id: number;
  keys: string[];
  /** Key whose value is returned (get), or undefined (wait). */
  getKey: string | undefined;
  timer: NodeJS.Timeout | undefined;
}

/** Node timers overflow (and fire at once) above 2^31-1 ms: an infinite or huge wait gets no timer. */

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
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    /** `tcp://host:port` to give workers (SHOAL_STORE). */
    readonly url: string,
  ) {
    server.on('connection', (sock) => this.onConnection(sock));
    // An accept error (EMFILE...) concerns one would-be client; the server keeps listening for the others.
    server.on('error', () => {});
  }

  /** Listen and resolve once bound. Throws ERR_TRANSPORT naming the address if it cannot bind. */
  static async start(options: TcpStoreServerOptions = {}): Promise<TcpStoreServer> {
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
    return new TcpStoreServer(server, `tcp://${adv.includes(':') ? `[${adv}]` : adv}:${bound}`);
  }

  /** Number of connected clients. */
  get clientCount(): number {
    return this.clients.size;
  }

  private onConnection(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    sock.setNoDelay(true);
    sock.setKeepAlive(true, 10_000);
    const client: ServerClient = { sock, name: `${sock.remoteAddress}:${sock.remotePort}`, waiters: new Set() };
    this.clients.add(client);
    const where = `store client ${client.name}`;
    const decoder = new FrameDecoder(STORE_MAX_MESSAGE_BYTES, where, (m) => {
      try {
        const { header, value } = decode<Request>(m, where);
        this.handle(client, header, value);
      } catch (e) {
        // A client speaking garbage loses its connection; the store and the other clients carry on.
        sock.destroy(e instanceof Error ? e : undefined);
      }
    });
    sock.on('data', (chunk: Buffer) => {
      if (decoder.push(chunk)) sock.destroy();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.clients.delete(client);
      for (const w of client.waiters) this.dropWaiter(w);
    });
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
        this.data.set(req.key, value.slice());
        this.reply(client, { id, ok: true });
        this.wake(req.key);
        return;
      }
      case 'add': {
        if (typeof req.key !== 'string' || typeof req.delta !== 'number') throw Errors.badFrame('store add', 'missing key or delta');
        const cur = this.data.get(req.key);
        const prev = cur ? Number(new TextDecoder().decode(cur)) : 0;
        if (!Number.isSafeInteger(prev)) {
          this.fail(client, id, Errors.data(`store add ${req.key}`, 'the current value is not an integer counter'));
          return;
        }
        const n = prev + req.delta;
        this.data.set(req.key, new TextEncoder().encode(String(n)));
        this.reply(client, { id, ok: true, n });
        this.wake(req.key);
        return;
      }
      case 'get':
      case 'wait': {
        const keys = req.op === 'get' ? [req.key] : req.keys;
        if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'string')) throw Errors.badFrame(`store ${req.op}`, 'missing keys');
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
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export interface TcpStoreOptions {
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
  ) {
    const where = `store ${url}`;
    const decoder = new FrameDecoder(STORE_MAX_MESSAGE_BYTES, where, (m) => {
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
    sock.on('data', (chunk: Buffer) => {
      const err = decoder.push(chunk);
      if (err) this.fail(err);
    });
    sock.on('error', (e) => this.fail(Errors.peerClosed(where, `the store server connection failed: ${e.message}`, e)));
    sock.on('close', () => this.fail(Errors.peerClosed(where, 'the store server went away')));
  }

  /** Connect to a `TcpStoreServer`, retrying until it is up or `connectTimeoutMs` passes (ERR_TIMEOUT). */
  static async connect(url: string, options: TcpStoreOptions = {}): Promise<TcpStore> {
    const addr = parseNetUrl(url);
    if (addr.scheme !== 'tcp') throw Errors.invalidArg('url', `of a TcpStore must be tcp://host:port, got ${url}`);
    const connectMs = options.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + connectMs;
    let backoff = 10;
    let last = '';
    for (;;) {
      if (options.signal?.aborted) throw Errors.aborted(`connect to store ${url}`, options.signal.reason);
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ host: addr.host, port: addr.port, noDelay: true });
          const t = boundedTimeout(() => {
            s.destroy();
            reject(new Error('connect timed out'));
          }, Math.max(1, deadline - Date.now()));
          s.once('connect', () => {
            clearTimeout(t);
            s.removeAllListeners('error');
            resolve(s);
          });
          s.once('error', (e) => {
            clearTimeout(t);
            s.destroy();
            reject(e);
          });
        });
        sock.setKeepAlive(true, 10_000);
        return new TcpStore(sock, url, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      } catch (e) {
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
export function connectTcpStore(url: string, opts?: IoOptions & { connectTimeoutMs?: number }): Promise<TcpStore> {
  return TcpStore.connect(url, { timeoutMs: opts?.timeoutMs, connectTimeoutMs: opts?.connectTimeoutMs ?? opts?.timeoutMs, signal: opts?.signal });
}
