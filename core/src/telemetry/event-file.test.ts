import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeEvent, EventFileWriter, frameRecord, maskedCrc32c } from './event-file.js';

test('masked CRC-32C: the CRC-32C check value, rotated and offset as TFRecord does', () => {
  // crc32c('123456789') = 0xe3069283 (the CRC-32C check value); mask = rotr15 + 0xa282ead8.
  const c = 0xe3069283;
  assert.is(maskedCrc32c(new TextEncoder().encode('123456789')), ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  assert.is(maskedCrc32c(new Uint8Array(0)), 0xa282ead8);
});

test('a record frames the Event bytes: u64 length, masked crc of it, data, masked crc of data', () => {
  const data = encodeEvent({ wallTime: 1.5, step: 7, scalars: [['loss', 0.25]] });
  const rec = frameRecord(data);
  const dv = new DataView(rec.buffer);
  assert.is(Number(dv.getBigUint64(0, true)), data.length);
  assert.is(dv.getUint32(8, true), maskedCrc32c(rec.subarray(0, 8)));
  assert.equal(Array.from(rec.subarray(12, 12 + data.length)), Array.from(data));
  assert.is(dv.getUint32(12 + data.length, true), maskedCrc32c(data));
  // wall_time (field 1, fixed64 double 1.5), step (field 2, varint 7), summary (field 5) with value{tag, simple_value}.
  assert.equal(Array.from(data.subarray(0, 11)), [0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 7]);
  assert.is(data[11], 0x2a);
});

test('the writer buffers without touching the disk until a flush; NaN values are dropped; close is idempotent', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-evw-'));
  try {
    const w = new EventFileWriter(join(dir, 'run'), { flushMs: 60_000 });
    w.scalars(1, [['a', 1], ['b', NaN]]);
    w.scalar('a', 2, 2);
    assert.not.ok(existsSync(join(dir, 'run')), 'nothing written before a flush');
    await w.flush();
    const [f] = readdirSync(join(dir, 'run'));
    assert.match(f!, /^events\.out\.tfevents\.\d+\..+\.\d+\.[0-9a-f]{8}$/);
    const size = readFileSync(join(dir, 'run', f!)).length;
    const expected = [encodeEvent({ wallTime: 0, fileVersion: 'brain.Event:2' }), encodeEvent({ wallTime: 0, step: 1, scalars: [['a', 1]] }), encodeEvent({ wallTime: 0, step: 2, scalars: [['a', 2]] })].reduce((s, d) => s + 16 + d.length, 0);
    assert.is(size, expected, 'three records: the file version and two scalar events (the NaN dropped)');
    await w.close();
    await w.close();
    w.scalar('a', 3, 3); // after close: ignored
    assert.is(readFileSync(join(dir, 'run', f!)).length, size);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a write error is kept and thrown by the next flush', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-evw-'));
  try {
    writeFileSync(join(dir, 'file'), 'x');
    const w = new EventFileWriter(join(dir, 'file', 'run'), { flushMs: 60_000 });
    w.scalar('a', 1, 1);
    try {
      await w.flush();
      assert.unreachable('flush should fail');
    } catch (e) {
      assert.match(String(e), /ENOTDIR|EEXIST/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
