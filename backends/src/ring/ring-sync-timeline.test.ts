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
import { MemoryNetwork, MemoryStore, shmTransport } from '@shoal/core';
import { Timeline } from '@shoal/core/telemetry';
import { gradientSyncCompliance } from '../testing/compliance.js';
import { connectHierarchical } from './allreduce-hierarchical.js';
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

test('on the hierarchical route the bucket holds the local reduce, the leaders\' cross allreduce and the local broadcast', async () => {
  const hosts = ['a', 'a', 'b', 'b'];
  const shm = shmTransport({ prefix: `rtl${process.pid}`, ringBytes: 1 << 16 });
  const flat = await memoryGroups(4, { timeoutMs: 10_000 });
  const store = new MemoryStore().prefixed('hier');
  const cross = new MemoryNetwork().transport();
  const hs = await Promise.all(
    hosts.map((hostId, rank) => connectHierarchical({ rank, size: 4, store, hostId, local: { transport: shm, listenUrl: 'shm://auto' }, cross: { transport: cross, listenUrl: 'mem://' }, timeoutMs: 10_000 })),
  );
  const tls = flat.map((g) => new Timeline({ path: join(dir, `hier-${g.rank}.jsonl`), pid: g.rank, flushMs: 60_000 }));
  const syncs = flat.map((g, r) => new RingSync(g, { topology: 'hierarchical', hierarchical: hs[r]!, timeline: tls[r]! }));
  try {
    await onAllRanks(flat, (_g, r) => syncs[r]!.allreduceMean([{ name: 'g', shape: [4096], data: new Float32Array(4096).fill(r) }]));
    await Promise.all(tls.map((t) => t.close()));
    const leaders = hs.map((h) => h.cross !== undefined);
    assert.equal(leaders.filter(Boolean).length, 2, 'one leader per host');
    for (let r = 0; r < 4; r++) {
      const spans: Span[] = readFileSync(join(dir, `hier-${r}.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.ph === 'X');
      const [bucket] = spans.filter((x) => x.name === 'allreduce');
      assert.equal(bucket?.args?.route, 'hierarchical', `rank ${r}`);
      const stages = spans.filter((x) => ['local reduce', 'cross allreduce', 'local broadcast'].includes(x.name));
      assert.equal(stages.map((x) => x.name), leaders[r] ? ['local reduce', 'cross allreduce', 'local broadcast'] : ['local reduce', 'local broadcast'], `rank ${r}`);
      assert.ok(stages.every((x) => x.ts >= bucket!.ts - 0.2 && x.ts + x.dur <= bucket!.ts + bucket!.dur + 0.2), `rank ${r}: stages inside the bucket`);
      if (leaders[r]) assert.ok(spans.some((x) => x.name === 'wait'), `rank ${r}: the cross ring's waits`);
    }
  } finally {
    await Promise.all(syncs.map((x) => x.close()));
    await shm.close?.();
  }
});

test.after(async () => {
  await Promise.all(timelines.map((t) => t.close()));
  rmSync(dir, { recursive: true, force: true });
});

test.run();
