/**
 * Piscina worker entry (runs from dist/parquet-worker.js): decodes a Parquet task and hands the IPC bytes back by
 * transfer (the main thread then views them zero-copy).
 */
import { move } from 'piscina';
import { decodeParquet, type ParquetTask } from './parquet-decode.js';
import { shipErrors } from './decode-pool.js';

export default async function run(task: ParquetTask): Promise<unknown> {
  const ipc = await shipErrors(() => decodeParquet(task));
  return move(ipc);
}
