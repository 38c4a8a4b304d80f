import { Errors, isShoalError } from '../errors.js';
import type { Connection } from '../transport/transport.js';
import { JobAuth, NONCE_BYTES, PROOF_BYTES } from './job-auth.js';

/**
 * The job handshake (job-auth.ts) run as the first messages of a message transport's connection (nng, shm), for
 * transports whose handshake is not ours to extend:
 *
 *   dialer -> listener   nonceD                  32 B
 *   listener -> dialer   nonceL, proofL          64 B
 *   dialer -> listener   proofD                  32 B
 *   listener -> dialer   0x01 (accepted)          1 B
 *
 * The last message lets the dialer's first payload wait until the listener has taken the connection (and raised
 * its pre-authentication message limit, see nng.ts). Any message of another size fails the handshake.
 */
export const AUTH_MAX_MESSAGE_BYTES = NONCE_BYTES + PROOF_BYTES;

async function recvExact(conn: Connection, n: number, where: string, deadline: number): Promise<Uint8Array> {
  const m = await conn.recv({ timeoutMs: Math.max(1, deadline - Date.now()) });
  if (m.byteLength !== n) throw Errors.auth(where, `handshake message of ${m.byteLength} bytes, expected ${n}`);
  return m;
}

/** Close a connection that failed its handshake and rethrow a timeout or a closed peer as ERR_AUTH too. */
async function failed(conn: Connection, where: string, e: unknown): Promise<never> {
  await conn.close().catch(() => {});
  if (isShoalError(e, 'ERR_AUTH')) throw e;
  throw Errors.auth(where, `handshake not completed: ${e instanceof Error ? e.message : String(e)}`);
}

/**
 * The dialer's side. `onProven` runs once the listener has proven itself (before the dialer sends its own
 * proof). Rejects ERR_AUTH (connection closed) when the listener is not in the job.
 */
export async function authenticateDialer(conn: Connection, auth: JobAuth, where: string, timeoutMs: number, onProven?: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  try {
    const nonceD = JobAuth.nonce();
    await conn.send(nonceD, { timeoutMs });
    const ch = await recvExact(conn, NONCE_BYTES + PROOF_BYTES, where, deadline);
    const nonceL = ch.subarray(0, NONCE_BYTES);
    if (!auth.verify('listener', nonceD, nonceL, ch.subarray(NONCE_BYTES))) {
      throw Errors.auth(where, `the listener did not prove it knows the secret of job ${auth.jobId}`);
    }
    onProven?.();
    await conn.send(auth.proof('dialer', nonceD, nonceL), { timeoutMs });
    const ok = await recvExact(conn, 1, where, deadline);
    if (ok[0] !== 1) throw Errors.auth(where, 'the listener did not confirm the handshake');
  } catch (e) {
    return failed(conn, where, e);
  }
}

/**
 * The listener's side. `onProven` runs once the dialer has proven itself (before the confirmation is sent).
 * Rejects ERR_AUTH (connection closed) when the dialer is not in the job; the caller counts and logs it.
 */
export async function authenticateListener(conn: Connection, auth: JobAuth, where: string, timeoutMs: number, onProven?: () => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  try {
    const nonceD = await recvExact(conn, NONCE_BYTES, where, deadline);
    const nonceL = JobAuth.nonce();
    const ch = new Uint8Array(NONCE_BYTES + PROOF_BYTES);
    ch.set(nonceL, 0);
    ch.set(auth.proof('listener', nonceD, nonceL), NONCE_BYTES);
    await conn.send(ch, { timeoutMs });
    const proof = await recvExact(conn, PROOF_BYTES, where, deadline);
    if (!auth.verify('dialer', nonceD, nonceL, proof)) throw Errors.auth(where, 'the peer did not prove it knows the job secret');
    onProven?.();
    await conn.send(new Uint8Array([1]), { timeoutMs });
  } catch (e) {
    return failed(conn, where, e);
  }
}
