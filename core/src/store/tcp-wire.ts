// The TCP store's wire format (see tcp.ts): SHLF frames whose payload is `u32 jsonLength, JSON header, value
// bytes`, shared by the server (tcp-server.ts) and the client (tcp.ts).
import type * as net from 'node:net';
import { Errors, type ShoalErrorCode } from '../errors.js';
import { NET_FRAME_MAGIC as FRAME_MAGIC } from '../transport/framing.js';

/** Largest request (key names plus value) by default. Store values are addresses and small blobs. */
export const STORE_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** What a client accepts: a reply carries at most one value, plus its header. */
export const CLIENT_MAX_MESSAGE_BYTES = 2 * STORE_MAX_MESSAGE_BYTES;
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export interface Request {
  id: number;
  op: 'set' | 'get' | 'wait' | 'add' | 'clock';
  key?: string;
  keys?: string[];
  delta?: number;
  timeoutMs?: number;
}
export interface Reply {
  id: number;
  ok: boolean;
  n?: number;
  /** `clock`: the server's host clock (monotonic) in microseconds when it answered. */
  us?: number;
  code?: ShoalErrorCode;
  message?: string;
  details?: Record<string, unknown>;
}

export function encode(header: object, value?: Uint8Array): Buffer[] {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const vlen = value?.byteLength ?? 0;
  const head = Buffer.allocUnsafe(12);
  head.writeUInt32LE(FRAME_MAGIC, 0);
  head.writeUInt32LE(4 + json.length + vlen, 4);
  head.writeUInt32LE(json.length, 8);
  return value && vlen > 0 ? [head, json, Buffer.from(value.buffer, value.byteOffset, vlen)] : [head, json];
}

export function writeFrame(sock: net.Socket, header: object, value?: Uint8Array): void {
  const parts = encode(header, value);
  sock.cork();
  for (const p of parts) sock.write(p);
  sock.uncork();
}

export function decode<T>(payload: Uint8Array, where: string): { header: T; value: Uint8Array } {
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
