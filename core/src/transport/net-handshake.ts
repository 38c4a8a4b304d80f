import type * as net from 'node:net';
import { Errors, type ShoalError } from '../errors.js';
import { boundedTimeout } from '../util.js';
import type { Subscribe } from './net-direct-input.js';

/**
 * The net transport's handshake, once each way right after connect: 8 bytes `SHOALNET`, u32 version (1), u32 the
 * sender's maximum message size. The dialer speaks first; the listener answers only to a valid handshake, so a
 * stray connection (a port scanner, a wrong peer) never takes the listener's one slot. Bytes that follow in the
 * same read (the first frames) are handed on as `leftover`.
 */
const MAGIC = Buffer.from('SHOALNET', 'latin1');
export const NET_PROTOCOL_VERSION = 1;
const HELLO_BYTES = 16;

export interface HandshakeResult {
  peerMaxMessageBytes: number;
  /** Bytes that followed the handshake in the same read (the start of the first frame). */
  leftover: Buffer;
}

/** Reads exact byte counts from a socket during the handshake, bounded by one deadline. */
class ExactReader {
  private buf: Buffer = Buffer.alloc(0);
  private want = 0;
  private waiter: { resolve: (b: Buffer) => void; reject: (e: unknown) => void } | undefined;
  private error: ShoalError | undefined;
  private readonly unsubscribe: () => void;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly onClose = () => this.fail(Errors.peerClosed(this.where, 'connection closed during the handshake'));
  private readonly onError = (e: Error) => this.fail(Errors.peerClosed(this.where, `socket error during the handshake: ${e.message}`, e));

  constructor(
    private readonly sock: net.Socket,
    subscribe: Subscribe,
    private readonly where: string,
    timeoutMs: number,
  ) {
    this.timer = boundedTimeout(() => this.fail(Errors.timeout(`handshake on ${where}`, timeoutMs)), timeoutMs);
    sock.on('close', this.onClose);
    sock.on('error', this.onError);
    this.unsubscribe = subscribe((chunk) => {
      // Never more than one read beyond what the handshake needs is kept.
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      this.check();
    });
  }

  read(n: number): Promise<Buffer> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.want = n;
      this.waiter = { resolve, reject };
      this.check();
    });
  }

  private check(): void {
    if (!this.waiter || this.buf.length < this.want) return;
    const w = this.waiter;
    this.waiter = undefined;
    const out = this.buf.subarray(0, this.want);
    this.buf = this.buf.subarray(this.want);
    w.resolve(out);
  }

  private fail(e: ShoalError): void {
    if (this.error) return;
    this.error = e;
    this.waiter?.reject(e);
    this.waiter = undefined;
  }

  /** Stop reading (the socket pauses or queues) and return what came after the handshake. */
  finish(): Buffer {
    clearTimeout(this.timer);
    this.unsubscribe();
    this.sock.off('close', this.onClose);
    this.sock.off('error', this.onError);
    return this.buf;
  }
}

function hello(maxMessageBytes: number): Buffer {
  const b = Buffer.alloc(HELLO_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(NET_PROTOCOL_VERSION, 8);
  b.writeUInt32LE(maxMessageBytes, 12);
  return b;
}

function checkHeader(b: Buffer, where: string): number {
  if (!b.subarray(0, 8).equals(MAGIC)) throw Errors.badFrame(where, `not a shoal net peer (handshake bytes ${b.subarray(0, 8).toString('hex')})`);
  const version = b.readUInt32LE(8);
  if (version !== NET_PROTOCOL_VERSION) throw Errors.badFrame(where, `peer speaks net protocol version ${version}, this end ${NET_PROTOCOL_VERSION}`);
  return b.readUInt32LE(12);
}

export interface HandshakeOptions {
  maxMessageBytes: number;
  where: string;
  timeoutMs: number;
}

/** The dialer's side: says hello first, then reads the listener's. */
export async function dialerHandshake(sock: net.Socket, subscribe: Subscribe, o: HandshakeOptions): Promise<HandshakeResult> {
  const r = new ExactReader(sock, subscribe, o.where, o.timeoutMs);
  try {
    sock.write(hello(o.maxMessageBytes));
    const peerMax = checkHeader(await r.read(HELLO_BYTES), o.where);
    return { peerMaxMessageBytes: peerMax, leftover: r.finish() };
  } catch (e) {
    r.finish();
    throw e;
  }
}

/** The listener's side: answers only a valid hello. */
export async function listenerHandshake(sock: net.Socket, subscribe: Subscribe, o: HandshakeOptions): Promise<HandshakeResult> {
  const r = new ExactReader(sock, subscribe, o.where, o.timeoutMs);
  try {
    const peerMax = checkHeader(await r.read(HELLO_BYTES), o.where);
    sock.write(hello(o.maxMessageBytes));
    return { peerMaxMessageBytes: peerMax, leftover: r.finish() };
  } catch (e) {
    r.finish();
    throw e;
  }
}
