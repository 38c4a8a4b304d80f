import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { transportConformance } from './conformance.js';
import { listSegments, removeStaleSegments, shmTransport } from './shm.js';

const prefix = `conf${process.pid}`;

transportConformance('shm', async () => ({
  transport: shmTransport({ prefix }),
  listenUrl: () => 'shm://auto',
  peer: { module: new URL('./shm.js', import.meta.url).href, factory: 'shmTransport', factoryArg: { prefix } },
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

test.run();
