// How the launcher names what failed a job (launch.ts): the telling lines of a worker's stderr, the root-cause
// rank among those that failed, and the rank the others were waiting for.

/** `killed by SIGKILL` / `exit code 3`: how a process ended. */
export function howItEnded(code: number | null, signal: string | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

/** Pick the most telling lines of a failed worker's stderr: from the first error line on, else the tail. */
export function summarizeFailure(tail: readonly string[]): string {
  const i = tail.findIndex((l) => /(Error|ERR_[A-Z_]+|Uncaught|Exception)\b/.test(l));
  const lines = (i >= 0 ? tail.slice(i, i + 12) : tail.slice(-12)).filter((l) => l.trim() !== '');
  return lines.join('\n');
}

/** Errors that are consequences of another rank's failure: a peer that went away, a closed or aborted group. */
const CONSEQUENCE = /\b(ERR_PEER_CLOSED|ERR_CLOSED|ERR_ABORTED)\b|peer closed the connection/;

/**
 * The root cause among workers that failed on their own (in exit order): the first whose error is not merely a
 * consequence of another rank's death (ERR_PEER_CLOSED & co.), else the first to exit. When rank 1 throws and
 * closes its sockets, rank 0 may well exit first with ERR_PEER_CLOSED; rank 1 is still the one to report.
 */
export function pickRootCause<T extends { tail: readonly string[] }>(failed: readonly T[]): T | undefined {
  return failed.find((f) => !f.tail.some((l) => CONSEQUENCE.test(l))) ?? failed[0];
}

/** `waiting for rank(s) 1, 3` (shm collective), `waiting for worker 1` / `workers 1, 2` (ps servers). */
const WAITING_FOR = /waiting for (?:rank\(s\)|ranks?|workers?) (\d+(?:, ?\d+)*)/;

/**
 * The rank that stopped making progress, when the failures are timeouts that name whom they waited for: the rank
 * named by the most failed ranks that is not itself among them (a SIGSTOPped or deadlocked rank times out on
 * nothing: the others time out waiting for it). Undefined when no failure names one.
 */
export function pickStalledRank<T extends { rank: number; tail: readonly string[] }>(failed: readonly T[]): { rank: number; waiters: number[] } | undefined {
  const votes = new Map<number, number[]>();
  for (const f of failed) {
    const named = new Set<number>();
    for (const l of f.tail) {
      const m = WAITING_FOR.exec(l);
      if (m) for (const r of m[1]!.split(',')) named.add(Number(r.trim()));
    }
    for (const r of named) if (r !== f.rank) votes.set(r, [...(votes.get(r) ?? []), f.rank]);
  }
  const failedRanks = new Set(failed.map((f) => f.rank));
  const candidates = [...votes].filter(([r]) => !failedRanks.has(r)).sort((a, b) => b[1].length - a[1].length || a[0] - b[0]);
  const top = candidates[0];
  return top ? { rank: top[0], waiters: top[1] } : undefined;
}
