/**
 * Parquet page checksums. A writer may store, in each page header, the CRC-32 of the page's bytes as written
 * (compressed, after the header: Parquet's `PageHeader.crc`, the zlib polynomial). pyarrow writes them with
 * `write_page_checksum=True` and rejects a page that does not match; parquet-wasm (the decoder shoal uses) does not
 * check them, so a flipped byte inside a page would decode to wrong values. `verifyPageChecksums` walks the pages
 * of the column chunks a read will decode and compares every stored CRC with one computed by `node:zlib`.
 *
 * Pages without a CRC are accepted (most writers, Spark's included, leave it out); Arrow IPC has no checksums at
 * all (see datasets/README.md). The footer and page headers are parsed by hyparquet (Thrift compact protocol).
 */
import { crc32 } from 'node:zlib';
import { parquetMetadataAsync, type AsyncBuffer } from 'hyparquet';
import { parquetHeader } from 'hyparquet/src/column.js';
import { Errors } from '@shoal/core';

/** Random access to a Parquet file's bytes (the whole file in memory, or reads of a file on disk). */
export interface ByteSource {
  readonly byteLength: number;
  read(start: number, end: number): Promise<Uint8Array>;
}

export function bytesSource(bytes: Uint8Array): ByteSource {
  return { byteLength: bytes.byteLength, read: async (s, e) => bytes.subarray(s, e) };
}

export function blobSource(blob: Blob): ByteSource {
  return { byteLength: blob.size, read: async (s, e) => new Uint8Array(await blob.slice(s, e).arrayBuffer()) };
}

export interface VerifyScope {
  /** Row groups that will be read; undefined: all. */
  rowGroups?: readonly number[];
  /** Top-level columns that will be read; undefined: all. */
  columns?: readonly string[];
}

/**
 * Check the CRC of every page that stores one, in the chunks of `scope`. Returns the number of pages checked.
 * Throws ERR_DATA naming the file, row group, column and page offset of the first page whose bytes do not match.
 */
export async function verifyPageChecksums(path: string, src: ByteSource, scope: VerifyScope = {}): Promise<number> {
  const asyncBuffer: AsyncBuffer = {
    byteLength: src.byteLength,
    slice: async (s, e) => {
      const b = await src.read(s, e ?? src.byteLength);
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    },
  };
  const meta = await parquetMetadataAsync(asyncBuffer);
  const wanted = scope.columns ? new Set(scope.columns) : undefined;
  let checked = 0;
  const groups = scope.rowGroups ?? meta.row_groups.map((_, i) => i);
  for (const g of groups) {
    const rg = meta.row_groups[g];
    if (!rg) throw Errors.data(path, `row group ${g} does not exist (the file has ${meta.row_groups.length})`);
    for (const chunk of rg.columns) {
      const cm = chunk.meta_data;
      if (!cm) continue;
      const column = cm.path_in_schema.join('.');
      if (wanted && !wanted.has(cm.path_in_schema[0]!)) continue;
      // hyparquet's own rule: some writers leave dictionary_page_offset at 0 for "none".
      const start = Number(cm.dictionary_page_offset || cm.data_page_offset);
      const end = start + Number(cm.total_compressed_size);
      if (start < 0 || end > src.byteLength) {
        throw Errors.data(path, `row group ${g}, column '${column}': chunk bytes ${start}..${end} lie outside the file`);
      }
      const bytes = await src.read(start, end);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const reader = { view, offset: 0 };
      while (reader.offset < bytes.byteLength) {
        const at = start + reader.offset;
        let header;
        try {
          header = parquetHeader(reader);
        } catch (e) {
          throw Errors.data(path, `row group ${g}, column '${column}': unreadable page header at byte ${at}: ${(e as Error).message}`);
        }
        const size = header.compressed_page_size;
        if (!(size >= 0) || reader.offset + size > bytes.byteLength) {
          throw Errors.data(path, `row group ${g}, column '${column}': page at byte ${at} claims ${size} bytes past its chunk`);
        }
        if (header.crc !== undefined) {
          const got = crc32(bytes.subarray(reader.offset, reader.offset + size)) | 0;
          if (got !== (header.crc | 0)) {
            throw Errors.data(path,
              `row group ${g}, column '${column}': page at byte ${at} fails its CRC-32 check (stored ${hex(header.crc)}, ` +
              `computed ${hex(got)}): the file is corrupt (verifyChecksums: false skips the check)`,
              { rowGroup: g, column, offset: at });
          }
          checked += 1;
        }
        reader.offset += size;
      }
    }
  }
  return checked;
}

const hex = (v: number) => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;
