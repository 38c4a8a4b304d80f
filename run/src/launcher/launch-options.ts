// What `launch` takes and returns (launch.ts): the options of one `shoal run` and its result.
import type { LostWorker } from '@shoal/backends';
import type { MergedTimeline } from '@shoal/core/telemetry';
import type { ElasticLaunchOptions } from './elastic-supervisor.js';
import type { HostSlots } from './hosts.js';
import type { PsLink } from './ps-servers.js';

/** Options of one `shoal run`: N workers of `script` on this host, wired by a TCP store this launcher serves. */
export interface LaunchOptions {
  /** Worker script: compiled `.js`/`.mjs` (run with `node`), or `.ts` when `tsx` is installed. */
  script: string;
  args?: readonly string[];
  /** Number of workers (ranks 0..n-1): processes, or threads with `threads`. */
  numWorkers: number;
  /**
   * Run the workers as worker_threads of this process instead of child processes (`shoal run --threads`).
   * Each thread gets its WorkerOptions in `workerData` (read by `joinJob`/`initWorker`), `args` as its
   * `process.argv` tail and `env` on top of this process's environment as its own `process.env`. The script
   * must be compiled JavaScript. Default transport (threads or processes): shm. A thread that throws or exits
   * non-zero fails the job as a process would; the others are terminated (`worker.terminate()`).
   */
  threads?: boolean;
  backend?: 'ring' | 'ps' | 'hybrid';
  /** Parameter-server shards for ps/hybrid (SHOAL_SERVERS). */
  servers?: number;
  /**
   * Transport between the workers. Default shm (every worker of a local launch shares this host); nng when
   * `hosts` spans several hosts (chosen from the cluster bench: bench/README.md, "cluster").
   */
  transport?: 'net' | 'nng' | 'shm';
  /**
   * Several hosts (`--hosts h1:2,h2:2`, `--hostfile`): ranks fill them in order; the ranks of this host start
   * directly, the others through `rsh`. Every host needs the same paths (node, the script, the working
   * directory), as with horovodrun. Not with `threads`.
   */
  hosts?: readonly HostSlots[];
  /** Remote shell for `hosts`: the host name and the command line are appended. Default `ssh -o BatchMode=yes`. */
  rsh?: readonly string[];
  /**
   * How workers reach the parameter servers (ps/hybrid): `shm` (shared memory, same host; the default), `ipc`
   * (unix sockets, same host) or `tcp` on `host` (what a multi-host setup needs).
   */
  psLink?: PsLink;
  /**
   * Where the parameter servers run (ps/hybrid): `process` (default) as actor processes of this launcher;
   * `worker` inside rank 0's process (same host only, not with `psDurable`), as BytePS and Orca co-locate them:
   * no process beyond the workers competes for the cores. The servers then live and die with rank 0.
   */
  psPlacement?: 'process' | 'worker';
  /** Every network wait of the workers (SHOAL_TIMEOUT_MS). Default 60 000. */
  timeoutMs?: number;
  /**
   * Encrypt the job's TCP connections (the store, the net transport, ps links over tcp, actor links) with TLS 1.3
   * under a certificate made for this job and pinned by every peer (`shoal run --tls`; see core's
   * security/job-tls.ts). Shared memory and unix sockets stay on this host and are not encrypted. Not with the
   * nng transport (its TLS is not built): with `hosts`, the transport defaults to net instead.
   */
  tls?: boolean;
  /** Stop everything and fail if the job runs longer than this. Default: no limit. */
  jobTimeoutMs?: number;
  /**
   * Address workers listen on and peers dial (SHOAL_HOST), and the store's. Default 127.0.0.1; with `hosts`,
   * each worker gets its host's name from the list and the store listens on the first host of this machine.
   */
  host?: string;
  jobId?: string;
  /**
   * Training data every worker reads its shard of with `worker.data()` (`shoal run --data PATH`): a Parquet,
   * Arrow or CSV file or folder (SHOAL_DATA, made absolute).
   */
  data?: string;
  /**
   * Parameter servers that survive (`shoal run --ps-durable DIR`, ps/hybrid): each server acknowledges an update
   * only once it is in its checkpoint under `DIR/<jobId>/` (removed when the job ends), the launcher restarts a
   * server that dies from that checkpoint (up to `PS_MAX_RESTARTS` times per server), and the workers resend
   * what was not acknowledged (SHOAL_PS_RESEND=1), so the job ends with the weights of a run without the fault.
   */
  psDurable?: string;
  /**
   * Elastic training (`shoal run --elastic`, Horovod elastic's model; processes on one host; ring, ps or hybrid,
   * each generation with ps servers of its own): a lost
   * worker does not fail the job while `minWorkers` remain. The launcher publishes a new membership generation
   * (run/src/elastic/generations.ts), the survivors roll back to their last commit and go on; up to
   * `replacements` new workers (default 0) are started in all to take lost ones' places, each joining at the
   * survivors' next commit, never beyond `maxWorkers`. Workers get SHOAL_ELASTIC=1 and a stable SHOAL_WORKER_ID;
   * the result's `exits` name workers by that id.
   */
  elastic?: ElasticLaunchOptions;
  /**
   * The servers' consistency (`shoal run --ps-mode`, ps backend): `sync` (default) rounds, or `async`: each
   * worker's update is applied on arrival and workers do not wait for each other, except that with `staleness`
   * S (`--staleness S`) no worker runs more than S steps ahead of the slowest (see `KVServerOptions`).
   */
  psMode?: 'sync' | 'async';
  staleness?: number;
  /** Extra environment for every worker (on top of this process's environment). */
  env?: Record<string, string>;
  /**
   * TensorBoard logs (`shoal run --logdir DIR`): every worker gets SHOAL_LOGDIR=DIR (a Trainer given `worker.sync`
   * writes `DIR/train`, `DIR/val`, `DIR/rank-<r>`), and each parameter server writes its load to `DIR/server-<i>`.
   */
  logdir?: string;
  /**
   * Record a timeline (`shoal run --timeline FILE`): every worker gets SHOAL_TIMELINE=FILE and writes its part
   * (`FILE.rank-<r>.jsonl`); when the job ends (failed or not) the launcher merges the parts into FILE, one
   * process per rank, and removes them. The folder is created if needed.
   */
  timeline?: string;
  /** Extra `node` flags for the worker processes, e.g. `['--max-old-space-size=4096']`. Not used with `threads`. */
  nodeArgs?: readonly string[];
  /** Time between SIGTERM and SIGKILL when stopping workers. Default 3 000 ms. */
  graceMs?: number;
  /**
   * After the first failure, how long other workers may still fail on their own before they are stopped, so
   * that the root cause can be told from its consequences (see `pickRootCause`). Default 500 ms.
   */
  settleMs?: number;
  /** Where prefixed worker output goes. Default process.stdout / process.stderr. */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Abort the job (Ctrl-C): stop every worker; the result has `aborted: true`. */
  signal?: AbortSignal;
}

export interface LaunchResult {
  /** 0 when every worker exited 0; else the failing worker's exit code (128 + signal number if killed), 130 when aborted. */
  code: number;
  /** The first rank that failed, if any. */
  failedRank?: number;
  /**
   * The process other than a worker that failed the job, if any: a parameter server that died (`ps-server-1`),
   * which the launcher could not restart. It takes precedence over the workers' follow-on errors.
   */
  failedProcess?: string;
  /** Why it failed: the worker's last error line(s), or the launcher's reason (timeout, abort). */
  error?: string;
  aborted: boolean;
  durationMs: number;
  /** Elastic jobs: the last generation, the workers lost and those that joined (by stable id). */
  elastic?: { generation: number; workers: number; lost: LostWorker[]; joined: number[] };
  /** Exit status per rank (`null` code with a signal when stopped). */
  exits: Array<{ rank: number; code: number | null; signal: NodeJS.Signals | null }>;
  /** With `timeline`: what the merged file holds. */
  timeline?: MergedTimeline;
}
