/**
 * A worker for cluster-launch.test.ts: joins the job `shoal run` started (initWorker), allreduces its rank + 1
 * over the engine, and prints one JSON line: rank, host name, SHOAL_LOCAL_RANK, transport, SHOAL_HOST, the mean.
 * `--fail-rank R`: rank R throws instead (the others wait in the allreduce until they are stopped).
 */
import { hostname } from 'node:os';
import { initWorker } from '@shoal/run';

const w = await initWorker();
const fail = process.argv.indexOf('--fail-rank');
if (fail > 0 && Number(process.argv[fail + 1]) === w.options.rank) {
  await new Promise((r) => setTimeout(r, 300));
  throw new Error(`probe rank ${w.options.rank} fails on purpose`);
}
const data = Float32Array.of(w.options.rank + 1);
await w.sync.allreduceMean([{ name: 'x', shape: [1], data }]);
process.stdout.write(`${JSON.stringify({ rank: w.options.rank, hostname: hostname(), localRank: w.options.localRank, transport: w.options.transport, host: w.options.host, mean: data[0], engine: w.sync.kind, tls: w.options.auth.tls?.fingerprint ?? null })}\n`);
await w.close();
