// What the ps bench's driver (ps.ts) and its worker processes (ps-worker.ts) share: the job a worker runs, the
// constants both sides verify against, and the child runner.
import { fork, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository's root (the Ray anchor script is found from it). */
export const root = fileURLToPath(new URL('../../', import.meta.url));
/** The servers' SGD learning rate: every weight ends at -LR x (sum of the gradients pushed), checked exactly. */
export const LR = 1 / 1024;
/** Keys of the dense model (equal parts of `bytes`). */
export const KEYS = 4;
/** Warm-up round trips of the small-key phase, the same for the Ray anchor (JIT and first-use costs; with 300 the
 * first plane run still paid for them). */
export const SMALL_WARMUP = 2000;

/** net: TCP loopback; net-tls: the same under the job's TLS (`--tls`); ipc: the net transport over unix sockets; shm: shared-memory rings. */
export type BenchTransport = 'net' | 'net-tls' | 'ipc' | 'shm';

/** One worker process's assignment (passed in `SHOAL_PS_BENCH`). */
export interface WorkerJob {
  storeUrl: string;
  transport: BenchTransport;
  rank: number;
  numWorkers: number;
  numServers: number;
  sizes: number[];
  rounds: number[];
  warmup: number;
  smallIters: number;
  phases: string[];
  planes: Plane[];
  sparse: { numRows: number; rowSize: number; touched: number; steps: number };
  /** `KVWorkerOptions.requestBytes` of the messages plane (`--request-bytes`; default the KVWorker's). */
  requestBytes?: number;
}

/**
 * How dense values travel (`--planes`): `staging`: the same-host data plane with the worker's staging buffers as
 * the gradient and output arrays (`kv.buffers(key)`: the worker copies nothing); `shared`: the data plane with the
 * caller's own arrays (the worker copies them into and out of its staging buffers); `messages`: values in the
 * transport's messages (`sharedMemory: false`).
 */
export type Plane = 'staging' | 'shared' | 'messages';
export const PLANES: readonly Plane[] = ['staging', 'shared', 'messages'];

/** Run a child, collect its JSON lines; rejects on a non-zero exit or timeout (with its stderr). */
export function runChild(cmd: string, argv: string[], env: Record<string, string>, timeoutMs: number): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const child = cmd === process.execPath ? fork(argv[argv.length - 1]!, [], { env: { ...process.env, ...env }, execArgv: argv.slice(0, -1), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }) : spawn(cmd, argv, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Record<string, unknown>[] = [];
    let buf = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line.startsWith('{')) out.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited ${code ?? signal}: ${err.trim().split('\n').slice(-6).join(' | ')}`));
    });
  });
}
