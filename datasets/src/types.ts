/**
 * The data model shared by every source: a `Dataset` is an ordered list of `Partition`s with one `DatasetSchema`;
 * reading a partition yields `Chunk`s, whose columns are typed arrays (views on the received buffers wherever the
 * source allows it; see each source for who owns the memory).
 */

/** Element type of a column's values. `dict` columns hold int32 ids into `FieldInfo.dictionary`. */
export type ColumnKind =
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'float32'
  | 'float64'
  | 'dict'
  /** A type the pipeline cannot batch (strings, nested lists...): an error only if the column is selected. */
  | 'unsupported';

export type NumericArray =
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array;

/** One column of a dataset as seen by the pipeline. */
export interface FieldInfo {
  name: string;
  kind: ColumnKind;
  /** Values per row: 1 for scalars, N for FixedSizeList<N>. */
  width: number;
  /** True if the source allows nulls in this column (the pipeline still refuses them unless a fill is given). */
  nullable: boolean;
  /** The source's own type name (Arrow type string, or the CSV spec), for error messages. */
  sourceType: string;
  /** For `dict` columns: the id -> string table (id i is `dictionary[i]`). */
  dictionary?: readonly string[];
}

export interface DatasetSchema {
  fields: readonly FieldInfo[];
}

/**
 * One column of a chunk. `values` has `rows * width` elements for row 0 .. rows-1 of the chunk (already offset:
 * element 0 is row 0). Ownership: the chunk's producer; the values may be views on a received buffer, so
 * consumers must not write to them.
 */
export interface Column {
  values: NumericArray;
  width: number;
  /** Number of null rows (a row is null if its validity bit is 0). */
  nullCount: number;
  /** Arrow-style LSB validity bitmap (bit `validityOffset + row`), present when nullCount > 0. */
  validity?: Uint8Array;
  validityOffset?: number;
  /** Where the first null row is in the source, when the reader knows better than a row index ('line 623'). */
  firstNullAt?: string;
}

/** A group of rows with equal-length columns, tagged with where it came from (for errors). */
export interface Chunk {
  /** File, stream or partition name (used in error messages). */
  source: string;
  rows: number;
  columns: Record<string, Column>;
}

/** What a partition reader is asked for. */
export interface ReadOptions {
  /** Columns to read (the pipeline passes the union of its features, label and columns). */
  columns: readonly string[];
  signal?: AbortSignal;
}

/**
 * One unit of assignment to ranks: a file, a row group, a record batch or a stream.
 * `read` yields its rows as chunks; calling it again re-reads the partition (streams only if retained).
 */
export interface Partition {
  /** Stable name, unique in the dataset (sorting and error messages use it). */
  readonly name: string;
  /** Row count if known without reading the data (footer, metadata); undefined for a live stream. */
  readonly rows: number | undefined;
  read(opts: ReadOptions): AsyncIterable<Chunk>;
}

/**
 * A readable data set. `close()` releases what the source holds (worker threads, file handles); it is safe to
 * call twice. Datasets are not shared across threads.
 */
export interface Dataset {
  /** What was opened (path or stream label), for error messages. */
  readonly source: string;
  readonly schema: DatasetSchema;
  readonly partitions: readonly Partition[];
  close(): Promise<void>;
}

export function fieldOf(schema: DatasetSchema, name: string): FieldInfo | undefined {
  return schema.fields.find((f) => f.name === name);
}
