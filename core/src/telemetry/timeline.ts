import { close as closeFd, mkdirSync, openSync, write, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { hostname } from 'node:os';
import { Errors } from '../errors.js';
import type { ClockOffset } from './clock-offset.js';
import { monotonicOriginUs } from './host-clock.js';

/**
 * A per-process timeline (Horovod's `HOROVOD_TIMELINE`): Chrome trace events (the JSON format chrome://tracing and
 * Perfetto open) of what this rank spent its time on: compute, each sync op of each tensor or fusion bucket
 * (negotiate, send, reduce, wait), apply, data loading, checkpoints.
 *
 * Events are complete events (`ph: 'X'`) on lanes: a lane is a Chrome "thread" of this process (`tid`), named once
 * by a metadata event, so spans that overlap (a ps round beside a sparse one) sit on their own rows and spans on one
 * lane nest. Timestamps are microseconds of the host's monotonic clock (`host-clock.ts`): every process and thread
 * of one host reads the same clock, so the ranks line up when their files are merged (`mergeTimeline`). Across hosts, a rank records how far its clock is from the store's host (`clockOffset`, measured by
 * `estimateClockOffset` when the worker joins) and the merge shifts its spans by that much, so ranks line up to
 * within half the round trip to the store even when the hosts' clocks disagree.
 *
 * Off the hot path: recording a span pushes one small object onto an array (well under a microsecond; measured in
 * the timeline bench); a timer (unref'd, default every second) serialises the buffer and appends it to the part
 * file with one asynchronous positional write at a time, and a process `exit` handler writes what is left
 * synchronously (chunks still queued or in flight go to their own offsets, so nothing is lost or doubled when the
 * process exits during a write). The part file is JSON lines, one event per line; `mergeTimeline` joins the ranks' parts.
 *
 * Not shared: every process (or worker thread) that records makes its own, and passes it down to what it traces.
 */
export interface TimelineOptions {
  /** The part file this process writes (created or truncated, with its folder; JSON lines). `timelinePartPath` names a rank's. */
  path: string;
  /** Chrome trace process id: the rank (parameter servers use `SERVER_PID_BASE + i`). */
  pid: number;
  /** Process name shown in Perfetto (default `rank <pid>`); the host name is appended. */
  label?: string;
  /** Append the buffer at least this often (default 1000 ms). */
  flushMs?: number;
}

/** One row of a process in the trace viewer (a Chrome trace `tid`). Get it with `Timeline.lane`. */
export interface TimelineLane {
  readonly tid: number;
  readonly name: string;
}

/** Arguments shown with a span (bytes, bucket, tensor names). */
export type SpanArgs = Readonly<Record<string, string | number | boolean>>;

/** The metadata event holding a part's clock offset (`Timeline.clockOffset`), read and dropped by `mergeTimeline`. */
export const CLOCK_OFFSET_EVENT = 'shoal_clock_offset';

/** Chrome trace pids of parameter servers: `SERVER_PID_BASE + i`, sorted after the ranks. */
export const SERVER_PID_BASE = 10_000;

const writeAt = promisify(write) as (fd: number, b: Buffer, off: number, len: number, pos: number) => Promise<unknown>;
const closeAsync = promisify(closeFd);

interface Pending {
  name: string;
  tid: number;
  ts: number;
  dur: number;
  args: SpanArgs | undefined;
}

export class Timeline {
  readonly path: string;
  readonly pid: number;
  private readonly fd: number;
  private events: Pending[] = [];
  private meta: string[] = [];
  private readonly lanes = new Map<string, TimelineLane>();
  /** Bytes written or being written: the next chunk's offset. */
  private offset = 0;
  /** Chunks queued or being written asynchronously, by offset (written synchronously at exit). */
  private readonly unwritten = new Map<number, Buffer>();
  private writing: Promise<void> = Promise.resolve();
  private error?: unknown;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  private readonly onExit = () => this.flushSync();
  /** This thread's `performance.now()` origin on the host clock (µs). */
  private readonly originUs = monotonicOriginUs();

  constructor(options: TimelineOptions) {
    if (typeof options?.path !== 'string' || options.path === '') throw Errors.invalidArg('timeline path', `must be a file path, got ${JSON.stringify(options?.path)}`);
    if (!Number.isInteger(options.pid) || options.pid < 0) throw Errors.invalidArg('timeline pid', `must be an integer >= 0, got ${options.pid}`);
    this.path = options.path;
    this.pid = options.pid;
    try {
      // its folder too: a rank on another host may not have it yet
      mkdirSync(dirname(this.path), { recursive: true });
      this.fd = openSync(this.path, 'w');
    } catch (e) {
      throw Errors.config('timeline', `${this.path} cannot be written: ${(e as Error).message}`);
    }
    const label = `${options.label ?? `rank ${options.pid}`} (${hostname()})`;
    this.meta.push(
      JSON.stringify({ name: 'process_name', ph: 'M', pid: this.pid, tid: 0, args: { name: label } }),
      JSON.stringify({ name: 'process_sort_index', ph: 'M', pid: this.pid, tid: 0, args: { sort_index: this.pid } }),
    );
    this.timer = setInterval(() => void this.flush().catch(() => {}), options.flushMs ?? 1000);
    this.timer.unref();
    process.on('exit', this.onExit);
  }

  /**
   * Record how far this process's clock is from the job's reference clock (`estimateClockOffset`): the merge adds
   * the offset to every span of this part. Every offset recorded is kept: with one (or none carrying `atUs`) the
   * last shifts the whole part; with two or more measured at different moments the merge interpolates between
   * them, so a clock that drifts during a long job stays aligned (held at the first and last outside them).
   */
  clockOffset(c: ClockOffset): void {
    if (this.closed) return;
    if (!Number.isFinite(c.offsetUs) || !Number.isFinite(c.rttUs)) throw Errors.invalidArg('clock offset', `must be finite numbers, got ${c.offsetUs} (rtt ${c.rttUs})`);
    if (c.atUs !== undefined && !Number.isFinite(c.atUs)) throw Errors.invalidArg('clock offset', `atUs must be a finite number, got ${c.atUs}`);
    const args = { offset_us: Math.round(c.offsetUs * 10) / 10, rtt_us: Math.round(c.rttUs * 10) / 10, reference: c.reference, ...(c.atUs === undefined ? {} : { at_us: Math.round(c.atUs) }) };
    this.meta.push(JSON.stringify({ name: CLOCK_OFFSET_EVENT, ph: 'M', pid: this.pid, tid: 0, args }));
  }

  /** Microseconds on the host's monotonic clock (`host-clock.ts`), the `ts` of the events. */
  now(): number {
    return performance.now() * 1000 + this.originUs;
  }

  /** The lane called `name` (made on first use, in order: the first lane is tid 1). */
  lane(name: string): TimelineLane {
    let l = this.lanes.get(name);
    if (!l) {
      l = { tid: this.lanes.size + 1, name };
      this.lanes.set(name, l);
      this.meta.push(
        JSON.stringify({ name: 'thread_name', ph: 'M', pid: this.pid, tid: l.tid, args: { name } }),
        JSON.stringify({ name: 'thread_sort_index', ph: 'M', pid: this.pid, tid: l.tid, args: { sort_index: l.tid } }),
      );
    }
    return l;
  }

  /** Record a span on `lane` from `startUs` (a `now()` reading) until now. Ignored after `close`. */
  span(lane: TimelineLane, name: string, startUs: number, args?: SpanArgs): void {
    if (this.closed) return;
    this.events.push({ name, tid: lane.tid, ts: startUs, dur: this.now() - startUs, args });
  }

  /** Record a span from `startUs` to `endUs` (`now()` readings, or `fromPerformance` of `performance.now()` ones). */
  complete(lane: TimelineLane, name: string, startUs: number, endUs: number, args?: SpanArgs): void {
    if (this.closed) return;
    this.events.push({ name, tid: lane.tid, ts: startUs, dur: endUs - startUs, args });
  }

  /** A `performance.now()` reading of this thread (milliseconds since its start) as a `now()` reading. */
  fromPerformance(ms: number): number {
    return ms * 1000 + this.originUs;
  }

  /** Run `fn` as a span on `lane` (recorded when it settles, failed or not). */
  async trace<T>(lane: TimelineLane, name: string, fn: () => Promise<T>, args?: SpanArgs): Promise<T> {
    const t0 = this.now();
    try {
      return await fn();
    } finally {
      this.span(lane, name, t0, args);
    }
  }

  private take(): Buffer | undefined {
    if (this.events.length === 0 && this.meta.length === 0) return undefined;
    const pid = this.pid;
    let text = this.meta.length ? `${this.meta.join('\n')}\n` : '';
    for (const e of this.events) {
      text += `{"name":${JSON.stringify(e.name)},"ph":"X","pid":${pid},"tid":${e.tid},"ts":${e.ts.toFixed(1)},"dur":${Math.max(0, e.dur).toFixed(1)}${e.args ? `,"args":${JSON.stringify(e.args)}` : ''}}\n`;
    }
    this.meta = [];
    this.events = [];
    return Buffer.from(text);
  }

  /** Append what is buffered; resolves once written. A write error is kept and thrown by this and later flushes. */
  flush(): Promise<void> {
    const bytes = this.closed ? undefined : this.take();
    if (bytes) {
      const at = this.offset;
      this.offset += bytes.length;
      this.unwritten.set(at, bytes);
      this.writing = this.writing.then(async () => {
        if (this.error !== undefined) return;
        try {
          await writeAt(this.fd, bytes, 0, bytes.length, at);
          this.unwritten.delete(at);
        } catch (e) {
          this.error = e;
        }
      });
    }
    return this.writing.then(() => {
      if (this.error !== undefined) throw this.error;
    });
  }

  /** The exit path: queued and in-flight chunks at their offsets (the same bytes again), then the rest, synchronously. */
  private flushSync(): void {
    if (this.closed) return;
    try {
      for (const [at, bytes] of this.unwritten) writeSync(this.fd, bytes, 0, bytes.length, at);
      const rest = this.take();
      if (rest) {
        writeSync(this.fd, rest, 0, rest.length, this.offset);
        this.offset += rest.length;
      }
    } catch {
      // exiting: nothing left to report to
    }
  }

  /** Write everything and close the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    process.off('exit', this.onExit);
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await closeAsync(this.fd).catch(() => {});
    }
  }
}

/** The part file rank `rank` writes for the merged timeline `file` (`<file>.rank-<r>.jsonl`). */
export function timelinePartPath(file: string, who: number | string): string {
  return `${file}.${typeof who === 'number' ? `rank-${who}` : who}.jsonl`;
}

/**
 * `fn` as a span on `trace.lane` when the caller records a timeline, else just `fn()`: the one "trace if tracing"
 * that engines and the Trainer share (they hold `trace` only when a timeline is on).
 */
export function traceIf<T>(trace: { readonly timeline: Timeline; readonly lane: TimelineLane } | undefined, name: string, fn: () => Promise<T>, args?: SpanArgs): Promise<T> {
  return trace ? trace.timeline.trace(trace.lane, name, fn, args) : fn();
}
