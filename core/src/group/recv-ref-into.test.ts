import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError } from '../errors.js';
import { MemoryStore } from '../store/memory.js';
import { MemoryNetwork } from '../transport/memory.js';
import { NetTransport } from '../transport/net.js';
import type { Transport } from '../transport/transport.js';
import { connectGroup } from './connect-group.js';
import { SPLIT_FLAG, Tags, type ProcessGroup } from './process-group.js';

async function pair(transport: Transport, listenUrl: string, timeoutMs: number): Promise<ProcessGroup[]> {
  const store = new MemoryStore();
  return Promise.all([0, 1].map((rank) => connectGroup({ rank, size: 2, store, transport, listenUrl, timeoutMs })));
}
const h = (step: number) => ({ tag: Tags.allreduce, step, seq: 1, aux: 0 });
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

for (const [name, make, url] of [
  ['net', () => new NetTransport(), 'tcp://127.0.0.1:0'],
  ['memory (no recvInto)', () => new MemoryNetwork().transport(), 'mem://'],
] as const) {
  test(`recvRefInto over ${name}: payloads posted ahead arrive whole, in order, in dst where the transport can`, async () => {
    const [g0, g1] = await pair(make(), url, 5_000);
    try {
      const n = 256 << 10;
      const dsts = [0, 1, 2].map(() => new Uint8Array(n));
      const posted = dsts.map((d, i) => g0!.recvRefInto(1, h(i), d));
      await Promise.all([0, 1, 2].map((i) => g1!.sendRef(0, h(i), bytes(n, i))));
      const got = await Promise.all(posted);
      got.forEach((m, i) => assert.equal(Buffer.compare(Buffer.from(m), Buffer.from(bytes(n, i))), 0, `payload ${i}`));
      if (name === 'net') assert.ok(got.every((m, i) => m === dsts[i]), 'net lands each payload in its dst');
    } finally {
      await Promise.all([g0!.close(), g1!.close()]);
    }
  });
}

test('recvRefInto: a payload sent inline is ERR_MISMATCH (the sender did not use sendRef)', async () => {
  const [g0, g1] = await pair(new NetTransport(), 'tcp://127.0.0.1:0', 5_000);
  try {
    const p = g0!.recvRefInto(1, h(0), new Uint8Array(64 << 10));
    await g1!.send(0, h(0), bytes(100, 1));
    const e = await p.then(() => undefined, (x: unknown) => x);
    assert.ok(isShoalError(e, 'ERR_MISMATCH'), String(e));
    assert.match((e as Error).message, /expected a split message/);
  } finally {
    await Promise.all([g0!.close(), g1!.close()]);
  }
});

test('recvRefInto: a payload that never comes times out, and the connection is closed before the caller gets dst back', async () => {
  const [g0, g1] = await pair(new NetTransport(), 'tcp://127.0.0.1:0', 400);
  try {
    const dst = new Uint8Array(64 << 10);
    const p = g0!.recvRefInto(1, h(0), dst);
    // a split header alone: the payload never follows
    await g1!.sendMessage(0, g1!.message({ ...h(0), tag: Tags.allreduce | SPLIT_FLAG }, 0));
    const t0 = Date.now();
    const e = await p.then(() => undefined, (x: unknown) => x);
    assert.ok(isShoalError(e, 'ERR_TIMEOUT'), String(e));
    assert.ok(Date.now() - t0 < 5_000, 'bounded by the group timeout');
    assert.ok((await g0!.peer(1)).closed, 'the connection is closed');
    assert.ok(dst.every((x) => x === 0), 'dst untouched');
  } finally {
    await Promise.all([g0!.close(), g1!.close()]);
  }
});

test.run();
