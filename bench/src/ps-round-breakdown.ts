/**
 * Where a ps sync round's time goes, from a merged `shoal run --timeline` file of a job with 2+ workers and one
 * ps server (dense collectives on known keys: one guarded request per worker per step). Per round, with the
 * workers' `push+pull` spans (lane `sync`), the server's `request` spans (lane `requests`) and `apply` spans:
 *
 * - `arrival_gap`: first worker's push+pull start to the last one's (the first waits for the last: not the round's cost);
 * - `last_to_server`: the last worker's start to the server's start of its request (the worker's staging copy,
 *   its send, the server's wake-up and read);
 * - `server_before_apply`: from there to the round's first apply (gather of the signatures, pushes);
 * - `apply`: first apply start to last apply end (the updates, one native pass per key);
 * - `after_apply`: last apply end to the last request's end on the server (acknowledgements, the reply's outcome);
 * - `reply_first`, `reply_last`: the server's request end to the worker's push+pull end, for the worker that
 *   arrived first and the one that arrived last (encode, send, the worker's wake-up, landing the values);
 * - `last_to_done`: the last worker's start to the end of the last push+pull: the round's critical path.
 *
 * Rounds are matched by order from the end (the first collective declares its keys with plain requests, so a rank
 * has one push+pull more than guarded requests): the last n push+pulls of every rank and its last n requests; the
 * applies of a round are those between the last arriver's request start and the round's last request end.
 * Values in microseconds.
 */

export interface TraceEvent {
  ph: string;
  pid: number;
  name: string;
  ts: number;
  dur?: number;
  args?: Record<string, unknown>;
}

export const BREAKDOWN_PARTS = ['arrival_gap', 'last_to_server', 'server_before_apply', 'apply', 'after_apply', 'reply_first', 'reply_last', 'last_to_done'] as const;
export type BreakdownPart = (typeof BREAKDOWN_PARTS)[number];

export interface RoundBreakdown {
  rounds: number;
  /** Per part: median and mean over the rounds (µs). */
  p50: Record<BreakdownPart, number>;
  mean: Record<BreakdownPart, number>;
}

/** Server timelines use pids from this base (backends/src/ps/server/server-metrics.ts). */
const SERVER_PID_MIN = 10_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * The breakdown of the rounds after the first `skip` (warm-up). Throws when the file lacks what it needs (no
 * server requests: an older build or another engine; rank counts that disagree).
 */
export function psRoundBreakdown(events: readonly TraceEvent[], skip = 0): RoundBreakdown {
  const spans = events.filter((e) => e.ph === 'X' && e.dur !== undefined);
  const ranks = [...new Set(spans.filter((e) => e.pid < SERVER_PID_MIN && e.name === 'push+pull').map((e) => e.pid))].sort((a, b) => a - b);
  if (ranks.length < 2) throw new Error(`ps round breakdown: push+pull spans of ${ranks.length} rank(s); need a job of 2+ workers on the ps engine`);
  const byStart = (a: TraceEvent, b: TraceEvent) => a.ts - b.ts;
  const pp = ranks.map((r) => spans.filter((e) => e.pid === r && e.name === 'push+pull').sort(byStart));
  const server = spans.filter((e) => e.pid >= SERVER_PID_MIN);
  const reqs = ranks.map((r) => server.filter((e) => e.name === 'request' && e.args?.['rank'] === r).sort(byStart));
  if (reqs.some((q) => q.length === 0)) throw new Error('ps round breakdown: no server `request` spans (the server records them since this build; one ps server)');
  const applies = server.filter((e) => e.name === 'apply').sort(byStart);
  const n = Math.min(...pp.map((x) => x.length), ...reqs.map((x) => x.length));
  for (const x of [...pp, ...reqs]) x.splice(0, x.length - n); // align from the end
  const rows: Record<BreakdownPart, number>[] = [];
  for (let i = skip; i < n; i++) {
    const starts = pp.map((x) => x[i]!.ts);
    const first = starts.indexOf(Math.min(...starts));
    const last = starts.indexOf(Math.max(...starts));
    const lastReq = reqs[last]![i]!;
    const reqEnd = (r: number) => reqs[r]![i]!.ts + reqs[r]![i]!.dur!;
    const roundEnd = Math.max(...ranks.map((_, r) => reqEnd(r)));
    const mine = applies.filter((a) => a.ts >= lastReq.ts && a.ts + a.dur! <= roundEnd);
    if (!mine.length) continue; // a round whose update ran elsewhere (not a sync round of this server): skip
    const a0 = mine[0]!.ts;
    const a1 = Math.max(...mine.map((a) => a.ts + a.dur!));
    const end = (r: number) => pp[r]![i]!.ts + pp[r]![i]!.dur!;
    rows.push({
      arrival_gap: starts[last]! - starts[first]!,
      last_to_server: lastReq.ts - starts[last]!,
      server_before_apply: a0 - lastReq.ts,
      apply: a1 - a0,
      after_apply: reqEnd(last) - a1,
      reply_first: end(first) - reqEnd(first),
      reply_last: end(last) - reqEnd(last),
      last_to_done: Math.max(...ranks.map((_, r) => end(r))) - starts[last]!,
    });
  }
  if (!rows.length) throw new Error('ps round breakdown: no complete rounds');
  const stat = (f: (xs: number[]) => number) => Object.fromEntries(BREAKDOWN_PARTS.map((k) => [k, f(rows.map((r) => r[k]))])) as Record<BreakdownPart, number>;
  return { rounds: rows.length, p50: stat(median), mean: stat((xs) => xs.reduce((a, b) => a + b, 0) / xs.length) };
}
