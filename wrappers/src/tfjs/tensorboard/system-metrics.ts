import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** One sample of this process's health. */
export interface SystemSample {
  /** Seconds since the sampler started. */
  elapsedSeconds: number;
  rssMiB: number;
  heapUsedMiB: number;
  /** CPU time (user + system) over wall time since the previous sample, in percent of one core. */
  cpuPercent: number;
  /** Event-loop delay since the previous sample (node:perf_hooks `monitorEventLoopDelay`), milliseconds. */
  eventLoopDelayP50Ms: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
}

/**
 * Samples RSS, heap, CPU and event-loop delay every `intervalMs` (default 10 s: a low rate, the timer is unref'd
 * and each sample costs a few microseconds) and hands each sample to `onSample`.
 */
export class SystemSampler {
  private readonly histogram: IntervalHistogram;
  private timer?: NodeJS.Timeout;
  private t0 = 0;
  private lastT = 0;
  private lastCpu = process.cpuUsage();

  constructor(
    private readonly onSample: (s: SystemSample) => void,
    private readonly intervalMs = 10_000,
  ) {
    this.histogram = monitorEventLoopDelay({ resolution: 10 });
  }

  start(): void {
    if (this.timer) return;
    this.t0 = this.lastT = performance.now();
    this.lastCpu = process.cpuUsage();
    this.histogram.enable();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** Take a sample now (also called by the timer). */
  sample(): SystemSample {
    const now = performance.now();
    const cpu = process.cpuUsage(this.lastCpu);
    const wallMs = Math.max(now - this.lastT, 1e-3);
    const mem = process.memoryUsage();
    const h = this.histogram;
    const ms = (ns: number) => (Number.isFinite(ns) ? ns / 1e6 : 0);
    const s: SystemSample = {
      elapsedSeconds: (now - this.t0) / 1000,
      rssMiB: mem.rss / 2 ** 20,
      heapUsedMiB: mem.heapUsed / 2 ** 20,
      cpuPercent: ((cpu.user + cpu.system) / 1000 / wallMs) * 100,
      eventLoopDelayP50Ms: h.count > 0 ? ms(h.percentile(50)) : 0,
      eventLoopDelayP99Ms: h.count > 0 ? ms(h.percentile(99)) : 0,
      eventLoopDelayMaxMs: h.count > 0 ? ms(h.max) : 0,
    };
    h.reset();
    this.lastT = now;
    this.lastCpu = process.cpuUsage();
    this.onSample(s);
    return s;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.histogram.disable();
  }
}
