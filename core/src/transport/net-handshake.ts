import type * as net from 'node:net';
import { Errors, type ShoalError } from '../errors.js';
import { JobAuth, NONCE_BYTES, PROOF_BYTES } from '../security/job-auth.js';
import { boundedTimeout } from '../util.js';
import type { Subscribe } from './net-direct-input.js';

/**
 * The net transport's handshake: protocol check and mutual authentication (see `security/job-auth.ts`), run on
 * every connection before a single frame is parsed. Fixed-size messages, little-endian:
 *
 *   dialer -> listener   'SHOALNET', u32 version (2), u32 dialer's maxMessageBytes, nonceD[32]            48 B
 *   listener -> dialer   'SHOALNET', u32 version, u32 listener's maxMessageBytes, nonceL[32], proofL[32] 80 B
 *   dialer -> listener   proofD[32]                                                                       32 B
 *
 * The dialer checks proofL before it sends anything else; the listener checks proofD before it takes the
 * connection as its pair's peer. Bytes that follow in the same read (the first frames) are handed on as
 * `leftover`. Nothing of variable size is read, so a peer that is not in the job can make the listener hold at
 * most one 64 KiB read buffer, for at most `timeoutMs`.
 */
const MAGIC = Buffer.from('SHOALNET', 'latin1');
export const NET_PROTOCOL_VERSION = 2;
const HELLO_BYTES = 16 + NONCE_BYTES;
const CHALLENGE_BYTES = 16 + NONCE_BYTES + PROOF_BYTES;

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

function header(maxMessageBytes: number, extra: number): Buffer {
  const b = Buffer.alloc(16 + extra);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(NET_PROTOCOL_VERSION, 8);
  b.writeUInt32LE(maxMessageBytes, 12);
  return b;
}

function checkHeader(b: Buffer, where: string): number {
  if (!b.subarray(0, 8).equals(MAGIC)) {
    // 0x16 0x03: a TLS handshake record (a peer with the job's TLS talking to an end without it)
    const hint = b[0] === 0x16 && b[1] === 0x03 ? ': the peer speaks TLS (--tls) and this end does not' : '';
    throw Errors.badFrame(where, `not a shoal net peer (handshake bytes ${b.subarray(0, 8).toString('hex')})${hint}`);
  }
  const version = b.readUInt32LE(8);
  if (version !== NET_PROTOCOL_VERSION) throw Errors.badFrame(where, `peer speaks net protocol version ${version}, this end ${NET_PROTOCOL_VERSION}`);
  return b.readUInt32LE(12);
}

export interface HandshakeOptions {
  auth: JobAuth;
  maxMessageBytes: number;
  where: string;
  timeoutMs: number;
}

/** The dialer's side. Rejects ERR_AUTH when the listener cannot prove it knows the job secret. */
export async function dialerHandshake(sock: net.Socket, subscribe: Subscribe, o: HandshakeOptions): Promise<HandshakeResult> {
  const r = new ExactReader(sock, subscribe, o.where, o.timeoutMs);
  try {
    const nonceD = JobAuth.nonce();
    const hello = header(o.maxMessageBytes, NONCE_BYTES);
    nonceD.copy(hello, 16);
    sock.write(hello);
    // The header first: something that is not a shoal listener (an HTTP server...) is told apart at once.
    const peerMax = checkHeader(await r.read(16), o.where);
    const ch = await r.read(CHALLENGE_BYTES - 16);
    const nonceL = ch.subarray(0, NONCE_BYTES);
    if (!o.auth.verify('listener', nonceD, nonceL, ch.subarray(NONCE_BYTES))) {
      throw Errors.auth(o.where, `the listener did not prove it knows the secret of job ${o.auth.jobId}`);
    }
    sock.write(o.auth.proof('dialer', nonceD, nonceL));
    return { peerMaxMessageBytes: peerMax, leftover: r.finish() };
  } catch (e) {
    r.finish();
    throw e;
  }
}

/** The listener's side. Rejects ERR_AUTH (or ERR_BAD_FRAME, ERR_TIMEOUT...) for a peer that is not in the job. */
export async function listenerHandshake(sock: net.Socket, subscribe: Subscribe, o: HandshakeOptions): Promise<HandshakeResult> {
  const r = new ExactReader(sock, subscribe, o.where, o.timeoutMs);
  try {
    const peerMax = checkHeader(await r.read(16), o.where);
    const nonceD = Buffer.from(await r.read(HELLO_BYTES - 16));
    const nonceL = JobAuth.nonce();
    const ch = header(o.maxMessageBytes, NONCE_BYTES + PROOF_BYTES);
    nonceL.copy(ch, 16);
    o.auth.proof('listener', nonceD, nonceL).copy(ch, 16 + NONCE_BYTES);
    sock.write(ch);
    const proof = await r.read(PROOF_BYTES);
    if (!o.auth.verify('dialer', nonceD, nonceL, proof)) throw Errors.auth(o.where, 'the peer did not prove it knows the job secret');
    return { peerMaxMessageBytes: peerMax, leftover: r.finish() };
  } catch (e) {
    r.finish();
    throw e;
  }
}
