/**
 * A Spark output directory of Parquet part files, read with parquet-wasm.
 *
 * Discovery (identical on every rank, so partition names agree): walk `dir` recursively in sorted order; skip
 * names starting with `_` or `.` (`_SUCCESS`, `_temporary/`, `.part-*.crc`) and `*.crc`; take files ending in
 * `.parquet` or starting with `part-`; a directory named `col=value` (Hive partitioning, as Spark's partitionBy
 * writes) adds the constant column `col` to every row below it (value URL-decoded; `__HIVE_DEFAULT_PARTITION__`
 * is null). A partition column's type is int32 if every value is an int32 integer, float64 if every value is a
 * number, else dict: ids into the sorted distinct values (the same ids on every rank).
 *
 * Each part file's footer is read at open time (row counts per row group, Arrow schema); every part must have the
 * first part's schema. Partitions are files (default) or row groups (`granularity: 'rowGroup'`), named by their
 * path relative to `dir` (plus `#<row group>`).
 *
 * Decoding runs in `threads` piscina worker threads (default 1; 0 decodes on the calling thread); the decoded
 * Arrow IPC bytes are transferred, not copied, and chunk columns are views on them.
 */
import { readdir, stat } from 'node:fs/promises';
import { openAsBlob } from 'node:fs';
import { basename, join, relative, sep } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { ParquetFile } from 'parquet-wasm';
import { Errors, isShoalError } from '@shoal/core';
import { assertSameFields, chunkOfBatch, fieldsOf } from './arrow-columns.js';
import { decodeParquet, type ParquetTask } from './parquet-decode.js';
import { DecodePool } from './decode-pool.js';
import type { Chunk, Column, Dataset, FieldInfo, Partition, ReadOptions } from './types.js';

export interface ParquetDirOptions {
  /** Partition unit (default 'file'). */
  granularity?: 'file' | 'rowGroup';
  /** Decoder worker threads (default 1); 0 decodes inline on the calling thread. */
  threads?: number;
  /** Rows per decoded record batch (default: whole row groups). */
  batchSize?: number;
  /** Check the CRC-32 of pages that store one (pyarrow's write_page_checksum) before decoding (default true). */
  verifyChecksums?: boolean;
}

interface PartFile {
  path: string;
  rel: string;
  /** Partition-folder values, by column. */
  keys: Map<string, string | null>;
}

const HIVE_NULL = '__HIVE_DEFAULT_PARTITION__';

async function discover(root: string, dir: string, keys: Map<string, string | null>, out: PartFile[]): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw Errors.data(dir, `cannot list Parquet directory: ${(e as Error).message}`);
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    const n = e.name;
    if (n.startsWith('_') || n.startsWith('.') || n.endsWith('.crc')) continue;
    const p = join(dir, n);
    if (e.isDirectory()) {
      const eq = n.indexOf('=');
      if (eq <= 0) continue;
      const k = decodeURIComponent(n.slice(0, eq));
      const v = decodeURIComponent(n.slice(eq + 1));
      const next = new Map(keys);
      next.set(k, v === HIVE_NULL ? null : v);
      await discover(root, p, next, out);
    } else if (e.isFile() && (n.endsWith('.parquet') || n.startsWith('part-'))) {
      out.push({ path: p, rel: relative(root, p).split(sep).join('/'), keys });
    }
  }
}

interface KeyColumn {
  info: FieldInfo;
  /** value -> number (int32, float64 or dict id). */
  encode: (v: string) => number;
}

function keyColumns(parts: PartFile[], root: string): Map<string, KeyColumn> {
  const names = new Set<string>();
  for (const p of parts) for (const k of p.keys.keys()) names.add(k);
  const out = new Map<string, KeyColumn>();
  for (const name of [...names].sort()) {
    const values = new Set<string>();
    for (const p of parts) {
      if (!p.keys.has(name)) throw Errors.data(join(root, p.rel), `partition column '${name}' has no folder level above this part file`, { column: name });
      const v = p.keys.get(name);
      if (v != null) values.add(v);
    }
    const vals = [...values];
    const num = (s: string) => s.trim() !== '' && Number.isFinite(Number(s));
    if (vals.every((s) => num(s) && Number.isInteger(Number(s)) && Math.abs(Number(s)) <= 2147483647)) {
      out.set(name, { info: { name, kind: 'int32', width: 1, nullable: true, sourceType: 'partition folder (int32)' }, encode: Number });
    } else if (vals.every(num)) {
      out.set(name, { info: { name, kind: 'float64', width: 1, nullable: true, sourceType: 'partition folder (float64)' }, encode: Number });
    } else {
      const dict = vals.sort();
      const ids = new Map(dict.map((s, i) => [s, i]));
      out.set(name, {
        info: { name, kind: 'dict', width: 1, nullable: true, sourceType: 'partition folder (dict)', dictionary: dict },
        encode: (s) => ids.get(s)!,
      });
    }
  }
  return out;
}

function constantColumn(k: KeyColumn, v: string | null, rows: number): Column {
  const values = k.info.kind === 'float64' ? new Float64Array(rows) : new Int32Array(rows);
  if (v === null) {
    return { values, width: 1, nullCount: rows, validity: new Uint8Array((rows + 7) >> 3), validityOffset: 0 };
  }
  values.fill(k.encode(v));
  return { values, width: 1, nullCount: 0 };
}

type Decoder = DecodePool<ParquetTask, Uint8Array>;

class ParquetPartition implements Partition {
  constructor(
    readonly name: string,
    readonly rows: number,
    private readonly file: PartFile,
    private readonly rowGroups: number[] | undefined,
    private readonly fileFields: ReadonlySet<string>,
    private readonly keys: Map<string, KeyColumn>,
    private readonly decoder: Decoder,
    private readonly opts: ParquetDirOptions,
  ) {}
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    const fileCols = ro.columns.filter((c) => this.fileFields.has(c));
    for (const c of ro.columns) {
      if (!this.fileFields.has(c) && !this.keys.has(c)) throw Errors.data(this.name, `missing column '${c}'`, { column: c });
    }
    if (ro.signal?.aborted) throw Errors.aborted(`reading ${this.name}`, ro.signal.reason);
    let ipc: Uint8Array;
    try {
      ipc = await this.decoder.run({
        path: this.file.path,
        columns: fileCols,
        ...(this.rowGroups ? { rowGroups: this.rowGroups, io: 'ranges' as const } : {}),
        ...(this.opts.batchSize ? { batchSize: this.opts.batchSize } : {}),
        ...(this.opts.verifyChecksums === false ? { verifyChecksums: false } : {}),
      });
    } catch (e) {
      if (isShoalError(e)) throw e;
      throw Errors.data(this.file.path, `malformed Parquet file: ${(e as Error).message}`);
    }
    const table = tableFromIPC(ipc);
    let rows = 0;
    for (const b of table.batches) {
      const chunk = chunkOfBatch(b, fileCols, this.name);
      for (const c of ro.columns) {
        const k = this.keys.get(c);
        if (k) chunk.columns[c] = constantColumn(k, this.file.keys.get(c) ?? null, b.numRows);
      }
      rows += b.numRows;
      yield chunk;
    }
    if (rows !== this.rows) throw Errors.data(this.name, `decoded ${rows} rows but the footer promises ${this.rows}`);
  }
}

/**
 * Open a Spark-style directory of Parquet part files (see the module comment for discovery and naming), or a
 * single Parquet file.
 * A directory with no part files is a valid, empty dataset (Spark writes just `_SUCCESS` for an empty result).
 *
 * Errors: ERR_DATA naming the file for an unreadable footer (wrong magic, truncation, corruption) or a schema that
 * differs from the first part's; naming the column for a partition folder that clashes with a file column.
 * The returned dataset owns decoder threads: call `close()`.
 */
export async function openParquetDir(dir: string, opts: ParquetDirOptions = {}): Promise<Dataset> {
  const files: PartFile[] = [];
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    throw Errors.data(dir, `cannot open: ${(e as Error).message}`);
  }
  if (st.isDirectory()) await discover(dir, dir, new Map(), files);
  else files.push({ path: dir, rel: basename(dir), keys: new Map() });
  const keys = keyColumns(files, dir);
  let fields: FieldInfo[] | undefined;
  let first = '';
  const partitions: Partition[] = [];
  const decoder: Decoder = new DecodePool('Parquet dataset', opts.threads ?? 1, new URL('./parquet-worker.js', import.meta.url), decodeParquet);
  const meta: { file: PartFile; groups: number[] }[] = [];
  for (const f of files) {
    let pf: ParquetFile | undefined;
    try {
      pf = await ParquetFile.fromFile(await openAsBlob(f.path));
      const md = pf.metadata();
      const groups = md.rowGroups().map((g) => g.numRows());
      const got = fieldsOf(tableFromIPC(pf.schema().intoIPCStream()).schema);
      if (!fields) {
        fields = got;
        first = f.path;
      } else assertSameFields(f.path, got, fields, first);
      meta.push({ file: f, groups });
    } catch (e) {
      if (isShoalError(e)) throw e;
      throw Errors.data(f.path, `malformed Parquet file: ${(e as Error).message ?? String(e)}`);
    } finally {
      pf?.free();
    }
  }
  fields ??= [];
  const fileFields = new Set(fields.map((f) => f.name));
  for (const k of keys.keys()) {
    if (fileFields.has(k)) throw Errors.data(dir, `partition folder column '${k}' is also a column inside the part files`, { column: k });
  }
  for (const { file, groups } of meta) {
    if (opts.granularity === 'rowGroup') {
      groups.forEach((n, i) => partitions.push(new ParquetPartition(`${file.rel}#${i}`, n, file, [i], fileFields, keys, decoder, opts)));
    } else {
      const n = groups.reduce((a, b) => a + b, 0);
      partitions.push(new ParquetPartition(file.rel, n, file, undefined, fileFields, keys, decoder, opts));
    }
  }
  return {
    source: dir,
    schema: { fields: [...fields, ...[...keys.values()].map((k) => k.info)] },
    partitions,
    close: () => decoder.close(),
  };
}
