import { Errors } from './errors.js';
import { JobAuth } from './security/job-auth.js';

/**
 * Everything a worker needs to join a job, parsed once (from the environment the launcher sets, or from an
 * object) into typed options and passed down. Nothing below reads `process.env` itself.
 *
 * Environment contract between launchers (`shoal run`, Spark) and workers:
 *   SHOAL_RANK, SHOAL_WORLD_SIZE, SHOAL_LOCAL_RANK, SHOAL_STORE (tcp://host:port of the rendezvous store),
 *   SHOAL_JOB_ID, SHOAL_TRANSPORT (net|nng|shm), SHOAL_BACKEND (ring|ps|hybrid), SHOAL_SERVERS (ps shards),
 *   SHOAL_TIMEOUT_MS (every network wait), SHOAL_HOST (address peers should dial),
 *   SHOAL_JOB_SECRET (the job's 256-bit secret, 64 hex digits: required whenever there is a store to join; read
 *   here, once, into `auth`, and never printed: see security/job-auth.ts).
 */
export interface WorkerOptions {
  rank: number;
  worldSize: number;
  localRank: number;
  storeUrl: string;
  jobId: string;
  transport: 'net' | 'nng' | 'shm' | 'memory';
  backend: 'ring' | 'ps' | 'hybrid';
  servers: number;
  timeoutMs: number;
  host: string;
  /** The job's identity: every connection this worker makes or accepts proves it and checks the peer's. */
  auth: JobAuth;
}

const TRANSPORTS = ['net', 'nng', 'shm', 'memory'] as const;
const BACKENDS = ['ring', 'ps', 'hybrid'] as const;

function int(env: Record<string, string | undefined>, key: string, dflt?: number, min = 0): number {
  const raw = env[key];
  if (raw === undefined || raw === '') {
    if (dflt === undefined) throw Errors.config(key, 'is required but not set');
    return dflt;
  }
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) throw Errors.config(key, `must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return v;
}
function oneOf<T extends string>(env: Record<string, string | undefined>, key: string, allowed: readonly T[], dflt: T): T {
  const raw = env[key];
  if (raw === undefined || raw === '') return dflt;
  if (!(allowed as readonly string[]).includes(raw)) throw Errors.config(key, `must be one of ${allowed.join('|')}, got ${JSON.stringify(raw)}`);
  return raw as T;
}

/** Parse the launcher's environment. Throws ERR_CONFIG naming the variable on bad input. */
export function parseWorkerOptions(env: Record<string, string | undefined>): WorkerOptions {
  const worldSize = int(env, 'SHOAL_WORLD_SIZE', undefined, 1);
  const rank = int(env, 'SHOAL_RANK');
  if (rank >= worldSize) throw Errors.config('SHOAL_RANK', `must be < SHOAL_WORLD_SIZE (${worldSize}), got ${rank}`);
  const storeUrl = env.SHOAL_STORE ?? '';
  if (worldSize > 1 && !/^tcp:\/\/[^:]+:\d+$/.test(storeUrl)) throw Errors.config('SHOAL_STORE', `must be tcp://host:port, got ${JSON.stringify(storeUrl)}`);
  const jobId = env.SHOAL_JOB_ID || 'shoal';
  // A job with a store has other members: the secret is required. A lone worker without one gets its own.
  const auth = storeUrl !== '' || env.SHOAL_JOB_SECRET ? JobAuth.fromEnv(jobId, env) : JobAuth.ephemeral().withJobId(jobId);
  return {
    rank,
    worldSize,
    localRank: int(env, 'SHOAL_LOCAL_RANK', rank),
    storeUrl,
    jobId,
    transport: oneOf(env, 'SHOAL_TRANSPORT', TRANSPORTS, 'net'),
    backend: oneOf(env, 'SHOAL_BACKEND', BACKENDS, 'ring'),
    servers: int(env, 'SHOAL_SERVERS', 1, 1),
    timeoutMs: int(env, 'SHOAL_TIMEOUT_MS', 60_000, 1),
    host: env.SHOAL_HOST || '127.0.0.1',
    auth,
  };
}
