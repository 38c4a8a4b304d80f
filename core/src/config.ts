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
 *   SHOAL_JOB_TLS (with `--tls`: the job's TLS certificate and key, one line; read with the secret into `auth.tls`:
 *   see security/job-tls.ts).
 *   SHOAL_PS_RESEND (1: the ps servers restart from checkpoints; resend what they had not acknowledged).
 *   SHOAL_PS_PLACEMENT (process: the launcher's server processes, the default; worker: rank 0 hosts the servers).
 *   SHOAL_ELASTIC=1 (`shoal run --elastic`): SHOAL_WORKER_ID is this worker's stable id (ranks change with the
 *   membership generations, see run/src/elastic/generations.ts); SHOAL_ELASTIC_JOIN=1 for a worker started to
 *   join a running job (a replacement).
 *   SHOAL_ELASTIC_STAGE=<k> (`shoal_spark.run(elastic=True)`): this process belongs to the k-th barrier stage of an
 *   elastic Spark job (0 = the first); the driver restarts a failed stage with the workers it can get. Rank 0
 *   writes each commit to SHOAL_ELASTIC_STORE (tcp://host:port, the driver's store) or SHOAL_ELASTIC_DIR (a
 *   folder every executor reaches), and a restarted stage starts from the last one. SHOAL_ELASTIC_LOST (JSON
 *   `[{ rank, workerId, reason }]`): what the previous stage lost.
 * Where the training data is (read by `worker.data()`): SHOAL_INPUT=stdin (Spark streams the rank's partition as
 * Arrow on stdin) or SHOAL_DATA=PATH (`shoal run --data PATH`: a Parquet, Arrow or CSV file or folder, sharded by
 * rank); SHOAL_FEATURES (comma-separated columns) and SHOAL_LABEL (a column), set by `shoal_spark.fit`.
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
  /** Where this rank's training data comes from, if the launcher said: Spark's stdin stream or a path. */
  data?: { from: 'stdin' } | { from: 'path'; path: string };
  /**
   * Resend what a parameter server had not acknowledged when it restarts from its checkpoint, instead of failing
   * (SHOAL_PS_RESEND=1, set by `shoal run --ps-durable`).
   */
  psResend?: boolean;
  /**
   * Where the parameter servers run (SHOAL_PS_PLACEMENT): `process` (default) in the launcher's actor processes;
   * `worker` in rank 0's process (`shoal run --ps-placement worker`), so a same-host job has no process beyond
   * its workers.
   */
  psPlacement?: 'process' | 'worker';
  /**
   * Elastic membership (`shoal run --elastic`): this worker's stable id (ranks are positions in a generation's
   * member list) and whether it was started to join a running job. `rank`/`worldSize` are those of generation 0.
   */
  elastic?: { workerId: number; join: boolean };
  /**
   * A stage of an elastic Spark job (`shoal_spark.run(elastic=True)`): its number (0 = the first), where commits
   * outlive the stage (the driver's store, or a folder) and what the previous stage lost.
   */
  elasticStage?: { stage: number; commits: { store: string } | { dir: string }; lost: Array<{ rank: number; workerId: number; reason: string }> };
  /** The feature and label columns the launcher named (`shoal_spark.fit(feature_cols, label_cols)`). */
  columns?: { features: string[]; label: string };
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
  const transport = oneOf(env, 'SHOAL_TRANSPORT', TRANSPORTS, 'net');
  if (auth.tls && transport === 'nng') throw Errors.config('SHOAL_TRANSPORT', 'nng cannot carry the job\'s TLS (SHOAL_JOB_TLS is set): use net or shm');
  return {
    rank,
    worldSize,
    localRank: int(env, 'SHOAL_LOCAL_RANK', rank),
    storeUrl,
    jobId,
    transport,
    backend: oneOf(env, 'SHOAL_BACKEND', BACKENDS, 'ring'),
    servers: int(env, 'SHOAL_SERVERS', 1, 1),
    timeoutMs: int(env, 'SHOAL_TIMEOUT_MS', 60_000, 1),
    host: env.SHOAL_HOST || '127.0.0.1',
    auth,
    ...(oneOf(env, 'SHOAL_PS_RESEND', ['0', '1'] as const, '0') === '1' ? { psResend: true } : {}),
    ...(oneOf(env, 'SHOAL_PS_PLACEMENT', ['process', 'worker'] as const, 'process') === 'worker' ? { psPlacement: 'worker' as const } : {}),
    ...(oneOf(env, 'SHOAL_ELASTIC', ['0', '1'] as const, '0') === '1'
      ? { elastic: { workerId: int(env, 'SHOAL_WORKER_ID', rank), join: oneOf(env, 'SHOAL_ELASTIC_JOIN', ['0', '1'] as const, '0') === '1' } }
      : {}),
    ...elasticStageOf(env),
    ...dataOf(env),
  };
}

function elasticStageOf(env: Record<string, string | undefined>): Pick<WorkerOptions, 'elasticStage'> {
  if (env.SHOAL_ELASTIC_STAGE === undefined || env.SHOAL_ELASTIC_STAGE === '') return {};
  const stage = int(env, 'SHOAL_ELASTIC_STAGE');
  if (env.SHOAL_ELASTIC === '1') throw Errors.config('SHOAL_ELASTIC_STAGE', 'and SHOAL_ELASTIC=1 are exclusive: a Spark stage restarts whole, `shoal run --elastic` changes membership in place');
  const store = env.SHOAL_ELASTIC_STORE ?? '';
  const dir = env.SHOAL_ELASTIC_DIR ?? '';
  if ((store === '') === (dir === '')) throw Errors.config('SHOAL_ELASTIC_STAGE', 'needs exactly one of SHOAL_ELASTIC_STORE (tcp://host:port) and SHOAL_ELASTIC_DIR (a folder) for its commits');
  if (store !== '' && !/^tcp:\/\/[^:]+:\d+$/.test(store)) throw Errors.config('SHOAL_ELASTIC_STORE', `must be tcp://host:port, got ${JSON.stringify(store)}`);
  if (dir.includes('\0')) throw Errors.config('SHOAL_ELASTIC_DIR', 'contains a NUL byte');
  let lost: Array<{ rank: number; workerId: number; reason: string }> = [];
  if (env.SHOAL_ELASTIC_LOST) {
    try {
      lost = JSON.parse(env.SHOAL_ELASTIC_LOST) as typeof lost;
    } catch (e) {
      throw Errors.config('SHOAL_ELASTIC_LOST', `is not JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(lost) || lost.some((l) => typeof l !== 'object' || l === null || !Number.isInteger(l.rank) || typeof l.reason !== 'string')) {
      throw Errors.config('SHOAL_ELASTIC_LOST', 'must be a JSON list of { rank, workerId, reason }');
    }
    lost = lost.map((l) => ({ rank: l.rank, workerId: Number.isInteger(l.workerId) ? l.workerId : l.rank, reason: l.reason }));
  }
  return { elasticStage: { stage, commits: store !== '' ? { store } : { dir }, lost } };
}

function dataOf(env: Record<string, string | undefined>): Pick<WorkerOptions, 'data' | 'columns'> {
  const out: Pick<WorkerOptions, 'data' | 'columns'> = {};
  const input = env.SHOAL_INPUT;
  if (input !== undefined && input !== '' && input !== 'stdin') throw Errors.config('SHOAL_INPUT', `must be stdin when set, got ${JSON.stringify(input)}`);
  if (input === 'stdin' && env.SHOAL_DATA) throw Errors.config('SHOAL_DATA', 'and SHOAL_INPUT=stdin are exclusive: the data comes from one place');
  if (input === 'stdin') out.data = { from: 'stdin' };
  else if (env.SHOAL_DATA) out.data = { from: 'path', path: env.SHOAL_DATA };
  const features = env.SHOAL_FEATURES;
  const label = env.SHOAL_LABEL;
  if ((features === undefined || features === '') !== (label === undefined || label === '')) {
    throw Errors.config(features ? 'SHOAL_LABEL' : 'SHOAL_FEATURES', 'must be set together with ' + (features ? 'SHOAL_FEATURES' : 'SHOAL_LABEL'));
  }
  if (features && label) out.columns = { features: features.split(',').map((c) => c.trim()).filter((c) => c !== ''), label };
  return out;
}
