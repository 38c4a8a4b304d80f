import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { psRoundBreakdown, type TraceEvent } from './ps-round-breakdown.js';

const X = (pid: number, name: string, ts: number, end: number, args?: Record<string, unknown>): TraceEvent => ({ ph: 'X', pid, name, ts, dur: end - ts, ...(args ? { args } : {}) });

/**
 * Round i at t = 1000 i: rank 0 starts its push+pull at +0, rank 1 at L = +100 + 10 i (the last); the server reads
 * rank 1's request at L + 50, applies two keys from L + 60 to L + 120, ends both requests at L + 130; replies land
 * at L + 200 (rank 0) and L + 220 + i (rank 1). A plain push+pull (keys declared) comes before the guarded ones.
 */
function trace(rounds: number): TraceEvent[] {
  const ev: TraceEvent[] = [X(0, 'push+pull', -500, -400), X(1, 'push+pull', -500, -400), { ph: 'M', pid: 0, name: 'process_name', ts: 0 }];
  for (let i = 0; i < rounds; i++) {
    const t = 1000 * i;
    const last = t + 100 + 10 * i;
    ev.push(X(0, 'push+pull', t, last + 200), X(1, 'push+pull', last, last + 220 + i));
    ev.push(X(10_000, 'request', t + 20, last + 130, { rank: 0, collectives: 1 }), X(10_000, 'request', last + 50, last + 130, { rank: 1, collectives: 1 }));
    ev.push(X(10_000, 'apply', last + 60, last + 90, { key: 'g:a' }), X(10_000, 'apply', last + 90, last + 120, { key: 'g:b' }));
  }
  return ev;
}

test('splits each round from the last arrival to the last reply, aligned from the end, after the skipped rounds', () => {
  const b = psRoundBreakdown(trace(5), 2);
  assert.is(b.rounds, 3); // rounds 2, 3, 4
  // round i: gap 100 + 10 i; last -> server 50; server before apply 10; apply 60; after 10; replies 70, 90 + i
  assert.is(b.p50.arrival_gap, 130);
  assert.is(b.p50.last_to_server, 50);
  assert.is(b.p50.server_before_apply, 10);
  assert.is(b.p50.apply, 60);
  assert.is(b.p50.after_apply, 10);
  assert.is(b.p50.reply_first, 70);
  assert.is(b.p50.reply_last, 93);
  assert.is(b.p50.last_to_done, 223);
  assert.is(b.mean.arrival_gap, 130);
});

test('refuses a trace without server requests or without two ranks, naming what is missing', () => {
  const noRequests = trace(3).filter((e) => e.name !== 'request');
  assert.throws(() => psRoundBreakdown(noRequests), /no server `request` spans/);
  const oneRank = trace(3).filter((e) => e.pid !== 1);
  assert.throws(() => psRoundBreakdown(oneRank), /push\+pull spans of 1 rank/);
});

test.run();
