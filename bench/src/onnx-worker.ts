/**
 * One worker of the `onnx` bench, run by `shoal run`: trains `--model mlp|cnn|rec` with `--framework onnx|tfjs-wasm`
 * (the ONNX file `--file`) for `--warmup` + `--steps` steps of the bench batch per worker over the engine the
 * launcher chose; rank 0 prints `BENCH {row}` (median step, its own CPU ms per step, all workers' samples/s).
 */
import { parseArgs } from 'node:util';
import { initWorker } from '@shoal/run';
import { setupTfjs } from '@shoal/wrappers';
import { onnxRun, tfjsRun, type Name } from './onnx-models.js';

const { values: o } = parseArgs({
  options: { framework: { type: 'string', default: 'onnx' }, model: { type: 'string', default: 'mlp' }, file: { type: 'string', default: '' }, steps: { type: 'string', default: '30' }, warmup: { type: 'string', default: '5' }, threads: { type: 'string', default: '1' } },
});
const worker = await initWorker();
try {
  const name = o.model as Name;
  const [steps, warmup] = [Number(o.steps), Number(o.warmup)];
  const row = o.framework === 'onnx' ? await onnxRun(o.file!, name, [worker.sync], steps, warmup, Number(o.threads)) : await tfjsRun(await setupTfjs({ backend: 'wasm' }), name, [worker.sync], steps, warmup);
  if (worker.sync.rank === 0) process.stdout.write(`BENCH ${JSON.stringify(row)}\n`);
} finally {
  await worker.close();
}
