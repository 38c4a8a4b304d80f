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

test('net: a bound from listen applies from the first byte; a lower bound fails the message already in progress', async () => {
  const t = new NetTransport();
  {
    // ListenOptions.incomingLimit: no limitIncoming call, the accepted connection is bounded from its first byte
    const l = await t.listen('tcp://127.0.0.1:0', { incomingLimit: { bytes: 1000, reason: 'the listen bound' } });
    const [a, b] = await Promise.all([l.accept({ timeoutMs: 10_000 }), t.dial(l.url, { timeoutMs: 10_000 })]);
    await b.send(new Uint8Array(1000));
    assert.is((await a.recv({ timeoutMs: 5_000 })).byteLength, 1000);
    void b.send(new Uint8Array(1001)).catch(() => {});
    const e = await a.recv({ timeoutMs: 5_000 }).then(() => undefined, (x: unknown) => x);
    assert.ok(isShoalError(e, 'ERR_BAD_FRAME'), String(e));
    assert.match((e as Error).message, /1001 bytes, above the listen bound \(1000 bytes\)/);
    await Promise.all([a.close(), b.close(), l.close()]);
    // a header announcing 8 MiB and the first 64 KiB of its body arrive, then the receiver lowers its bound to 1 MiB:
    // that message fails at once (its buffer dropped), without waiting for the rest
    const l2 = await t.listen('tcp://127.0.0.1:0');
    const [c, d] = await Promise.all([l2.accept({ timeoutMs: 10_000 }), t.dial(l2.url, { timeoutMs: 10_000 })]);
    const h = Buffer.alloc(8 + 65_536);
    h.writeUInt32LE(0x464c4853, 0);
    h.writeUInt32LE(8 << 20, 4);
    (d as unknown as { sock: import('node:net').Socket }).sock.write(h);
    const started = Date.now();
    const partial = () => (c as unknown as { decoder: { partial: { got: number } | undefined } }).decoder.partial?.got ?? 0;
    while (partial() < 65_536) {
      if (Date.now() - started > 5_000) throw new Error('the body start never arrived');
      await new Promise((r) => setTimeout(r, 5));
    }
    c.limitIncoming!(1 << 20, 'the lowered bound');
    const e2 = await c.recv({ timeoutMs: 5_000 }).then(() => undefined, (x: unknown) => x);
    assert.ok(isShoalError(e2, 'ERR_BAD_FRAME'), String(e2));
    assert.match((e2 as Error).message, /8388608 bytes, above the lowered bound \(1048576 bytes\)/);
    await Promise.all([c.close(), d.close(), l2.close()]);
  }
});

test.run();
