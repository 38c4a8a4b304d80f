import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ActorClient, isShoalError } from '@shoal/core';
import type { KVServer } from './kv-server.js';
import { PS_REMOTE } from './protocol.js';
import { memoryPsCluster } from './testing/memory-cluster.js';
import { allEqual, ones } from './testing/values.js';

async function errorOf(p: Promise<unknown>): Promise<Error & { code?: string; context?: { remoteCode?: string } }> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('the call succeeded');
}

/** A second connection to server 0 of cluster `c` (a rogue or a second process of the job). */
const dial = (c: Awaited<ReturnType<typeof memoryPsCluster>>) => ActorClient.connect<KVServer>('ps-server-0', { store: c.store, transport: c.network.transport(), timeoutMs: 5000 });

test('every KVServer request with wrong argument types gets an error reply; the server keeps serving', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 1, mode: 'sync', timeoutMs: 5000 });
  const rogue = await dial(c);
  const f = Float32Array.of(1);
  const wrong: Record<keyof typeof PS_REMOTE, unknown[][]> = {
    hello: [['0'], [-1], [{}]],
    attachShared: [[0, 7, 64, []], [0, '/x', '64', []], [0, '/x', 64, [{ key: 1, grad: 0, out: 0 }]], [0, '/x', 64]],
    declare: [[0, [{ key: 'k' }]], [0, 'k'], ['0', []]],
    init: [[0, [{ key: 'k' }], [], null], [0, [], [], 'v'], [0, [{ key: 'k', size: 1, updater: { type: 'module', ref: { module: 'x', export: 'y' } } }], [{ server: 0, start: 0, end: 1 }], null], [0, [], [], null, [{ version: -1, state: {} }]], [0, [], [], null, [{ version: 0, state: { m: [1] } }]]],
    push: [[0, 'k', [0], [f]], [0, ['k'], ['0'], [f]], [0, ['k'], [0], [[1]]], [0, ['k'], [0]]],
    pushPull: [[0, ['k'], [0], [f], 'yes'], [0, ['k'], [-1], [f]]],
    pull: [[0, ['k'], [0], 1], [0, [null], [0]]],
    rowSparsePush: [[0, 'k', 0, [1], f], [0, 'k', 0, Int32Array.of(1), [1]], [0, 'k', 0.5, Int32Array.of(1), f]],
    rowSparsePull: [[0, 'k', 0, [1]], [0, 1, 0, null]],
    gather: [[0, 5, null], [0, 'tag', null, 3]],
    guarded: [[0, 5, 'op', null, []], [0, 't', 'op', null, 'x'], [0, 't', 'op', null, [['push', []]]], [0, 't', 'op', null, [['pushPull', [0, 'k']]]], [0, 't', 'op', null, [['rowSparsePull', [0, 'k', 0, null, 1, 2]]]]],
    checkpoint: [[1]],
    exportKey: [[], [7]],
    stats: [['x']],
    versions: [['k'], [[1]]],
  };
  try {
    for (const [m, calls] of Object.entries(wrong)) {
      for (const args of calls) {
        const e = await errorOf(rogue.call(m, args));
        assert.is(e.code, 'ERR_REMOTE', `${m}: ${e.message}`);
        assert.match(e.message, new RegExp(`ps-server-0\\.${m} argument|arguments of ps-server-0\\.${m}`), `${m}: ${e.message}`);
      }
    }
    // the job is intact: a real round works
    const w = c.workers[0]!;
    await w.init([{ key: 'k', size: 4 }], [ones(4, 0)]);
    allEqual((await w.pushPull(['k'], [ones(4, 3)]))[0]!, 3, 'sum after the bad calls');
  } finally {
    await rogue.close();
    await c.close();
  }
});

test('methods outside the remote surface are refused: no crash, no file written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ps-remote-'));
  const cwd = process.cwd();
  process.chdir(dir);
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 1, mode: 'sync', timeoutMs: 5000 });
  const rogue = await dial(c);
  try {
    for (const [m, args] of [
      ['enqueue', [[], 1, 2, 'x']],
      ['writeCheckpoint', []],
      ['restore', ['/etc/passwd']],
      ['onCallerClosed', ['1:0']],
      ['onActorStop', []],
      ['recvTargets', ['push', [], []]],
      ['bookkeeping', []],
      ['slot', ['k']],
    ] as const) {
      const e = await errorOf(rogue.call(m, args as unknown as unknown[]));
      assert.match(e.message, /not a remote method of actor ps-server-0/, m);
    }
    assert.equal(readdirSync(dir), [], 'nothing was written into the working directory');
    assert.is((await rogue.api.stats()).serverIndex, 0, 'the server still answers');
  } finally {
    process.chdir(cwd);
    await rogue.close();
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a connection cannot push, pull or gather as another worker; the round uses the real pushes only', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 2, mode: 'sync', timeoutMs: 5000, sharedMemory: false });
  const [w0, w1] = c.workers as [(typeof c.workers)[0], (typeof c.workers)[0]];
  const n = 8;
  await Promise.all([w0.init([{ key: 'k', size: n, update: 'assign' }], [ones(n, 0)]), w1.init([{ key: 'k', size: n, update: 'assign' }])]);
  const anon = await dial(c); // said no hello with a rank
  const as1 = await dial(c);
  await as1.api.hello(1); // a second connection of worker 1
  try {
    for (const [who, client] of [
      ['no hello', anon],
      ['worker 1', as1],
    ] as const) {
      for (const [m, args] of [
        ['push', [0, ['k'], [0], [ones(n, 1e6)]]],
        ['pushPull', [0, ['k'], [0], [ones(n, 1e6)]]],
        ['pull', [0, ['k'], [1]]],
        ['gather', [0, 'g', 1]],
        ['init', [0, [{ key: 'k2', size: 1 }], [{ server: 0, start: 0, end: 1 }], [ones(1)]]],
      ] as const) {
        const e = await errorOf(client.call(m, args as unknown as unknown[]));
        assert.is(e.context?.remoteCode, 'ERR_STATE', `${who} ${m}: ${e.message}`);
        assert.match(e.message, /cannot act as worker 0/, `${who} ${m}`);
      }
    }
    const rebind = await errorOf(as1.api.hello(0));
    assert.match(rebind.message, /connection of worker 1 cannot say hello as worker 0/);
    // the real round: 1 + 2 (the rogue 1e6 never entered it)
    const [a, b] = await Promise.all([w0.pushPull(['k'], [ones(n, 1)]), w1.pushPull(['k'], [ones(n, 2)])]);
    allEqual(a[0]!, 3, 'rank 0 sum');
    allEqual(b[0]!, 3, 'rank 1 sum');
    assert.not.ok(existsSync(join(process.cwd(), 'k2')));
  } finally {
    await anon.close();
    await as1.close();
    await c.close();
  }
});

test('a ps timeout names the workers it waited for', async () => {
  const c = await memoryPsCluster({ numServers: 1, numWorkers: 3, mode: 'sync', timeoutMs: 300, sharedMemory: false });
  try {
    const spec = [{ key: 'k', size: 4, update: 'assign' as const }];
    await Promise.all(c.workers.map((w, r) => w.init(spec, r === 0 ? [ones(4, 0)] : undefined)));
    // rank 1 pushes and pulls; rank 0 and 2 never push: its pull waits for them
    const e = await errorOf(c.workers[1]!.pushPull(['k'], [ones(4)]));
    assert.ok(isShoalError(e, 'ERR_TIMEOUT'), e.message);
    assert.match(e.message, /waiting for workers 0, 2/);
    const g = await errorOf(c.workers[2]!.gather('t', 1));
    assert.match(g.message, /gather t on server 0: waiting for workers 0, 1/);
  } finally {
    await c.close();
  }
});

test.run();
