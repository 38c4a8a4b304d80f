/**
 * `shoal run --timeline FILE` (issue 19): every rank of an unchanged script (the digits example) records a Chrome
 * trace of its steps and sync ops; the launcher merges the ranks into FILE, one process per rank.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRunArgs } from '@shoal/run';
import { DIGITS_MAIN, runNode, SHOAL_CLI } from './train-helpers.js';

interface TraceEvent {
  name: string;
  ph: string;
  pid: number;
  tid: number;
  ts: number;
  dur: number;
  args?: Record<string, unknown>;
}

/** The merged file, parsed as chrome://tracing reads it; with each rank's spans by lane name. */
function readTrace(file: string) {
  const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEvent[]; displayTimeUnit: string; metadata?: unknown };
  assert.ok(Array.isArray(doc.traceEvents), 'traceEvents is an array');
  const ev = doc.traceEvents;
  const lanes = new Map(ev.filter((e) => e.name === 'thread_name').map((e) => [`${e.pid}/${e.tid}`, String(e.args!.name)]));
  const procs = new Map(ev.filter((e) => e.name === 'process_name').map((e) => [e.pid, String(e.args!.name)]));
  const spans = ev.filter((e) => e.ph === 'X');
  const of = (pid: number, lane: string, name?: string) => spans.filter((s) => s.pid === pid && lanes.get(`${s.pid}/${s.tid}`) === lane && (name === undefined || s.name === name));
  return { ev, spans, procs, of, metadata: doc.metadata };
}

const within = (inner: TraceEvent, outer: TraceEvent) => inner.ts >= outer.ts - 0.1 && inner.ts + inner.dur <= outer.ts + outer.dur + 0.1;

test('shoal run -n 2 --timeline merges both ranks: every phase, in time order, the collectives overlapping', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-timeline-'));
  try {
    const file = join(dir, 'trace', 'digits.json');
    // the timeline's clock: this host's monotonic clock in µs (core/src/telemetry/host-clock.ts)
    const t0 = Number(process.hrtime.bigint()) / 1000;
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--timeline', file, DIGITS_MAIN, '--epochs', '2', '--steps', '6', '--batch-size', '16', '--checkpoint', join(dir, 'ckpt')], { timeoutMs: 90_000 });
    const t1 = Number(process.hrtime.bigint()) / 1000;
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, /timeline of 2 process\(es\), \d+ spans in .*digits\.json/);
    assert.equal(readdirSync(join(dir, 'trace')), ['digits.json'], 'the parts were merged and removed');
    const { ev, spans, procs, of, metadata } = readTrace(file);
    assert.equal([...procs.keys()].sort(), [0, 1], 'one process per rank');
    assert.is(metadata, undefined, 'ranks reaching the store over loopback share its clock: no offset measured or applied');
    assert.match(procs.get(1)!, /^rank 1 \(/);
    // in time order, all within the run
    for (let i = 1; i < spans.length; i++) assert.ok(spans[i]!.ts >= spans[i - 1]!.ts, `span ${i} (${spans[i]!.name}) is in time order`);
    assert.ok(spans.every((s) => s.ts >= t0 && s.ts + s.dur <= t1 && s.dur >= 0), 'every span lies within the run (host monotonic clock, microseconds)');
    assert.ok(ev.slice(0, ev.length - spans.length).every((e) => e.ph === 'M'), 'metadata first');
    for (const rank of [0, 1]) {
      const steps = of(rank, 'step', 'step');
      assert.is(steps.length, 12, `rank ${rank}: 2 epochs x 6 steps`);
      for (const phase of ['data', 'compute', 'sync', 'apply']) assert.is(of(rank, 'step', phase).length, 12, `rank ${rank}: a ${phase} span per step`);
      // compute, sync and apply of a step lie inside its step span, in that order
      steps.forEach((st, k) => {
        const [c, s, a] = ['compute', 'sync', 'apply'].map((p) => of(rank, 'step', p)[k]!);
        assert.ok(within(c!, st) && within(s!, st) && within(a!, st), `rank ${rank} step ${k}: phases inside the step`);
        assert.ok(c!.ts <= s!.ts && s!.ts <= a!.ts, `rank ${rank} step ${k}: compute, sync, apply`);
      });
      // the engine's ops: a negotiation and the fused bucket(s) inside each step's sync
      const buckets = of(rank, 'sync', 'allreduce');
      assert.ok(buckets.length >= 12, `rank ${rank}: ${buckets.length} bucket allreduces`);
      assert.ok(buckets.every((b) => typeof b.args!.bytes === 'number' && (b.args!.bytes as number) > 0 && typeof b.args!.route === 'string'));
      // on the shared segment (this local run's route) the tensor-list check rides in the first bucket's allreduce:
      // a control round (`negotiate`) only for the broadcast, and per allreduce only if that check failed
      assert.ok(buckets.every((b) => b.args!.route === 'shm-collective'), `rank ${rank}: the local run's route`);
      assert.ok(of(rank, 'sync', 'negotiate').length >= 1, `rank ${rank}: the broadcast's negotiation`);
      assert.ok(of(rank, 'sync', 'allreduce scalars').length >= 2, `rank ${rank}: the epoch logs' allreduce`);
      of(rank, 'step', 'sync').forEach((s, k) => assert.ok(buckets.some((b) => within(b, s)), `rank ${rank} step ${k}: a bucket allreduce inside the sync phase`));
    }
    assert.ok(of(0, 'step', 'checkpoint').length >= 2, 'rank 0 saves each epoch');
    assert.is(of(1, 'step', 'checkpoint').length, 0, 'only rank 0 writes checkpoints');
    // a collective cannot end on one rank before it started on the other: the k-th allreduce of each rank overlap
    const [a, b] = [of(0, 'sync', 'allreduce'), of(1, 'sync', 'allreduce')];
    assert.is(a.length, b.length);
    a.forEach((x, k) => {
      const y = b[k]!;
      assert.ok(x.ts <= y.ts + y.dur && y.ts <= x.ts + x.dur, `allreduce ${k}: rank 0 [${x.ts}, +${x.dur}] and rank 1 [${y.ts}, +${y.dur}] overlap`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--backend ps: the servers are processes of the timeline; each update lies inside both ranks\' push+pull', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-timeline-'));
  try {
    const file = join(dir, 'ps.json');
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--backend', 'ps', '--servers', '2', '--timeline', file, DIGITS_MAIN, '--epochs', '1', '--steps', '5', '--batch-size', '16'], { timeoutMs: 90_000 });
    assert.is(r.code, 0, r.stderr);
    assert.equal(readdirSync(dir), ['ps.json'], 'rank and server parts merged and removed');
    const { spans, procs, of } = readTrace(file);
    assert.equal([...procs.keys()].sort((a, b) => a - b), [0, 1, 10_000, 10_001]);
    assert.match(procs.get(10_001)!, /^ps-server-1 \(/);
    const pushPull = [0, 1].map((rank) => of(rank, 'sync', 'push+pull'));
    for (const rank of [0, 1]) assert.is(pushPull[rank]!.length, 5, `rank ${rank}: a push+pull per step`);
    const applies = spans.filter((s) => s.pid >= 10_000 && s.name === 'apply' && String(s.args!.key).startsWith('g:'));
    assert.ok(applies.length >= 5 * 2, `${applies.length} gradient updates on the servers`);
    // a round's update runs once both ranks pushed and before either gets its reply: inside one push+pull of each
    for (const a of applies) for (const rank of [0, 1]) assert.ok(pushPull[rank]!.some((p) => within(a, p)), `update of ${a.args!.key} on pid ${a.pid} inside a push+pull of rank ${rank}`);
    // each server records the guarded requests (one per rank per step after the first, which declares the keys);
    // an update runs inside the request of each rank that completed its round, on that server
    const requests = spans.filter((s) => s.pid >= 10_000 && s.name === 'request');
    for (const pid of [10_000, 10_001]) for (const rank of [0, 1]) assert.is(requests.filter((q) => q.pid === pid && q.args!.rank === rank).length, 4, `server ${pid}: a request of rank ${rank} per guarded step`);
    for (const a of applies.filter((x) => pushPull[0]!.slice(1).some((p) => within(x, p)))) {
      for (const rank of [0, 1]) assert.ok(requests.some((q) => q.pid === a.pid && q.args!.rank === rank && within(a, q)), `update of ${a.args!.key} on pid ${a.pid} inside a request of rank ${rank}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SHOAL_TIMELINE on a worker alone: it merges its own part; with --threads the launcher merges the threads', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-timeline-'));
  try {
    const alone = join(dir, 'alone.json');
    const r = await runNode([DIGITS_MAIN, '--epochs', '1', '--steps', '3', '--batch-size', '16'], { timeoutMs: 60_000, env: { SHOAL_TIMELINE: alone } });
    assert.is(r.code, 0, r.stderr);
    const one = readTrace(alone);
    assert.equal([...one.procs.keys()], [0]);
    assert.equal(['data', 'compute', 'apply'].map((p) => one.of(0, 'step', p).length), [3, 3, 3]);
    assert.is(one.of(0, 'step', 'sync').length, 0, 'one worker does not sync');
    const threads = join(dir, 'threads.json');
    const t = await runNode([SHOAL_CLI, 'run', '-n', '2', '--threads', DIGITS_MAIN, '--epochs', '1', '--steps', '3', '--batch-size', '16'], { timeoutMs: 60_000, env: { SHOAL_TIMELINE: threads } });
    assert.is(t.code, 0, t.stderr);
    const two = readTrace(threads);
    assert.equal([...two.procs.keys()].sort(), [0, 1]);
    for (const rank of [0, 1]) assert.is(two.of(rank, 'step', 'sync').length, 3, `thread rank ${rank}`);
    assert.equal(readdirSync(dir).sort(), ['alone.json', 'threads.json'], 'no part left behind');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--timeline (or SHOAL_TIMELINE) becomes an absolute path; an empty one is refused', () => {
  assert.is(parseRunArgs(['-n', '2', '--timeline', 'tl/a.json', 'train.js'], { cores: 2 }).timeline, join(process.cwd(), 'tl/a.json'));
  assert.is(parseRunArgs(['-n', '2', 'train.js'], { cores: 2, SHOAL_TIMELINE: 'b.json' }).timeline, join(process.cwd(), 'b.json'));
  assert.is(parseRunArgs(['-n', '2', '--timeline', 'c.json', 'train.js'], { cores: 2, SHOAL_TIMELINE: 'b.json' }).timeline, join(process.cwd(), 'c.json'), 'the flag wins');
  assert.throws(() => parseRunArgs(['-n', '2', '--timeline', '', 'train.js'], { cores: 2 }), /--timeline needs a file/);
  assert.is(parseRunArgs(['-n', '2', 'train.js'], { cores: 2 }).timeline, undefined);
});

test.run();
