import { Errors, type ShoalError } from '../errors.js';

/**
 * The transport contract every implementation (memory, net, nng, shm) passes, checked by the conformance suite
 * in `conformance.ts`.
 *
 * Model: point-to-point **pairs** of whole messages (like an nng PAIR1 socket or a gloo pair). `listen(url)`
 * returns a Listener whose `accept()` yields exactly one Connection; `dial(url)` yields the other end. Process
 * groups create one pair per peer they talk to.
 *
 * Guarantees of a Connection:
 * - messages arrive whole and in the order sent; message boundaries are kept (0-byte messages included);
 * - `send` resolves once the transport no longer needs `data`: the caller may then reuse the buffer;
 * - several `send`s and several `recv`s may be outstanding; receives complete in order;
 * - when the peer closes or dies, every pending and future `recv` rejects with ERR_PEER_CLOSED, never hangs;
 * - every wait takes `timeoutMs` (ERR_TIMEOUT) and `signal` (ERR_ABORTED); a timed-out recv consumes nothing.
 */
export interface IoOptions {
  /** Give up after this many milliseconds (ERR_TIMEOUT). Undefined: the transport's default. */
  timeoutMs?: number;
  /** Abort the wait (ERR_ABORTED). */
  signal?: AbortSignal;
}

/** Options of `Transport.listen`. */
export interface ListenOptions extends IoOptions {
  /**
   * The bound the accepted connection starts with (as its `limitIncoming`), applied before any byte after the
   * handshake is parsed: a frame right behind the handshake is checked too. Transports without it leave the bound
   * to a `limitIncoming` call after `accept`.
   */
  incomingLimit?: { bytes: number; reason: string };
}

export interface Connection {
  /** Transport name ('memory', 'net', 'nng', 'shm'). */
  readonly transport: string;
  /** Human-readable description of the other end, for error messages. */
  readonly remote: string;
  readonly closed: boolean;
  /** Send one whole message. Resolves when `data` may be reused. */
  send(data: Uint8Array, opts?: IoOptions): Promise<void>;
  /** Receive the next whole message. The returned bytes belong to the caller. */
  recv(opts?: IoOptions): Promise<Uint8Array>;
  /**
   * Optional: `recv`, but a message of exactly `dst.byteLength` bytes may be written straight into `dst` (the
   * promise then resolves with `dst` itself); any other message arrives in a buffer of the transport's, as with
   * `recv`. A hint for skipping a copy, never a size check: callers look at what they got. `dst` may be written
   * until the promise settles. (shm implements it for messages above 64 KiB; net for messages above 4 KiB received
   * without a deadline.)
   */
  recvInto?(dst: Uint8Array, opts?: IoOptions): Promise<Uint8Array>;
  /**
   * Optional: give back a buffer this connection's `recv`/`recvInto` returned, once the caller is done with it and
   * will never touch it again; the transport may land a later message of the same length in it (no fresh,
   * page-faulted allocation, and memory that is still in cache). A hint: buffers the transport did not allocate
   * (slices of a shared block, a `recvInto` destination) are ignored, and so are releases above its pool size.
   * (net implements it for messages above 4 KiB.)
   */
  release?(buf: Uint8Array): void;
  /**
   * Optional: lower the largest message this end accepts from now on to `maxBytes` (never above the transport's
   * own `maxMessageBytes`), where `reason` says what bounds it ("the ring's segment size"). Data planes call it
   * once they know what the job can legitimately send, so that a peer's frame header cannot make this end
   * reserve more. A larger message fails the connection with ERR_BAD_FRAME naming the peer, the size and
   * `reason`. Only ever lowered by callers whose peers never send more (raising it races the peer's next frame).
   * (memory, net, nng and shm implement it.)
   */
  limitIncoming?(maxBytes: number, reason: string): void;
  /** Close this end. Pending operations reject with ERR_CLOSED; the peer sees ERR_PEER_CLOSED. Idempotent. */
  close(): Promise<void>;
}

/** Check `limitIncoming`'s arguments (throws ERR_INVALID_ARG). */
export function checkIncomingLimit(maxBytes: number, reason: string): void {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw Errors.invalidArg('maxBytes', `must be a non-negative integer, got ${maxBytes}`);
  if (typeof reason !== 'string' || reason === '') throw Errors.invalidArg('reason', 'must say what bounds the messages');
}

/** The error of a message above a `limitIncoming` bound. */
export function aboveLimitError(where: string, bytes: number, limit: { bytes: number; reason: string }): ShoalError {
  return Errors.badFrame(where, `a message of ${bytes} bytes, above ${limit.reason} (${limit.bytes} bytes): the peer sent more than this job can legitimately send`);
}

export interface Listener {
  /** The bound URL (with the real port when `:0` was asked for); what a peer dials. */
  readonly url: string;
  /** Wait for the one peer of this pair. */
  accept(opts?: IoOptions): Promise<Connection>;
  close(): Promise<void>;
}

export interface Transport {
  readonly name: string;
  /** Schemes this transport understands, e.g. ['tcp', 'ipc']. */
  readonly schemes: readonly string[];
  listen(url: string, opts?: ListenOptions): Promise<Listener>;
  /** Dial a listener; retries until it is up or the timeout passes. */
  dial(url: string, opts?: IoOptions): Promise<Connection>;
  /** Release transport-wide resources (threads, shared mappings). */
  close?(): Promise<void>;
}

/** Default timeout for every network wait when the caller gives none. */
export const DEFAULT_TIMEOUT_MS = 30_000;
