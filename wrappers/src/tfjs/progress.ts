/** Where progress and log lines go: `process.stdout` by default; tests pass a collector. */
export interface LogSink {
  write(text: string): void;
  readonly isTTY?: boolean;
}

function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}:${String(Math.round(s % 60)).padStart(2, '0')}` : `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(Math.round(s % 60)).padStart(2, '0')}`;
}

export function fmtLogs(logs: Record<string, number>): string {
  return Object.entries(logs)
    .map(([k, v]) => `${k}: ${Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toFixed(4)}`)
    .join(' - ');
}

/**
 * Keras-style epoch progress: `12/56 [=====>........] - ETA: 3s - loss: 0.1234 - 5012 samples/s`.
 * On a TTY the line is redrawn in place; otherwise a plain line is written about every 10 % of the epoch
 * (at most one every 2 s), so logs piped through `shoal run` stay readable.
 */
export class ProgressBar {
  private readonly t0 = performance.now();
  private lastPlain = 0;
  private lastDecile = 0;
  private lastDrawn = 0;
  constructor(
    private readonly out: LogSink,
    private readonly totalSteps: number,
    private readonly width = 30,
  ) {}

  private bar(step: number): string {
    if (this.totalSteps <= 0) return `${step}/?`; // a batch source of unknown length
    const total = this.totalSteps;
    const done = Math.min(this.width, Math.floor((step / total) * this.width));
    const arrow = step < total && done < this.width ? '>' : '';
    return `${String(step).padStart(String(total).length)}/${total} [${'='.repeat(done)}${arrow}${'.'.repeat(Math.max(0, this.width - done - arrow.length))}]`;
  }

  /** `samples`: samples processed this epoch by this rank times the world size. */
  update(step: number, logs: Record<string, number>, samples: number): void {
    const now = performance.now();
    const elapsed = (now - this.t0) / 1000;
    const eta = step > 0 && this.totalSteps > 0 ? (elapsed / step) * (this.totalSteps - step) : Infinity;
    const line = `${this.bar(step)}${this.totalSteps > 0 ? ` - ETA: ${fmtSeconds(eta)}` : ''} - ${fmtLogs(logs)} - ${Math.round(samples / Math.max(elapsed, 1e-9))} samples/s`;
    if (this.out.isTTY) {
      if (now - this.lastDrawn < 50 && step < this.totalSteps) return;
      this.lastDrawn = now;
      this.out.write(`\r${line}\x1b[K`);
      return;
    }
    // Unknown length: a line every 10 s.
    const decile = this.totalSteps > 0 ? Math.floor((step / this.totalSteps) * 10) : Math.floor(now / 10_000);
    if (decile > this.lastDecile && now - this.lastPlain >= 2000) {
      this.lastDecile = decile;
      this.lastPlain = now;
      this.out.write(`${line}\n`);
    }
  }

  /** Final line of the epoch, with the rank-averaged logs. Returns the epoch's seconds. */
  end(step: number, logs: Record<string, number>, samples: number): number {
    const elapsed = (performance.now() - this.t0) / 1000;
    const perStep = step > 0 ? `${Math.round((elapsed * 1000) / step)}ms/step` : '';
    const line = `${this.bar(step)} - ${fmtSeconds(elapsed)} ${perStep} - ${fmtLogs(logs)} - ${Math.round(samples / Math.max(elapsed, 1e-9))} samples/s`;
    this.out.write(this.out.isTTY ? `\r${line}\x1b[K\n` : `${line}\n`);
    return elapsed;
  }
}
