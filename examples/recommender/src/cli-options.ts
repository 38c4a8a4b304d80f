import { Errors } from '@shoal/core';

export interface DemoOptions {
  workers: number;
  /** Parameter-server shards for ps/hybrid. */
  servers: number;
  backend: 'ring' | 'ps' | 'hybrid';
  /** Where the embedding tables live: on the parameter servers (ps / hybrid default) or replicated on every worker (ring default). */
  tables: 'auto' | 'replicated' | 'server';
  /** Server-side optimizer of server-held tables. */
  serverOptimizer: 'adam' | 'adagrad';
  epochs: number;
  out: string | null;
  config: string | null;
  cache: string | null;
  batch: number;
  targetsPerBasket: number;
  maxSteps: number;
  lr: number | null;
  dim: number | null;
  seed: number;
  evalEachEpoch: boolean;
  /** Extra runs with these worker counts (same global batch) for the scaling comparison, e.g. [1, 4]. */
  compareWorkers: number[];
  help: boolean;
}

export const USAGE = `Usage: npm run demo -- [options]      (node examples/recommender/dist/main.js [options])

Trains the basket-completion recommender on the shipped Online Retail data and writes a report.
  --workers N              worker processes (default 2)
  --backend B              ring | ps | hybrid (default hybrid: tables on parameter servers, dense layers on the ring)
  --servers K              parameter-server shards for ps / hybrid (default 1)
  --tables T               server | replicated (default: server with ps / hybrid: the tables live on the parameter
                           servers, which run the row-wise optimizer, and workers pull only the rows a step needs;
                           replicated: every worker holds full tables and applies the averaged row gradients; ring
                           always replicates)
  --server-optimizer O     adam | adagrad: optimizer of server-held tables (default adam, lazy, per-row bias correction)
  --epochs E               training epochs (default 4)
  --out DIR                report folder (default out/recommender-<timestamp>)
  --config FILE            dataset config JSON (column mapping; default: the shipped Online Retail copy)
  --cache DIR              prepared-data cache (default out/cache)
  --batch G                global batch, examples per step over all workers (default 512)
  --targets-per-basket T   targets drawn per training basket per epoch (default 8)
  --max-steps S            cap on steps per epoch (0 = none, default)
  --lr X  --dim D          learning rate, embedding size
  --seed N                 data / model seed (default 1)
  --compare-workers 1,4    extra runs with these worker counts at the same global batch (scaling check)
  --no-eval-each-epoch     evaluate only after the last epoch`;

/** Parse argv (without node and script). Throws RangeError naming the flag on bad input. */
export function parseDemoOptions(argv: readonly string[]): DemoOptions {
  const o: DemoOptions = {
    workers: 2, servers: 1, backend: 'hybrid', tables: 'auto', serverOptimizer: 'adam', epochs: 4, out: null, config: null, cache: null, batch: 512, targetsPerBasket: 8,
    maxSteps: 0, lr: null, dim: null, seed: 1, evalEachEpoch: true, compareWorkers: [], help: false,
  };
  const int = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) throw Errors.invalidArg(flag, `must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!, v = argv[i + 1];
    const take = (): string => { if (v === undefined) throw Errors.invalidArg(a, 'needs a value'); i++; return v; };
    switch (a) {
      case '--workers': o.workers = int(a, take(), 1); break;
      case '--servers': o.servers = int(a, take(), 1); break;
      case '--backend': {
        const b = take();
        if (b !== 'ring' && b !== 'ps' && b !== 'hybrid') throw Errors.invalidArg(a, `must be ring|ps|hybrid, got ${JSON.stringify(b)}`);
        o.backend = b; break;
      }
      case '--tables': {
        const t = take();
        if (t !== 'server' && t !== 'replicated') throw Errors.invalidArg(a, `must be server|replicated, got ${JSON.stringify(t)}`);
        o.tables = t; break;
      }
      case '--server-optimizer': {
        const t = take();
        if (t !== 'adam' && t !== 'adagrad') throw Errors.invalidArg(a, `must be adam|adagrad, got ${JSON.stringify(t)}`);
        o.serverOptimizer = t; break;
      }
      case '--epochs': o.epochs = int(a, take(), 1); break;
      case '--out': o.out = take(); break;
      case '--config': o.config = take(); break;
      case '--cache': o.cache = take(); break;
      case '--batch': o.batch = int(a, take(), 1); break;
      case '--targets-per-basket': o.targetsPerBasket = int(a, take(), 1); break;
      case '--max-steps': o.maxSteps = int(a, take(), 0); break;
      case '--lr': { const x = Number(take()); if (!(x > 0)) throw Errors.invalidArg(a, 'must be a positive number'); o.lr = x; break; }
      case '--dim': o.dim = int(a, take(), 1); break;
      case '--seed': o.seed = int(a, take(), 0); break;
      case '--compare-workers': o.compareWorkers = take().split(',').map((x) => int(a, x, 1)); break;
      case '--no-eval-each-epoch': o.evalEachEpoch = false; break;
      case '-h': case '--help': o.help = true; break;
      default: throw Errors.invalidArg(a, `is not a known option\n${USAGE}`);
    }
  }
  if (o.backend === 'ring' && o.tables === 'server') throw Errors.invalidArg('--tables', 'server needs parameter servers: use --backend ps or hybrid');
  for (const w of [o.workers, ...o.compareWorkers]) {
    if (o.batch % w !== 0) throw Errors.invalidArg('--batch', `(${o.batch}) must be a multiple of the worker count ${w}`);
  }
  return o;
}
