import { mergeRows, type RowSparseTensor } from '@shoal/backends';
import type { BatchPlan, StepGradients } from './model.js';

/**
 * Gradient accumulation for the demo (`--accumulate-steps K`, MXNet's `grad_req='add'`, Horovod's
 * `backward_passes_per_step`): an optimizer step runs K micro-batches of the global batch on the same parameters,
 * averages their gradients and syncs once. The tables do not move between the micro-batches, so a worker pulls the
 * union of their rows once.
 */

/** Per table, the sorted union of the plans' unique sorted rows. */
export function unionRows(plans: readonly BatchPlan[]): Int32Array[] {
  if (plans.length === 1) return plans[0]!.rows;
  return plans[0]!.rows.map((_, k) => {
    const all = new Set<number>();
    for (const p of plans) for (const r of p.rows[k]!) all.add(r);
    return Int32Array.from(all).sort();
  });
}

/**
 * The mean of K micro-batches' gradients: dense values and loss averaged, each table's rows merged (a row touched
 * by several micro-batches gets their sum) and divided by K. One micro-batch: its own gradients, untouched.
 */
export function meanGradients(gs: readonly StepGradients[]): StepGradients {
  if (gs.length === 1) return gs[0]!;
  const K = gs.length;
  const first = gs[0]!;
  const dense = first.dense.map((t, i) => {
    const data = Float32Array.from(t.data);
    for (let m = 1; m < K; m++) {
      const d = gs[m]!.dense[i]!.data;
      for (let j = 0; j < data.length; j++) data[j]! += d[j]!;
    }
    for (let j = 0; j < data.length; j++) data[j]! /= K;
    return { ...t, data };
  });
  const sparse = first.sparse.map((t, k): RowSparseTensor => {
    const n = gs.reduce((a, g) => a + g.sparse[k]!.rowIds.length, 0);
    const ids = new Int32Array(n), rows = new Float32Array(n * t.rowSize);
    let at = 0;
    for (const g of gs) {
      const s = g.sparse[k]!;
      ids.set(s.rowIds, at);
      rows.set(s.rows, at * t.rowSize);
      at += s.rowIds.length;
    }
    const m = mergeRows(ids, rows, t.rowSize, t.numRows, `accumulated rows of ${t.name}`);
    for (let j = 0; j < m.rows.length; j++) m.rows[j]! /= K;
    return { ...t, rowIds: m.ids, rows: m.rows };
  });
  return { loss: gs.reduce((a, g) => a + g.loss, 0) / K, dense, sparse };
}
