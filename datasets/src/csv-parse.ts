/**
 * A byte-level CSV parser (RFC 4180: header line, `,` separator, `"` quoting with `""` escapes, LF or CRLF) that
 * decodes selected columns straight into typed arrays, without building row objects or per-field strings for
 * numbers. Pure functions, run inline or in a worker thread (`csv-worker.ts`).
 *
 * The dialect is configurable (`CsvFormat`): any delimiter string (`\t`, `|`, or several characters such as the
 * `::` of rating logs), quoting off or another quote character, and files without a header line, whose fields are
 * then named by their 0-based position (`'0'`, `'1'`, ...) or by the names given.
 *
 * Column types:
 *  - 'int32'     integer text; `17850.0` is accepted (a zero fraction), `1.5` is not;
 *  - 'float32' / 'float64'   decimal or exponent text;
 *  - 'timestamp' `YYYY-MM-DD[ T]HH:MM[:SS]` or `YYYY-MM-DD`, as int32 seconds since 1970-01-01 UTC;
 *  - category    string -> int32 id through a vocabulary (see csv.ts for how it is built);
 *  - hash        string -> FNV-1a 32 of its UTF-8 bytes mod `buckets` (the same id on every rank, no vocabulary).
 * An empty field is null. Errors name the file, the line and the column.
 */
import { Errors } from '@shoal/core';
import { fnv1a, parseFloatBytes, parseIntBytes, parseTimestampBytes, text } from './csv-fields.js';

export type CsvColumnType =
  | 'int32'
  | 'float32'
  | 'float64'
  | 'timestamp'
  | { type: 'category'; vocab?: readonly string[]; unknown?: number }
  | { type: 'hash'; buckets: number };

/** The CSV dialect. */
export interface CsvFormat {
  /** Field separator, one or more characters (default `,`); must not contain the quote, CR or LF. */
  delimiter: string;
  /** Quote character (default `"`), or null: no quoting, a quote is an ordinary character. */
  quote: string | null;
  /** The first line names the columns (default true). Without it, fields are named `names` or '0', '1', ... */
  header: boolean;
  /** Column names of a header-less file, in field order (the field count must match). */
  names?: readonly string[];
}

export const DEFAULT_CSV_FORMAT: CsvFormat = { delimiter: ',', quote: '"', header: true };

/** Check a dialect; returns a message naming the bad option, or null. */
export function csvFormatProblem(f: CsvFormat): string | null {
  if (typeof f.delimiter !== 'string' || f.delimiter.length === 0) return 'delimiter must be a non-empty string';
  if (/[\r\n]/.test(f.delimiter)) return 'delimiter must not contain a line break';
  if (f.quote !== null && (typeof f.quote !== 'string' || new TextEncoder().encode(f.quote).length !== 1 || /[\r\n]/.test(f.quote))) {
    return 'quote must be one single-byte character or null';
  }
  if (f.quote !== null && f.delimiter.includes(f.quote)) return `delimiter ${JSON.stringify(f.delimiter)} must not contain the quote character`;
  if (f.names !== undefined) {
    if (f.header) return 'names are for header-less files (header: false)';
    if (!Array.isArray(f.names) || f.names.length === 0 || new Set(f.names).size !== f.names.length) return 'names must be distinct column names';
  }
  return null;
}

/** What the decoder needs per selected column (vocabularies resolved). */
export interface CsvColumnPlan {
  name: string;
  type: 'int32' | 'float32' | 'float64' | 'timestamp' | 'category' | 'hash';
  vocab?: readonly string[];
  unknown?: number;
  buckets?: number;
}

export interface CsvDecodeTask {
  kind: 'decode';
  path: string;
  format?: CsvFormat;
  columns: CsvColumnPlan[];
  /** Record count from the open-time scan: saves the counting pass (a different count raises). */
  rows?: number;
}

export interface CsvScanTask {
  kind: 'scan';
  path: string;
  format?: CsvFormat;
  /** Columns whose distinct values are collected (categories without a vocabulary). */
  distinct: string[];
  /** Columns that must be present in the header. */
  required: string[];
}

export interface CsvScanResult {
  rows: number;
  header: string[];
  distinct: Record<string, string[]>;
}

/** Decoded columns packed into one buffer (so a worker can transfer it in one piece). */
export interface CsvDecoded {
  rows: number;
  buffer: Uint8Array;
  columns: { name: string; kind: 'int32' | 'float32' | 'float64'; offset: number; length: number; nullCount: number; firstNullLine?: number; validityOffset: number }[];
}

const LF = 0x0a;
const CR = 0x0d;

const decoder = new TextDecoder('utf-8', { fatal: false });

/** A dialect as bytes: the delimiter's UTF-8 bytes, the quote byte (-1: none), the bytes that stop an unquoted field. */
interface ByteFormat { delim: Uint8Array; quote: number; stop: Uint8Array }

function byteFormat(f: CsvFormat | undefined): ByteFormat {
  const fmt = f ?? DEFAULT_CSV_FORMAT;
  const delim = new TextEncoder().encode(fmt.delimiter);
  const stop = new Uint8Array(256);
  stop[delim[0]!] = 1;
  stop[LF] = 1;
  stop[CR] = 1;
  return { delim, quote: fmt.quote === null ? -1 : fmt.quote.charCodeAt(0), stop };
}

/** Does the delimiter start at b[i]? */
function delimAt(b: Uint8Array, i: number, d: Uint8Array): boolean {
  if (b[i] !== d[0]) return false;
  for (let k = 1; k < d.length; k++) if (b[i + k] !== d[k]) return false;
  return i + d.length <= b.length;
}

/**
 * A cursor over the records of `b` (after the header). `next()` reads one record and leaves, for every selected
 * field (want[field] = slot >= 0), its byte range in `start[slot]`..`end[slot]` and whether it was quoted (quoted
 * fields still contain their `""` escapes); it returns false at the end of the input. Blank lines are skipped.
 */
class Records {
  readonly start: Int32Array;
  readonly end: Int32Array;
  readonly quoted: Uint8Array;
  /** Line number (1-based) where the current record starts. */
  line = 1;
  private i: number;
  private nextLine: number;
  constructor(
    private readonly b: Uint8Array,
    from: number,
    private readonly nFields: number,
    private readonly want: Int32Array,
    private readonly path: string,
    slots: number,
    private readonly fmt: ByteFormat,
    private readonly firstLine = 2,
  ) {
    this.i = from;
    this.nextLine = firstLine;
    this.start = new Int32Array(slots);
    this.end = new Int32Array(slots);
    this.quoted = new Uint8Array(slots);
  }
  next(): boolean {
    const b = this.b;
    const n = b.length;
    let i = this.i;
    let line = this.nextLine;
    // Skip blank lines (a trailing newline, CRLF included).
    for (;;) {
      if (i >= n) {
        this.i = i;
        return false;
      }
      if (b[i] === LF) {
        i++;
        line++;
      } else if (b[i] === CR && b[i + 1] === LF) {
        i += 2;
        line++;
      } else break;
    }
    const startLine = line;
    const want = this.want;
    const nFields = this.nFields;
    const { delim, quote, stop } = this.fmt;
    const dlen = delim.length;
    let field = 0;
    for (;;) {
      let s = i;
      let e: number;
      let q = 0;
      if (b[i] === quote) {
        q = 1;
        s = ++i;
        for (;;) {
          if (i >= n) throw Errors.data(this.path, `line ${startLine}: unterminated quoted field (file ends inside quotes)`, { line: startLine });
          const c = b[i]!;
          if (c === quote) {
            if (b[i + 1] === quote) {
              i += 2;
              continue;
            }
            break;
          }
          if (c === LF) line++;
          i++;
        }
        e = i++;
        const c = i < n ? b[i]! : LF;
        if (c !== LF && c !== CR && !delimAt(b, i, delim)) {
          throw Errors.data(this.path, `line ${line}: unexpected character after a closing quote in field ${field + 1}`, { line });
        }
      } else {
        for (;;) {
          while (i < n && stop[b[i]!] === 0) i++;
          // A longer delimiter's first byte alone is an ordinary character.
          if (dlen > 1 && i < n && b[i] === delim[0] && !delimAt(b, i, delim)) i++;
          else break;
        }
        e = i;
      }
      if (field < nFields) {
        const slot = want[field]!;
        if (slot >= 0) {
          this.start[slot] = s;
          this.end[slot] = e;
          this.quoted[slot] = q;
        }
      }
      field++;
      if (i < n && delimAt(b, i, delim)) {
        i += dlen;
        continue;
      }
      if (i < n && b[i] === CR) i++;
      if (i < n && b[i] === LF) i++;
      else if (i < n) throw Errors.data(this.path, `line ${line}: stray carriage return`, { line });
      break;
    }
    if (field !== nFields) {
      throw Errors.data(this.path, `line ${startLine}: ${field} fields but ${this.firstLine === 2 ? 'the header has' : 'the first line has'} ${nFields}`, { line: startLine });
    }
    this.line = startLine;
    this.nextLine = line + 1;
    this.i = i;
    return true;
  }
}

/**
 * The column names and where the records start: the header line's fields, or for a header-less file the given
 * names (or '0', '1', ...) checked against the first record's field count, which is then the first record.
 */
function header(b: Uint8Array, path: string, format: CsvFormat | undefined, fmt: ByteFormat): { names: string[]; next: number; firstLine: number } {
  let i = 0;
  if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) i = 3; // UTF-8 BOM
  // The first record ends at the first line break outside quotes.
  let end = i;
  let q = false;
  while (end < b.length && (q || b[end] !== LF)) {
    if (b[end] === fmt.quote) q = !q;
    end++;
  }
  const hasHeader = format?.header ?? true;
  if (end === i || (end === i + 1 && b[i] === CR)) throw Errors.data(path, hasHeader ? 'empty CSV file: no header line' : 'empty CSV file: no first record');
  const line = decoder.decode(b.subarray(i, end)).replace(/\r$/, '');
  const delim = format?.delimiter ?? ',';
  const quote = fmt.quote < 0 ? null : String.fromCharCode(fmt.quote);
  // Split respecting quotes.
  const fields: string[] = [];
  let cur = '';
  q = false;
  for (let k = 0; k < line.length; k++) {
    const c = line[k]!;
    if (q) {
      if (c === quote && line[k + 1] === quote) {
        cur += c;
        k++;
      } else if (c === quote) q = false;
      else cur += c;
    } else if (c === quote && cur === '') q = true;
    else if (line.startsWith(delim, k)) {
      fields.push(cur);
      cur = '';
      k += delim.length - 1;
    } else cur += c;
  }
  fields.push(cur);
  if (hasHeader) return { names: fields, next: Math.min(b.length, end + 1), firstLine: 2 };
  const names = format?.names ? [...format.names] : fields.map((_, k) => String(k));
  if (names.length !== fields.length) {
    throw Errors.data(path, `line 1 has ${fields.length} fields but ${names.length} column names were given (${names.join(', ')})`, { line: 1 });
  }
  return { names, next: i, firstLine: 1 };
}

function selection(names: string[], wanted: string[], path: string): Int32Array {
  const want = new Int32Array(names.length).fill(-1);
  wanted.forEach((c, slot) => {
    const i = names.indexOf(c);
    if (i < 0) throw Errors.data(path, `missing column '${c}' (header: ${names.join(', ')})`, { column: c });
    want[i] = slot;
  });
  return want;
}

/** Count records and collect the distinct values of `distinct` columns. */
export function scanCsv(bytes: Uint8Array, task: CsvScanTask): CsvScanResult {
  const fmt = byteFormat(task.format);
  const { names, next, firstLine } = header(bytes, task.path, task.format, fmt);
  selection(names, task.required, task.path);
  const want = selection(names, task.distinct, task.path);
  const sets = task.distinct.map(() => new Set<string>());
  const rec = new Records(bytes, next, names.length, want, task.path, task.distinct.length, fmt, firstLine);
  let rows = 0;
  while (rec.next()) {
    rows++;
    for (let k = 0; k < sets.length; k++) {
      const s = rec.start[k]!;
      const e = rec.end[k]!;
      if (e > s) sets[k]!.add(text(bytes, s, e, rec.quoted[k] === 1 ? fmt.quote : -1));
    }
  }
  const distinct: Record<string, string[]> = {};
  task.distinct.forEach((c, i) => (distinct[c] = [...sets[i]!]));
  return { rows, header: names, distinct };
}

/** Decode the selected columns of one CSV file into typed arrays (one packed buffer). */
export function decodeCsv(bytes: Uint8Array, task: CsvDecodeTask): CsvDecoded {
  const fmt = byteFormat(task.format);
  const { names, next, firstLine } = header(bytes, task.path, task.format, fmt);
  const want = selection(
    names,
    task.columns.map((c) => c.name),
    task.path,
  );
  // Rows first (cheap pass), so the arrays are allocated once at their final size.
  let rows = task.rows ?? -1;
  if (rows < 0) {
    const counter = new Records(bytes, next, names.length, new Int32Array(names.length).fill(-1), task.path, 0, fmt, firstLine);
    rows = 0;
    while (counter.next()) rows++;
  }
  const kinds = task.columns.map((c) => (c.type === 'float32' ? 'float32' : c.type === 'float64' ? 'float64' : 'int32') as 'int32' | 'float32' | 'float64');
  const bitmapBytes = (rows + 7) >> 3;
  let size = 0;
  const layout = kinds.map((k) => {
    const el = k === 'float64' ? 8 : 4;
    size = (size + 7) & ~7;
    const offset = size;
    size += rows * el;
    size = (size + 7) & ~7;
    const validityOffset = size;
    size += bitmapBytes;
    return { offset, validityOffset };
  });
  const buffer = new Uint8Array(new ArrayBuffer(Math.max(8, (size + 7) & ~7)));
  const arrays = kinds.map((k, i) => {
    const o = layout[i]!.offset;
    return k === 'float64' ? new Float64Array(buffer.buffer, o, rows) : k === 'float32' ? new Float32Array(buffer.buffer, o, rows) : new Int32Array(buffer.buffer, o, rows);
  });
  const valid = kinds.map((_, i) => buffer.subarray(layout[i]!.validityOffset, layout[i]!.validityOffset + bitmapBytes));
  for (const v of valid) v.fill(0xff);
  const nulls = new Array<number>(kinds.length).fill(0);
  const firstNullLine = new Array<number>(kinds.length).fill(0);
  const vocabs = task.columns.map((c) => (c.vocab ? new Map(c.vocab.map((s, i) => [s, i])) : undefined));
  const rec = new Records(bytes, next, names.length, want, task.path, task.columns.length, fmt, firstLine);
  // Numeric type codes: 0 int32, 1 float, 2 timestamp, 3 category, 4 hash.
  const CODE = { int32: 0, float32: 1, float64: 1, timestamp: 2, category: 3, hash: 4 } as const;
  const types = Int8Array.from(task.columns, (c) => CODE[c.type]);
  let got = 0;
  for (let row = 0; rec.next(); row++, got++) {
    if (row >= rows) throw Errors.data(task.path, `file changed since it was opened: more than ${rows} records`);
    const line = rec.line;
    for (let slot = 0; slot < types.length; slot++) {
      const s = rec.start[slot]!;
      const e = rec.end[slot]!;
      if (e === s) {
        if (nulls[slot]!++ === 0) firstNullLine[slot] = line;
        valid[slot]![row >> 3]! &= ~(1 << (row & 7));
        continue;
      }
      const q = rec.quoted[slot] === 1 ? fmt.quote : -1;
      let v: number;
      switch (types[slot]) {
        case 0:
          v = parseIntBytes(bytes, s, e);
          if (!(v >= -2147483648 && v <= 2147483647)) bad(task.path, bytes, line, task.columns[slot]!.name, s, e, q, 'an int32 integer');
          break;
        case 1:
          v = parseFloatBytes(bytes, s, e);
          if (Number.isNaN(v)) bad(task.path, bytes, line, task.columns[slot]!.name, s, e, q, 'a number');
          break;
        case 2:
          v = parseTimestampBytes(bytes, s, e);
          if (Number.isNaN(v) || v > 2147483647 || v < -2147483648) bad(task.path, bytes, line, task.columns[slot]!.name, s, e, q, 'a timestamp YYYY-MM-DD HH:MM:SS (1901..2038)');
          break;
        case 3: {
          const spec = task.columns[slot]!;
          const t = text(bytes, s, e, q);
          const id = vocabs[slot]!.get(t);
          if (id === undefined) {
            if (spec.unknown === undefined) {
              throw Errors.data(task.path, `line ${line}: column '${spec.name}' value '${t}' is not in its vocabulary`, { column: spec.name, line });
            }
            v = spec.unknown;
          } else v = id;
          break;
        }
        default:
          v = fnv1a(bytes, s, e, q) % task.columns[slot]!.buckets!;
      }
      arrays[slot]![row] = v;
    }
  }
  if (got !== rows) throw Errors.data(task.path, `file changed since it was opened: ${got} records, ${rows} before`);
  return {
    rows,
    buffer,
    columns: task.columns.map((c, i) => ({
      name: c.name,
      kind: kinds[i]!,
      offset: layout[i]!.offset,
      length: rows,
      nullCount: nulls[i]!,
      ...(nulls[i]! > 0 ? { firstNullLine: firstNullLine[i]! } : {}),
      validityOffset: layout[i]!.validityOffset,
    })),
  };
}

function bad(path: string, b: Uint8Array, line: number, col: string, s: number, e: number, q: number, want: string): never {
  throw Errors.data(path, `line ${line}: column '${col}' value '${text(b, s, e, q)}' is not ${want}`, { column: col, line });
}
