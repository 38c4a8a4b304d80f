// Issue #15: the parameter server bounds each connection's messages by the keys it declared. Before a declaration
// the bound is the control plane's 1 MiB; `init` declares first (the server raises the bound and acknowledges) and
// only then sends values; keys initialised later raise it again; a restarted server's new connection is declared
// again before anything is resent. A larger message drops that connection with one warning naming the peer, the
// sizes and the bound, and the job goes on.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActorClient, isShoalError } from '@shoal/core';
import type { KVServer } from './kv-server.js';
import { PS_CONTROL_BYTES } from './server/caller-bounds.js';
import { memoryPsCluster } from './testing/memory-cluster.js';
import { allEqual, ones } from './testing/values.js';

type Cluster = Awaited<ReturnType<typeof memoryPsCluster>>;

/** A second connection to server `s` (a rogue member of the job: the memory transport needs no secret). */
const dial = (c: Cluster, s = 0) => ActorClient.connect<KVServer>(`ps-server-${s}`, { store: c.store, transport: c.network.transport(), timeoutMs: 5000 });

/** The warnings emitted while `body` runs. */
async function warningsOf(body: () => Promise<void>): Promise<string[]> {
  const got: string[] = [];
  const on = (w: Error) => void got.push(w.message);
  process.on('warning', on);
  try {
    await body();
    await new Promise((r) => setTimeout(r, 20)); // warnings are emitted on the next tick
  } finally {
    process.off('warning', on);
  }
  return got;
}

const errorOf = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as Error & { code?: string },
  );

test('before declaring, a connection may send 1 MiB: a larger message drops it with one warning; the job goes on', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', timeoutMs: 5000, sharedMemory: false });
  try {
    const rogue = await dial(c);
    assert.is((await rogue.api.hello()).callerBound, PS_CONTROL_BYTES);
    // at the bound: refused by the argument checks, as any bad call (an error reply, the connection stays)
    const ok = await errorOf(rogue.call('stats', [new Uint8Array(PS_CONTROL_BYTES - 4096)]));
    assert.is(ok?.code, 'ERR_REMOTE', String(ok));
    let e: (Error & { code?: string }) | undefined;
    const warned = await warningsOf(async () => {
      e = await errorOf(rogue.call('stats', [new Uint8Array(PS_CONTROL_BYTES + 1)]));
    });
    assert.is(e?.code, 'ERR_PEER_CLOSED', String(e));
    const drops = warned.filter((w) => w.includes('dropping caller'));
    assert.is(drops.length, 1, warned.join('\n'));
    assert.match(drops[0]!, /actor ps-server-0: dropping caller .*mem:\/\/.*: a message of 1048577 bytes, above the parameter server's control-plane bound \(no keys declared on this connection\) \(1048576 bytes\)/);
    // the workers were never affected
    await Promise.all(c.workers.map((w) => w.init([{ key: 'k', size: 5 }], [ones(5, 0)])));
    const got = await Promise.all(c.workers.map((w) => w.pushPull(['k'], [ones(5, w.rank + 1)])));
    for (const g of got) allEqual(g[0]!, 3, 'sum after the rogue');
  } finally {
    await c.close();
  }
});

test('declared keys raise the bound: big dense keys, keys initialised later, row-sparse pushes; a clear error before', async () => {
  // two servers, keys above 1000 elements split: a 3M-element key is a 6 MB slice on each server
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 10_000, bigKeyBound: 1000, sharedMemory: false });
  try {
    const [w0, w1] = c.workers as [(typeof c.workers)[0], (typeof c.workers)[0]];
    // nothing declared: the worker refuses a message above the server's bound itself, with a clear error
    const big = new Float64Array(200_000); // 1.6 MB
    const e = await errorOf(w0.gather('g', big));
    assert.is(e?.code, 'ERR_INVALID_ARG', String(e));
    assert.match(String(e), /sends a message of 1600000 bytes, above server 0's bound before keys are declared \(KVWorker\.declare\) \(1048576 bytes\)/);
    const n = 3_000_000;
    await Promise.all(c.workers.map((w) => w.init([{ key: 'w', size: n }], [Float32Array.from({ length: n }, (_, i) => i % 1000)])));
    const sums = await Promise.all(c.workers.map((w) => w.pushPull(['w'], [Float32Array.from({ length: n }, (_, i) => (i % 7) + w.rank)])));
    for (const s of sums) for (const i of [0, 1, 6, n - 1]) assert.is(s[0]![i], 2 * (i % 7) + 1, `w[${i}]`);
    // now the same gather fits (the bound is a 6 MB slice), on every worker
    const all = await Promise.all([w0.gather('g2', big), w1.gather('g2', big)]);
    assert.is((all[0]![1] as Float64Array).length, 200_000);
    // a key initialised later raises the bound again: 8M elements, 16 MB per server
    const m = 8_000_000;
    await Promise.all(c.workers.map((w) => w.init([{ key: 'later', size: m }], [new Float32Array(m)])));
    const later = await Promise.all(c.workers.map((w) => w.pushPull(['later'], [new Float32Array(m).fill(w.rank + 2)])));
    for (const l of later) assert.ok(l[0]![0] === 5 && l[0]![m - 1] === 5, 'later key summed');
    // row-sparse: 100k rows of 16 (3.2 MB per server); rank 0 pushes rows [0, 60k), rank 1 [40k, 100k)
    const spec = { key: 'emb', size: 100_000 * 16, rows: { numRows: 100_000, rowSize: 16 } };
    await Promise.all(c.workers.map((w) => w.init([spec], [new Float32Array(spec.size)])));
    await Promise.all(
      c.workers.map((w) =>
        w.rowSparsePush('emb', Int32Array.from({ length: 60_000 }, (_, i) => i + w.rank * 40_000), new Float32Array(60_000 * 16).fill(1)),
      ),
    );
    const last = await w0.rowSparsePullLast('emb');
    assert.is(last.rowIds.length, 100_000);
    assert.is(last.rows[16 * 50_000], 2, 'a row both workers pushed');
  } finally {
    await c.close();
  }
});

test('a connection that declared keys stays bounded by them; a key misdescribed is refused', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', timeoutMs: 5000, sharedMemory: false });
  try {
    await Promise.all(c.workers.map((w) => w.init([{ key: 'k', size: 10 }], [ones(10, 0)])));
    const rogue = await dial(c);
    await rogue.api.hello(1);
    // a key the server holds, misdescribed to raise the bound: ERR_MISMATCH, the bound stays
    const mis = await errorOf(rogue.api.declare(1, [{ key: 'k', size: 1 << 28 }]));
    assert.match(String(mis), /key k.*server 0 has .*worker 1 declared/);
    const { bound } = await rogue.api.declare(1, [{ key: 'two-mb', size: 500_000 }]);
    assert.is(bound, 2_000_000);
    let e: Error | undefined;
    const warned = await warningsOf(async () => {
      e = await errorOf(rogue.call('stats', [new Uint8Array(bound + 1)]));
    });
    assert.ok(isShoalError(e, 'ERR_PEER_CLOSED'), String(e));
    const drops = warned.filter((w) => w.includes('dropping caller'));
    assert.is(drops.length, 1, warned.join('\n'));
    assert.match(drops[0]!, /2000001 bytes, above the keys worker 1 declared \(1 keys; largest slice on server 0: 2000000 bytes\) \(2000000 bytes\)/);
  } finally {
    await c.close();
  }
});

test('resend after restart: the new connection is declared again before values go out (durable, 2 MB slices)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-psb-'));
  const c = await memoryPsCluster({
    numServers: 2,
    numWorkers: 2,
    mode: 'sync',
    updater: { type: 'add' },
    checkpointDir: dir,
    durable: true,
    restart: { maxRestarts: 2, backoffMs: 20 },
    resendAfterRestart: true,
    timeoutMs: 10_000,
    bigKeyBound: 1000,
    sharedMemory: false,
  });
  try {
    const n = 1_000_000; // 2 MB per server, above the control bound
    await Promise.all(c.workers.map((w) => w.init([{ key: 'big', size: n }], [new Float32Array(n)])));
    const rounds = 6;
    await Promise.all(
      c.workers.map(async (w) => {
        for (let i = 0; i < rounds; i++) {
          if (w.rank === 0 && i === 3) void c.servers[1]!.kill();
          await w.push(['big'], [new Float32Array(n).fill(w.rank + 1)]);
        }
      }),
    );
    assert.is(c.servers[1]!.restarts, 1);
    const [big] = await c.workers[1]!.pull(['big']);
    assert.ok(big![0] === rounds * 3 && big![n - 1] === rounds * 3, `big after restart: ${big![0]}, ${big![n - 1]}`);
  } finally {
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
