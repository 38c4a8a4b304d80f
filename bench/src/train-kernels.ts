/**
 * The train bench's kernel rows (`kernels` in bench/results/train.json): tfjs' stock kernels against shoal's
 * replacements (`registerShoalKernels`) on the shapes the bench's models run, each timed as a median and checked
 * against the stock result (`max_abs_diff`): matMul with a transposed A, gather of embedding rows, and
 * unsortedSegmentSum on the wasm backend against the cpu backend.
 */
import { registerShoalKernels, type TfjsRuntime } from '@shoal/wrappers';
import { medianOf } from './train-models.js';

/** Median ms of `reps` calls of `fn`, after one warm-up call. */
function timeIt(fn: () => void, reps: number): number {
  fn(); // warm-up
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    t.push(performance.now() - t0);
  }
  return medianOf(t);
}

/** The kernel rows, `cpuSegments` segments for the cpu backend's unsortedSegmentSum (run once: it is slow). */
export async function kernels(rt: TfjsRuntime, cpuSegments: number) {
  const tf = rt.tf;
  rt.kernels.restore();
  const a = tf.randomUniform([128, 784], -1, 1, 'float32', 1);
  const b = tf.randomUniform([128, 512], -1, 1, 'float32', 2);
  const at = tf.transpose(a);
  // Timed bodies return nothing from tidy: a typed array returned from tf.tidy is walked element by element in
  // search of tensors (~6 ms for 32k floats), which would swamp the kernels being timed.
  const run = (ta: boolean) => () =>
    tf.tidy(() => {
      (ta ? tf.matMul(a, b, true, false) : tf.matMul(at, b)).dataSync();
    });
  const stockOut = tf.tidy(() => tf.matMul(a, b, true, false).dataSync().slice());
  const stock = timeIt(run(true), 5);
  const table = tf.randomUniform([4000, 32], -1, 1, 'float32', 4);
  const rowIds = tf.tensor1d(Int32Array.from({ length: 1024 }, (_, j) => (j * 7919) % 4000), 'int32');
  const gatherOnce = () => {
    const g = tf.gather(table, rowIds);
    const v = g.dataSync();
    g.dispose();
    return v;
  };
  const gatherStockOut = gatherOnce().slice();
  const gatherStock = timeIt(gatherOnce, 20);
  const k = registerShoalKernels(tf);
  const gatherFixedOut = gatherOnce().slice();
  const gatherFixed = timeIt(gatherOnce, 20);
  let gatherAbs = 0;
  for (let i = 0; i < gatherStockOut.length; i++) gatherAbs = Math.max(gatherAbs, Math.abs(gatherStockOut[i]! - gatherFixedOut[i]!));
  tf.dispose([table, rowIds]);
  const fixedOut = tf.tidy(() => tf.matMul(a, b, true, false).dataSync().slice());
  const fixed = timeIt(run(true), 5);
  const untransposed = timeIt(run(false), 5);
  let maxAbs = 0;
  for (let i = 0; i < stockOut.length; i++) maxAbs = Math.max(maxAbs, Math.abs(stockOut[i]! - fixedOut[i]!));

  const x = tf.randomUniform([1024, 32], -1, 1, 'float32', 3);
  const ids = (n: number) => tf.tensor1d(Int32Array.from({ length: 1024 }, (_, j) => (j * 7919) % n), 'int32');
  const ids4000 = ids(4000);
  const idsCpu = ids(cpuSegments);
  const wasm4000 = timeIt(() => tf.tidy(() => void tf.unsortedSegmentSum(x, ids4000, 4000).dataSync()), 5);
  const wasmSmall = timeIt(() => tf.tidy(() => void tf.unsortedSegmentSum(x, idsCpu, cpuSegments).dataSync()), 5);
  const wasmOut = tf.tidy(() => tf.unsortedSegmentSum(x, idsCpu, cpuSegments).dataSync().slice());
  await tf.setBackend('cpu');
  const xc = tf.tensor(x.dataSync(), x.shape);
  const ic = tf.tensor1d(idsCpu.dataSync() as Int32Array, 'int32');
  const t0 = performance.now();
  const cpuOut = tf.unsortedSegmentSum(xc, ic, cpuSegments).dataSync();
  const cpuMs = performance.now() - t0;
  await tf.setBackend(rt.backend);
  let segAbs = 0;
  for (let i = 0; i < cpuOut.length; i++) segAbs = Math.max(segAbs, Math.abs(cpuOut[i]! - wasmOut[i]!));
  void k;
  return {
    matmul_transposeA_128x784x512: { stock_ms: stock, fixed_ms: fixed, untransposed_ms: untransposed, max_abs_diff: maxAbs },
    gather_rows_1024_of_4000x32: { stock_ms: gatherStock, fixed_ms: gatherFixed, max_abs_diff: gatherAbs },
    unsorted_segment_sum_1024x32: { cpu_ms: cpuMs, cpu_segments: cpuSegments, wasm_fixed_ms_4000: wasm4000, wasm_fixed_ms_at_cpu_segments: wasmSmall, max_abs_diff: segAbs },
  };
}
