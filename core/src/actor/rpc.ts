import { Errors, ShoalError } from '../errors.js';
import { MAX_TIMER_MS } from '../util.js';
import { aboveLimitError, type Connection, type IoOptions } from '../transport/transport.js';
import { DEFAULT_TIMEOUT_MS } from '../transport/transport.js';
import { encodeParts, externalRef, finishDecode, FramePool, parseFrame, type EncodedMessage } from './codec.js';

/**
 * Request/response over one Connection (one pair per caller and actor).
 *
 * Messages (encoded with `codec.ts`):
 *   request  `{ k: 'q', id, m: method, a: args[] }`
 *   response `{ k: 'r', id, v: value }`
 *   failure  `{ k: 'e', id, e: { message, stack, code, name } }`
 *
 * Requests from one client are sent in call order and the server starts them in arrival order (mailbox order
 * per caller). Responses may come back in any order; the client matches them by id.
 */
export interface RpcStats {
  bytesSent: number;
  bytesReceived: number;
  calls: number;
}

interface Pending {
  method: string;
  replyInto: readonly (ArrayBufferView | undefined)[] | undefined;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export interface RpcClientOptions {
  /** Name used in every error message (e.g. `actor ps-server-0 (epoch 1)`). */
  name: string;
  /** Default per-call timeout (ERR_TIMEOUT); Infinity disables it. */
  timeoutMs?: number;
  /** Typed arrays of at least this many bytes are sent from the caller's memory, uncopied. Default 64 KiB. */
  externalMinBytes?: number;
}

/** Default size from which arrays travel as their own messages instead of being copied into the frame. */
export const DEFAULT_EXTERNAL_MIN_BYTES = 64 * 1024;

/** Send an encoded message (frame, then its external segments) on `conn`; recycles the frame into `pool`. */
export function sendParts(conn: Connection, enc: EncodedMessage, pool: FramePool, opts: IoOptions): Promise<void> {
  const sends = [conn.send(enc.frame, opts).then(() => pool.give(enc.frame))];
  for (const x of enc.external) sends.push(conn.send(x, opts));
  return Promise.all(sends).then(() => undefined);
}

/**
 * Where a message's external segments should land: given the parsed frame's value (arrays as placeholders, see
 * `externalRef`) and the external segments' byte lengths, a buffer per segment index (or undefined: let the
 * transport allocate). Buffers of the wrong size are not used.
 */
export type RecvTargets = (value: unknown, externalBytes: readonly number[]) => readonly (Uint8Array | undefined)[] | undefined;

/**
 * Receive one whole message (frame and external segments) and decode it. With `targets`, external segments go
 * straight into the buffers it names when the transport can (`Connection.recvInto`); the decoded arrays are then
 * views of those buffers. With `bound` (the receiver's bound on one message, read when the frame has arrived), a
 * frame announcing a larger segment fails with ERR_BAD_FRAME before anything is reserved for it (the transport
 * bounds each message it receives only when it has `limitIncoming`; the frame is checked here too).
 */
export async function recvParts(conn: Connection, targets?: RecvTargets, bound?: () => { bytes: number; reason: string } | undefined): Promise<{ value: unknown; bytes: number }> {
  const frame = await conn.recv({ timeoutMs: Infinity });
  const limit = bound?.();
  if (limit && frame.byteLength > limit.bytes) throw aboveLimitError(`message from ${conn.remote}`, frame.byteLength, limit);
  const parsed = parseFrame(frame);
  const n = parsed.x.length;
  if (limit) for (const x of parsed.x) if (x > limit.bytes) throw aboveLimitError(`array segment announced by ${conn.remote}`, x, limit);
  const ext: Uint8Array[] = [];
  let bytes = frame.byteLength;
  if (n === 0) return { value: finishDecode(parsed, ext), bytes };
  let dst: readonly (Uint8Array | undefined)[] | undefined;
  if (targets && conn.recvInto) {
    try {
      dst = targets(parsed.v, parsed.x);
    } catch {
      dst = undefined; // a hint only
    }
  }
  for (let i = 0; i < n; i++) {
    const d = dst?.[i];
    const n = parsed.x[i]!;
    // Without a target, the segment still lands in a buffer of its own exact size from the JS heap (freed when
    // collected), not in the transport's: the shm transport keeps collected receive buffers by exact size, 128
    // MiB per connection, so segments of changing sizes (row-sparse rows) grew a server by ~200 MiB (issue #16).
    const into = d && d.byteLength === n ? d : conn.recvInto && n > 0 ? new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n) : undefined;
    const x = into ? await conn.recvInto!(into, { timeoutMs: Infinity }) : await conn.recv({ timeoutMs: Infinity });
    bytes += x.byteLength;
    ext.push(x);
  }
  return { value: finishDecode(parsed, ext), bytes };
}

/** Per-call options: IoOptions plus where the reply's big arrays should land. */
export interface CallOptions extends IoOptions {
  /**
   * When the method returns an array whose element j is a typed array sent as an external segment (>=
   * `externalMinBytes`) of exactly `replyInto[j].byteLength` bytes, it is received straight into `replyInto[j]`
   * (when the transport supports `recvInto`) and the returned element is a view of that memory. A hint: compare
   * what came back. The buffers may be written until the call settles (also if it then times out).
   */
  replyInto?: readonly (ArrayBufferView | undefined)[];
}

/**
 * Client end of an actor connection. Owns `conn` (closes it on `close`). When the connection breaks (the actor
 * died, the transport failed) every pending call and every later call rejects with ERR_PEER_CLOSED naming the
 * actor; `deadError` then holds that error.
 */
export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: ShoalError | undefined;
  private readonly counters: RpcStats = { bytesSent: 0, bytesReceived: 0, calls: 0 };
  readonly name: string;
  private readonly timeoutMs: number;
  private readonly pool = new FramePool();
  private readonly externalMinBytes: number;
  private outgoing: { bytes: number; reason: string } | undefined;

  constructor(
    private readonly conn: Connection,
    opts: RpcClientOptions,
  ) {
    this.name = opts.name;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.externalMinBytes = opts.externalMinBytes ?? DEFAULT_EXTERNAL_MIN_BYTES;
    void this.readLoop();
  }

  /** Set once the connection is gone; every call then rejects with it. */
  get deadError(): ShoalError | undefined {
    return this.dead;
  }

  stats(): RpcStats {
    return { ...this.counters };
  }

  /**
   * The actor's bound on this caller's messages (its `callerBound`, raised as its replies say): from now on a call
   * whose frame or one of whose array segments is larger rejects with ERR_INVALID_ARG naming both sizes and sends
   * nothing, where the actor would drop the connection.
   */
  limitOutgoing(bytes: number, reason: string): void {
    this.outgoing = { bytes, reason };
  }

  /** Called once when the connection breaks (not on `close()`), with the error calls now reject with. */
  onDead: ((err: ShoalError) => void) | undefined;

  /**
   * Call `method(...args)` on the remote object. Resolves with its (awaited) return value; rejects with
   * ERR_REMOTE (the remote message and stack) if it threw, ERR_TIMEOUT / ERR_ABORTED per `opts`, or
   * ERR_PEER_CLOSED if the actor is gone. Typed arrays in `args` smaller than `externalMinBytes` are copied into
   * the request; bigger ones are sent from the caller's memory and must stay unchanged until the call settles.
   */
  call(method: string, args: readonly unknown[], opts?: CallOptions): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    let enc: EncodedMessage;
    const id = this.nextId++;
    try {
      enc = encodeParts({ k: 'q', id, m: method, a: args }, { pool: this.pool, externalMinBytes: this.externalMinBytes });
      const o = this.outgoing;
      let big = o ? enc.frame.byteLength : 0;
      if (o) for (const x of enc.external) big = Math.max(big, x.byteLength);
      if (o && big > o.bytes) {
        this.pool.give(enc.frame);
        throw Errors.invalidArg(`call ${this.name}.${method}`, `sends a message of ${big} bytes, above ${o.reason} (${o.bytes} bytes)`);
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const ms = opts?.timeoutMs ?? this.timeoutMs;
      const p: Pending = { method, replyInto: opts?.replyInto, resolve, reject, timer: undefined, signal: opts?.signal, onAbort: undefined };
      if (ms <= MAX_TIMER_MS) {
        p.timer = setTimeout(() => {
          this.settle(id)?.reject(Errors.timeout(`call ${this.name}.${method}`, ms, { actor: this.name, method }));
        }, ms);
      }
      if (opts?.signal) {
        if (opts.signal.aborted) return reject(Errors.aborted(`call ${this.name}.${method}`, opts.signal.reason));
        p.onAbort = () => this.settle(id)?.reject(Errors.aborted(`call ${this.name}.${method}`, opts.signal?.reason));
        opts.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.counters.calls++;
      this.counters.bytesSent += enc.frame.byteLength + enc.external.reduce((a, x) => a + x.byteLength, 0);
      sendParts(this.conn, enc, this.pool, { timeoutMs: ms }).catch((e) => this.fail(e));
    });
  }

  /** Reply segments of a pending call with `replyInto` go straight into its buffers. */
  private readonly replyTargets: RecvTargets = (value, xs) => {
    const m = value as { k?: string; id?: number; v?: unknown };
    if (m.k !== 'r' || !Array.isArray(m.v)) return undefined;
    const into = this.pending.get(m.id!)?.replyInto;
    if (!into) return undefined;
    const out: (Uint8Array | undefined)[] = [];
    for (let j = 0; j < into.length && j < m.v.length; j++) {
      const ref = externalRef(m.v[j]);
      const t = into[j];
      if (ref && t && t.byteLength === xs[ref.index]) out[ref.index] = new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
    }
    return out;
  };

  /** Remove a pending call and release its timer/listener; returns it (undefined if already settled). */
  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    if (p.timer !== undefined) clearTimeout(p.timer);
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    return p;
  }

  private async readLoop(): Promise<void> {
    for (;;) {
      let m: { k: string; id: number; v?: unknown; e?: RemoteErrorInfo };
      try {
        const got = await recvParts(this.conn, this.replyTargets);
        this.counters.bytesReceived += got.bytes;
        m = got.value as typeof m;
      } catch (e) {
        this.fail(e);
        return;
      }
      const p = this.settle(m.id);
      if (!p) continue; // timed out or aborted earlier: drop the late answer
      if (m.k === 'r') p.resolve(m.v);
      else p.reject(remoteError(this.name, p.method, m.e));
    }
  }

  private fail(cause: unknown): void {
    if (this.dead) return;
    const why = cause instanceof Error ? cause.message : String(cause);
    this.dead =
      cause instanceof ShoalError && cause.code === 'ERR_CLOSED' && this.closing
        ? Errors.closed(`client of ${this.name}`)
        : Errors.peerClosed(this.name, `the actor is gone (${why})`, cause);
    for (const id of [...this.pending.keys()]) {
      const p = this.settle(id)!;
      const err = new ShoalError(this.dead.code, `${this.dead.message} while ${p.method} was pending`, { ...this.dead.context, method: p.method }, cause);
      p.reject(err);
    }
    if (!this.closing) this.onDead?.(this.dead);
    void this.conn.close().catch(() => {});
  }

  private closing = false;
  /** Close the connection; pending calls reject with ERR_CLOSED. Idempotent. */
  async close(): Promise<void> {
    this.closing = true;
    this.fail(Errors.closed(`client of ${this.name}`));
    await this.conn.close().catch(() => {});
  }
}

export interface RemoteErrorInfo {
  message: string;
  stack?: string;
  code?: string;
  name?: string;
}

function remoteError(actor: string, method: string, info: RemoteErrorInfo | undefined): ShoalError {
  const err = Errors.remote(`${actor}.${method}`, info?.message ?? 'unknown error', {
    actor,
    method,
    remoteCode: info?.code,
    remoteName: info?.name,
    remoteStack: info?.stack,
  });
  if (info?.stack) err.stack = `${err.stack}\n--- remote stack (${actor}) ---\n${info.stack}`;
  return err;
}

export function errorInfo(e: unknown): RemoteErrorInfo {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { message: e.message, stack: e.stack, name: e.name, code: typeof code === 'string' ? code : undefined };
  }
  return { message: String(e) };
}
