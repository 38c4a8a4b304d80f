import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sparkInput } from './spark-input.js';

async function* pieces(sizes: number[]): AsyncGenerator<Uint8Array> {
  let v = 0;
  for (const n of sizes) {
    const p = new Uint8Array(n);
    for (let i = 0; i < n; i++) p[i] = v++ & 0xff;
    yield p;
  }
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const c of it) out.push(c);
  return out;
}

function flat(cs: Uint8Array[]): number[] {
  return cs.flatMap((c) => Array.from(c));
}

test('sparkInput regroups small pieces into pieces of at least minChunkBytes, bytes unchanged', async () => {
  const sizes = [3, 5, 1, 7, 2, 9, 4, 0, 6];
  const out = await collect(sparkInput(pieces(sizes), 10));
  const want = flat(await collect(pieces(sizes)));
  assert.equal(flat(out), want);
  for (const c of out.slice(0, -1)) assert.ok(c.byteLength >= 10, `piece of ${c.byteLength} bytes`);
  assert.ok(out.length < sizes.length);
});

test('sparkInput passes big pieces through without copying and flushes the tail', async () => {
  const big = new Uint8Array(64).fill(7);
  async function* src(): AsyncGenerator<Uint8Array> {
    yield big;
    yield Uint8Array.of(1, 2);
  }
  const out = await collect(sparkInput(src(), 16));
  assert.is(out.length, 2);
  assert.is(out[0], big);
  assert.equal(Array.from(out[1]!), [1, 2]);
});

test('sparkInput of an empty source yields nothing; a bad chunk size is a RangeError', async () => {
  assert.equal(await collect(sparkInput(pieces([]), 8)), []);
  try {
    await collect(sparkInput(pieces([1]), 0));
    assert.unreachable('should throw');
  } catch (e) {
    assert.instance(e, RangeError);
    assert.match((e as Error).message, /minChunkBytes/);
  }
});

test('sparkInput rethrows the source error', async () => {
  async function* bad(): AsyncGenerator<Uint8Array> {
    yield Uint8Array.of(1);
    throw new Error('pipe broke');
  }
  try {
    await collect(sparkInput(bad(), 8));
    assert.unreachable('should throw');
  } catch (e) {
    assert.match((e as Error).message, /pipe broke/);
  }
});

test.run();
