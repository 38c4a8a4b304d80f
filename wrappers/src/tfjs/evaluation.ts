import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import type { Logs } from './callbacks.js';
import { numSamples, scoreRows } from './data.js';
import { isTensor, type TensorData } from './fit-options.js';
import type { FitHost } from './fit-host.js';
import { fmtLogs } from './progress.js';

/** `evaluate`'s options: `local` scores `data` whole as this rank's own share; `prefix` names the logs (`val_`). */
export interface EvaluateOptions {
  batchSize?: number;
  prefix?: string;
  local?: boolean;
}

/** The two call forms of `Trainer.evaluate`, `(x, y, options)` and `({ x, y }, options)`, checked. */
export function evaluateArgs(a: tfjs.Tensor | tfjs.Tensor[] | TensorData, b?: tfjs.Tensor | EvaluateOptions, c?: { batchSize?: number }): { data: TensorData; options: EvaluateOptions } {
  const tensors = isTensor(a) || Array.isArray(a);
  const data: TensorData = tensors ? { x: a as tfjs.Tensor | tfjs.Tensor[], y: b as tfjs.Tensor } : (a as TensorData);
  const options = ((tensors ? c : b) ?? {}) as EvaluateOptions;
  if (tensors && !isTensor(b)) throw Errors.invalidArg('evaluate(x, y, options)', 'y must be a tf.Tensor');
  for (const k of Object.keys(options)) if (k !== 'batchSize' && k !== 'prefix' && k !== 'local') throw Errors.invalidArg(`evaluate options.${k}`, 'is not supported (known: batchSize)');
  return { data, options };
}

/**
 * Loss and metrics over `data`, each rank scoring a contiguous shard (or, `local`, its own data whole); the result,
 * averaged over all samples of all ranks, is the same on every rank. Collective.
 */
export async function evaluateOnRanks(host: FitHost, data: TensorData, options: EvaluateOptions): Promise<Logs> {
  const n = numSamples(data, 'evaluate data');
  const lo = options.local ? 0 : Math.floor((n * host.rank) / host.size);
  const hi = options.local ? n : Math.floor((n * (host.rank + 1)) / host.size);
  const sums = scoreRows(host.tf, host.model, host.lossFn, host.metricFns, data, lo, hi, options.batchSize ?? 256);
  const reduced = await host.sync.allreduceScalars(sums);
  const total = reduced[reduced.length - 1]!;
  const logs: Logs = {};
  host.names(options.prefix).forEach((k, i) => (logs[k] = total > 0 ? reduced[i]! / total : NaN));
  if (host.verbose !== 0 && host.rank === 0 && !options.prefix) host.out.write(`evaluate: ${fmtLogs(logs)}\n`);
  return logs;
}
