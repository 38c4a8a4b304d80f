import { randomBytes } from 'node:crypto';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { crc32c } from '@node-rs/crc32';

/**
 * TensorBoard event files: a sequence of TFRecords, each `uint64 length | uint32 masked_crc32c(length) | data |
 * uint32 masked_crc32c(data)` (little-endian), whose data is an `Event` protobuf (tensorflow/core/util/event.proto):
 * `wall_time = 1 (double)`, `step = 2 (int64)`, `file_version = 3 (string)`, `summary = 5 (Summary)`, with
 * `Summary.value = 1 (repeated Value)` and `Value { tag = 1 (string), simple_value = 2 (float) }`.
 */

/** TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant (so a CRC of CRCs is not trivial). */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

export interface EventFields {
  /** Seconds since the epoch. */
  wallTime: number;
  step?: number;
  fileVersion?: string;
  /** Scalar summaries: [tag, value]. */
  scalars?: ReadonlyArray<readonly [string, number]>;
}

/** Encode one `Event` message. */
export function encodeEvent(e: EventFields): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.Bit64).double(e.wallTime);
  if (e.step) w.tag(2, WireType.Varint).int64(e.step);
  if (e.fileVersion !== undefined) w.tag(3, WireType.LengthDelimited).string(e.fileVersion);
  if (e.scalars?.length) {
    w.tag(5, WireType.LengthDelimited).fork();
    for (const [tag, value] of e.scalars) w.tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(tag).tag(2, WireType.Bit32).float(value).join();
    w.join();
  }
  return w.finish();
}

/** Frame `data` as one TFRecord. */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

export interface EventFileWriterOptions {
  /** Write buffered records at least this often (default 2000 ms). */
  flushMs?: number;
  /** Write as soon as this many bytes are buffered (default 64 KiB). */
  maxBufferBytes?: number;
}

/**
 * One run's event file (`<dir>/events.out.tfevents.<seconds>.<host>.<pid>.<random>`). `scalar` only encodes
 * and buffers (a few microseconds, no I/O); the buffer is appended to the file by a timer or when it grows
 * past `maxBufferBytes`, by one pending write at a time, so the training loop never waits on the disk. A write
 * error is kept and thrown by the next `flush`/`close`.
 */
export class EventFileWriter {
  readonly path: string;
  private buffered: Uint8Array[] = [];
  private bufferedBytes = 0;
  private writing: Promise<void> = Promise.resolve();
  private file?: Promise<FileHandle>;
  private error?: unknown;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  private readonly maxBufferBytes: number;

  constructor(
    readonly dir: string,
    options: EventFileWriterOptions = {},
  ) {
    this.path = join(dir, `events.out.tfevents.${Math.floor(Date.now() / 1000)}.${hostname()}.${process.pid}.${randomBytes(4).toString('hex')}`);
    this.maxBufferBytes = options.maxBufferBytes ?? 1 << 16;
    this.push({ wallTime: Date.now() / 1000, fileVersion: 'brain.Event:2' });
    this.timer = setInterval(() => void this.flush().catch(() => {}), options.flushMs ?? 2000);
    this.timer.unref();
  }

  private push(e: EventFields): void {
    if (this.closed) return;
    const rec = frameRecord(encodeEvent(e));
    this.buffered.push(rec);
    this.bufferedBytes += rec.length;
    if (this.bufferedBytes >= this.maxBufferBytes) void this.flush().catch(() => {});
  }

  /** Buffer scalar summaries for `step` (one Event holding every value). */
  scalars(step: number, values: ReadonlyArray<readonly [string, number]>, wallTime = Date.now() / 1000): void {
    const finite = values.filter(([, v]) => typeof v === 'number' && !Number.isNaN(v));
    if (finite.length) this.push({ wallTime, step, scalars: finite });
  }

  scalar(tag: string, value: number, step: number, wallTime?: number): void {
    this.scalars(step, [[tag, value]], wallTime);
  }

  /** Append everything buffered so far to the file; resolves once it is written. */
  flush(): Promise<void> {
    if (this.buffered.length > 0) {
      const parts = this.buffered;
      this.buffered = [];
      this.bufferedBytes = 0;
      this.file ??= mkdir(this.dir, { recursive: true }).then(() => open(this.path, 'a'));
      const file = this.file;
      this.writing = this.writing.then(async () => {
        if (this.error !== undefined) return;
        try {
          await (await file).write(Buffer.concat(parts));
        } catch (e) {
          this.error = e;
        }
      });
    }
    return this.writing.then(() => {
      if (this.error !== undefined) throw this.error;
    });
  }

  /** Flush and close the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return this.writing;
    clearInterval(this.timer);
    try {
      await this.flush();
    } finally {
      this.closed = true;
      if (this.file) await (await this.file).close();
    }
  }
}
