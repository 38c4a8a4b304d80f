/**
 * The frame of a multi-process test's rank worker (ring-worker.ts, shm-collective-worker.ts): argv
 * `<mode> <rank> <size> <storeUrl> <extra> <timeoutMs>`, JSON-line output, and the exit protocol the tests read.
 */
export interface RankArgs {
  mode: string;
  rank: number;
  size: number;
  storeUrl: string;
  /** The worker's own argument (a transport name, a job id). */
  extra: string;
  timeoutMs: number;
}

export function rankArgs(argv: readonly string[] = process.argv.slice(2)): RankArgs {
  const [mode, rank, size, storeUrl, extra, timeoutMs] = argv;
  return { mode: mode!, rank: Number(rank), size: Number(size), storeUrl: storeUrl!, extra: extra!, timeoutMs: Number(timeoutMs) };
}

/** Print one JSON line for the parent. */
export const say = (o: unknown): void => void process.stdout.write(JSON.stringify(o) + '\n');

/** A failed operation as the parent reads it: `{ error: code, message, at, rank }`. */
export function sayError(e: unknown, rank: number): void {
  say({ error: (e as { code?: string }).code ?? 'ERR', message: (e as Error)?.message ?? String(e), at: Date.now(), rank });
}

/** Run the worker's body, then exit: 0 when it returned, 1 (after reporting) when an error escaped it. */
export function runRank(main: () => Promise<void>, rank: number): void {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      sayError(e, rank);
      process.exit(1);
    },
  );
}
