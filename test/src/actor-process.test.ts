import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ActorClient, ActorSupervisor, NetTransport, netRemote, TcpStore, TcpStoreServer } from '@shoal/core';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

/** The shape of core's test actor (core/src/actor/testing/counter-actor.ts). */
interface CounterActor {
  add(n: number, tag?: string): number;
  value(): number;
  whoami(): { pid: number; epoch: number };
  scale(x: Float32Array, k: number, ids: Int32Array): { y: Float32Array; idSum: number; n: number };
  slow(ms: number, tag: string): Promise<string>;
  fail(msg: string): never;
  crash(code?: number): void;
}

// The test actor ships with core's build; child processes import it by absolute path.
const coreDist = dirname(createRequire(import.meta.url).resolve('@shoal/core'));
const counterRef = (start: number) => ({ module: join(coreDist, 'actor/testing/counter-actor.js'), export: 'CounterActor', args: [start] });

async function job() {
  const server = await TcpStoreServer.start({ auth });
  const store = await TcpStore.connect(server.url, { auth });
  const transport = new NetTransport({ auth });
  return {
    store,
    transport,
    remote: netRemote(server.url),
    async close() {
      await store.close?.();
      await server.close();
    },
  };
}

test('process actor: calls cross processes, typed arrays survive, errors carry the remote stack', async () => {
  const j = await job();
  const sup = await ActorSupervisor.spawn({ auth, name: 'counter', actor: counterRef(1), placement: 'process', store: j.store, remote: j.remote, timeoutMs: 20_000 });
  const a = await ActorClient.connect<CounterActor>('counter', { store: j.store, transport: j.transport, timeoutMs: 10_000 });
  const who = await a.api.whoami();
  assert.is.not(who.pid, process.pid);
  assert.is(who.pid, sup.pid);
  const x = Float32Array.from({ length: 1 << 20 }, (_, i) => i % 1000);
  const r = await a.api.scale(x, 0.5, Int32Array.of(1, 2, 3));
  assert.is(r.n, 1 << 20);
  assert.is(r.y[999], 499.5);
  assert.is(r.idSum, 6);
  const adds = await Promise.all(Array.from({ length: 50 }, (_, i) => a.api.add(1, `c${i}`)));
  assert.equal(adds, Array.from({ length: 50 }, (_, i) => 2 + i));
  try {
    await a.api.fail('boom in child');
    assert.unreachable();
  } catch (e) {
    assert.is((e as { code: string }).code, 'ERR_REMOTE');
    assert.match((e as Error).stack ?? '', /remote stack[\s\S]*CounterActor\.fail/);
  }
  await a.close();
  await sup.stop();
  await j.close();
});

test('killed process actor: every pending and later call rejects naming it, within the timeout; restart + reconnect', async () => {
  const j = await job();
  const sup = await ActorSupervisor.spawn({
    auth,
    name: 'victim',
    actor: counterRef(40),
    placement: 'process',
    store: j.store,
    remote: j.remote,
    mailbox: 'reentrant',
    restart: { maxRestarts: 1, backoffMs: 50 },
    timeoutMs: 20_000,
  });
  const callers = await Promise.all([0, 1, 2].map(() => ActorClient.connect<CounterActor>('victim', { store: j.store, transport: j.transport, timeoutMs: 10_000 })));
  const pending = callers.map((c) => c.api.slow(60_000, 'never'));
  const exited = new Promise<number | null>((r) => sup.onExit((e) => r(e.code)));
  const firstPid = sup.pid;
  await new Promise((r) => setTimeout(r, 50));
  const t0 = Date.now();
  await callers[0]!.api.crash(9).catch(() => {});
  for (const r of await Promise.allSettled(pending)) {
    assert.is(r.status, 'rejected');
    const e = (r as PromiseRejectedResult).reason as Error & { code: string };
    assert.is(e.code, 'ERR_PEER_CLOSED');
    assert.match(e.message, /actor victim.*slow/);
  }
  assert.ok(Date.now() - t0 < 5000, `detected in ${Date.now() - t0} ms`);
  assert.is(await exited, 9);
  try {
    await callers[1]!.api.value();
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /actor victim/);
  }
  await sup.settled();
  assert.is(sup.restarts, 1);
  assert.is.not(sup.pid, firstPid);
  await callers[2]!.reconnect(callers[2]!.epoch + 1);
  assert.is(await callers[2]!.api.value(), 40, 'a fresh incarnation (state is restored only from checkpoints)');
  await Promise.all(callers.map((c) => c.close()));
  await sup.stop();
  await j.close();
});

test('thread actor over net', async () => {
  const j = await job();
  const sup = await ActorSupervisor.spawn({ auth, name: 'th', actor: counterRef(3), placement: 'thread', store: j.store, remote: j.remote, timeoutMs: 20_000 });
  const a = await ActorClient.connect<CounterActor>('th', { store: j.store, transport: j.transport, timeoutMs: 10_000 });
  assert.is((await a.api.whoami()).pid, process.pid);
  assert.is(await a.api.add(4), 7);
  await a.close();
  await sup.stop();
  await j.close();
});

test('unix-socket doors: a listen URL template gives every door its own path', async () => {
  const j = await job();
  const dir = mkdtempSync(join(tmpdir(), 'shoal-actor-'));
  const sup = await ActorSupervisor.spawn({ auth, name: 'uds', actor: counterRef(0), placement: 'process', store: j.store, remote: j.remote, listenUrl: `ipc://${dir}/{actor}-{door}.sock`, timeoutMs: 20_000 });
  const callers = await Promise.all([0, 1, 2, 3, 4, 5].map(() => ActorClient.connect<CounterActor>('uds', { store: j.store, transport: j.transport, timeoutMs: 10_000 })));
  const got = await Promise.all(callers.map((c) => c.api.add(1)));
  assert.equal(got.sort((a, b) => a - b), [1, 2, 3, 4, 5, 6]);
  await Promise.all(callers.map((c) => c.close()));
  await sup.stop();
  await j.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a constructor that throws fails spawn with its message', async () => {
  const j = await job();
  try {
    await ActorSupervisor.spawn({ auth, name: 'bad', actor: { module: join(coreDist, 'actor/testing/counter-actor.js'), export: 'Nope' }, placement: 'process', store: j.store, remote: j.remote, timeoutMs: 20_000 });
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /has no export "Nope"/);
  }
  await j.close();
});

test.run();
