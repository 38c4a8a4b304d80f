import type { ChildProcess } from 'node:child_process';

/** The JSON-object lines a child prints on stdout, collected as they come (stderr is kept for error messages). */
export interface JsonLines {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: () => string;
  /** The first line (already seen or still to come) for which `pred` holds; rejects after `ms` or at exit. */
  wait(pred: (o: Record<string, unknown>) => boolean, ms: number, what: string): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

/** Follow `child`'s stdout (spawned with stdout and stderr piped). Lines that are not JSON objects are kept as `{ text }`. */
export function jsonLines(child: ChildProcess): JsonLines {
  const lines: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let buf = '';
  let err = '';
  let done = false;
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        o = { text: line };
      }
      lines.push(o);
    }
    waiters.forEach((w) => w());
  });
  child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
  const exited = new Promise<number | null>((res) =>
    child.once('exit', (c) => {
      done = true;
      waiters.forEach((w) => w());
      res(c);
    }),
  );
  const wait = (pred: (o: Record<string, unknown>) => boolean, ms: number, what: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = (): void => {
        const hit = lines.find(pred);
        if (hit) finish(() => resolve(hit));
        else if (done) finish(() => reject(new Error(`${what}: the process exited (${child.exitCode ?? child.signalCode}) first; stdout ${JSON.stringify(lines.slice(-3))}; stderr ${err.slice(-1500)}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`${what}: nothing after ${ms} ms; stdout ${JSON.stringify(lines.slice(-3))}; stderr ${err.slice(-1500)}`))), ms);
      const finish = (f: () => void): void => {
        clearTimeout(timer);
        waiters.delete(check);
        f();
      };
      waiters.add(check);
      check();
    });
  return { child, lines, stderr: () => err, wait, exited };
}
