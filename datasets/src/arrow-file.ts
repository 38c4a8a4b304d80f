/**
 * Arrow IPC files (`.arrow`, `.feather` v2): random access, one partition per record batch.
 *
 * Opening reads only each file's magic bytes, footer and record-batch headers (for row counts); reading a
 * partition reads just that record batch's bytes from disk into one buffer it owns, and its columns are views on
 * that buffer. A rank therefore reads only the batches assigned to it. A damaged footer or header fails at open
 * time, naming the file; a damaged body fails when that batch is read.
 */
import { open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Message, RecordBatchReader, Table, tableToIPC, type Schema } from 'apache-arrow';
import { Errors, isShoalError } from '@shoal/core';
import { assertSameFields, chunkOfBatch, fieldsOf } from './arrow-columns.js';
import type { Chunk, Dataset, FieldInfo, Partition, ReadOptions } from './types.js';

const MAGIC = [0x41, 0x52, 0x52, 0x4f, 0x57, 0x31]; // "ARROW1"
const EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

function hasMagic(b: Uint8Array, at: number): boolean {
  return at >= 0 && MAGIC.every((m, i) => b[at + i] === m);
}

async function readAt(fh: FileHandle, into: Uint8Array, at: number, file: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, at + done);
    if (bytesRead === 0) throw Errors.data(file, `truncated Arrow IPC file: wanted ${into.length} bytes at offset ${at}, file ends first`);
    done += bytesRead;
  }
}

class ArrowBatchPartition implements Partition {
  constructor(
    readonly name: string,
    readonly rows: number,
    private readonly file: string,
    /** The schema as an IPC stream prefix (schema message, no end marker). */
    private readonly schemaBytes: Uint8Array,
    private readonly offset: number,
    private readonly length: number,
  ) {}
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    if (ro.signal?.aborted) throw Errors.aborted(`reading ${this.name}`, ro.signal.reason);
    // One buffer laid out as a tiny IPC stream: schema, this record batch (read from disk in place), end marker.
    const buf = new Uint8Array(this.schemaBytes.length + this.length + EOS.length);
    buf.set(this.schemaBytes, 0);
    buf.set(EOS, this.schemaBytes.length + this.length);
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.file, 'r');
      await readAt(fh, buf.subarray(this.schemaBytes.length, this.schemaBytes.length + this.length), this.offset, this.file);
    } catch (e) {
      if (isShoalError(e)) throw e;
      throw Errors.data(this.file, `cannot read: ${(e as Error).message}`);
    } finally {
      await fh?.close();
    }
    let chunk: Chunk | undefined;
    try {
      const reader = RecordBatchReader.from(buf);
      reader.open();
      const batches = [...reader];
      if (batches.length !== 1 || batches[0]!.numRows !== this.rows) {
        throw Errors.data(this.name, `record batch decoded to ${batches.length} batches / ${batches[0]?.numRows ?? 0} rows, header says ${this.rows}`);
      }
      chunk = chunkOfBatch(batches[0]!, ro.columns, this.name);
    } catch (e) {
      if (isShoalError(e)) throw e;
      throw Errors.data(this.name, `malformed Arrow IPC record batch: ${(e as Error).message}`);
    }
    yield chunk;
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

/** Footer, schema and per-batch (offset, length, rows) of one file. */
async function indexFile(file: string): Promise<{ schema: Schema; blocks: { offset: number; length: number; rows: number }[] }> {
  const fh = await open(file, 'r').catch((e: Error) => {
    throw Errors.data(file, `cannot open: ${e.message}`);
  });
  try {
    const size = (await fh.stat()).size;
    const head = new Uint8Array(Math.min(8, size));
    const tail = new Uint8Array(Math.min(6, size));
    await readAt(fh, head, 0, file);
    await readAt(fh, tail, size - tail.length, file);
    if (!hasMagic(head, 0) || !hasMagic(tail, 0)) {
      throw Errors.data(file, `not an Arrow IPC file: wrong magic (expected 'ARROW1' at both ends of ${size} bytes)`);
    }
    let reader;
    try {
      reader = await RecordBatchReader.from(fh);
      await reader.open();
    } catch (e) {
      throw Errors.data(file, `malformed Arrow IPC file (footer): ${(e as Error).message}`);
    }
    const footer = reader.isFile() ? reader.footer : null;
    if (!footer) throw Errors.data(file, 'not an Arrow IPC file (no footer found)');
    if (footer.numDictionaries > 0) throw Errors.data(file, 'dictionary-encoded Arrow files are not supported (no batchable column uses dictionaries)');
    const blocks: { offset: number; length: number; rows: number }[] = [];
    for (let i = 0; i < footer.numRecordBatches; i++) {
      const b = footer.getRecordBatch(i);
      const offset = Number(b?.offset ?? -1);
      const metaLen = Number(b?.metaDataLength ?? -1);
      const bodyLen = Number(b?.bodyLength ?? -1);
      if (!b || offset < 8 || metaLen < 8 || bodyLen < 0 || offset + metaLen + bodyLen > size) {
        throw Errors.data(file, `malformed Arrow IPC file: footer block ${i} points outside the file`);
      }
      const meta = new Uint8Array(metaLen);
      await readAt(fh, meta, offset, file);
      const view = new DataView(meta.buffer);
      const skip = view.getInt32(0, true) === -1 ? 8 : 4;
      let rows: number;
      try {
        const msg = Message.decode(meta.subarray(skip));
        if (!msg.isRecordBatch()) throw new Error(`message ${i} is not a record batch`);
        rows = Number(msg.header().length);
      } catch (e) {
        throw Errors.data(file, `malformed Arrow IPC file: record batch ${i} header: ${(e as Error).message}`);
      }
      blocks.push({ offset, length: metaLen + bodyLen, rows });
    }
    return { schema: reader.schema, blocks };
  } finally {
    await fh.close();
  }
}

/**
 * Open an Arrow IPC file, or a directory of them (`*.arrow`, `*.feather`, `*.ipc`, in sorted name order). Every
 * record batch becomes a partition named `<file>#<index>`; all files must share one schema.
 *
 * Errors: ERR_DATA naming the file for wrong magic, a damaged footer or record batch header, dictionary-encoded
 * files, or a schema that differs from the first file's.
 */
export async function openArrowFile(path: string): Promise<Dataset> {
  const files = await listArrowFiles(path);
  if (files.length === 0) throw Errors.data(path, 'no Arrow IPC files (*.arrow, *.feather, *.ipc) in this directory');
  const partitions: Partition[] = [];
  let fields: FieldInfo[] | undefined;
  for (const file of files) {
    const { schema, blocks } = await indexFile(file);
    const f = fieldsOf(schema);
    if (!fields) fields = f;
    else assertSameFields(file, f, fields, files[0]!);
    const ipc = tableToIPC(new Table(schema), 'stream');
    const schemaBytes = ipc.subarray(0, ipc.length - EOS.length);
    blocks.forEach((b, i) => partitions.push(new ArrowBatchPartition(`${file}#${i}`, b.rows, file, schemaBytes, b.offset, b.length)));
  }
  return { source: path, schema: { fields: fields! }, partitions, close: async () => undefined };
}
