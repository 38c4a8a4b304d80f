import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError } from '../errors.js';
import { MemoryStore } from '../store/memory.js';
import { MemoryNetwork } from '../transport/memory.js';
import { connectGroup } from './connect-group.js';

test('a rank that never joins: its ring neighbours time out naming it (ERR_TIMEOUT, missingRank)', async () => {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  // Ranks 0 and 1 of 3 join; rank 2 (next of 1, prev of 0) never does.
  const results = await Promise.allSettled([0, 1].map((rank) => connectGroup({ rank, size: 3, store, transport: net.transport(), listenUrl: 'mem://', timeoutMs: 300 })));
  for (const [rank, r] of results.entries()) {
    assert.is(r.status, 'rejected', `rank ${rank}`);
    const e = (r as PromiseRejectedResult).reason;
    assert.ok(isShoalError(e, 'ERR_TIMEOUT'), String(e));
    assert.match(e.message, new RegExp(`^rank ${rank}: rank 2 never joined the group \\(store key pair/${rank}-2\\) within 300 ms`));
    assert.is(e.context.missingRank, 2);
  }
});

test.run();
