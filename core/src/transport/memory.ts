import { Errors, type ShoalError } from '../errors.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import { Inbox } from './inbox.js';
import { aboveLimitError, checkIncomingLimit, type Connection, type IoOptions, type Listener, type Transport } from './transport.js';

/**
 * An in-process transport for fast tests (connect-es's `createRouterTransport`, gloo's in-memory store):
 * N ranks run as async tasks in one process. A `MemoryNetwork` is an ordinary object, not a singleton:
 * create one per test and pass it down.
 */
export class MemoryNetwork {
  private readonly listeners = new Map<string, MemoryListener>();
  private seq = 0;
  transport(): Transport {
    return new MemoryTransport(this);
  }
  /** @internal */ bind(url: string, l: MemoryListener): string {
    let u = url;
    if (u === 'mem://' || u.endsWith(':0') || u === 'mem://auto') u = `mem://auto-${++this.seq}`;
    if (this.listeners.has(u)) throw Errors.transport(u, 'address already in use');
    this.listeners.set(u, l);
    return u;
  }
  /** @internal */ unbind(url: string): void {
    this.listeners.delete(url);
  }
  /** @internal */ lookup(url: string): MemoryListener | undefined {
    return this.listeners.get(url);
  }
}

class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly schemes = ['mem'] as const;
  constructor(private readonly net: MemoryNetwork) {}
  async listen(url: string): Promise<Listener> {
    const l = new MemoryListener(this.net);
    l.url = this.net.bind(url, l);
    return l;
  }
  async dial(url: string, opts?: IoOptions): Promise<Connection> {
    const start = Date.now();
    const timeout = opts?.timeoutMs ?? 30_000;
    for (;;) {
      const l = this.net.lookup(url);
      if (l && !l.taken) return l.connect();
      if (opts?.signal?.aborted) throw Errors.aborted(`dial ${url}`, opts.signal.reason);
      if (Date.now() - start > timeout) throw Errors.timeout(`dial ${url}`, timeout);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

class MemoryListener implements Listener {
  url = '';
  taken = false;
  private readonly pending: Deferred<Connection> = deferred();
  private closedFlag = false;
  constructor(private readonly net: MemoryNetwork) {}
  connect(): Connection {
    this.taken = true;
    const a = new MemoryConnection(`listener ${this.url}`);
    const b = new MemoryConnection(`dialer of ${this.url}`);
    a.peer = b;
    b.peer = a;
    this.pending.resolve(a);
    this.net.unbind(this.url);
    return b;
  }
  accept(opts?: IoOptions): Promise<Connection> {
    if (this.closedFlag) return Promise.reject(Errors.closed(`listener ${this.url}`));
    return withDeadline(`accept on ${this.url}`, this.pending.promise, opts);
  }
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.net.unbind(this.url);
    this.pending.reject(Errors.closed(`listener ${this.url}`));
    this.pending.promise.catch(() => {});
  }
}

class MemoryConnection implements Connection {
  readonly transport = 'memory';
  peer!: MemoryConnection;
  private readonly inbox = new Inbox();
  private closedSelf = false;
  private peerGone = false;
  constructor(readonly remote: string) {}
  get closed() {
    return this.closedSelf;
  }
  private limit: { bytes: number; reason: string } | undefined;
  private failure: ShoalError | undefined;
  deliver(msg: Uint8Array) {
    if (this.failure) return;
    if (this.limit && msg.byteLength > this.limit.bytes) {
      this.failure = aboveLimitError(`memory connection to ${this.remote}`, msg.byteLength, this.limit);
      this.inbox.failAll(this.failure);
      return;
    }
    this.inbox.deliver(msg);
  }
  limitIncoming(maxBytes: number, reason: string): void {
    checkIncomingLimit(maxBytes, reason);
    this.limit = { bytes: maxBytes, reason };
  }
  peerClosed() {
    this.peerGone = true;
    this.inbox.failAll(Errors.peerClosed(this.remote));
  }
  async send(data: Uint8Array, opts?: IoOptions): Promise<void> {
    if (opts?.signal?.aborted) throw Errors.aborted('send', opts.signal.reason);
    if (this.closedSelf) throw Errors.closed(`connection to ${this.remote}`);
    if (this.peerGone) throw Errors.peerClosed(this.remote);
    // A copy, never a view: Buffer#slice shares memory, and the caller may reuse `data` once this resolves.
    this.peer.deliver(new Uint8Array(data));
  }
  recv(opts?: IoOptions): Promise<Uint8Array> {
    if (this.closedSelf) return Promise.reject(Errors.closed(`connection to ${this.remote}`));
    const m = this.inbox.take();
    if (m) return Promise.resolve(m);
    if (this.failure) return Promise.reject(this.failure);
    if (this.peerGone) return Promise.reject(Errors.peerClosed(this.remote));
    return this.inbox.wait(`recv from ${this.remote}`, opts);
  }
  async close(): Promise<void> {
    if (this.closedSelf) return;
    this.closedSelf = true;
    this.inbox.failAll(Errors.closed(`connection to ${this.remote}`));
    this.peer.peerClosed();
  }
}
