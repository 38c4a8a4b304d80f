/**
 * A `shoal run` worker for onnx-multiprocess.test.ts: trains the PyTorch-exported recommender fixture
 * (wrappers/fixtures/onnx/rec.onnx: two embedding tables, Gemm, LeakyRelu, BCE with logits) with OnnxTrainer over
 * the engine the launcher chose, `--batch-size` per worker for 20 Adam steps; rank 0 writes the final weights
 * and the rows sent row-sparse in its last step to `--out` as JSON.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { initWorker } from '@shoal/run';
import { OnnxTrainer } from '@shoal/wrappers';
import { ROOT } from './train-helpers.js';

const { values: o } = parseArgs({ options: { 'batch-size': { type: 'string' }, out: { type: 'string' } } });
const N = 320;
const users = BigInt64Array.from({ length: N }, (_, k) => BigInt((k * 7919) % 50));
const items = BigInt64Array.from({ length: N }, (_, k) => BigInt((k * 104729 + 13) % 80));
const y = Float32Array.from({ length: N }, (_, k) => ((Number(users[k]!) + Number(items[k]!)) % 3 === 0 ? 1 : 0));
const worker = await initWorker();
const trainer = new OnnxTrainer({ model: `${ROOT}wrappers/fixtures/onnx/rec.onnx`, loss: 'bceWithLogits', optimizer: { type: 'adam', lr: 0.01 }, sync: worker.sync, threads: 1, verbose: 0 });
try {
  await trainer.fit({ x: { user: { data: users, dims: [N] }, item: { data: items, dims: [N] } }, y: { data: y, dims: [N, 1] } }, { epochs: 1, batchSize: Number(o['batch-size']), stepsPerEpoch: 20, seed: 3 });
  if (worker.sync.rank === 0) writeFileSync(o.out!, JSON.stringify({ weights: Array.from(trainer.weightsFlat()), sparseRows: trainer.stats.sparseRows, engine: worker.sync.kind }));
} finally {
  await trainer.close();
  await worker.close();
}
