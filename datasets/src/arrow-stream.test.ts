import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, connect, type AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Table, tableToIPC } from 'apache-arrow';
import { isShoalError } from '@shoal/core';
import { openArrowStream, batches, localSteps } from './index.js';
import { exampleBatch, exampleTable, FEATURES } from './test-fixtures.js';
import { expectData } from './testing/assert.js';

const dir = mkdtempSync(join(tmpdir(), 'shoal-arrow-stream-'));

async function collectIds(ds: Awaited<ReturnType<typeof openArrowStream>>, bs = 64): Promise<number[]> {
  const ids: number[] = [];
  for await (const b of batches(ds, { columns: ['id'], batchSize: bs })) ids.push(...b.columns.id!);
  return ids;
}


test('arrow stream from bytes: round trip, columns are views on the input buffer (zero-copy)', async () => {
  const bytes = tableToIPC(exampleTable([1000, 0, 512, 7]), 'stream');
  const ds = await openArrowStream(bytes, { name: 'mem' });
  assert.equal(ds.schema.fields.map((f) => `${f.name}:${f.kind}:${f.width}`), ['id:int32:1', 'user:int32:1', 'item:int32:1', 'label:float32:1', 'features:float32:16']);
  let seen = 0;
  let views = 0;
  for await (const chunk of ds.partitions[0]!.read({ columns: ['id', 'features', 'label'] })) {
    const f = chunk.columns.features!.values;
    if (chunk.rows > 0) assert.ok(f.buffer === bytes.buffer, 'features share the input ArrayBuffer');
    if (chunk.rows > 0) assert.ok(chunk.columns.id!.values.buffer === bytes.buffer, 'id shares the input ArrayBuffer');
    for (let r = 0; r < chunk.rows; r++) {
      assert.is(chunk.columns.id!.values[r], seen + r);
      assert.is(f[r * FEATURES + 3], seen + r + 3 / 16);
    }
    seen += chunk.rows;
    views++;
  }
  assert.is(seen, 1519);
  assert.is(views, 4);
  assert.is(ds.partitions[0]!.rows, 1519);
});

test('arrow stream batches: whole batches inside a record batch are views, the rest copies; values exact', async () => {
  const bytes = tableToIPC(exampleTable([256, 100]), 'stream');
  const ds = await openArrowStream(bytes);
  const out = [];
  for await (const b of batches(ds, { features: ['features'], label: 'label', batchSize: 128 })) out.push(b);
  assert.equal(out.map((b) => b.size), [128, 128, 100]);
  assert.ok(out[0]!.columns.features!.buffer === bytes.buffer, 'first batch is a view');
  assert.ok(out[1]!.columns.label!.buffer === bytes.buffer, 'second batch is a view');
  assert.is(out[2]!.columns.features!.length, 100 * FEATURES);
  assert.is(out[2]!.columns.features![5 * FEATURES], 261);
  assert.is(out[1]!.columns.label![1], 1);
  assert.is(out[0]!.widths.features, FEATURES);
});

test('arrow stream over a real socket, in small pieces', async () => {
  const bytes = tableToIPC(exampleTable([300, 0, 301, 5]), 'stream');
  const server = createServer((s) => {
    let at = 0;
    const step = () => {
      while (at < bytes.length) {
        const piece = bytes.subarray(at, Math.min(bytes.length, at + 997));
        at += piece.length;
        if (!s.write(piece)) return void s.once('drain', step);
      }
      s.end();
    };
    step();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sock = connect((server.address() as AddressInfo).port, '127.0.0.1');
  try {
    const ds = await openArrowStream(sock, { name: 'socket', idleTimeoutMs: 10_000 });
    const ids = await collectIds(ds, 100);
    assert.equal(ids, Array.from({ length: 606 }, (_, i) => i));
  } finally {
    sock.destroy();
    await new Promise((r) => server.close(r));
  }
});

test('arrow stream from a file path, read twice with retain', async () => {
  const p = join(dir, 'x.arrows');
  writeFileSync(p, tableToIPC(exampleTable([50, 70]), 'stream'));
  const ds = await openArrowStream(p, { retain: true });
  assert.is(ds.partitions[0]!.rows, undefined);
  assert.throws(() => localSteps(ds, 10), /row count unknown/);
  assert.is((await collectIds(ds)).length, 120);
  assert.is(localSteps(ds, 10), 12);
  assert.equal(await collectIds(ds), Array.from({ length: 120 }, (_, i) => i));
});

test('arrow stream file cut short or garbled: ERR_DATA naming the file', async () => {
  const bytes = tableToIPC(exampleTable([64, 64]), 'stream');
  for (const [n, cut, re] of [
    ['cut1.arrows', bytes.length - 8, /cut1\.arrows: truncated Arrow IPC stream: input ended after 3 messages/],
    ['cut2.arrows', bytes.length - 100, /cut2\.arrows: truncated Arrow IPC stream: input ended inside message 2/],
    ['cut3.arrows', 5, /cut3\.arrows: truncated Arrow IPC stream: input ended inside the prefix of message 0/],
  ] as const) {
    const p = join(dir, n);
    writeFileSync(p, bytes.subarray(0, cut));
    await expectData(
      (async () => {
        const ds = await openArrowStream(p);
        await collectIds(ds);
      })(),
      re,
    );
  }
  await expectData(openArrowStream(join(dir, 'missing.arrows')), /missing\.arrows: cannot open/);
});

test('arrow stream read twice without retain: ERR_STATE', async () => {
  const ds = await openArrowStream(Readable.from([tableToIPC(exampleTable([5]), 'stream')]));
  await collectIds(ds);
  try {
    await collectIds(ds);
    assert.unreachable('second read');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_STATE'));
  }
});

test('truncated arrow stream: cut inside a body or between messages raises, no partial batch is yielded', async () => {
  const bytes = tableToIPC(exampleTable([100, 100, 100]), 'stream');
  // Cut between the last record batch and the EOS marker: every batch is whole but the stream is incomplete.
  const noEos = bytes.slice(0, bytes.length - 8);
  await expectData(openArrowStream(noEos, { name: 'cut-eos' }), /cut-eos: truncated Arrow IPC stream/);
  let got = 0;
  await expectData(
    (async () => {
      const ds = await openArrowStream(Readable.from([noEos]), { name: 'cut-eos-stream' });
      for await (const c of ds.partitions[0]!.read({ columns: ['id'] })) got += c.rows;
    })(),
    /cut-eos-stream: truncated Arrow IPC stream: input ended after 4 messages \(\d+ bytes\) without the end-of-stream marker/,
  );
  // The reader looks one message ahead, so the cut is found before the last whole batch is handed out.
  assert.ok(got <= 300 && got % 100 === 0, `only whole batches (got ${got})`);
  // Cut inside the third batch's body.
  got = 0;
  await expectData(
    (async () => {
      const ds = await openArrowStream(Readable.from([bytes.slice(0, bytes.length - 500)]), { name: 'cut-body' });
      for await (const b of batches(ds, { columns: ['id'], batchSize: 50 })) got += b.size;
    })(),
    /cut-body: truncated Arrow IPC stream: input ended inside message 3 \(\d+ of \d+ bytes\)/,
  );
  assert.ok(got <= 200, `no row of the cut batch was yielded (got ${got})`);
  await expectData(openArrowStream(Readable.from([new Uint8Array(0)]), { name: 'empty' }), /empty: /);
  await expectData(openArrowStream(Readable.from([bytes.slice(0, 20)]), { name: 'short' }), /short: truncated Arrow IPC stream: input ended inside the metadata of message 0/);
  // Garbage instead of a message: a negative metadata length, or a corrupt flatbuffer.
  const junk = bytes.slice();
  junk.set([0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff], 0);
  await expectData(openArrowStream(Readable.from([junk]), { name: 'junk' }), /junk: malformed Arrow IPC stream: message 0 has metadata length/);
  const corrupt = bytes.slice();
  corrupt.set([0xff, 0xff, 0xff, 0x7f], 8);
  await expectData(openArrowStream(Readable.from([corrupt]), { name: 'corrupt' }), /corrupt: malformed Arrow IPC stream: message 0 metadata is corrupt/);
});

test("an empty Spark partition (schema, no record batch) is 0 rows; with agreed steps it yields empty batches", async () => {
  const schemaOnly = tableToIPC(new Table(exampleBatch(0, 0).schema), 'stream');
  const ds = await openArrowStream(Readable.from([schemaOnly]), { name: 'empty-partition', retain: true });
  assert.is(ds.schema.fields.length, 5);
  assert.is((await collectIds(ds)).length, 0);
  assert.is(localSteps(ds, 8), 0);
  const sizes: number[] = [];
  for await (const b of batches(ds, { features: ['features'], label: 'label', batchSize: 8, steps: 3 })) sizes.push(b.size, b.columns.features!.length);
  assert.equal(sizes, [0, 0, 0, 0, 0, 0]);
});

test('a silent producer is an ERR_TIMEOUT, not a hang', async () => {
  const bytes = tableToIPC(exampleTable([10]), 'stream');
  async function* stall(): AsyncGenerator<Uint8Array> {
    yield bytes.slice(0, 200);
    await new Promise((r) => setTimeout(r, 5_000).unref());
  }
  const t0 = Date.now();
  try {
    const ds = await openArrowStream(stall(), { name: 'stall', idleTimeoutMs: 150 });
    await collectIds(ds);
    assert.unreachable('timeout');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_TIMEOUT') || (isShoalError(e, 'ERR_DATA') && /timed out/.test((e as Error).message)), String(e));
  }
  assert.ok(Date.now() - t0 < 3_000);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
