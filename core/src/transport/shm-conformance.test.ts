import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkRecvIntoTimeout, transportConformance } from './conformance.js';
import { JobAuth } from '../security/job-auth.js';
import { listSegments, removeStaleSegments } from './shm-addon.js';
import { shmTransport } from './shm.js';

const prefix = `conf${process.pid}`;
const auth = JobAuth.generate('shm-conformance');

transportConformance('shm', async () => ({
  transport: shmTransport({ prefix, auth }),
  listenUrl: () => 'shm://auto',
  peer: { module: new URL('./shm.js', import.meta.url).href, factory: 'shmTransport', factoryArg: { prefix }, auth },
  async teardown() {
    removeStaleSegments(prefix);
  },
})).run();

test('shm messages larger than the ring stream through it', async () => {
  const t = shmTransport({ prefix, ringBytes: 4096 });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const msg = new Uint8Array(1_000_003).map((_, i) => (i * 7) & 0xff);
  const [, got] = await Promise.all([b.send(msg), a.recv({ timeoutMs: 10_000 })]);
  assert.equal(Buffer.compare(Buffer.from(got), Buffer.from(msg)), 0);
  await a.close();
  await b.close();
});

test('shm segments are unlinked once both ends are mapped, and on listener close', async () => {
  const t = shmTransport({ prefix });
  const l = await t.listen('shm://auto');
  assert.is(listSegments(prefix).length, 1, 'the listener segment is visible until a peer attaches');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  assert.is(listSegments(prefix).length, 0, 'nothing left in /dev/shm once attached');
  await a.close();
  await b.close();
  const l2 = await t.listen('shm://auto');
  await l2.close();
  assert.is(listSegments(prefix).length, 0, 'a closed, never-accepted listener leaves nothing');
});

test('shm rejects a bad ring size and a bad url with clear errors', async () => {
  assert.throws(() => shmTransport({ ringBytes: 5000 }), /ringBytes must be a power of two/);
  const t = shmTransport({ prefix });
  try {
    await t.listen('tcp://127.0.0.1:0');
    assert.unreachable();
  } catch (e) {
    assert.match(String(e), /shm:\/\/<name>/);
  }
});

test('shm large bodies go into the allocate hook buffer; small ones do not use it', async () => {
  const handed: Uint8Array[] = [];
  const t = shmTransport({
    prefix,
    ringBytes: 1 << 16,
    allocate: (n) => {
      const u = new Uint8Array(n);
      handed.push(u);
      return u;
    },
  });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const big = new Uint8Array(300_001).map((_, i) => (i * 13) & 0xff);
  const [, got] = await Promise.all([b.send(big), a.recv({ timeoutMs: 10_000 })]);
  assert.is(handed.length, 1);
  assert.ok(got === handed[0], 'recv returns the buffer the hook allocated');
  assert.equal(Buffer.compare(Buffer.from(got), Buffer.from(big)), 0);
  await b.send(new Uint8Array([5, 6]));
  assert.equal([...(await a.recv({ timeoutMs: 5000 }))], [5, 6]);
  assert.is(handed.length, 1, 'small messages are copied out without the hook');
  await a.close();
  await b.close();
});

test('shm allocate hook returning the wrong size fails the connection with ERR_INVALID_ARG', async () => {
  const t = shmTransport({ prefix, ringBytes: 1 << 16, allocate: (n) => new Uint8Array(n - 1) });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  void b.send(new Uint8Array(200_000)).catch(() => {});
  try {
    await a.recv({ timeoutMs: 5000 });
    assert.unreachable();
  } catch (e) {
    assert.match(String(e), /options\.allocate/);
  }
  await a.close();
  await b.close();
});

test('shm pooled receive buffers stay intact while held; a burst of queued messages arrives in order', async () => {
  const t = shmTransport({ prefix, ringBytes: 1 << 20 });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const held: Uint8Array[] = [];
  for (let round = 0; round < 6; round++) {
    const msg = new Uint8Array(2 << 20).fill(round + 1);
    const [, got] = await Promise.all([b.send(msg), a.recv({ timeoutMs: 10_000 })]);
    held.push(got);
    (globalThis as { gc?: () => void }).gc?.();
  }
  held.forEach((m, i) => assert.ok(m.every((v) => v === i + 1), `message ${i} unchanged`));
  // many small sends before any recv: the receiver drains them as they come, in order
  const sends = Array.from({ length: 2000 }, (_, i) => b.send(new Uint8Array(4).fill(i & 0xff)));
  await Promise.all(sends);
  for (let i = 0; i < 2000; i++) assert.is((await a.recv({ timeoutMs: 5000 }))[0], i & 0xff);
  await a.close();
  await b.close();
});

test('shm recv wakes on a message sent after it started waiting, and on the peer closing', async () => {
  const t = shmTransport({ prefix });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const p = a.recv({ timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 20));
  await b.send(new Uint8Array([42]));
  assert.equal([...(await p)], [42]);
  const q = a.recv({ timeoutMs: 5000 });
  const t0 = Date.now();
  setTimeout(() => void b.close(), 20);
  try {
    await q;
    assert.unreachable();
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_PEER_CLOSED');
  }
  assert.ok(Date.now() - t0 < 1000, 'noticed at once, not at the timeout');
  await a.close();
});

test('shm a send larger than the ring completes before the peer calls recv (eager drain)', async () => {
  const t = shmTransport({ prefix, ringBytes: 1 << 16 });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const msg = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
  await b.send(msg, { timeoutMs: 5000 });
  await a.send(msg, { timeoutMs: 5000 });
  const [x, y] = await Promise.all([a.recv({ timeoutMs: 5000 }), b.recv({ timeoutMs: 5000 })]);
  assert.equal(Buffer.compare(Buffer.from(x), Buffer.from(msg)), 0);
  assert.equal(Buffer.compare(Buffer.from(y), Buffer.from(msg)), 0);
  await a.close();
  await b.close();
});

test('shm recvInto lands a large message in the given buffer; other sizes and small messages get their own', async () => {
  const t = shmTransport({ prefix });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const big = new Uint8Array(200_003).map((_, i) => (i * 11) & 0xff);
  const dst = new Uint8Array(big.byteLength);
  // waiting first
  const p = a.recvInto!(dst, { timeoutMs: 5000 });
  await b.send(big);
  const got = await p;
  assert.ok(got === dst, 'resolves with dst itself');
  assert.equal(Buffer.compare(Buffer.from(got), Buffer.from(big)), 0);
  // sent first, asked for in the same turn the frame before it is read (the RPC reader's pattern)
  await Promise.all([b.send(new Uint8Array([1, 2, 3])), b.send(big)]);
  const dst2 = new Uint8Array(big.byteLength);
  const head = await a.recv({ timeoutMs: 5000 });
  assert.equal([...head], [1, 2, 3]);
  const got2 = await a.recvInto!(dst2, { timeoutMs: 5000 });
  assert.ok(got2 === dst2, 'a body announced while nobody waited is held for the next recvInto');
  assert.equal(Buffer.compare(Buffer.from(got2), Buffer.from(big)), 0);
  // wrong size: its own buffer, dst untouched
  const other = new Uint8Array(big.byteLength + 8);
  const got3 = (await Promise.all([a.recvInto!(other, { timeoutMs: 5000 }), b.send(big)]))[0];
  assert.ok(got3 !== other && other.every((x) => x === 0), 'another size does not use dst');
  assert.equal(Buffer.compare(Buffer.from(got3), Buffer.from(big)), 0);
  // small message: copied out as usual
  const small = new Uint8Array(3);
  const got4 = (await Promise.all([a.recvInto!(small, { timeoutMs: 5000 }), b.send(new Uint8Array([7, 8, 9]))]))[0];
  assert.equal([...got4], [7, 8, 9]);
  // nobody asks for a while: the held body drains into the inbox after one turn, and a later recv gets it
  await b.send(big);
  await new Promise((r) => setTimeout(r, 20));
  const got5 = await a.recvInto!(dst, { timeoutMs: 5000 });
  assert.equal(Buffer.compare(Buffer.from(got5), Buffer.from(big)), 0);
  await a.close();
  await b.close();
});

test('shm a recvInto that times out while its body streams in leaves the caller buffer alone afterwards', async () => {
  const t = shmTransport({ prefix, ringBytes: 1 << 12 });
  const l = await t.listen('shm://auto');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  // a 4 KiB ring takes hundreds of hand-offs for 2 MiB: the body is streaming when the 1 ms timeout fires
  await checkRecvIntoTimeout(b, a, new Uint8Array(2 << 20).map((_, i) => (i * 5) & 0xff), 1);
  await a.close();
  await b.close();
});

test.run();
