import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { MemoryNetwork } from '../transport/memory.js';
import { MemoryStore } from '../store/memory.js';
import { decodeMessage, decodeParts, encodeMessage, encodeParts, externalCount } from './codec.js';
import { ActorClient } from './actor-handle.js';
import { ActorServer } from './actor-server.js';
import { externalRef } from './codec.js';
import { shmTransport } from '../transport/shm.js';
import { ActorSupervisor } from './spawn.js';
import { arg, remoteMethods } from './remote.js';
import type { CounterActor } from './testing/counter-actor.js';

const counterRef = (start = 0) => ({
  module: fileURLToPath(new URL('./testing/counter-actor.js', import.meta.url)),
  export: 'CounterActor',
  args: [start],
});

test('codec round-trips nested values and keeps typed arrays binary', () => {
  const f = new Float32Array([1.5, -2, 3e-8]);
  const ids = new Int32Array([7, -1, 2 ** 30]);
  const big = new Float64Array(1000).map((_, i) => i / 3);
  const frame = encodeMessage({ a: [1, 'x', null, true], f, nested: { ids, big, u: undefined }, inf: -Infinity });
  assert.ok(frame.byteLength < 400 + 12 + 12 + 8000, 'arrays are raw bytes, not JSON');
  const v = decodeMessage(frame) as { a: unknown[]; f: Float32Array; nested: { ids: Int32Array; big: Float64Array }; inf: number };
  assert.equal(v.a, [1, 'x', null, true]);
  assert.instance(v.f, Float32Array);
  assert.equal([...v.f], [...f]);
  assert.equal([...v.nested.ids], [...ids]);
  assert.is(v.nested.big[999], 999 / 3);
  assert.is(v.inf, -Infinity);
  // a frame received at an odd offset still decodes (copying)
  const shifted = new Uint8Array(frame.byteLength + 1);
  shifted.set(frame, 1);
  const w = decodeMessage(shifted.subarray(1)) as { f: Float32Array };
  assert.equal([...w.f], [...f]);
  assert.throws(() => encodeMessage({ m: new Map() }), /Map at \$\.m/);
  assert.throws(() => decodeMessage(new Uint8Array(16)), /bad magic/);
});

test('codec sends big arrays as external segments, uncopied, and decodes them back', () => {
  const big = Float32Array.from({ length: 5000 }, (_, i) => i);
  const view = big.subarray(1000, 3000);
  const small = Int32Array.of(1, 2, 3);
  const enc = encodeParts({ view, small, n: 1 }, { externalMinBytes: 4096 });
  assert.is(enc.external.length, 1);
  assert.is(enc.external[0]!.buffer, big.buffer, 'external segment is the caller memory');
  assert.is(enc.external[0]!.byteOffset, 4000);
  assert.is(externalCount(enc.frame), 1);
  assert.ok(enc.frame.byteLength < 300, 'the frame carries only the header and small arrays');
  const v = decodeParts(enc.frame, enc.external.map((x) => x.slice())) as { view: Float32Array; small: Int32Array };
  assert.is(v.view.length, 2000);
  assert.is(v.view[0], 1000);
  assert.equal([...v.small], [1, 2, 3]);
  assert.throws(() => decodeParts(enc.frame, []), /announces 1 external/);
});

test('local actor: typed handle, mailbox order per caller, remote errors carry the stack', async () => {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  const sup = await ActorSupervisor.spawn({ name: 'counter', actor: counterRef(10), placement: 'local', store, transport: net.transport() });
  const a = await sup.connect<CounterActor>(2000);
  const b = await ActorClient.connect<CounterActor>('counter', { store, transport: net.transport(), timeoutMs: 2000 });
  const ps: Promise<number>[] = [];
  for (let i = 0; i < 20; i++) ps.push(a.api.add(1, `a${i}`), b.api.add(100, `b${i}`));
  await Promise.all(ps);
  assert.is(await a.api.value(), 10 + 20 + 2000);
  const log = await a.api.calls();
  const aOrder = log.filter((t) => t.startsWith('a'));
  const bOrder = log.filter((t) => t.startsWith('b'));
  assert.equal(aOrder, Array.from({ length: 20 }, (_, i) => `a${i}`));
  assert.equal(bOrder, Array.from({ length: 20 }, (_, i) => `b${i}`));
  const r = await a.api.scale(new Float32Array([1, 2, 3]), 2, new Int32Array([4, 5]));
  assert.equal([...r.y], [2, 4, 6]);
  assert.is(r.idSum, 9);
  try {
    await b.api.fail('bad row 17');
    assert.unreachable();
  } catch (e) {
    const err = e as { code: string; message: string; context: { remoteStack?: string; remoteCode?: string } };
    assert.is(err.code, 'ERR_REMOTE');
    assert.match(err.message, /counter.*fail.*bad row 17/);
    assert.is(err.context.remoteCode, 'ERR_DATA');
    assert.match(err.context.remoteStack ?? '', /CounterActor\.fail/);
  }
  try {
    await a.call('_secret', []);
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /not a remote method/);
  }
  await a.close();
  await b.close();
  await sup.stop();
});

test('serial mailbox: one call at a time even across callers', async () => {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  const sup = await ActorSupervisor.spawn({ name: 's', actor: counterRef(), placement: 'local', store, transport: net.transport() });
  const a = await sup.connect<CounterActor>(2000);
  const b = await sup.connect<CounterActor>(2000);
  await Promise.all([a.api.slow(30, 'first'), b.api.slow(1, 'second')]);
  assert.equal(await a.api.calls(), ['first', 'second']);
  await sup.stop();
});

test('reentrant mailbox: a slow call does not block later calls', async () => {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  const sup = await ActorSupervisor.spawn({ name: 'r', actor: counterRef(), placement: 'local', store, transport: net.transport(), mailbox: 'reentrant' });
  const a = await sup.connect<CounterActor>(2000);
  await Promise.all([a.api.slow(40, 'first'), a.api.slow(1, 'second')]);
  assert.equal(await a.api.calls(), ['second', 'first']);
  await sup.stop();
});

test('dead local actor: pending and later calls reject naming it; restart gives a new epoch', async () => {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  const sup = await ActorSupervisor.spawn({
    name: 'victim',
    actor: counterRef(5),
    placement: 'local',
    store,
    transport: net.transport(),
    mailbox: 'reentrant',
    restart: { maxRestarts: 1, backoffMs: 10 },
  });
  const a = await sup.connect<CounterActor>(2000);
  const pending = a.api.slow(500, 'never');
  await new Promise((r) => setTimeout(r, 20));
  await sup.kill();
  for (const p of [pending, a.api.value()]) {
    try {
      await p;
      assert.unreachable();
    } catch (e) {
      assert.is((e as { code: string }).code, 'ERR_PEER_CLOSED');
      assert.match((e as Error).message, /actor victim/);
    }
  }
  await sup.settled();
  assert.is(sup.epoch, 2);
  await a.reconnect(a.epoch + 1);
  assert.is(await a.api.value(), 5);
  assert.equal((await a.api.whoami()).epoch, 2);
  await sup.stop();
});

test('call timeout names the actor and method', async () => {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  const sup = await ActorSupervisor.spawn({ name: 't', actor: counterRef(), placement: 'local', store, transport: net.transport(), mailbox: 'reentrant' });
  const a = await sup.connect<CounterActor>(2000);
  try {
    await a.call('slow', [300, 'x'], { timeoutMs: 30 });
    assert.unreachable();
  } catch (e) {
    assert.is((e as { code: string }).code, 'ERR_TIMEOUT');
    assert.match((e as Error).message, /actor t .*slow/);
  }
  await sup.stop();
});

test('over shm, big reply arrays land in replyInto buffers and big request arrays in the actor recvTargets buffers', async () => {
  const store = new MemoryStore();
  const transport = shmTransport({ prefix: `actor${process.pid}` });
  class Vectors {
    static readonly remote = remoteMethods<Vectors>({ fill: [arg.int(), arg.number()], sum: [arg.floatArray()] });
    readonly rx = new Float32Array(50_000);
    got: boolean[] = [];
    fill(n: number, v: number): Float32Array[] {
      return [new Float32Array(n).fill(v), Float32Array.of(v), new Float32Array(n).fill(v + 1)];
    }
    sum(a: Float32Array): number {
      this.got.push(a.buffer === this.rx.buffer);
      return a.reduce((x, y) => x + y, 0);
    }
    recvTargets(method: string, args: unknown[], xs: readonly number[]): (Uint8Array | undefined)[] | undefined {
      const ref = externalRef(args[0]);
      if (method !== 'sum' || !ref || xs[ref.index] !== this.rx.byteLength) return undefined;
      const out: Uint8Array[] = [];
      out[ref.index] = new Uint8Array(this.rx.buffer);
      return out;
    }
  }
  const inst = new Vectors();
  const server = await ActorServer.start(inst, { name: 'vec', epoch: 1, store, transport, listenUrl: 'shm://auto', mailbox: 'reentrant' });
  const c = await ActorClient.connect<Vectors>('vec', { store, transport, timeoutMs: 5000 });
  try {
  const n = 40_000;
  const into = [new Float32Array(n), new Float32Array(1), new Float32Array(n)];
  for (let round = 1; round <= 3; round++) {
    const r = (await c.call('fill', [n, round], { replyInto: into })) as Float32Array[];
    assert.ok(r[0]!.buffer === into[0]!.buffer && r[2]!.buffer === into[2]!.buffer, 'big arrays arrive in the given buffers');
    assert.ok(r[1]!.buffer !== into[1]!.buffer, 'a packed (small) array is decoded from the frame');
    assert.ok(into[0]!.every((x) => x === round) && into[2]!.every((x) => x === round + 1), `round ${round} values`);
    assert.is(r[1]![0], round);
  }
  // a buffer of the wrong size is not used; the value still arrives
  const wrong = new Float32Array(n + 1);
  const r2 = (await c.call('fill', [n, 9], { replyInto: [wrong] })) as Float32Array[];
  assert.ok(r2[0]!.buffer !== wrong.buffer && wrong.every((x) => x === 0) && r2[0]!.every((x) => x === 9));
  // requests: the actor's hook picks the buffer (sizes that do not match fall back)
  assert.is(await c.api.sum(new Float32Array(50_000).fill(2)), 100_000);
  assert.is(await c.api.sum(new Float32Array(60_000).fill(1)), 60_000);
  assert.equal(inst.got, [true, false]);
  } finally {
    await c.close();
    await server.stop();
  }
});

test.run();
