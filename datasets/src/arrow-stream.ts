/**
 * An Arrow IPC stream as a one-partition dataset: how a Spark barrier task hands a worker its partition
 * (`mapInArrow` record batches written to stdin or a local socket), or a `.arrows` file.
 *
 * Record batches are decoded incrementally as bytes arrive; each chunk's columns are views on the message body the
 * batch was read from (no per-row work, no copy of numeric columns). When the source is a `Uint8Array`, the views
 * share its `ArrayBuffer`; from a socket, pipe or file, a message lying inside one received piece is viewed in place
 * and one spanning pieces is assembled once (ipc-framer.ts).
 *
 * A stream is complete only if it ends with the IPC end-of-stream marker: a stream cut anywhere (inside a message
 * or between two messages) raises ERR_DATA on the read that reaches the cut, after which no chunk of it is yielded.
 */
import { createReadStream } from 'node:fs';
import { RecordBatchReader, type RecordBatch, type Schema } from 'apache-arrow';
import { Errors, isShoalError } from '@shoal/core';
import { frameIpcMessages, type FramerState } from './ipc-framer.js';
import { chunkOfBatch, fieldsOf } from './arrow-columns.js';
import type { Chunk, Dataset, DatasetSchema, Partition, ReadOptions } from './types.js';

/** Bytes, a file path, a Node Readable (socket, `process.stdin`) or any async iterable of byte chunks. */
export type ArrowStreamSource = string | Uint8Array | AsyncIterable<Uint8Array>;

export interface ArrowStreamOptions {
  /** Name used in errors (default: the path, or 'arrow stream'). */
  name?: string;
  /**
   * Keep the decoded batches so the partition can be read again (every epoch after the first replays them from
   * memory). Default false: a second read raises ERR_STATE.
   */
  retain?: boolean;
  /** Row count announced by the producer, if known up front (lets `localSteps` work before the first read). */
  rows?: number;
  /** Longest wait for the next piece of bytes, in ms (default 60 000). A silent producer becomes ERR_TIMEOUT. */
  idleTimeoutMs?: number;
  /** Abort reading (ERR_ABORTED). */
  signal?: AbortSignal;
  /** Require the end-of-stream marker (default true). Turn off only for producers known not to write it. */
  requireEos?: boolean;
  /** Read size when the source is a file path (default 4 MiB). */
  readChunkBytes?: number;
}

/** True if `b` ends with the end-of-stream marker (continuation + zero length, or a legacy zero length). */
function endsWithEos(b: Uint8Array): boolean {
  const n = b.length;
  if (n >= 8 && b[n - 8] === 0xff && b[n - 7] === 0xff && b[n - 6] === 0xff && b[n - 5] === 0xff && b[n - 4] === 0 && b[n - 3] === 0 && b[n - 2] === 0 && b[n - 1] === 0) {
    return true;
  }
  return n >= 4 && b[n - 4] === 0 && b[n - 3] === 0 && b[n - 2] === 0 && b[n - 1] === 0;
}

function wrapArrowError(name: string, e: unknown): Error {
  if (isShoalError(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') return Errors.data(name, `cannot open: ${msg}`);
  if (typeof code === 'string') return Errors.data(name, `reading failed: ${msg}`, { code });
  return Errors.data(name, `malformed Arrow IPC stream: ${msg}`);
}

type AnyReader = {
  schema: Schema | null;
  open(): unknown;
  [Symbol.asyncIterator](): AsyncIterator<RecordBatch>;
  cancel?(): unknown;
};

class ArrowStreamPartition implements Partition {
  private reader: AnyReader | undefined;
  private retained: RecordBatch[] | undefined;
  private consumed = false;
  private rowCount: number | undefined;
  constructor(
    readonly name: string,
    reader: AnyReader,
    private readonly opts: ArrowStreamOptions,
  ) {
    this.reader = reader;
    this.rowCount = opts.rows;
  }
  get rows(): number | undefined {
    return this.rowCount;
  }
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    if (this.retained) {
      for (const b of this.retained) yield chunkOfBatch(b, ro.columns, this.name);
      return;
    }
    if (this.consumed || !this.reader) {
      throw Errors.state(`${this.name}: an Arrow stream can be read once (open it with { retain: true } to read it every epoch)`);
    }
    this.consumed = true;
    const reader = this.reader;
    this.reader = undefined;
    const keep: RecordBatch[] | undefined = this.opts.retain ? [] : undefined;
    let rows = 0;
    const it = reader[Symbol.asyncIterator]();
    for (;;) {
      let r: IteratorResult<RecordBatch>;
      try {
        r = await it.next();
      } catch (e) {
        throw wrapArrowError(this.name, e);
      }
      if (r.done) break;
      const b = r.value;
      // Convert before yielding: a bad column raises here, before any consumer sees the batch.
      const chunk = chunkOfBatch(b, ro.columns, this.name);
      rows += b.numRows;
      if (keep) keep.push(b);
      // A batch is only known complete once the next message header (or EOS) is read; arrow reads the whole body
      // before returning it, so a body cut short already raised above.
      yield chunk;
    }
    if (this.opts.rows !== undefined && this.opts.rows !== rows) {
      throw Errors.data(this.name, `stream carried ${rows} rows but the producer announced ${this.opts.rows}`);
    }
    this.rowCount = rows;
    if (keep) this.retained = keep;
  }
}

/**
 * Open an Arrow IPC stream and read its schema (the first message). Returns a dataset with one partition named
 * after the source. The partition is read once, incrementally, unless `retain` is set.
 *
 * Errors: ERR_DATA (empty input, bad schema message, truncated stream), ERR_TIMEOUT (no bytes for
 * `idleTimeoutMs`), ERR_ABORTED.
 */
export async function openArrowStream(src: ArrowStreamSource, opts: ArrowStreamOptions = {}): Promise<Dataset> {
  const name = opts.name ?? (typeof src === 'string' ? src : 'arrow stream');
  let reader: AnyReader;
  let framed: FramerState | undefined;
  try {
    if (src instanceof Uint8Array) {
      // Whole bytes in hand: the synchronous reader makes every column a view on `src` itself.
      if (opts.requireEos !== false && !endsWithEos(src)) {
        throw Errors.data(name, `truncated Arrow IPC stream: ${src.length} bytes without the end-of-stream marker`);
      }
      const sync = RecordBatchReader.from(src);
      if (sync.isFile()) throw Errors.data(name, 'this is an Arrow IPC file (ARROW1 magic), not a stream: use openArrowFile');
      sync.open();
      const iter = sync[Symbol.iterator]();
      reader = {
        get schema() {
          return sync.schema;
        },
        open: () => undefined,
        [Symbol.asyncIterator]: () => ({
          next: async () => iter.next(),
          return: async () => ({ done: true, value: undefined }),
        }),
      } as AnyReader;
    } else {
      framed = { bytes: 0, messages: 0, sawEos: false };
      const owns = typeof src === 'string';
      const bytes: AsyncIterable<Uint8Array> = owns ? createReadStream(src, { highWaterMark: opts.readChunkBytes ?? 4 << 20 }) : src;
      const fo = {
        ownsSource: owns,
        ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.requireEos !== undefined ? { requireEos: opts.requireEos } : {}),
      };
      const r = await RecordBatchReader.from(frameIpcMessages(bytes, name, framed, fo));
      await r.open();
      reader = r as unknown as AnyReader;
    }
  } catch (e) {
    throw wrapArrowError(name, e);
  }
  const schema = reader.schema;
  if (!schema || (framed && framed.bytes === 0)) throw Errors.data(name, 'empty Arrow IPC stream: no schema message');
  const ds: DatasetSchema = { fields: fieldsOf(schema) };
  const part = new ArrowStreamPartition(name, reader, opts);
  return {
    source: name,
    schema: ds,
    partitions: [part],
    close: async () => undefined,
  };
}
