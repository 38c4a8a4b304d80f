/**
 * RingSync with a timeline (`shoal run --timeline`): the traced engine still passes the compliance suite, and it
 * records the ops of each bucket (negotiate, pack, allreduce, unpack) and, on the ring route, its stages (wait,
 * reduce, send) at the times they happened.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Timeline } from '@shoal/core/telemetry';
import { gradientSyncCompliance } from '../testing/compliance.js';
import { memoryGroups, onAllRanks } from './memory-groups.js';
import { RingSync } from './ring-sync.js';

const dir = mkdtempSync(join(tmpdir(), 'shoal-ring-tl-'));
/** One timeline per rank, shared by the suite's engines (a process records on one timeline). */
const timelines: Timeline[] = [];
function timeline(rank: number): Timeline {
  return (timelines[rank] ??= new Timeline({ path: join(dir, `compliance-${rank}.jsonl`), pid: rank, flushMs: 60_000 }));
}

gradientSyncCompliance('ring over memory, traced on a timeline', async (n) =>
  (await memoryGroups(n, { timeoutMs: 5000 })).map((g) => new RingSync(g, { fusionThresholdBytes: 4096, segmentBytes: 1024, timeline: timeline(g.rank) })),
  { sizes: [2, 3] },
).run();

interface Span {
  name: string;
  tid: number;
  ts: number;
  dur: number;
  args?: Record<string, unknown>;
}

test('a traced allreduce records negotiate, each bucket and the ring stages inside its allreduce span', async () => {
  const groups = await memoryGroups(3, { timeoutMs: 5000 });
  const tls = groups.map((g) => new Timeline({ path: join(dir, `stages-${g.rank}.jsonl`), pid: g.rank, flushMs: 60_000 }));
  const syncs = groups.map((g, r) => new RingSync(g, { fusionThresholdBytes: 100 << 10, segmentBytes: 16 << 10, timeline: tls[r]! }));
  try {
    // 3 tensors of 48 KiB: two fusion buckets (two packed: 3 chunks of 2 segments; one alone: 3 chunks of 1)
    const sizes = [12_288, 12_288, 12_288];
    await onAllRanks(groups, (_g, r) => syncs[r]!.allreduceMean(sizes.map((n, i) => ({ name: `t${i}`, shape: [n], data: new Float32Array(n).fill(r + i) }))));
    await Promise.all(tls.map((t) => t.close()));
    for (let r = 0; r < 3; r++) {
      const ev = readFileSync(join(dir, `stages-${r}.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const lanes = new Map<number, string>(ev.filter((e) => e.name === 'thread_name').map((e) => [e.tid, e.args.name]));
      const spans: Span[] = ev.filter((e) => e.ph === 'X');
      const on = (lane: string) => spans.filter((s) => lanes.get(s.tid) === lane);
      const names = on('sync').map((s) => s.name);
      assert.is(names.filter((n) => n === 'negotiate').length, 1, `rank ${r}: one negotiation`);
      const buckets = on('sync').filter((s) => s.name === 'allreduce');
      assert.equal(buckets.map((b) => [b.args!.bucket, b.args!.tensors, b.args!.route]), [[0, 2, 'ring'], [1, 1, 'ring']], `rank ${r}: two buckets`);
      assert.equal(buckets.map((b) => b.args!.bytes), [2 * 12_288 * 4, 12_288 * 4]);
      assert.ok(names.includes('pack') && names.includes('unpack'), `rank ${r}: the packed bucket is copied in and out`);
      // every wait and reduce lies inside one of the bucket spans (clock: microseconds, same process)
      const stages = on('sync').filter((s) => s.name === 'wait' || s.name === 'reduce');
      const inside = (s: Span) => buckets.some((b) => s.ts >= b.ts - 0.2 && s.ts + s.dur <= b.ts + b.dur + 0.2);
      // 2(size-1) = 4 ring steps, each receiving one chunk: (2 + 1) segments per step over the two buckets
      assert.is(stages.filter((s) => s.name === 'wait').length, 4 * 3, `rank ${r}: a wait per received segment`);
      assert.is(stages.filter((s) => s.name === 'reduce').length, 2 * 3, `rank ${r}: a reduce per reduce-scatter segment`);
      assert.ok(stages.every(inside), `rank ${r}: stages inside their bucket`);
      assert.is(on('sync sends').filter((s) => s.name === 'send').length, 4 * 3, `rank ${r}: a send per segment and step, on its own lane`);
    }
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

test.after(async () => {
  await Promise.all(timelines.map((t) => t.close()));
  rmSync(dir, { recursive: true, force: true });
});

test.run();
