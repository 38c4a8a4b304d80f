import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableToIPC } from 'apache-arrow';
import { isShoalError } from '@shoal/core';
import { openArrowFile, shard, batches, localSteps, agreeSteps, syncSteps, type Dataset } from './index.js';
import { exampleTable } from './test-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'shoal-shard-'));
// Uneven and empty partitions over two files: 11 partitions, 3 of them empty, 203 rows.
const SIZES_A = [0, 5, 17, 1, 0, 33];
const SIZES_B = [2, 9, 0, 100, 36];
const TOTAL = [...SIZES_A, ...SIZES_B].reduce((a, b) => a + b, 0);
let ds: Dataset;

test.before(async () => {
  writeFileSync(join(dir, 'a.arrow'), tableToIPC(exampleTable(SIZES_A, 0), 'file'));
  writeFileSync(join(dir, 'b.arrow'), tableToIPC(exampleTable(SIZES_B, 1000), 'file'));
  ds = await openArrowFile(dir);
});

function allIds(): number[] {
  const out: number[] = [];
  let at = 0;
  for (const n of SIZES_A) for (let i = 0; i < n; i++) out.push(at++);
  at = 1000;
  for (const n of SIZES_B) for (let i = 0; i < n; i++) out.push(at++);
  return out.sort((a, b) => a - b);
}

async function epochIds(size: number, opts: { shuffle?: { seed: number; buffer: number }; epoch?: number; policy?: 'balanced' | 'round-robin' }): Promise<number[][]> {
  const perRank: number[][] = [];
  for (let rank = 0; rank < size; rank++) {
    const s = shard(ds, rank, size, opts.policy ?? 'balanced');
    const ids: number[] = [];
    const bo = { columns: ['id'], batchSize: 7, ...(opts.shuffle ? { shuffle: opts.shuffle } : {}), epoch: opts.epoch ?? 0 };
    for await (const b of batches(s, bo)) ids.push(...b.columns.id!);
    perRank.push(ids);
  }
  return perRank;
}

test('sharding over 1..7 ranks: every row exactly once per epoch (balanced, round-robin, shuffled)', async () => {
  const want = allIds();
  assert.is(want.length, TOTAL);
  for (let size = 1; size <= 7; size++) {
    for (const opts of [{}, { policy: 'round-robin' as const }, { shuffle: { seed: 42, buffer: 16 }, epoch: 3 }]) {
      const per = await epochIds(size, opts);
      const flat = per.flat().sort((a, b) => a - b);
      assert.equal(flat, want, `size ${size} ${JSON.stringify(opts)}`);
    }
  }
});

test('balanced assignment evens out rows; every partition goes to exactly one rank', () => {
  for (let size = 1; size <= 7; size++) {
    const names = new Set<string>();
    const loads: number[] = [];
    for (let r = 0; r < size; r++) {
      const s = shard(ds, r, size);
      for (const p of s.partitions) {
        assert.not.ok(names.has(p.name));
        names.add(p.name);
      }
      loads.push(s.partitions.reduce((a, p) => a + p.rows!, 0));
    }
    assert.is(names.size, ds.partitions.length);
    // Greedy largest-first: the spread is at most the largest partition.
    assert.ok(Math.max(...loads) - Math.min(...loads) <= 100, `loads ${loads}`);
  }
  // Shards with 7 ranks over 8 non-empty partitions: the 100-row partition alone on one rank.
  assert.equal(shard(ds, 0, 7).partitions.map((p) => p.rows), [100]);
});

test('shuffle is deterministic per (seed, epoch) and differs across epochs', async () => {
  const a = await epochIds(3, { shuffle: { seed: 7, buffer: 32 }, epoch: 1 });
  const b = await epochIds(3, { shuffle: { seed: 7, buffer: 32 }, epoch: 1 });
  const c = await epochIds(3, { shuffle: { seed: 7, buffer: 32 }, epoch: 2 });
  assert.equal(a, b);
  assert.not.equal(a, c);
  const seq = await epochIds(3, {});
  assert.not.equal(a, seq);
});

test('agreed steps: wrap pads short and empty ranks, min stops everyone together', async () => {
  const size = 7;
  // 6 ranks would do; with 7 ranks and 8 non-empty partitions ranks get very different counts, some get few.
  const counts = Array.from({ length: size }, (_, r) => localSteps(shard(ds, r, size), 10));
  const gather = async () => counts;
  for (const policy of ['wrap', 'min'] as const) {
    const steps = await syncSteps(counts[0]!, gather, policy);
    assert.is(steps, agreeSteps(counts, policy));
    for (let r = 0; r < size; r++) {
      let n = 0;
      for await (const b of batches(shard(ds, r, size), { columns: ['id'], batchSize: 10, steps, shuffle: { seed: 1, buffer: 8 } })) {
        assert.ok(b.size <= 10);
        n++;
      }
      assert.is(n, steps, `rank ${r} policy ${policy}`);
    }
  }
  // A rank with no rows at all yields empty batches to fill the agreed count.
  const empty = { ...shard(ds, 0, 1), partitions: ds.partitions.filter((p) => p.rows === 0) };
  assert.is(localSteps(empty, 4), 0);
  const sizes: number[] = [];
  for await (const b of batches(empty, { columns: ['id'], batchSize: 4, steps: 3 })) sizes.push(b.size, b.columns.id!.length);
  assert.equal(sizes, [0, 0, 0, 0, 0, 0]);
  assert.is(agreeSteps([3, 0, 5], 'min'), 0);
  assert.is(agreeSteps([3, 0, 5], 'wrap'), 5);
  assert.throws(() => agreeSteps([]), /counts/);
  assert.throws(() => shard(ds, 3, 3), /rank/);
});

test('dropRemainder and wrap-around reuse rows from the start of the shard', async () => {
  const s = shard(ds, 0, 1);
  let n = 0;
  let rows = 0;
  for await (const b of batches(s, { columns: ['id'], batchSize: 50, dropRemainder: true })) {
    assert.is(b.size, 50);
    n++;
    rows += b.size;
  }
  assert.is(n, Math.floor(TOTAL / 50));
  assert.is(localSteps(s, 50, true), n);
  const ids: number[] = [];
  for await (const b of batches(s, { columns: ['id'], batchSize: 50, steps: 6 })) ids.push(...b.columns.id!);
  // 203 rows = 4 full + 3; then wrap: batch 6 starts again at the first row.
  assert.is(ids.length, 203 + 50);
  assert.equal(ids.slice(203, 206), allIdsInReadOrder().slice(0, 3));
  void rows;
});

test('an aborted epoch stops with ERR_ABORTED', async () => {
  const ac = new AbortController();
  let n = 0;
  try {
    for await (const _ of batches(ds, { columns: ['id'], batchSize: 10, signal: ac.signal })) {
      void _;
      if (++n === 3) ac.abort(new Error('stop'));
    }
    assert.unreachable('aborted');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_ABORTED'), String(e));
    assert.match((e as Error).message, /reading batches was aborted: stop/);
  }
  assert.is(n, 3);
});

function allIdsInReadOrder(): number[] {
  return allIds();
}

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
