import { spawn, type ChildProcess } from 'node:child_process';

/** A test child process that prints one JSON object per stdout line (the multi-process ring/collective workers). */
export interface JsonLinesChild {
  child: ChildProcess;
  /** Every line parsed so far, in order. */
  lines: Record<string, unknown>[];
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

/** Start `node <script> ...args`, collecting its stdout JSON lines (stderr passes through). */
export function startJsonLinesChild(script: string, args: readonly string[], onLine?: (o: Record<string, unknown>) => void): JsonLinesChild {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const o = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
      buf = buf.slice(i + 1);
      lines.push(o);
      onLine?.(o);
    }
  });
  const exited = new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  return { child, lines, exited };
}

/** `p`, or an Error naming `what` once `ms` milliseconds have passed. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(`${what} took over ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}
