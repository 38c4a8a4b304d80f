/** One CSV task (scan or decode of a file), the same code inline or in a worker. */
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { Errors } from '@shoal/core';
import { decodeCsv, scanCsv, type CsvDecodeTask, type CsvDecoded, type CsvScanResult, type CsvScanTask } from './csv-parse.js';

export type CsvTask = CsvScanTask | CsvDecodeTask;

export async function runCsvTask(task: CsvTask): Promise<CsvScanResult | CsvDecoded> {
  let bytes: Uint8Array;
  try {
    let b = await readFile(task.path);
    // A gzip'd file (`.gz`) is inflated whole: the decoder works on one contiguous buffer.
    if (task.path.endsWith('.gz')) b = gunzipSync(b);
    bytes = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    throw Errors.data(task.path, `cannot read: ${(e as Error).message}`);
  }
  return task.kind === 'scan' ? scanCsv(bytes, task) : decodeCsv(bytes, task);
}
