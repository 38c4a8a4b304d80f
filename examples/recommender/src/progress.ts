/**
 * A one-line progress bar on a TTY (redrawn in place), or a plain line every 10 % otherwise (CI logs).
 * `out` is the stream to draw on (stderr by default).
 */
export class ProgressBar {
  private lastDecile = -1;
  private readonly t0 = Date.now();
  constructor(private readonly label: string, private readonly total: number, private readonly out: NodeJS.WriteStream = process.stderr) {}
  update(done: number, info = ''): void {
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const s = ((Date.now() - this.t0) / 1000).toFixed(1);
    if (this.out.isTTY) {
      const w = 28, fill = Math.round(frac * w);
      this.out.write(`\r${this.label} [${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${done}/${this.total} ${s}s ${info}\x1b[K`);
      if (done >= this.total) this.out.write('\n');
    } else {
      const dec = Math.floor(frac * 10);
      if (dec !== this.lastDecile) {
        this.lastDecile = dec;
        this.out.write(`${this.label} [${'#'.repeat(dec)}${'.'.repeat(10 - dec)}] ${String(Math.round(frac * 100)).padStart(3)}% ${done}/${this.total} ${s}s ${info}\n`);
      }
    }
  }
}
