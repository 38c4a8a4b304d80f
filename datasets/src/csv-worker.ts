/**
 * Piscina worker entry (runs from dist/csv-worker.js): scans or decodes one CSV file; a decoded file's packed
 * column buffer is transferred back, not copied.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { runCsvTask, type CsvTask } from './csv-task.js';
import { shipErrors } from './decode-pool.js';

export default async function run(task: CsvTask): Promise<unknown> {
  const r = await shipErrors(() => runCsvTask(task));
  if (!('buffer' in r)) return r;
  const buf = r.buffer.buffer;
  return move({
    get [transferableSymbol]() {
      return [buf];
    },
    get [valueSymbol]() {
      return r;
    },
  } as never);
}
