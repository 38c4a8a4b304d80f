import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError } from '@shoal/core';
import { KVServer } from './kv-server.js';
import { sliceKey, type KeySpec } from './key-layout.js';

// Issue #16 (flat memory): the server's bookkeeping stays constant from round to round: no open gather, no waiting
// request and no armed round left behind by rounds that completed, by a mismatched collective or by pipelined pulls.

test('a server keeps no gather or waiter across 500 row-sparse rounds, pipelined pulls and mismatched gathers', async () => {
  const s = new KVServer({ serverIndex: 0, numServers: 1, numWorkers: 2, mode: 'sync', timeoutMs: 5000, updater: { type: 'adam', lr: 0.01 } });
  await s.onActorStart({ epoch: 1 } as never);
  const rows = 4000;
  const spec: KeySpec = { key: 't', size: rows * 8, rows: { numRows: rows, rowSize: 8 }, updater: { type: 'adam', lr: 0.01, rowStep: true } };
  await Promise.all([s.init(0, [spec], sliceKey(spec, 1), [new Float32Array(rows * 8)]), s.init(1, [spec], sliceKey(spec, 1), null)]);
  let seed = 5;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const ids = () => Int32Array.from(new Set(Array.from({ length: 1 + Math.floor(rnd() * 900) }, () => Math.floor(rnd() * rows)))).sort();
  const sizes = new Set<number>();
  for (let round = 0; round < 500; round++) {
    const work = [0, 1].map(async (r) => {
      const a = ids();
      sizes.add(a.length);
      // the next round's pull goes out before this round's push completes (as ServerTables pipelines it)
      const pull = s.rowSparsePull(r, 't', round + 1, a);
      await s.rowSparsePush(r, 't', round, a, new Float32Array(a.length * 8).fill(1e-3));
      const got = await pull;
      assert.is(got.rows.length, a.length * 8);
    });
    const tag = `collective #${round}`;
    const g = [s.gather(0, tag, round, 'barrier'), s.gather(1, tag, round, round % 50 === 0 ? 'allreduceMean' : 'barrier')];
    const gs = await Promise.allSettled(g);
    if (round % 50 === 0) assert.ok(gs.every((x) => x.status === 'rejected' && isShoalError(x.reason, 'ERR_MISMATCH')), `round ${round}: mismatch on both`);
    else assert.ok(gs.every((x) => x.status === 'fulfilled'));
    await Promise.all(work);
    assert.equal(s.bookkeeping(), { gathers: 0, waiters: 0, keys: 1 }, `after round ${round}`);
  }
  assert.ok(sizes.size > 100, 'the rounds had many different sizes');
  assert.equal(s.versions(['t']).version, [500]);
  s.onActorStop();
});

test.run();
