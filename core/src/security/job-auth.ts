import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { Errors } from '../errors.js';
import { JOB_TLS_ENV, JobTls } from './job-tls.js';

/**
 * The job secret and the handshake every shoal listener runs before it parses a byte of payload.
 *
 * A launcher (`shoal run`, the Spark driver, `startPsServers`) makes a 256-bit random secret per job and hands it
 * to its processes in their environment (`SHOAL_JOB_SECRET`, 64 hex digits): never on a command line, in the
 * store or in a log. Each process reads it once, at its entry point, into a `JobAuth` that it passes down to
 * every transport, store client and store server it builds.
 *
 * Handshake (mutual challenge-response, as in SCRAM or Kerberos' AP exchange, with HMAC-SHA256):
 *   dialer -> listener   nonceD (32 random bytes)
 *   listener -> dialer   nonceL, HMAC(secret, tag | 'listener>dialer' | jobId | nonceD | nonceL)
 *   dialer -> listener   HMAC(secret, tag | 'dialer>listener' | jobId | nonceD | nonceL)
 * Both nonces are fresh per connection, so a recorded handshake cannot be replayed; each proof names the role
 * that made it and the role it answers, so a listener's proof reflected back as a dialer's fails; proofs are
 * compared in constant time. A peer that fails is closed at once, counted and logged once with its address
 * (`AuthLog`); it never affects the job.
 *
 * What it does not protect against: anyone who can read the environment of a job process (the same user, root),
 * and eavesdropping (without `--tls`, payloads travel in clear; authentication only decides who may connect).
 * With `--tls` the job's identity also holds a `JobTls` (job-tls.ts): every TCP connection is TLS 1.3 with the
 * job's pinned certificate, and this handshake runs inside it.
 */
export const JOB_SECRET_ENV = 'SHOAL_JOB_SECRET';
export const SECRET_BYTES = 32;
export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
const TAG = 'shoal-auth-v1';

export type AuthRole = 'dialer' | 'listener';

/** Where rejected peers are counted and reported (one line each, then a summary every 1000). */
export class AuthLog {
  rejected = 0;
  accepted = 0;
  /** Most recent rejections, for error messages. */
  last = '';
  constructor(private readonly sink: (line: string) => void = (l) => process.stderr.write(`${l}\n`)) {}
  /** Count a peer that failed the handshake; log it (with its address) unless it is one of a flood. */
  reject(where: string, reason: string): void {
    this.rejected++;
    this.last = `${where}: ${reason}`;
    if (this.rejected <= 20 || this.rejected % 1000 === 0) {
      this.sink(`shoal: rejected a connection (${where}): ${reason}${this.rejected > 20 ? ` [${this.rejected} rejected so far]` : ''}`);
    }
  }
}

/**
 * A job's identity: its id and its secret (kept in a private field: not enumerable, not printed, not cloned to
 * worker threads). An ordinary object, passed down; nothing reads the environment but `fromEnv`.
 */
export class JobAuth {
  readonly #secret: Buffer;
  readonly log: AuthLog;

  private constructor(
    readonly jobId: string,
    secret: Buffer,
    log?: AuthLog,
    /** The job's TLS certificate when its connections are encrypted (`--tls`); undefined otherwise. */
    readonly tls?: JobTls,
  ) {
    this.#secret = secret;
    this.log = log ?? new AuthLog();
  }

  /** A fresh random secret for a new job (what launchers call). */
  static generate(jobId: string, log?: AuthLog): JobAuth {
    checkJobId(jobId);
    return new JobAuth(jobId, randomBytes(SECRET_BYTES), log);
  }

  /**
   * A secret known only to this process: the default of transports built without one, so that peers in this
   * process (tests, thread pairs sharing the object) connect while nothing else can. Never unauthenticated.
   */
  static ephemeral(): JobAuth {
    return new JobAuth('local', randomBytes(SECRET_BYTES));
  }

  /** From 64 hex digits (what `SHOAL_JOB_SECRET` holds). Throws ERR_CONFIG naming the variable. */
  static fromHex(jobId: string, hex: string, log?: AuthLog): JobAuth {
    checkJobId(jobId);
    if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
      throw Errors.config(JOB_SECRET_ENV, `must be ${SECRET_BYTES * 2} hex digits (a 256-bit secret), got ${typeof hex === 'string' ? `${hex.length} characters` : typeof hex}`);
    }
    return new JobAuth(jobId, Buffer.from(hex, 'hex'), log);
  }

  /**
   * Read the secret from an environment (a process entry point does this once). Absent: ERR_CONFIG saying how to
   * make one, since a job without a secret would have to accept anyone.
   */
  static fromEnv(jobId: string, env: Record<string, string | undefined>): JobAuth {
    const hex = env[JOB_SECRET_ENV];
    if (hex === undefined || hex === '') {
      throw Errors.config(
        JOB_SECRET_ENV,
        'is not set: every process of a job needs the job secret (launchers set it; for processes you start yourself, ' +
          `export ${JOB_SECRET_ENV}=$(node -e "console.log(require('crypto').randomBytes(32).toString('hex'))") in all of them)`,
      );
    }
    const auth = JobAuth.fromHex(jobId, hex);
    const tls = JobTls.fromEnv(env);
    return tls ? auth.withTls(tls) : auth;
  }

  /** The same secret under another job id (a launcher's one store serves ids it names). */
  withJobId(jobId: string): JobAuth {
    checkJobId(jobId);
    return new JobAuth(jobId, this.#secret, this.log, this.tls);
  }

  /** The same identity with its TCP connections encrypted under `tls` (`JobTls.generate`). */
  withTls(tls: JobTls): JobAuth {
    if (!(tls instanceof JobTls)) throw Errors.invalidArg('tls', 'must be a JobTls');
    return new JobAuth(this.jobId, this.#secret, this.log, tls);
  }

  /** The environment entries that hand this identity to a child process (never argv): the secret, and the TLS certificate if any. */
  childEnv(): Record<string, string> {
    return { [JOB_SECRET_ENV]: this.#secret.toString('hex'), ...(this.tls ? { [JOB_TLS_ENV]: this.tls.line() } : {}) };
  }

  /** A fresh nonce. */
  static nonce(): Buffer {
    return randomBytes(NONCE_BYTES);
  }

  /** The proof `role` sends for the handshake with nonces `dialerNonce`, `listenerNonce`. */
  proof(role: AuthRole, dialerNonce: Uint8Array, listenerNonce: Uint8Array): Buffer {
    if (dialerNonce.byteLength !== NONCE_BYTES || listenerNonce.byteLength !== NONCE_BYTES) throw Errors.invalidArg('nonce', `must be ${NONCE_BYTES} bytes`);
    const peer = role === 'dialer' ? 'listener' : 'dialer';
    const h = createHmac('sha256', this.#secret);
    h.update(`${TAG}\0${role}>${peer}\0${this.jobId}\0`);
    h.update(dialerNonce);
    h.update(listenerNonce);
    return h.digest();
  }

  /** Whether `mac` is the proof `role` must send for these nonces (constant-time compare). */
  verify(role: AuthRole, dialerNonce: Uint8Array, listenerNonce: Uint8Array, mac: Uint8Array): boolean {
    if (mac.byteLength !== PROOF_BYTES) return false;
    return timingSafeEqual(this.proof(role, dialerNonce, listenerNonce), mac);
  }

  /**
   * A MAC over data the job stores outside its connections (an elastic commit in a shared folder): HMAC-SHA256
   * under the secret of `purpose`, the job id and `data`. Only members of the job can make or check it.
   */
  seal(purpose: string, data: Uint8Array): Buffer {
    const h = createHmac('sha256', this.#secret);
    h.update(`${TAG}\0seal\0${purpose}\0${this.jobId}\0`);
    h.update(data);
    return h.digest();
  }

  /** Whether `mac` is `seal(purpose, data)` (constant-time compare). */
  verifySeal(purpose: string, data: Uint8Array, mac: Uint8Array): boolean {
    if (mac.byteLength !== PROOF_BYTES) return false;
    return timingSafeEqual(this.seal(purpose, data), mac);
  }

  /** A printable form that never shows the secret. */
  toString(): string {
    return `JobAuth(${this.jobId}${this.tls ? ', tls' : ''})`;
  }
  toJSON(): { jobId: string } {
    return { jobId: this.jobId };
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

function checkJobId(jobId: string): void {
  if (typeof jobId !== 'string' || jobId.length === 0 || jobId.length > 200) throw Errors.invalidArg('jobId', `must be a string of 1-200 characters, got ${JSON.stringify(jobId)}`);
}
