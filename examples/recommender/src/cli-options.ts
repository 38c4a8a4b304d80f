import { parseArgs } from 'node:util';
import { Errors, isShoalError } from '@shoal/core';

export interface DemoOptions {
  workers: number;
  /** Parameter-server shards for ps/hybrid. */
  servers: number;
  /** Where the server shards run: their own processes, or inside rank 0 (`launch`'s `psPlacement`). */
  psPlacement: 'process' | 'worker';
  backend: 'ring' | 'ps' | 'hybrid';
  /** Where the embedding tables live: on the parameter servers (ps / hybrid default) or replicated on every worker (ring default). */
  tables: 'auto' | 'replicated' | 'server';
  /** Server-side optimizer of server-held tables. */
  serverOptimizer: 'adam' | 'adagrad';
  /** Fixed epochs, or 0: chosen by early stopping on validation HR@10. */
  epochs: number;
  out: string | null;
  config: string | null;
  cache: string | null;
  batch: number;
  targetsPerBasket: number;
  maxSteps: number;
  lr: number | null;
  /** Fixed tower weight, or null: chosen on validation. */
  towerWeight: number | null;
  dim: number | null;
  seed: number;
  evalEachEpoch: boolean;
  /** Limit on one training job (selection and final run), minutes. */
  jobTimeoutMin: number;
  /** Extra runs with these worker counts (same global batch) for the scaling comparison, e.g. [1, 4]. */
  compareWorkers: number[];
  /** TensorBoard logs of every training run under this folder, or null. */
  logdir: string | null;
  /** Step checkpoints in this folder, resumed from when it holds one; or null. */
  checkpoint: string | null;
  /** Micro-batches per optimizer step (gradient accumulation; 1 = a sync every batch). */
  accumulateSteps: number;
  checkpointEverySteps: number | null;
  checkpointEverySeconds: number | null;
  help: boolean;
}

export const USAGE = `Usage: npm run demo -- [options]      (node examples/recommender/dist/main.js [options])

Trains the basket-completion recommender on the shipped Online Retail data (or the log a --config describes),
scores the baselines (most-popular, co-occurrence, repeat-buy, item-kNN, EASE) and writes a report.
  --workers N              worker processes (default 2)
  --backend B              ring | ps | hybrid (default hybrid: tables on parameter servers, dense layers on the ring)
  --servers K              parameter-server shards for ps / hybrid (default 1)
  --ps-placement P         process | worker: the server shards in their own processes (default), or on rank 0's
                           event loop (no third process on the cores; same values)
  --tables T               server | replicated (default: server with ps / hybrid: the tables live on the parameter
                           servers, which run the row-wise optimizer, and workers pull only the rows a step needs;
                           replicated: every worker holds full tables and applies the averaged row gradients; ring
                           always replicates)
  --server-optimizer O     adam | adagrad: optimizer of server-held tables (default adam, lazy, per-row bias correction)
  --epochs E               fixed number of epochs (default: chosen by early stopping on validation HR@10,
                           at most 8, together with the learning rate from a small grid; see the README)
  --out DIR                report folder (default out/recommender-<timestamp>)
  --config FILE            data set config JSON (examples/recommender/config.schema.json; default: the shipped
                           Online Retail copy)
  --cache DIR              prepared-data cache (default out/cache)
  --batch G                global batch, examples per step over all workers (default 512)
  --targets-per-basket T   targets drawn per training basket per epoch (default 8)
  --max-steps S            cap on steps per epoch (0 = none, default)
  --lr X                   learning rate (default: chosen on validation from the grid)
  --tower-weight A         weight of the towers' score against the wide features when scoring (default: chosen
                           on validation from 1, 0.75, 0.5, 0.35, 0.25, 0)
  --dim D                  embedding size (default 32)
  --seed N                 data / model seed (default 1)
  --compare-workers 1,4    extra runs with these worker counts at the same global batch (scaling check)
  --no-eval-each-epoch     evaluate on the test period only after the last epoch
  --logdir DIR             TensorBoard logs: one run per training run (DIR/run-<backend>-w<N>/select-lr<lr>,
                           .../final), loss, samples/s, step times, validation HR@10, system metrics
  --job-timeout-min M      limit on one training job, model selection included (default 120)
  --accumulate-steps K     K global batches per optimizer step: their gradients are averaged and synced once
                           (K times fewer syncs and updates per epoch; default 1)
  --checkpoint DIR         step checkpoints of the training job in DIR (dense layers, tables and every optimizer
                           state, the position, the selection runs done); the same command run again resumes
                           from the newest and ends as the uninterrupted run would; a checkpoint written with
                           other flags, seed or worker count is refused
  --checkpoint-every-steps K   write one every K steps of a training run
  --checkpoint-every-seconds S write one when S seconds passed since the last (default 60 when neither is given)`;

const FLAGS = {
  workers: { type: 'string' }, servers: { type: 'string' }, 'ps-placement': { type: 'string' }, backend: { type: 'string' }, tables: { type: 'string' },
  'server-optimizer': { type: 'string' }, epochs: { type: 'string' }, out: { type: 'string' }, config: { type: 'string' },
  cache: { type: 'string' }, batch: { type: 'string' }, 'targets-per-basket': { type: 'string' }, 'max-steps': { type: 'string' },
  lr: { type: 'string' }, 'tower-weight': { type: 'string' }, dim: { type: 'string' }, seed: { type: 'string' }, 'compare-workers': { type: 'string' },
  'no-eval-each-epoch': { type: 'boolean' }, logdir: { type: 'string' }, 'job-timeout-min': { type: 'string' },
  'accumulate-steps': { type: 'string' }, checkpoint: { type: 'string' }, 'checkpoint-every-steps': { type: 'string' }, 'checkpoint-every-seconds': { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

/** Parse argv (without node and script) with node:util parseArgs. Throws ERR_INVALID_ARG naming the flag on bad input. */
export function parseDemoOptions(argv: readonly string[]): DemoOptions {
  const o: DemoOptions = {
    workers: 2, servers: 1, psPlacement: 'process', backend: 'hybrid', tables: 'auto', serverOptimizer: 'adam', epochs: 0, out: null, config: null, cache: null, batch: 512, targetsPerBasket: 8,
    maxSteps: 0, lr: null, towerWeight: null, dim: null, jobTimeoutMin: 120, seed: 1, evalEachEpoch: true, compareWorkers: [], logdir: null,
    accumulateSteps: 1, checkpoint: null, checkpointEverySteps: null, checkpointEverySeconds: null, help: false,
  };
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({ args: [...argv], options: FLAGS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    const m = /'(-[^' ]+)/.exec((e as Error).message);
    const flag = m ? m[1]!.replace(/=.*$/, '') : 'arguments';
    const unknown = (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION';
    throw Errors.invalidArg(flag, `${unknown ? 'is not a known option' : (e as Error).message.split('\n')[0]!}\n${USAGE}`);
  }
  const int = (flag: string, s: string | undefined, min: number): number => {
    const n = Number(s);
    if (s === undefined || s.trim() === '' || !Number.isInteger(n) || n < min) throw Errors.invalidArg(flag, `must be an integer >= ${min}, got ${JSON.stringify(s)}`);
    return n;
  };
  const oneOf = <T extends string>(flag: string, s: string, allowed: readonly T[]): T => {
    if (!(allowed as readonly string[]).includes(s)) throw Errors.invalidArg(flag, `must be ${allowed.join('|')}, got ${JSON.stringify(s)}`);
    return s as T;
  };
  const str = (k: keyof typeof FLAGS): string | undefined => v[k] as string | undefined;
  if (str('workers') !== undefined) o.workers = int('--workers', str('workers'), 1);
  if (str('servers') !== undefined) o.servers = int('--servers', str('servers'), 1);
  if (str('ps-placement') !== undefined) o.psPlacement = oneOf('--ps-placement', str('ps-placement')!, ['process', 'worker'] as const);
  if (str('backend') !== undefined) o.backend = oneOf('--backend', str('backend')!, ['ring', 'ps', 'hybrid'] as const);
  if (str('tables') !== undefined) o.tables = oneOf('--tables', str('tables')!, ['server', 'replicated'] as const);
  if (str('server-optimizer') !== undefined) o.serverOptimizer = oneOf('--server-optimizer', str('server-optimizer')!, ['adam', 'adagrad'] as const);
  if (str('epochs') !== undefined) o.epochs = int('--epochs', str('epochs'), 1);
  if (str('out') !== undefined) o.out = str('out')!;
  if (str('config') !== undefined) o.config = str('config')!;
  if (str('cache') !== undefined) o.cache = str('cache')!;
  if (str('batch') !== undefined) o.batch = int('--batch', str('batch'), 1);
  if (str('targets-per-basket') !== undefined) o.targetsPerBasket = int('--targets-per-basket', str('targets-per-basket'), 1);
  if (str('max-steps') !== undefined) o.maxSteps = int('--max-steps', str('max-steps'), 0);
  if (str('lr') !== undefined) {
    const x = Number(str('lr'));
    if (!(x > 0)) throw Errors.invalidArg('--lr', `must be a positive number, got ${JSON.stringify(str('lr'))}`);
    o.lr = x;
  }
  if (str('tower-weight') !== undefined) {
    const x = Number(str('tower-weight'));
    if (!(x >= 0) || str('tower-weight')!.trim() === '') throw Errors.invalidArg('--tower-weight', `must be a number >= 0, got ${JSON.stringify(str('tower-weight'))}`);
    o.towerWeight = x;
  }
  if (str('dim') !== undefined) o.dim = int('--dim', str('dim'), 1);
  if (str('seed') !== undefined) o.seed = int('--seed', str('seed'), 0);
  if (str('compare-workers') !== undefined) o.compareWorkers = str('compare-workers')!.split(',').map((x) => int('--compare-workers', x, 1));
  if (v['no-eval-each-epoch'] === true) o.evalEachEpoch = false;
  if (str('logdir') !== undefined) {
    if (str('logdir')!.trim() === '') throw Errors.invalidArg('--logdir', `must be a folder path, got ${JSON.stringify(str('logdir'))}`);
    o.logdir = str('logdir')!;
  }
  if (str('job-timeout-min') !== undefined) o.jobTimeoutMin = int('--job-timeout-min', str('job-timeout-min'), 1);
  if (str('accumulate-steps') !== undefined) o.accumulateSteps = int('--accumulate-steps', str('accumulate-steps'), 1);
  if (str('checkpoint') !== undefined) {
    if (str('checkpoint')!.trim() === '') throw Errors.invalidArg('--checkpoint', `must be a folder path, got ${JSON.stringify(str('checkpoint'))}`);
    o.checkpoint = str('checkpoint')!;
  }
  if (str('checkpoint-every-steps') !== undefined) o.checkpointEverySteps = int('--checkpoint-every-steps', str('checkpoint-every-steps'), 1);
  if (str('checkpoint-every-seconds') !== undefined) {
    const x = Number(str('checkpoint-every-seconds'));
    if (!(x > 0)) throw Errors.invalidArg('--checkpoint-every-seconds', `must be a positive number, got ${JSON.stringify(str('checkpoint-every-seconds'))}`);
    o.checkpointEverySeconds = x;
  }
  if (o.checkpoint === null && (o.checkpointEverySteps !== null || o.checkpointEverySeconds !== null)) {
    throw Errors.invalidArg(o.checkpointEverySteps !== null ? '--checkpoint-every-steps' : '--checkpoint-every-seconds', 'needs --checkpoint DIR');
  }
  if (o.checkpoint !== null && o.checkpointEverySteps === null && o.checkpointEverySeconds === null) o.checkpointEverySeconds = 60;
  if (v.help === true) o.help = true;
  if (o.backend === 'ring' && o.tables === 'server') throw Errors.invalidArg('--tables', 'server needs parameter servers: use --backend ps or hybrid');
  for (const w of [o.workers, ...o.compareWorkers]) {
    if (o.batch % w !== 0) throw Errors.invalidArg('--batch', `(${o.batch}) must be a multiple of the worker count ${w}`);
  }
  return o;
}

/**
 * Run the demo's (or a worker's) `main`: a bad flag, config or data file ends it with one line naming it (exit
 * 2); anything else is a bug and keeps its stack (exit 1).
 */
export function runDemoMain(main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    if (isShoalError(e) && ['ERR_CONFIG', 'ERR_INVALID_ARG', 'ERR_DATA'].includes(e.code)) {
      console.error(`error: ${e.message}`);
      process.exit(2);
    }
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  });
}
