import { Errors, ShoalError, isShoalError } from '../errors.js';
import type { Store } from '../store/store.js';
import { asText } from '../store/store.js';
import { DEFAULT_TIMEOUT_MS, type Connection, type Transport } from '../transport/transport.js';
import { withDeadline } from '../util.js';

/**
 * A process group (gloo's `Context`): this rank's view of a job of `size` ranks. It owns one `Connection` per
 * peer it talks to and stamps every message with a header so that messages of different collectives can never
 * be confused. Collectives (backends/src/ring/*) only see this class; they never touch a transport directly.
 *
 * Pairing: for ranks i < j, rank i listens on `listenUrl` and publishes the bound URL in the store under
 * `pair/<i>-<j>`; rank j reads it and dials. Pairs are created lazily on first use (`peer(r)`), or eagerly for
 * the ring neighbours with `connectRing()`; both ends of a pair must ask for it within the timeout.
 *
 * Message header (16 bytes, little endian), then the payload:
 *   u32 magic 0x53485231 ('SHR1') | u16 tag (collective kind; bit 15 = payload is the next message) | u16 step |
 *   u32 seq (op sequence) | u32 aux
 * `seq` is a per-group counter every rank advances once per collective (collectives are called in the same order
 * on every rank, the same contract as gloo/MPI); `step` is the algorithm step; `aux` carries a collective's
 * extra check (a segment index, a payload length, a signature). A header that differs from what the receiver
 * expects is ERR_MISMATCH naming both sides, never silently mixed data.
 *
 * Failure: any transport error (timeout, dead peer) or mismatch inside a collective *breaks* the group: every
 * connection is closed at once so neighbours fail fast with ERR_PEER_CLOSED instead of waiting for their own
 * timeout, and later calls raise ERR_STATE. Errors agreed by all ranks (see `fusion.ts`, NaN checks) do not
 * break the group.
 *
 * Concurrency: one collective at a time per group; `run()` serialises callers. Several groups may coexist in
 * one process (no module state).
 */
export interface ProcessGroupOptions {
  rank: number;
  size: number;
  /** Rendezvous store, already namespaced for this group (e.g. `store.prefixed('ring')`). */
  store: Store;
  transport: Transport;
  /** URL this rank listens on for the pairs where it is the lower rank, e.g. 'mem://' or 'tcp://127.0.0.1:0'. */
  listenUrl: string;
  /** Timeout of every network wait of a collective (ms). Default 30 000. */
  timeoutMs?: number;
}

export const HEADER_BYTES = 16;
/** Tag bit: the payload follows as the next message (see `sendRef`). */
export const SPLIT_FLAG = 0x8000;
const MAGIC = 0x53485231;

/** Collective kinds carried in the header `tag`. */
export const Tags = {
  allreduce: 1,
  broadcast: 2,
  allgather: 3,
  barrier: 4,
  control: 5,
  allgatherBytes: 6,
  /** Not a collective: a rank that broke the group on a mismatch tells its peers why (payload: the reason). */
  abort: 7,
} as const;
/** How long a breaking rank spends telling each peer about a mismatch before it closes the connections. */
const NOTICE_MS = 250;
/** The group's store key holding the reason a rank broke the group on a mismatch, and how often pair waits check it. */
const ABORT_KEY = 'abort';
const ABORT_POLL_MS = 250;
const TAG_NAMES = Object.fromEntries(Object.entries(Tags).map(([k, v]) => [v, k])) as Record<number, string>;

export interface Header {
  tag: number;
  step: number;
  seq: number;
  aux: number;
}

/** What `recv` checks a received header against: `aux` left undefined is not checked (a collective that reads it). */
export type ExpectedHeader = Omit<Header, 'aux'> & { aux?: number };

export interface GroupStats {
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  ops: number;
}

export class ProcessGroup {
  readonly rank: number;
  readonly size: number;
  readonly timeoutMs: number;
  private readonly store: Store;
  private readonly transport: Transport;
  private readonly listenUrl: string;
  private readonly peers = new Map<number, Promise<Connection>>();
  private readonly opened: Connection[] = [];
  /** Open connections by peer rank (for `release`, which must not wait). */
  private readonly byRank = new Map<number, Connection>();
  private seqCounter = 0;
  private broken: Error | undefined;
  private closedFlag = false;
  private tail: Promise<unknown> = Promise.resolve();
  /** Aborted by `close()`: pairs still opening (an accept or dial waiting for a peer that may be dead) give up. */
  private readonly closing = new AbortController();
  /** The data plane's bound on incoming messages (`limitIncoming`), applied to every pair. */
  private incoming: { bytes: number; reason: string } | undefined;
  private readonly st: GroupStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0, ops: 0 };

  constructor(opts: ProcessGroupOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw Errors.invalidArg('options.size', `must be a positive integer, got ${opts.size}`);
    if (!Number.isInteger(opts.rank) || opts.rank < 0 || opts.rank >= opts.size)
      throw Errors.invalidArg('options.rank', `must be an integer in [0, ${opts.size}), got ${opts.rank}`);
    const t = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(t > 0)) throw Errors.invalidArg('options.timeoutMs', `must be > 0, got ${t}`);
    this.rank = opts.rank;
    this.size = opts.size;
    this.timeoutMs = t;
    this.store = opts.store;
    this.transport = opts.transport;
    this.listenUrl = opts.listenUrl;
  }

  get next(): number {
    return (this.rank + 1) % this.size;
  }
  get prev(): number {
    return (this.rank + this.size - 1) % this.size;
  }
  get closed(): boolean {
    return this.closedFlag;
  }

  /** Eagerly connect to both ring neighbours. Resolves when both pairs are up. */
  async connectRing(): Promise<void> {
    if (this.size === 1) return;
    await Promise.all([this.peer(this.next), this.peer(this.prev)]);
  }

  /** The connection to `r` (created on first use). Rejects with ERR_TIMEOUT if `r` does not show up. */
  peer(r: number): Promise<Connection> {
    this.checkUsable();
    if (r === this.rank || r < 0 || r >= this.size) throw Errors.invalidArg('peer rank', `must be another rank in [0, ${this.size}), got ${r}`);
    let p = this.peers.get(r);
    if (!p) {
      p = this.openPair(r);
      p.catch(() => {});
      this.peers.set(r, p);
    }
    return p;
  }

  /**
   * Open the pair with `r` (see the class doc). While waiting, every ABORT_POLL_MS the group's store is checked
   * for a mismatch another rank broke the group on (`noticePeers`): a rank waiting for a pair its peer will never
   * open (the peer is in another collective) fails with that ERR_MISMATCH now, not at its timeout.
   */
  private async openPair(r: number): Promise<Connection> {
    let settled = false;
    const ac = new AbortController();
    const onClose = () => ac.abort(Errors.closed(`process group (rank ${this.rank})`));
    this.closing.signal.addEventListener('abort', onClose, { once: true });
    const inner = this.openPairNow(r, ac.signal).finally(() => {
      settled = true;
      this.closing.signal.removeEventListener('abort', onClose);
    });
    try {
      return await Promise.race([inner, this.brokenElsewhere(r, () => settled)]);
    } catch (e) {
      if (!settled) {
        ac.abort(e); // the listener's accept gives up now (a dialer's store wait runs out on its own)
        void inner.then((c) => c.close().catch(() => {}), () => {});
      }
      throw e;
    }
  }

  private async brokenElsewhere(r: number, settled: () => boolean): Promise<never> {
    for (;;) {
      await new Promise((res) => setTimeout(res, ABORT_POLL_MS));
      if (settled() || this.closedFlag) return new Promise<never>(() => {});
      let why: Uint8Array;
      try {
        why = await this.store.get(ABORT_KEY, 0);
      } catch {
        continue;
      }
      throw new ShoalError('ERR_MISMATCH', `rank ${this.rank}: waiting for the pair with rank ${r}: the group was broken on a mismatch: ${asText(why)}`, { rank: this.rank, peer: r, remote: true });
    }
  }

  private async openPairNow(r: number, signal: AbortSignal): Promise<Connection> {
    const lo = Math.min(this.rank, r);
    const hi = Math.max(this.rank, r);
    const key = `pair/${lo}-${hi}`;
    const opts = { timeoutMs: this.timeoutMs, signal };
    let conn: Connection;
    try {
      if (this.rank === lo) {
        const l = await this.transport.listen(this.listenUrl, opts);
        try {
          await this.store.set(key, l.url);
          conn = await l.accept(opts);
        } finally {
          await l.close().catch(() => {});
        }
      } else {
        // The store wait takes no signal: race it, so a close gives up now (the wait itself ends with the store).
        const url = asText(await withDeadline(`store get ${key}`, this.store.get(key, this.timeoutMs), { timeoutMs: Infinity, signal }));
        conn = await this.transport.dial(url, opts);
      }
    } catch (e) {
      if (this.closedFlag) throw Errors.closed(`process group (rank ${this.rank})`);
      // Name the rank that never showed up (the store key or the accept alone does not say who).
      if (!isShoalError(e, 'ERR_TIMEOUT')) throw e;
      throw new ShoalError('ERR_TIMEOUT', `rank ${this.rank}: rank ${r} never joined the group (store key ${key}) within ${this.timeoutMs} ms`, { ...e.context, rank: this.rank, missingRank: r, timeoutMs: this.timeoutMs }, e);
    }
    if (this.closedFlag) {
      await conn.close();
      throw Errors.closed(`process group (rank ${this.rank})`);
    }
    this.opened.push(conn);
    this.byRank.set(r, conn);
    if (this.incoming) conn.limitIncoming?.(this.incoming.bytes, this.incoming.reason);
    return conn;
  }

  /**
   * Run one collective exclusively: assigns it the next op sequence number. If `fn` throws a transport error
   * or a protocol mismatch, the group is broken (see class doc) and the error is rethrown with rank context.
   */
  run<T>(what: string, fn: (seq: number) => Promise<T>): Promise<T> {
    const go = async (): Promise<T> => {
      this.checkUsable(what);
      const seq = ++this.seqCounter >>> 0;
      this.st.ops++;
      try {
        return await fn(seq);
      } catch (e) {
        if (isShoalError(e) && BREAKING.has(e.code)) await this.abort(e);
        throw e;
      }
    };
    const p = this.tail.then(go, go);
    this.tail = p.catch(() => {});
    return p;
  }

  /**
   * Send one message `header + payload` to `r`. The payload bytes are copied into the message, so the caller
   * may reuse `payload` as soon as this returns (before the promise settles).
   */
  send(r: number, h: Header, payload: Uint8Array | undefined): Promise<void> {
    const n = payload ? payload.byteLength : 0;
    const msg = this.message(h, n);
    if (payload && n) msg.set(payload, HEADER_BYTES);
    return this.sendMessage(r, msg);
  }

  /**
   * Zero-copy send of a large payload: the header goes as one message and `payload` itself as the next (the
   * header's tag carries SPLIT_FLAG so `recv` reads both). The caller must not change `payload` until the
   * returned promise resolves. Worth it above ~32 KiB, where a copy costs more than the extra 16-byte message.
   */
  async sendRef(r: number, h: Header, payload: Uint8Array): Promise<void> {
    const c = await this.peer(r);
    const head = this.message({ ...h, tag: h.tag | SPLIT_FLAG }, 0);
    try {
      const p1 = c.send(head, { timeoutMs: this.timeoutMs });
      const p2 = c.send(payload, { timeoutMs: this.timeoutMs });
      await Promise.all([p1, p2]);
    } catch (e) {
      throw this.annotate(e, `send to rank ${r}`);
    }
    this.st.bytesSent += HEADER_BYTES + payload.byteLength;
    this.st.messagesSent += 2;
  }

  /**
   * Allocate a message with the header filled in and `payloadBytes` of room after it (at byte offset
   * HEADER_BYTES, 8-byte aligned), for collectives that write their payload in place (e.g. fp16 conversion).
   * Hand it to `sendMessage`; the group owns it afterwards.
   */
  message(h: Header, payloadBytes: number): Uint8Array {
    // uninitialised memory: the caller fills every payload byte (no zero-fill of large messages)
    const msg: Uint8Array = Buffer.allocUnsafeSlow(HEADER_BYTES + payloadBytes);
    const dv = new DataView(msg.buffer);
    dv.setUint32(0, MAGIC, true);
    dv.setUint16(4, h.tag, true);
    dv.setUint16(6, h.step & 0xffff, true);
    dv.setUint32(8, h.seq >>> 0, true);
    dv.setUint32(12, h.aux >>> 0, true);
    return msg;
  }

  async sendMessage(r: number, msg: Uint8Array): Promise<void> {
    const c = await this.peer(r);
    try {
      await c.send(msg, { timeoutMs: this.timeoutMs });
    } catch (e) {
      throw this.annotate(e, `send to rank ${r}`);
    }
    this.st.bytesSent += msg.byteLength;
    this.st.messagesSent++;
  }

  /**
   * Receive the next message from `r` and check its header against `expect` (`aux` left undefined is not
   * checked). Returns the payload as a view into the received message (owned by the caller), 8-byte aligned
   * when the transport's buffer is.
   */
  async recv(r: number, expect: ExpectedHeader): Promise<{ payload: Uint8Array; header: Header }> {
    const c = await this.peer(r);
    return this.recvSplit(r, expect, () => c.recv({ timeoutMs: this.timeoutMs }));
  }

  /**
   * One message from `r`: the header from `head()`, checked against `expect`; then, for a split message (sendRef),
   * the payload from `body()` (default: `head()` again). With `body` (a receive already posted for the payload),
   * a header that is not split is ERR_MISMATCH.
   */
  private async recvSplit(
    r: number,
    expect: ExpectedHeader,
    head: () => Promise<Uint8Array>,
    body?: () => Promise<Uint8Array>,
  ): Promise<{ payload: Uint8Array; header: Header }> {
    let msg: Uint8Array;
    try {
      msg = await head();
    } catch (e) {
      throw this.annotate(e, `recv from rank ${r}`);
    }
    this.st.bytesReceived += msg.byteLength;
    this.st.messagesReceived++;
    if (msg.byteLength < HEADER_BYTES) throw Errors.badFrame(`rank ${this.rank} recv from rank ${r}`, `message of ${msg.byteLength} bytes is shorter than the header`);
    const dv = new DataView(msg.buffer, msg.byteOffset, HEADER_BYTES);
    if (dv.getUint32(0, true) !== MAGIC) throw Errors.badFrame(`rank ${this.rank} recv from rank ${r}`, 'bad magic (not a shoal process-group message)');
    const rawTag = dv.getUint16(4, true);
    if (rawTag === Tags.abort) {
      const why = new TextDecoder().decode(msg.subarray(HEADER_BYTES));
      throw new ShoalError('ERR_MISMATCH', `rank ${this.rank}: rank ${r} broke the group on a mismatch: ${why}`, { rank: this.rank, peer: r, remote: true });
    }
    const got: Header = { tag: rawTag & ~SPLIT_FLAG, step: dv.getUint16(6, true), seq: dv.getUint32(8, true), aux: dv.getUint32(12, true) };
    if (got.tag !== expect.tag || got.seq !== expect.seq >>> 0 || got.step !== (expect.step & 0xffff) || (expect.aux !== undefined && got.aux !== expect.aux >>> 0)) {
      throw Errors.mismatch(
        'collective',
        `rank ${this.rank} expected ${fmt(expect)} from rank ${r} but received ${fmt(got)}; ranks called collectives in a different order or with different sizes`,
        { rank: this.rank, peer: r, expected: expect, received: got },
      );
    }
    if (rawTag & SPLIT_FLAG) {
      if (msg.byteLength !== HEADER_BYTES) throw Errors.badFrame(`rank ${this.rank} recv from rank ${r}`, 'split header with inline payload');
      let payload: Uint8Array;
      try {
        payload = await (body ?? head)();
      } catch (e) {
        throw this.annotate(e, `recv from rank ${r}`);
      }
      this.st.bytesReceived += payload.byteLength;
      this.st.messagesReceived++;
      return { payload, header: got };
    }
    if (body) {
      throw Errors.mismatch('collective', `rank ${this.rank} expected a split message (sendRef) ${fmt(expect)} from rank ${r} but its payload came inline (${msg.byteLength - HEADER_BYTES} bytes)`, { rank: this.rank, peer: r });
    }
    return { payload: msg.subarray(HEADER_BYTES), header: got };
  }

  /**
   * Post the receive of a message the peer sends with `sendRef` (header, then the payload as its own message),
   * asking for the payload to land straight in `dst` (`Connection.recvInto`: the transport may read it there
   * without a copy when it has `dst`'s length). Call it before the message arrives, in the order the messages
   * come (several may be posted ahead, as MPI's pre-posted receives), and await each in turn. Resolves with the
   * payload: `dst` itself, or a buffer of the transport's (transports without `recvInto`, another length: compare
   * and copy). A header without the split flag is ERR_MISMATCH (the sender did not use `sendRef`). `dst` may be
   * written until the promise settles; on a timeout the connection is closed first, so nothing lands in `dst`
   * once the promise has rejected.
   */
  async recvRefInto(r: number, expect: Header, dst: Uint8Array): Promise<Uint8Array> {
    const c = await this.peer(r);
    // both receives are posted now, before this returns to the event loop, so later posts queue behind them and the
    // body's frame is targeted before it begins. The body's wait has no deadline of its own (the transport would
    // then ignore `dst`): the group's timer closes the connection instead, which stops every read.
    const head = c.recv({ timeoutMs: this.timeoutMs });
    const into = c.recvInto !== undefined;
    const body = into ? c.recvInto!(dst, { timeoutMs: Infinity }) : c.recv({ timeoutMs: this.timeoutMs });
    body.catch(() => {});
    try {
      const { payload } = await this.recvSplit(r, expect, () => head, () => (into ? this.bounded(c, r, body) : body));
      return payload;
    } catch (e) {
      await c.close(); // `dst` may be the target of a read: end it before the caller gets control back
      throw e;
    }
  }

  /** `p` (a wait without its own deadline on `c`), bounded by the group's timeout: on expiry `c` is closed. */
  private async bounded(c: Connection, r: number, p: Promise<Uint8Array>): Promise<Uint8Array> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(Errors.timeout(`recv from ${c.remote}`, this.timeoutMs, { peer: r })); // first: the race reports this
        void c.close();
      }, this.timeoutMs);
    });
    try {
      return await Promise.race([p, limit]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The caller is done with `payload`, returned by `recv(r, ...)`, and never touches it again: the connection may
   * land a later message in it (`Connection.release`; a hint, ignored where it does not apply). Collectives call
   * it on each segment once reduced or copied, so a steady stream of segments reuses a few cache-warm buffers.
   */
  release(r: number, payload: Uint8Array): void {
    this.byRank.get(r)?.release?.(payload);
  }

  stats(): GroupStats {
    return { ...this.st };
  }

  /**
   * Accept at most `maxBytes` per message (headers included) from every peer of the group, present and future
   * (`Connection.limitIncoming` on transports that have it). For the engine that knows the largest message its
   * collectives send; a peer that sends more fails the collective with ERR_BAD_FRAME naming it and `reason`.
   */
  limitIncoming(maxBytes: number, reason: string): void {
    this.incoming = { bytes: maxBytes, reason };
    for (const c of this.opened) c.limitIncoming?.(maxBytes, reason);
  }

  /**
   * Break the group after a failed collective: close every connection so peers fail fast. A mismatch is first
   * told to every connected peer (an `abort` message carrying the reason, sent once), so a rank that was not
   * part of the mismatched exchange (the middle of a ring of 3) raises ERR_MISMATCH too, not ERR_PEER_CLOSED;
   * it passes the notice on in turn.
   */
  async abort(reason: Error): Promise<void> {
    const first = this.broken === undefined;
    if (first) this.broken = reason;
    if (first && isShoalError(reason, 'ERR_MISMATCH')) await this.noticePeers(reason);
    await this.closeConnections();
  }

  private async noticePeers(reason: Error): Promise<void> {
    const text = new TextEncoder().encode(reason.message.slice(0, 4000));
    const msg = this.message({ tag: Tags.abort, step: 0, seq: 0, aux: this.rank }, text.byteLength);
    msg.set(text, HEADER_BYTES);
    // ranks waiting to open a pair with a rank that will never come learn it from the store (`openPair`)
    await Promise.all([...this.opened.map((c) => c.send(msg, { timeoutMs: NOTICE_MS }).catch(() => {})), this.store.set(ABORT_KEY, reason.message.slice(0, 4000)).catch(() => {})]);
  }

  /** Close every connection. Idempotent. Pending collectives fail with ERR_CLOSED. */
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.closing.abort();
    await this.closeConnections();
  }

  private async closeConnections(): Promise<void> {
    const all = this.opened.splice(0);
    this.byRank.clear();
    await Promise.all(all.map((c) => c.close().catch(() => {})));
  }

  private checkUsable(what = 'collective'): void {
    if (this.closedFlag) throw Errors.closed(`process group (rank ${this.rank}, ${what})`);
    if (this.broken)
      throw new ShoalError('ERR_STATE', `${what}: process group (rank ${this.rank}) is broken by an earlier failure: ${this.broken.message}`, { rank: this.rank }, this.broken);
  }

  private annotate(e: unknown, where: string): unknown {
    if (e instanceof ShoalError) {
      return new ShoalError(e.code, `rank ${this.rank}: ${where}: ${e.message}`, { ...e.context, rank: this.rank }, e);
    }
    return e;
  }
}

/** Error codes that leave the pairs in an unknown state: the group cannot be used afterwards. */
const BREAKING = new Set(['ERR_TIMEOUT', 'ERR_PEER_CLOSED', 'ERR_TRANSPORT', 'ERR_BAD_FRAME', 'ERR_MISMATCH', 'ERR_ABORTED', 'ERR_CLOSED']);

function fmt(h: ExpectedHeader): string {
  return `{${TAG_NAMES[h.tag] ?? `tag ${h.tag}`} op #${h.seq} step ${h.step} aux ${h.aux ?? 'any'}}`;
}
