import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JobAuth } from '../security/job-auth.js';
import { TcpStore } from '../store/tcp.js';
import { TcpStoreServer } from '../store/tcp-server.js';
import { estimateClockOffset } from './clock-offset.js';
import { hostClock, monotonicOriginUs } from './host-clock.js';
import { mergeTimeline } from './merge-timeline.js';
import { Timeline, timelinePartPath } from './timeline.js';

const auth = JobAuth.generate('clock-test');
const local = hostClock();

test('the sample with the shortest round trip gives the offset (scripted clocks)', async () => {
  // local clock: a script of readings; the reference answers r. Trips of 500, 100 and 300 µs.
  const local = [1000, 1500, 2000, 2100, 3000, 3300];
  const remote = [6_001_200, 6_002_040, 6_003_100];
  let li = 0;
  let ri = 0;
  const c = await estimateClockOffset(async () => remote[ri++]!, 'script', { samples: 3, localUs: () => local[li++]! });
  assert.is(c.rttUs, 100);
  assert.is(c.offsetUs, 6_002_040 - 2050, 'the middle of the shortest trip');
  assert.is(c.reference, 'script');
  assert.is(c.atUs, 2050, 'the moment it holds for: the middle of that trip, on the local clock');
  try {
    await estimateClockOffset(async () => 0, 'x', { samples: 0 });
    assert.unreachable('samples 0 accepted');
  } catch (e) {
    assert.match(String(e), /samples must be an integer >= 1, got 0/);
  }
});

test('through the TCP store: a reference clock 7 s ahead is found to within half the round trip', async () => {
  const skew = 7_000_000;
  const server = await TcpStoreServer.start({ auth, clockUs: () => local() + skew });
  const store = await TcpStore.connect(server.url, { auth, timeoutMs: 5_000 });
  try {
    const viaPrefix = store.prefixed('job');
    assert.type(viaPrefix.clock, 'function', 'a prefixed view keeps the clock');
    const c = await estimateClockOffset(viaPrefix.clock!, `store ${server.url}`);
    assert.ok(c.rttUs > 0 && c.rttUs < 1_000_000, `round trip ${c.rttUs} µs`);
    // the server read its clock inside [t0, t1] of the kept trip, so the error is at most half of it
    assert.ok(Math.abs(c.offsetUs - skew) <= c.rttUs / 2 + 1, `offset ${c.offsetUs} vs ${skew} (rtt ${c.rttUs})`);
    const direct = await estimateClockOffset(store.clock, 'the client itself', { samples: 2 });
    assert.ok(Math.abs(direct.offsetUs - skew) <= direct.rttUs / 2 + 1, 'the client\'s own clock method works detached');
  } finally {
    await store.close();
    await server.close();
  }
});

test('the merge shifts each part by its recorded offset, keeps the offsets as metadata and drops the event', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-clock-'));
  try {
    const file = join(dir, 'tl.json');
    // rank 1's host clock is 2.5 s behind rank 0's (the reference): one moment, two readings.
    const [a, b] = [0, 1].map((r) => new Timeline({ path: timelinePartPath(file, r), pid: r, flushMs: 60_000 }));
    const lane = [a!.lane('sync'), b!.lane('sync')];
    const t = a!.now();
    a!.complete(lane[0]!, 'allreduce', t, t + 1000);
    b!.clockOffset({ offsetUs: 2_500_000, rttUs: 80, reference: 'store tcp://h0:1' });
    b!.complete(lane[1]!, 'allreduce', t - 2_500_000, t - 2_500_000 + 1000);
    await Promise.all([a!.close(), b!.close()]);
    const m = await mergeTimeline(file, [timelinePartPath(file, 0), timelinePartPath(file, 1)]);
    assert.equal(m.clockOffsets, { 1: { offsetUs: 2_500_000, rttUs: 80, reference: 'store tcp://h0:1' } });
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { metadata: unknown; traceEvents: Array<Record<string, unknown>> };
    assert.equal(doc.metadata, { shoal_clock_offsets: { 1: { offsetUs: 2_500_000, rttUs: 80, reference: 'store tcp://h0:1' } } });
    assert.not.ok(doc.traceEvents.some((e) => e.name === 'shoal_clock_offset'), 'the offset is no trace event');
    const spans = doc.traceEvents.filter((e) => e.ph === 'X');
    assert.equal(spans.map((e) => e.pid).sort(), [0, 1]);
    const ts = spans.map((e) => e.ts as number);
    assert.ok(Math.abs(ts[0]! - ts[1]!) <= 0.1, `the two ranks' spans line up: ${ts.join(' vs ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('offsets taken at two moments are interpolated: a drifting clock stays aligned over the job', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-drift-'));
  try {
    const file = join(dir, 'tl.json');
    // rank 1's clock is 2 s behind at join and runs 400 ppm slow: 400 µs more behind 1 s later, at the close.
    const [a, b] = [0, 1].map((r) => new Timeline({ path: timelinePartPath(file, r), pid: r, flushMs: 60_000 }));
    const lane = [a!.lane('sync'), b!.lane('sync')];
    const t0 = a!.now();
    const drift = 400e-6;
    const behind = (t: number) => 2_000_000 + (t - t0) * drift; // reference time minus rank 1's reading
    const moments = [0, 250_000, 500_000, 1_000_000, 1_500_000]; // the last lies after the second offset
    for (const m of moments) a!.complete(lane[0]!, `op${m}`, t0 + m, t0 + m + 100);
    b!.clockOffset({ offsetUs: behind(t0), rttUs: 90, reference: 'store tcp://h0:1', atUs: t0 - 2_000_000 });
    for (const m of moments) b!.complete(lane[1]!, `op${m}`, t0 + m - behind(t0 + m), t0 + m - behind(t0 + m) + 100);
    b!.clockOffset({ offsetUs: behind(t0 + 1_000_000), rttUs: 110, reference: 'store tcp://h0:1', atUs: t0 + 1_000_000 - behind(t0 + 1_000_000) });
    await Promise.all([a!.close(), b!.close()]);
    const m = await mergeTimeline(file, [timelinePartPath(file, 0), timelinePartPath(file, 1)]);
    assert.equal(m.clockOffsets[1], { offsetUs: 2_000_400, rttUs: 110, reference: 'store tcp://h0:1', samples: 2, driftPpm: 400.16 });
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: Array<{ ph: string; pid: number; name: string; ts: number }> };
    const at = (pid: number, name: string) => doc.traceEvents.find((e) => e.ph === 'X' && e.pid === pid && e.name === name)!.ts;
    for (const mo of moments.slice(0, 4)) {
      const gap = at(1, `op${mo}`) - at(0, `op${mo}`);
      assert.ok(Math.abs(gap) <= 1, `op${mo}: rank 1 ${gap.toFixed(1)} µs off rank 0 (one offset would leave up to 400)`);
    }
    // after the last offset it is held (no extrapolation): 0.5 s of 400 ppm = 200 µs left, as documented
    const after = at(1, 'op1500000') - at(0, 'op1500000');
    assert.ok(Math.abs(after + 200) <= 1, `held after the last offset: ${after.toFixed(1)} µs`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a clock offset whose moment is not a number is a data error naming the line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-drift-'));
  try {
    const part = join(dir, 'p.jsonl');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(part, JSON.stringify({ name: 'shoal_clock_offset', ph: 'M', pid: 1, tid: 0, args: { offset_us: 1, rtt_us: 2, at_us: 'soon' } }) + '\n');
    try {
      await mergeTimeline(join(dir, 'tl.json'), [part]);
      assert.unreachable('accepted');
    } catch (e) {
      assert.match(String(e), /p\.jsonl:1.*non-numeric at_us/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the host clock is the monotonic clock, which another process reads alike', async () => {
  const { spawnSync } = await import('node:child_process');
  const before = Number(process.hrtime.bigint()) / 1000;
  const url = new URL('./host-clock.js', import.meta.url).href;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import { hostClock } from ${JSON.stringify(url)}; process.stdout.write(String(hostClock()()))`], { encoding: 'utf8' });
  const after = Number(process.hrtime.bigint()) / 1000;
  const child = Number(r.stdout);
  // the child's reading lies between two of ours (a wall-clock-based one would not, after a slew or step)
  assert.ok(child >= before - 2 && child <= after + 2, `child ${child} outside [${before}, ${after}]`);
  const o = monotonicOriginUs();
  const mine = hostClock()();
  assert.ok(Math.abs(mine - (performance.now() * 1000 + o)) < 1000, 'one origin per thread');
});

test.run();
