/**
 * Arrow IPC files (`.arrow`, `.feather` v2): random access, one partition per record batch.
 *
 * The file is read into memory once at open time (one buffer per file, owned by the dataset); record batches are
 * decoded lazily and their columns are views on that buffer. Magic bytes at both ends and the footer are checked
 * at open time, so a damaged file fails before any row is used.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RecordBatchReader, type RecordBatch } from 'apache-arrow';
import { Errors, isShoalError } from '@shoal/core';
import { assertSameFields, chunkOfBatch, fieldsOf } from './arrow-columns.js';
import type { Chunk, Dataset, FieldInfo, Partition, ReadOptions } from './types.js';

const MAGIC = [0x41, 0x52, 0x52, 0x4f, 0x57, 0x31]; // "ARROW1"

function hasMagic(b: Uint8Array, at: number): boolean {
  return at >= 0 && MAGIC.every((m, i) => b[at + i] === m);
}

class ArrowBatchPartition implements Partition {
  constructor(
    readonly name: string,
    readonly rows: number,
    private readonly batch: RecordBatch,
  ) {}
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    yield chunkOfBatch(this.batch, ro.columns, this.name);
  }
}

async function listArrowFiles(path: string): Promise<string[]> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw Errors.data(path, `cannot open: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) return [path];
  const names = (await readdir(path)).filter((n) => !n.startsWith('.') && !n.startsWith('_') && /\.(arrow|feather|ipc)$/.test(n));
  return names.sort().map((n) => join(path, n));
}

/**
 * Open an Arrow IPC file, or a directory of them (`*.arrow`, `*.feather`, `*.ipc`, in sorted name order). Every
 * record batch becomes a partition named `<file>#<index>`; all files must share one schema.
 *
 * Errors: ERR_DATA naming the file for wrong magic, a damaged footer or record batch, or a schema that differs
 * from the first file's.
 */
export async function openArrowFile(path: string): Promise<Dataset> {
  const files = await listArrowFiles(path);
  if (files.length === 0) throw Errors.data(path, 'no Arrow IPC files (*.arrow, *.feather, *.ipc) in this directory');
  const partitions: Partition[] = [];
  let fields: FieldInfo[] | undefined;
  for (const file of files) {
    const bytes = new Uint8Array(await readFile(file));
    if (!hasMagic(bytes, 0) || !hasMagic(bytes, bytes.length - 6)) {
      throw Errors.data(file, `not an Arrow IPC file: wrong magic (expected 'ARROW1' at both ends of ${bytes.length} bytes)`);
    }
    try {
      const reader = RecordBatchReader.from(bytes);
      if (!reader.isFile()) throw Errors.data(file, 'not an Arrow IPC file (no footer found)');
      reader.open();
      const f = fieldsOf(reader.schema);
      if (!fields) fields = f;
      else assertSameFields(file, f, fields, files[0]!);
      for (let i = 0; i < reader.numRecordBatches; i++) {
        const b = reader.readRecordBatch(i);
        if (!b) throw Errors.data(file, `record batch ${i} of ${reader.numRecordBatches} could not be read`);
        partitions.push(new ArrowBatchPartition(`${file}#${i}`, b.numRows, b));
      }
    } catch (e) {
      if (isShoalError(e)) throw e;
      throw Errors.data(file, `malformed Arrow IPC file: ${(e as Error).message}`);
    }
  }
  return { source: path, schema: { fields: fields! }, partitions, close: async () => undefined };
}
