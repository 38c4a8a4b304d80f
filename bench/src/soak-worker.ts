/**
 * One worker of the `soak` bench, run by `shoal run` (see soak.ts): many training steps with the engine the
 * launcher chose, rank 0 printing `SOAK {"step":N}` every `--every` steps so the sampler can put its RSS and fd
 * samples on a step axis.
 * - `--mode trainer` (default): the `rec` bench model (two embeddings) through the Trainer and its gradient
 *   bridge, embedding gradients row-sparse on every engine; batch `--batch` (128) per worker.
 * - `--mode tables` (ps, hybrid): the recommender's server-held tables: per step a fused row pull and row push
 *   (ServerTables, Adam on the servers) beside a dense allreduce of 64k floats.
 */
import { parseArgs } from 'node:util';
import { psWorkerOf, ServerTables } from '@shoal/backends';
import { initWorker } from '@shoal/run';
import { setupTfjs, Trainer } from '@shoal/wrappers';
import { benchData, benchSpec, REC_ITEMS, REC_USERS } from './train-models.js';

const { values: a } = parseArgs({
  options: {
    mode: { type: 'string', default: 'trainer' },
    steps: { type: 'string', default: '2000' },
    every: { type: 'string', default: '50' },
    batch: { type: 'string', default: '128' },
  },
  strict: true,
});
const steps = Number(a.steps);
const every = Number(a.every);
const batch = Number(a.batch);

async function main(): Promise<void> {
  const worker = await initWorker();
  const { rank, worldSize } = worker.options;
  let tensors = () => -1;
  const report = (step: number) => {
    if (rank !== 0 || (step % every !== 0 && step !== steps)) return;
    (globalThis as { gc?: () => void }).gc?.(); // with `soak --gc`: the heap's live size, not its garbage
    const m = process.memoryUsage();
    const mib = (b: number) => +(b / 2 ** 20).toFixed(1);
    process.stdout.write(`SOAK ${JSON.stringify({ step, heapMiB: mib(m.heapUsed), externalMiB: mib(m.external), arrayBuffersMiB: mib(m.arrayBuffers), tensors: tensors() })}\n`);
  };
  if (a.mode === 'tables') await tables(worker.sync, rank, report);
  else {
    const rt = await setupTfjs();
    tensors = () => rt.tf.memory().numTensors;
    const perEpoch = 64;
    const data = benchData(rt.tf, 'rec', batch * worldSize * perEpoch);
    const trainer = new Trainer({ model: benchSpec.rec.build, optimizer: (t) => t.train.adam(0.001), loss: benchSpec.rec.loss, sync: worker.sync, runtime: rt, verbose: 0, sparseEngines: ['ring', 'ps', 'hybrid'] });
    let done = 0;
    await trainer.fit(data, {
      epochs: Math.ceil(steps / perEpoch),
      batchSize: batch,
      shuffle: false,
      callbacks: { onBatchEnd: () => report(++done) },
    });
    await trainer.close();
  }
  await worker.close();
}

/** The recommender's server-held tables pattern (ps and hybrid engines). */
async function tables(sync: Awaited<ReturnType<typeof initWorker>>['sync'], rank: number, report: (s: number) => void): Promise<void> {
  const kv = psWorkerOf(sync);
  if (!kv) throw new Error(`--mode tables needs the ps or hybrid backend, got ${sync.kind}`);
  const t = new ServerTables(kv, [{ name: 'u', numRows: REC_USERS, rowSize: 32 }, { name: 'i', numRows: REC_ITEMS, rowSize: 32 }], { updater: { type: 'adam', lr: 0.001, rowStep: true }, fused: true });
  await t.init(rank === 0 ? [new Float32Array(REC_USERS * 32), new Float32Array(REC_ITEMS * 32)] : undefined);
  let seed = 7 + rank;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const ids = (n: number, max: number) => Int32Array.from(new Set(Array.from({ length: n }, () => Math.floor(rnd() * max)))).sort();
  const dense = { name: 'dense', shape: [65536], data: new Float32Array(65536) };
  for (let s = 1; s <= steps; s++) {
    const u = ids(batch, REC_USERS);
    const i = ids(batch, REC_ITEMS);
    await t.pullMany([{ name: 'u', ids: u }, { name: 'i', ids: i }]);
    await Promise.all([
      t.pushMany([{ name: 'u', ids: u, rows: new Float32Array(u.length * 32).fill(1e-3) }, { name: 'i', ids: i, rows: new Float32Array(i.length * 32).fill(1e-3) }]),
      sync.allreduceMean([dense]),
    ]);
    report(s);
  }
}

await main().catch((e) => {
  console.error(e);
  process.exit(1);
});
