// The TCP store's server, run by the launcher (see tcp.ts for the protocol and its security).
import * as net from 'node:net';
import { Errors, ShoalError } from '../errors.js';
import { FrameDecoder } from '../transport/framing.js';
import { dataEvents } from '../transport/net-direct-input.js';
import { listenerHandshake } from '../transport/net-handshake.js';
import type { JobAuth } from '../security/job-auth.js';
import { boundedTimeout } from '../util.js';
import { hostClock } from '../telemetry/host-clock.js';
import { decode, HANDSHAKE_TIMEOUT_MS, STORE_MAX_MESSAGE_BYTES, writeFrame, type Reply, type Request } from './tcp-wire.js';

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
  /**
   * The clock the `clock` request reads, in microseconds (default the timeline's: this host's monotonic clock,
   * `hostClock()`). Tests set it to play a host whose clock is off.
   */
  clockUs?: () => number;
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
    private readonly clockUs: () => number,
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
    const clockUs = options.clockUs ?? hostClock();
    return new TcpStoreServer(server, `tcp://${adv.includes(':') ? `[${adv}]` : adv}:${bound}`, options.auth, limits, clockUs);
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
      case 'clock':
        // read as late as possible: the client takes the middle of its round trip as the moment of this reading
        this.reply(client, { id, ok: true, us: this.clockUs() });
        return;
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
