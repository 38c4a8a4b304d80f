/** @shoal/core/security: the job's identity, the connection handshake, and leftover-name housekeeping. */
export { AuthLog, JOB_SECRET_ENV, JobAuth, NONCE_BYTES, PROOF_BYTES, SECRET_BYTES, type AuthRole } from './job-auth.js';
export { JOB_TLS_ENV, JobTls } from './job-tls.js';
export { AUTH_MAX_MESSAGE_BYTES, authenticateDialer, authenticateListener } from './connection-auth.js';
export { sweepLeftovers, type SweepOptions } from './leftovers.js';
