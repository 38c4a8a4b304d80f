/**
 * One table of error factories for the whole runtime (piscina's habit). Every error shoal raises is a
 * `ShoalError` with a stable `code`, a message that names the problem and where, and an optional `cause`.
 *
 * Recoverable conditions (a timeout, a peer that went away) and broken invariants (a shape mismatch across
 * ranks, a bad frame) are different codes so callers can tell them apart.
 */
export type ShoalErrorCode =
  | 'ERR_TIMEOUT'
  | 'ERR_ABORTED'
  | 'ERR_PEER_CLOSED'
  | 'ERR_CLOSED'
  | 'ERR_TRANSPORT'
  | 'ERR_BAD_FRAME'
  | 'ERR_MISMATCH'
  | 'ERR_INVALID_ARG'
  | 'ERR_CONFIG'
  | 'ERR_NAN'
  | 'ERR_DATA'
  | 'ERR_REMOTE'
  | 'ERR_STATE'
  | 'ERR_AUTH'
  | 'ERR_QUOTA'
  | 'ERR_MEMBERSHIP';

export class ShoalError extends Error {
  readonly code: ShoalErrorCode;
  /**
   * Extra structured context (rank, peer, url, file, column...). Not named `details`: uvu (and other tools)
   * treat an error's `details` as a preformatted string.
   */
  readonly context: Readonly<Record<string, unknown>>;
  constructor(code: ShoalErrorCode, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ShoalError';
    this.code = code;
    this.context = details;
  }
}

/**
 * ERR_INVALID_ARG: a bad argument or option value. A `RangeError`, what JavaScript code throws and catches for
 * a bad argument, carrying the `code` and `context` of every shoal error (`isShoalError` accepts it).
 */
export class InvalidArgError extends RangeError {
  readonly code = 'ERR_INVALID_ARG' as const;
  readonly context: Readonly<Record<string, unknown>>;
  constructor(message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.context = details;
  }
}

export function isShoalError(e: unknown, code?: ShoalErrorCode): e is ShoalError {
  return (e instanceof ShoalError || e instanceof InvalidArgError) && (code === undefined || e.code === code);
}

export const Errors = {
  timeout: (what: string, ms: number, details: Record<string, unknown> = {}) =>
    new ShoalError('ERR_TIMEOUT', `${what} timed out after ${ms} ms`, { ...details, timeoutMs: ms }),
  aborted: (what: string, reason?: unknown) =>
    new ShoalError('ERR_ABORTED', `${what} was aborted${reason instanceof Error ? `: ${reason.message}` : ''}`, {}, reason),
  peerClosed: (where: string, detail?: string, cause?: unknown) =>
    new ShoalError('ERR_PEER_CLOSED', `peer closed the connection (${where})${detail ? `: ${detail}` : ''}`, { where }, cause),
  closed: (what: string) => new ShoalError('ERR_CLOSED', `${what} is closed`),
  transport: (where: string, detail: string, cause?: unknown) =>
    new ShoalError('ERR_TRANSPORT', `transport error (${where}): ${detail}`, { where }, cause),
  badFrame: (where: string, detail: string) => new ShoalError('ERR_BAD_FRAME', `bad frame (${where}): ${detail}`, { where }),
  mismatch: (what: string, detail: string, details: Record<string, unknown> = {}) =>
    new ShoalError('ERR_MISMATCH', `${what} mismatch across ranks: ${detail}`, details),
  invalidArg: (name: string, detail: string) => new InvalidArgError(`${name} ${detail}`, { name }),
  config: (key: string, detail: string) => new ShoalError('ERR_CONFIG', `bad config ${key}: ${detail}`, { key }),
  nan: (what: string, details: Record<string, unknown> = {}) =>
    new ShoalError('ERR_NAN', `non-finite values (NaN or Inf) in ${what}`, details),
  data: (where: string, detail: string, details: Record<string, unknown> = {}) =>
    new ShoalError('ERR_DATA', `${where}: ${detail}`, { ...details, where }),
  remote: (who: string, message: string, details: Record<string, unknown> = {}) =>
    new ShoalError('ERR_REMOTE', `${who} failed: ${message}`, details),
  state: (detail: string) => new ShoalError('ERR_STATE', detail),
  /** A peer that could not prove it belongs to the job (or a job we could not prove to). */
  auth: (where: string, detail: string) => new ShoalError('ERR_AUTH', `authentication failed (${where}): ${detail}`, { where }),
  /** A resource limit (store keys or bytes, connections) would be exceeded. */
  quota: (what: string, detail: string, details: Record<string, unknown> = {}) =>
    new ShoalError('ERR_QUOTA', `${what}: ${detail}`, details),
  /**
   * Elastic jobs: the launcher published a new membership (a worker was lost or one joins). Recoverable: roll
   * back to the last commit and rebuild on the new generation (`ElasticControl.reset`).
   */
  membership: (detail: string, details: Record<string, unknown> = {}, cause?: unknown) =>
    new ShoalError('ERR_MEMBERSHIP', `membership changed: ${detail}`, details, cause),
} as const;
