import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mergeTimeline } from './merge-timeline.js';
import { Timeline, timelinePartPath } from './timeline.js';

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.match(String(e), re);
    return;
  }
  assert.unreachable(`expected a rejection matching ${re}`);
}

const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

test('spans are buffered, written by flush with their lanes named once, and close is idempotent', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-tl-'));
  try {
    const t = new Timeline({ path: join(dir, 'p.jsonl'), pid: 3, flushMs: 60_000 });
    const step = t.lane('step');
    assert.is(t.lane('step'), step, 'one lane per name');
    const sync = t.lane('sync');
    const t0 = t.now();
    t.span(step, 'compute', t0, { bytes: 4 });
    await t.trace(sync, 'allreduce', async () => new Promise((r) => setTimeout(r, 5)));
    await rejects(t.trace(sync, 'negotiate', async () => Promise.reject(new Error('boom'))), /boom/);
    assert.is(readFileSync(join(dir, 'p.jsonl'), 'utf8'), '', 'nothing written before a flush');
    await t.flush();
    const ev = lines(join(dir, 'p.jsonl'));
    const meta = ev.filter((e) => e.ph === 'M');
    assert.equal(meta.filter((e) => e.name === 'thread_name').map((e) => [e.tid, (e.args as { name: string }).name]), [[1, 'step'], [2, 'sync']]);
    assert.ok(meta.some((e) => e.name === 'process_name' && String((e.args as { name: string }).name).startsWith('rank 3 (')));
    const spans = ev.filter((e) => e.ph === 'X');
    assert.equal(spans.map((e) => [e.name, e.tid, e.pid]), [['compute', 1, 3], ['allreduce', 2, 3], ['negotiate', 2, 3]]);
    assert.equal(spans[0]!.args, { bytes: 4 });
    assert.ok((spans[1]!.dur as number) >= 4000, `the traced wait lasted >= 4 ms, got ${spans[1]!.dur} us`);
    t.span(step, 'apply', t.now());
    await t.close();
    await t.close();
    t.span(step, 'late', t.now());
    assert.is(lines(join(dir, 'p.jsonl')).filter((e) => e.ph === 'X').length, 4, 'the span before close is written, the one after is not');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a process that exits without closing its timeline still leaves every span in the part', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-tl-'));
  try {
    const mod = fileURLToPath(new URL('./timeline.js', import.meta.url));
    const script = `
      const { Timeline } = await import(${JSON.stringify(mod)});
      const t = new Timeline({ path: ${JSON.stringify(join(dir, 'x.jsonl'))}, pid: 0, flushMs: 1 });
      const l = t.lane('step');
      for (let i = 0; i < 2000; i++) t.span(l, 's' + i, t.now());
      await new Promise((r) => setTimeout(r, 5));        // some of it goes out through the timer
      for (let i = 2000; i < 4000; i++) t.span(l, 's' + i, t.now());
      void t.flush();                                      // a write in flight at exit
      for (let i = 4000; i < 5000; i++) t.span(l, 's' + i, t.now());
      process.exit(0);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.is(r.status, 0, r.stderr);
    const names = lines(join(dir, 'x.jsonl')).filter((e) => e.ph === 'X').map((e) => e.name);
    assert.is(names.length, 5000, 'no span lost or doubled');
    assert.equal(names, Array.from({ length: 5000 }, (_, i) => `s${i}`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('merge joins the ranks in timestamp order, keeps a torn part up to its last full line and lists a missing one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-tl-'));
  try {
    const file = join(dir, 'tl.json');
    const ts = [[0, [30, 10]], [1, [20, 40]]] as const;
    for (const [rank, times] of ts) {
      const t = new Timeline({ path: timelinePartPath(file, rank), pid: rank, flushMs: 60_000 });
      const l = t.lane('sync');
      for (const at of times) t.complete(l, 'allreduce', at, at + 5);
      await t.close();
    }
    appendFileSync(timelinePartPath(file, 1), '{"name":"torn","ph":"X","pid":1,"ti');
    const m = await mergeTimeline(file, [0, 1, 2].map((r) => timelinePartPath(file, r)), { remove: true });
    assert.equal(m, { spans: 4, pids: [0, 1], missing: [timelinePartPath(file, 2)], clockOffsets: {} });
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: Array<Record<string, unknown>> };
    const spans = doc.traceEvents.filter((e) => e.ph === 'X');
    assert.equal(spans.map((e) => [e.pid, e.ts]), [[0, 10], [1, 20], [0, 30], [1, 40]]);
    assert.ok(doc.traceEvents.slice(0, doc.traceEvents.length - 4).every((e) => e.ph === 'M'), 'metadata first');
    assert.not.ok(existsSync(timelinePartPath(file, 0)) || existsSync(timelinePartPath(file, 1)), 'parts removed');
    writeFileSync(timelinePartPath(file, 0), 'not json\n');
    await rejects(mergeTimeline(file, [timelinePartPath(file, 0)]), /tl\.json\.rank-0\.jsonl:1.*not a JSON trace event/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a part file that cannot be created is one clear error naming it', () => {
  assert.throws(() => new Timeline({ path: '/dev/null/x.jsonl', pid: 0 }), /timeline.*\/dev\/null\/x\.jsonl cannot be written/);
  assert.throws(() => new Timeline({ path: '', pid: 0 }), /timeline path/);
});

test.run();
