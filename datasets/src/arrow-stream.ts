/**
 * An Arrow IPC stream as a one-partition dataset: how a Spark barrier task hands a worker its partition
 * (`mapInArrow` record batches written to stdin or a local socket), or a `.arrows` file.
 *
 * Record batches are decoded incrementally as bytes arrive; each chunk's columns are views on the message body the
 * batch was read from (no per-row work, no copy of numeric columns). When the source is a `Uint8Array`, the views
 * share its `ArrayBuffer`; from a socket or file, each message body is assembled once from the received pieces.
 *
 * A stream is complete only if it ends with the IPC end-of-stream marker: a stream cut anywhere (inside a message
 * or between two messages) raises ERR_DATA on the read that reaches the cut, after which no chunk of it is yielded.
 */
import { createReadStream } from 'node:fs';
import { RecordBatchReader, type RecordBatch, type Schema } from 'apache-arrow';
import { Errors, isShoalError, withDeadline } from '@shoal/core';
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

const EOS_CONT = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/** Tracks the last 8 bytes that went through, to check for the end-of-stream marker. */
class Tail {
  readonly last = new Uint8Array(8);
  total = 0;
  push(c: Uint8Array): void {
    if (c.length >= 8) this.last.set(c.subarray(c.length - 8));
    else {
      this.last.copyWithin(0, c.length);
      this.last.set(c, 8 - c.length);
    }
    this.total += c.length;
  }
  endsWithEos(): boolean {
    if (this.total >= 8 && EOS_CONT.every((b, i) => this.last[i] === b)) return true;
    // Pre-0.15 writers end with a 4-byte zero length.
    return this.total >= 4 && this.last[4] === 0 && this.last[5] === 0 && this.last[6] === 0 && this.last[7] === 0;
  }
}

/** Pull `src` one piece at a time, each wait bounded by the idle timeout; record the tail. */
async function* guarded(
  src: AsyncIterable<Uint8Array>,
  name: string,
  tail: Tail,
  opts: ArrowStreamOptions,
): AsyncGenerator<Uint8Array> {
  const it = src[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const r = await withDeadline(`reading ${name}`, it.next(), {
        timeoutMs: opts.idleTimeoutMs ?? 60_000,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      if (r.done) {
        finished = true;
        return;
      }
      const c = r.value instanceof Uint8Array ? r.value : new Uint8Array(r.value as ArrayBufferLike);
      tail.push(c);
      yield c;
    }
  } finally {
    if (!finished) {
      const d = src as unknown as { destroy?: () => void };
      if (typeof d.destroy === 'function') d.destroy();
      else void Promise.resolve(it.return?.()).catch(() => undefined);
    }
  }
}

function wrapArrowError(name: string, e: unknown): Error {
  if (isShoalError(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT' || code === 'EISDIR' || code === 'EACCES') return Errors.data(name, `cannot open: ${msg}`);
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
    private readonly tail: Tail | undefined,
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
    if (this.tail && this.opts.requireEos !== false && !this.tail.endsWithEos()) {
      throw Errors.data(this.name, `truncated Arrow IPC stream: ended after ${this.tail.total} bytes without the end-of-stream marker`);
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
  let tail: Tail | undefined;
  try {
    if (src instanceof Uint8Array) {
      // Whole bytes in hand: the synchronous reader makes every column a view on `src` itself.
      if (opts.requireEos !== false) {
        const t = new Tail();
        t.push(src);
        if (!t.endsWithEos()) {
          throw Errors.data(name, `truncated Arrow IPC stream: ${src.length} bytes without the end-of-stream marker`);
        }
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
      tail = new Tail();
      const bytes: AsyncIterable<Uint8Array> =
        typeof src === 'string' ? createReadStream(src, { highWaterMark: opts.readChunkBytes ?? 4 << 20 }) : src;
      const r = await RecordBatchReader.from(guarded(bytes, name, tail, opts));
      await r.open();
      reader = r as unknown as AnyReader;
    }
  } catch (e) {
    throw wrapArrowError(name, e);
  }
  const schema = reader.schema;
  if (!schema || (tail && tail.total === 0)) throw Errors.data(name, 'empty Arrow IPC stream: no schema message');
  const ds: DatasetSchema = { fields: fieldsOf(schema) };
  const part = new ArrowStreamPartition(name, reader, tail, opts);
  return {
    source: name,
    schema: ds,
    partitions: [part],
    close: async () => undefined,
  };
}
