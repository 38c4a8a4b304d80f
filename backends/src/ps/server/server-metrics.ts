import { join } from 'node:path';
import { Errors } from '@shoal/core';
import { EventFileWriter, SERVER_PID_BASE, Timeline, timelinePartPath } from '@shoal/core/telemetry';
import type { Rounds } from './rounds.js';

/** Where and how often a server writes its TensorBoard curves (`KVServerOptions.metrics`; `shoal run --logdir`). */
export interface ServerMetricsOptions {
  /** The job's TensorBoard folder: server `i` writes the run `<logdir>/server-<i>`. */
  logdir: string;
  /** One sample every this many ms (default 2000; at least 1000: the step is whole seconds since the start). */
  intervalMs?: number;
}

/** What the server's rounds have done so far (read at each sample). */
export interface RoundTotals {
  /** Updates applied (sync: rounds completed). */
  updates: number;
  /** Wall time spent applying them, ms. */
  applyMs: number;
}

/**
 * A parameter server's load as TensorBoard curves (run `server-<i>`, step = seconds since the server started):
 * `server/rounds_per_sec`, `server/apply_ms_per_round`, `server/queue_depth_mean` (requests in the server,
 * time-weighted over the interval) and `server/queue_depth_max`, `server/bytes_in_per_sec` and
 * `server/bytes_out_per_sec` (values pushed and pulled, through messages or the shared staging buffers alike),
 * the running totals `server/rounds_total`, `server/bytes_in_total`, `server/bytes_out_total`, and
 * `system/cpu_percent` and `system/rss_mib`. A growing queue or a falling round rate shows a straggler or an
 * overloaded shard while the job runs.
 *
 * The server only bumps counters (`received`, `sent`, `track`); a timer (unref'd) turns them into one event per
 * interval, which the writer buffers and appends off the request path. `close` writes a last sample.
 */
export class ServerMetrics {
  private readonly writer: EventFileWriter;
  private readonly timer: NodeJS.Timeout;
  private readonly t0 = performance.now();
  private bytesIn = 0;
  private bytesOut = 0;
  private inflight = 0;
  private maxInflight = 0;
  private inflightArea = 0;
  private lastChange = this.t0;
  private last: { t: number; updates: number; applyMs: number; bytesIn: number; bytesOut: number; cpu: NodeJS.CpuUsage };
  private closed = false;
  private samples = 0;

  constructor(
    serverIndex: number,
    options: ServerMetricsOptions,
    private readonly totals: () => RoundTotals,
  ) {
    if (typeof options.logdir !== 'string' || options.logdir === '') throw Errors.invalidArg('KVServer options.metrics.logdir', `must be a folder, got ${JSON.stringify(options.logdir)}`);
    const every = options.intervalMs ?? 2000;
    if (!(every >= 1000)) throw Errors.invalidArg('KVServer options.metrics.intervalMs', `must be >= 1000, got ${every}`);
    this.writer = new EventFileWriter(join(options.logdir, `server-${serverIndex}`), { flushMs: every });
    const t = totals();
    this.last = { t: this.t0, updates: t.updates, applyMs: t.applyMs, bytesIn: 0, bytesOut: 0, cpu: process.cpuUsage() };
    this.timer = setInterval(() => this.sample(), every);
    this.timer.unref();
  }

  /** Value bytes a request brought in (pushed gradients or rows). */
  received(bytes: number): void {
    this.bytesIn += bytes;
  }

  /** Value bytes a reply takes out (pulled values or rows). */
  sent(bytes: number): void {
    this.bytesOut += bytes;
  }

  private queueChanged(delta: number): void {
    const now = performance.now();
    this.inflightArea += this.inflight * (now - this.lastChange);
    this.lastChange = now;
    this.inflight += delta;
    if (this.inflight > this.maxInflight) this.maxInflight = this.inflight;
  }

  /** Count a request in the queue until its reply (`r`, a value or a promise) settles; returns `r`. */
  track<T>(r: T): T {
    if (!(r instanceof Promise)) return r;
    this.queueChanged(1);
    const done = () => this.queueChanged(-1);
    r.then(done, done);
    return r;
  }

  /** Write one sample of the interval since the previous one (the timer calls it). */
  sample(): void {
    if (this.closed) return;
    const now = performance.now();
    const secs = Math.max(now - this.last.t, 1e-3) / 1000;
    const t = this.totals();
    this.queueChanged(0);
    const cpu = process.cpuUsage(this.last.cpu);
    const rounds = t.updates - this.last.updates;
    this.writer.scalars(Math.round((now - this.t0) / 1000), [
      ['server/rounds_per_sec', rounds / secs],
      ['server/apply_ms_per_round', rounds > 0 ? (t.applyMs - this.last.applyMs) / rounds : 0],
      ['server/queue_depth_mean', this.inflightArea / (secs * 1000)],
      ['server/queue_depth_max', this.maxInflight],
      ['server/bytes_in_per_sec', (this.bytesIn - this.last.bytesIn) / secs],
      ['server/bytes_out_per_sec', (this.bytesOut - this.last.bytesOut) / secs],
      ['server/rounds_total', t.updates],
      ['server/bytes_in_total', this.bytesIn],
      ['server/bytes_out_total', this.bytesOut],
      ['system/cpu_percent', ((cpu.user + cpu.system) / 1000 / (secs * 1000)) * 100],
      ['system/rss_mib', process.memoryUsage.rss() / 2 ** 20],
    ]);
    this.last = { t: now, updates: t.updates, applyMs: t.applyMs, bytesIn: this.bytesIn, bytesOut: this.bytesOut, cpu: process.cpuUsage() };
    this.samples++;
    this.inflightArea = 0;
    this.maxInflight = this.inflight;
  }

  /** A last sample (unless one was just taken), then write and close the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    if (this.samples === 0 || performance.now() - this.last.t >= 250) this.sample();
    this.closed = true;
    await this.writer.close();
  }
}

/** Records one request on the server's timeline: from its method's start until `p` settles. */
export type TraceRequest = <T>(rank: number, collectives: number, p: Promise<T>) => Promise<T>;

/**
 * `shoal run --timeline FILE` on server `serverIndex`: record each update `rounds` applies (`apply`, per key) and
 * each guarded request (`request`, lane `requests`: from the server reading it until its outcome is ready, args:
 * the worker's rank and the collectives in it) in the part `FILE.server-<i>.jsonl`. Beside the workers' `push+pull`
 * spans this splits a round's critical path: last arrival -> server -> apply -> reply -> worker (bench/README.md,
 * `ps-rounds`). Returns the timeline, for the server to close when it stops, and the request recorder.
 */
export function recordApplies(file: string, serverIndex: number, rounds: Rounds): { timeline: Timeline; traceRequest: TraceRequest } {
  const tl = new Timeline({ path: timelinePartPath(file, `server-${serverIndex}`), pid: SERVER_PID_BASE + serverIndex, label: `ps-server-${serverIndex}` });
  const lane = tl.lane('apply');
  rounds.onApplied = (key, t0, t1) => tl.complete(lane, 'apply', tl.fromPerformance(t0), tl.fromPerformance(t1), { key });
  const requests = tl.lane('requests');
  const traceRequest: TraceRequest = (rank, collectives, p) => {
    const t0 = tl.now();
    const end = () => tl.span(requests, 'request', t0, { rank, collectives });
    p.then(end, end);
    return p;
  };
  return { timeline: tl, traceRequest };
}
