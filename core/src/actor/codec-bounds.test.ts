import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Connection } from '../transport/transport.js';
import { encodeParts } from './codec.js';
import { recvParts } from './rpc.js';

// Issue #16: a parameter server grew by ~200 MiB over a long row-sparse run because messages whose sizes change
// every step went into the shm transport's receive-buffer pool, which keeps buffers by exact size (128 MiB per
// connection). These pin the two halves of the fix: frames stay small whatever the arrays, and every external
// segment is received into a buffer of its own exact size, never the transport's.

test('frames stay under half the external threshold (plus the header) whatever the array sizes', () => {
  const min = 64 * 1024;
  let seed = 3;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 300; i++) {
    const ids = new Int32Array(Math.floor(rnd() * 15_000));
    const rows = new Float32Array(Math.floor(rnd() * 15_000));
    const enc = encodeParts({ k: 'q', id: i, m: 'rowSparsePush', a: [0, 'key', i, ids, rows, new Float32Array(Math.floor(rnd() * 100))] }, { externalMinBytes: min });
    assert.ok(enc.frame.byteLength <= min / 2 + 1024, `message ${i}: frame of ${enc.frame.byteLength} bytes`);
    const bytes = enc.frame.byteLength + enc.external.reduce((a, x) => a + x.byteLength, 0);
    assert.ok(bytes >= ids.byteLength + rows.byteLength, 'every array is sent');
  }
  // without a threshold (a checkpoint file) everything stays packed
  assert.is(encodeParts({ a: new Float32Array(100_000) }).external.length, 0);
});

test('external segments without a target land in exact-size buffers through recvInto, not the transport\'s', async () => {
  const enc = encodeParts({ k: 'q', id: 1, m: 'm', a: [new Float32Array(30_000), new Int32Array(50_000), new Float64Array(3)] }, { externalMinBytes: 16 });
  const queue = [enc.frame, ...enc.external];
  const into: number[] = [];
  let plainRecvs = 0;
  const conn = {
    remote: 'stub',
    closed: false,
    send: () => Promise.resolve(),
    close: () => Promise.resolve(),
    recv: () => {
      plainRecvs++;
      return Promise.resolve(queue.shift()!.slice());
    },
    recvInto: (dst: Uint8Array) => {
      const m = queue.shift()!;
      assert.is(dst.byteLength, m.byteLength, 'the buffer has the exact size');
      into.push(dst.byteLength);
      dst.set(m);
      return Promise.resolve(dst);
    },
  } as unknown as Connection;
  const { value } = await recvParts(conn);
  assert.is(plainRecvs, 1, 'only the frame is received with recv');
  assert.equal(into, [120_000, 200_000, 24]);
  const a = (value as { a: [Float32Array, Int32Array, Float64Array] }).a;
  assert.is(a[0].length, 30_000);
  assert.is(a[1].length, 50_000);
});

test.run();
