/**
 * Decode part of a Parquet file to Arrow IPC stream bytes with parquet-wasm. Runs either inline or in a piscina
 * worker (`parquet-worker.ts`); the returned bytes are a fresh JS buffer (not wasm memory), owned by the caller and
 * transferable to another thread without a copy.
 */
import { readFile } from 'node:fs/promises';
import { openAsBlob } from 'node:fs';
import { ParquetFile, readParquet } from 'parquet-wasm';
import { blobSource, bytesSource, verifyPageChecksums } from './parquet-crc.js';

export interface ParquetTask {
  path: string;
  /** Row groups to read; undefined: all. */
  rowGroups?: number[];
  /** Columns to read (names in the file); undefined: all. */
  columns?: string[];
  /** Rows per Arrow record batch (default: one batch per row group, up to 1 << 20 rows). */
  batchSize?: number;
  /**
   * 'whole': read the file into memory and decode (fast for file partitions);
   * 'ranges': read only the byte ranges of the requested row groups (better when a file is split into many
   * row-group partitions).
   */
  io?: 'whole' | 'ranges';
  /** Check the CRC-32 of every page that stores one before decoding (default true; `parquet-crc.ts`). */
  verifyChecksums?: boolean;
}

export async function decodeParquet(task: ParquetTask): Promise<Uint8Array> {
  const opts = {
    batchSize: task.batchSize ?? 1 << 20,
    ...(task.rowGroups ? { rowGroups: task.rowGroups } : {}),
    ...(task.columns ? { columns: task.columns } : {}),
  };
  const scope = { ...(task.rowGroups ? { rowGroups: task.rowGroups } : {}), ...(task.columns ? { columns: task.columns } : {}) };
  if (task.io === 'ranges') {
    const blob = await openAsBlob(task.path);
    if (task.verifyChecksums !== false) await verifyPageChecksums(task.path, blobSource(blob), scope);
    const file = await ParquetFile.fromFile(blob);
    try {
      const t = await file.read(opts);
      return t.intoIPCStream();
    } finally {
      file.free();
    }
  }
  const bytes = await readFile(task.path);
  if (task.verifyChecksums !== false) await verifyPageChecksums(task.path, bytesSource(bytes), scope);
  const t = readParquet(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), opts);
  return t.intoIPCStream();
}
