/**
 * CSV files, or a folder of them (the shipped Online Retail data: one file per day), as a dataset with one
 * partition per file, named by file name.
 *
 * `schema` lists the columns to expose and their types (see csv-parse.ts); other columns are skipped. Opening
 * scans every file once (in the decoder threads): it checks the header, counts the records (so partition row
 * counts are known for balanced sharding and `localSteps`), and builds the vocabulary of every category column
 * given without one: the sorted distinct non-empty values over all files, so every rank that opens the same
 * files gets the same ids with no communication. Reading a partition decodes its file again, straight into typed
 * arrays (one packed buffer per file, transferred from the worker; chunk columns are views on it).
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Errors, isShoalError } from '@shoal/core';
import { csvFormatProblem, type CsvColumnPlan, type CsvColumnType, type CsvDecoded, type CsvFormat, type CsvScanResult } from './csv-parse.js';
import { runCsvTask, type CsvTask } from './csv-task.js';
import { DecodePool } from './decode-pool.js';
import type { Chunk, Column, Dataset, FieldInfo, Partition, ReadOptions } from './types.js';

export type { CsvColumnType } from './csv-parse.js';

/** Column name -> type, for the columns to expose. */
export type CsvSchema = Record<string, CsvColumnType>;

export interface CsvOptions {
  /** Decoder worker threads (default 1; 0 decodes on the calling thread). */
  threads?: number;
  /** Field separator, one or more characters (default `,`; e.g. `\t`, `|`, `::`). */
  delimiter?: string;
  /** Quote character (default `"`); null turns quoting off (a quote is then an ordinary character). */
  quote?: string | null;
  /** The first line names the columns (default true). Without it, columns are named by `names` or '0', '1', ... */
  header?: boolean;
  /** Column names of header-less files, in field order. */
  names?: readonly string[];
}

type Pool = DecodePool<CsvTask, CsvScanResult | CsvDecoded>;

/** Re-raise a worker's error as ERR_DATA (structured clone drops the ShoalError class). */
function dataError(path: string, e: unknown): Error {
  if (isShoalError(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return Errors.data(path, msg.startsWith(`${path}: `) ? msg.slice(path.length + 2) : msg);
}

class CsvPartition implements Partition {
  constructor(
    readonly name: string,
    readonly rows: number,
    private readonly path: string,
    private readonly plans: Map<string, CsvColumnPlan>,
    private readonly pool: Pool,
    private readonly format: CsvFormat,
  ) {}
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    const columns = ro.columns.map((c) => {
      const p = this.plans.get(c);
      if (!p) throw Errors.data(this.path, `missing column '${c}' (not in the CSV schema)`, { column: c });
      return p;
    });
    if (ro.signal?.aborted) throw Errors.aborted(`reading ${this.path}`, ro.signal.reason);
    let d: CsvDecoded;
    try {
      d = (await this.pool.run({ kind: 'decode', path: this.path, format: this.format, columns, rows: this.rows })) as CsvDecoded;
    } catch (e) {
      throw dataError(this.path, e);
    }
    if (d.rows !== this.rows) throw Errors.data(this.path, `file changed since it was opened: ${d.rows} records, ${this.rows} before`);
    const out: Record<string, Column> = {};
    const buf = d.buffer.buffer;
    const base = d.buffer.byteOffset;
    for (const c of d.columns) {
      const values =
        c.kind === 'float64'
          ? new Float64Array(buf, base + c.offset, c.length)
          : c.kind === 'float32'
            ? new Float32Array(buf, base + c.offset, c.length)
            : new Int32Array(buf, base + c.offset, c.length);
      out[c.name] =
        c.nullCount > 0
          ? {
              values, width: 1, nullCount: c.nullCount, validity: new Uint8Array(buf, base + c.validityOffset, (d.rows + 7) >> 3), validityOffset: 0,
              ...(c.firstNullLine ? { firstNullAt: `line ${c.firstNullLine}` } : {}),
            }
          : { values, width: 1, nullCount: 0 };
    }
    yield { source: this.path, rows: d.rows, columns: out };
  }
}

async function listCsv(pathOrDir: string): Promise<string[]> {
  let st;
  try {
    st = await stat(pathOrDir);
  } catch (e) {
    throw Errors.data(pathOrDir, `cannot open: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) return [pathOrDir];
  const names = (await readdir(pathOrDir)).filter((n) => !n.startsWith('.') && !n.startsWith('_') && /\.csv(\.gz)?$/i.test(n));
  return names.sort().map((n) => join(pathOrDir, n));
}

function fieldOfCsv(name: string, t: CsvColumnType, dictionary?: readonly string[]): FieldInfo {
  const base = { name, width: 1, nullable: true };
  if (typeof t === 'string') {
    const kind = t === 'timestamp' ? 'int32' : t;
    return { ...base, kind, sourceType: `csv ${t}` };
  }
  if (t.type === 'hash') return { ...base, kind: 'int32', sourceType: `csv hash(${t.buckets})` };
  return { ...base, kind: 'dict', sourceType: 'csv category', dictionary: dictionary! };
}

/**
 * Open a CSV file or a folder of `*.csv` / `*.csv.gz` files (sorted by name; `_*` and `.*` ignored); a file whose
 * name ends in `.gz` is gunzipped. Every file must have a header naming every column of `schema`, or, with
 * `header: false`, as many fields as `names` (columns then named by `names`, or by position '0', '1', ...). Errors: ERR_DATA naming the file (and line, column) for a missing
 * column, a malformed record, or a value of the wrong type. The dataset owns decoder threads: call `close()`.
 */
export async function openCsv(pathOrDir: string, schema: CsvSchema, opts: CsvOptions = {}): Promise<Dataset> {
  const names = Object.keys(schema);
  if (names.length === 0) throw Errors.invalidArg('schema', 'must name at least one column');
  for (const [n, t] of Object.entries(schema)) {
    if (typeof t === 'object' && t.type === 'hash' && !(Number.isInteger(t.buckets) && t.buckets >= 1 && t.buckets <= 2147483647)) {
      throw Errors.invalidArg(`schema.${n}.buckets`, 'must be an integer in [1, 2^31)');
    }
  }
  const format: CsvFormat = {
    delimiter: opts.delimiter ?? ',', quote: opts.quote === undefined ? '"' : opts.quote, header: opts.header ?? true,
    ...(opts.names !== undefined ? { names: opts.names } : {}),
  };
  const problem = csvFormatProblem(format);
  if (problem !== null) throw Errors.invalidArg('CSV options', problem);
  const files = await listCsv(pathOrDir);
  const pool: Pool = new DecodePool('CSV dataset', opts.threads ?? 1, new URL('./csv-worker.js', import.meta.url), runCsvTask);
  try {
    const distinct = names.filter((n) => {
      const t = schema[n]!;
      return typeof t === 'object' && t.type === 'category' && !t.vocab;
    });
    const scans = await Promise.all(
      files.map((path) =>
        pool.run({ kind: 'scan', path, format, distinct, required: names }).then(
          (r) => r as CsvScanResult,
          (e) => Promise.reject(dataError(path, e)),
        ),
      ),
    );
    const vocab = new Map<string, string[]>();
    for (const c of distinct) {
      const all = new Set<string>();
      for (const s of scans) for (const v of s.distinct[c]!) all.add(v);
      vocab.set(c, [...all].sort());
    }
    const plans = new Map<string, CsvColumnPlan>();
    const fields: FieldInfo[] = [];
    for (const n of names) {
      const t = schema[n]!;
      if (typeof t === 'string') {
        plans.set(n, { name: n, type: t });
        fields.push(fieldOfCsv(n, t));
      } else if (t.type === 'hash') {
        plans.set(n, { name: n, type: 'hash', buckets: t.buckets });
        fields.push(fieldOfCsv(n, t));
      } else {
        const v = t.vocab ?? vocab.get(n)!;
        plans.set(n, { name: n, type: 'category', vocab: v, ...(t.unknown !== undefined ? { unknown: t.unknown } : {}) });
        fields.push(fieldOfCsv(n, t, v));
      }
    }
    const partitions = files.map((path, i) => new CsvPartition(basename(path), scans[i]!.rows, path, plans, pool, format));
    return { source: pathOrDir, schema: { fields }, partitions, close: () => pool.close() };
  } catch (e) {
    await pool.close();
    throw e;
  }
}
