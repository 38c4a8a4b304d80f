// Issue #15: `Connection.limitIncoming` on every transport: messages up to the bound pass, a larger one fails the
// connection with ERR_BAD_FRAME naming the peer, the size and what bounds it (the ring's segment size...).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError } from '../errors.js';
import { MemoryNetwork } from './memory.js';
import { NetTransport } from './net.js';
import { NngTransport } from './nng.js';
import { shmTransport } from './shm.js';
import type { Transport } from './transport.js';

const cases: Array<[string, () => Transport, string]> = [
  ['memory', () => new MemoryNetwork().transport(), 'mem://limit'],
  ['net tcp', () => new NetTransport(), 'tcp://127.0.0.1:0'],
  ['nng tcp', () => new NngTransport(), 'tcp://127.0.0.1:0'],
  ['shm', () => shmTransport({ prefix: `limit-${process.pid}` }), 'shm://auto'],
];

for (const [name, make, url] of cases) {
  test(`${name}: limitIncoming passes messages up to the bound and fails a larger one naming peer and bound`, async () => {
    const t = make();
    const l = await t.listen(url);
    const [a, b] = await Promise.all([l.accept({ timeoutMs: 10_000 }), t.dial(l.url, { timeoutMs: 10_000 })]);
    try {
      assert.ok(a.limitIncoming, `${name} implements limitIncoming`);
      a.limitIncoming!(100_000, 'the test bound');
      // small (inline) and large (streamed) messages at and below the bound
      for (const n of [0, 10, 4096, 70_000, 100_000]) {
        const m = Uint8Array.from({ length: n }, (_, i) => i & 0xff);
        await b.send(m);
        const got = await a.recv({ timeoutMs: 5_000 });
        assert.is(got.byteLength, n);
        assert.is(got[n - 1], n > 0 ? (n - 1) & 0xff : undefined);
      }
      void b.send(new Uint8Array(100_001)).catch(() => {});
      const e = await a.recv({ timeoutMs: 5_000 }).then(
        () => undefined,
        (x: unknown) => x,
      );
      assert.ok(isShoalError(e, 'ERR_BAD_FRAME'), `${name}: ${String(e)}`);
      assert.match((e as Error).message, /above the test bound \(100000 bytes\)/);
      assert.ok((e as Error).message.includes(a.remote), `${name}: names the peer (${a.remote}): ${(e as Error).message}`);
      assert.throws(() => a.limitIncoming!(-1, 'x'), /maxBytes/);
    } finally {
      await Promise.all([a.close(), b.close(), l.close()]);
      await t.close?.();
    }
  });
}

test.run();
