/**
 * `shoal run --logdir DIR` (it sets `SHOAL_LOGDIR`): an unchanged training script (the digits example) writes
 * TensorBoard runs from every rank. The event files are decoded here with the protobuf wire reader (TensorBoard's
 * own reader checks the format in tensorboard-reader.test.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { jobTelemetryOf } from '@shoal/backends';
import { initWorker, parseRunArgs } from '@shoal/run';
import { maskedCrc32c } from '@shoal/wrappers';
import { DIGITS_MAIN, runNode, SHOAL_CLI } from './train-helpers.js';

/** tag -> [[step, value]] of every scalar in a run folder's event files; checks every record's CRCs. */
function readRun(dir: string): Record<string, Array<[number, number]>> {
  const out: Record<string, Array<[number, number]>> = {};
  for (const f of readdirSync(dir).filter((n) => n.startsWith('events.out.tfevents.'))) {
    const buf = readFileSync(join(dir, f));
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (let pos = 0; pos < buf.length; ) {
      const n = Number(dv.getBigUint64(pos, true));
      assert.is(dv.getUint32(pos + 8, true), maskedCrc32c(buf.subarray(pos, pos + 8)), 'length crc');
      const data = buf.subarray(pos + 12, pos + 12 + n);
      assert.is(dv.getUint32(pos + 12 + n, true), maskedCrc32c(data), 'data crc');
      pos += 16 + n;
      const r = new BinaryReader(data);
      let step = 0;
      const values: Array<[string, number]> = [];
      while (r.pos < r.len) {
        const [field, wt] = r.tag();
        if (field === 2) step = Number(r.int64());
        else if (field === 5) {
          const s = new BinaryReader(r.bytes());
          while (s.pos < s.len) {
            s.tag();
            const v = new BinaryReader(s.bytes());
            let tag = '';
            let value = NaN;
            while (v.pos < v.len) {
              const [vf, vwt] = v.tag();
              if (vf === 1) tag = v.string();
              else if (vf === 2) value = v.float();
              else v.skip(vwt);
            }
            values.push([tag, value]);
          }
        } else r.skip(wt as WireType);
      }
      for (const [tag, value] of values) (out[tag] ??= []).push([step, value]);
    }
  }
  return out;
}

test('shoal run --logdir makes an unchanged script write train/ and per-rank runs from every rank', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-logdir-'));
  try {
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--logdir', dir, DIGITS_MAIN, '--epochs', '2', '--steps', '6', '--batch-size', '16'], { timeoutMs: 90_000 });
    assert.is(r.code, 0, r.stderr);
    assert.equal(readdirSync(dir).sort(), ['rank-0', 'rank-1', 'train']);
    const train = readRun(join(dir, 'train'));
    assert.equal(train.epoch_loss!.map(([s]) => s), [1, 2]);
    assert.ok(train.epoch_loss!.every(([, v]) => v > 0 && v < 5));
    assert.equal(train.epoch_accuracy!.map(([s]) => s), [1, 2]);
    assert.ok(train.epoch_learning_rate![0]![1] > 0);
    assert.ok(train.epoch_samples_per_sec![1]![1] > 0);
    for (const rank of ['rank-0', 'rank-1']) {
      const run = readRun(join(dir, rank));
      assert.equal(run.epoch_step_time_ms!.map(([s]) => s), [1, 2], rank);
      assert.ok(run.epoch_bytes_sent![1]![1] > 0, `${rank} sent bytes`);
      assert.ok(run['system/rss_mib']!.length >= 1 && run['system/rss_mib']![0]![1] > 10, `${rank} rss`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('shoal run --backend ps --logdir: each parameter server writes its load to server-<i>', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-logdir-'));
  try {
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--backend', 'ps', '--servers', '2', '--logdir', dir, DIGITS_MAIN, '--epochs', '1', '--steps', '8', '--batch-size', '16'], { timeoutMs: 90_000 });
    assert.is(r.code, 0, r.stderr);
    assert.equal(readdirSync(dir).sort(), ['rank-0', 'rank-1', 'server-0', 'server-1', 'train']);
    for (const server of ['server-0', 'server-1']) {
      const run = readRun(join(dir, server));
      const rounds = run['server/rounds_total']!;
      assert.ok(rounds.length >= 1, `${server}: sampled`);
      // every step updates each key slice the server holds once: at least the 8 steps (plus the broadcast)
      assert.ok(rounds[rounds.length - 1]![1] >= 8, `${server}: ${rounds[rounds.length - 1]![1]} rounds`);
      assert.ok(run['server/bytes_in_total']!.at(-1)![1] > 0 && run['server/bytes_out_total']!.at(-1)![1] > 0, `${server}: bytes counted`);
      for (const tag of ['server/rounds_per_sec', 'server/queue_depth_mean', 'server/apply_ms_per_round', 'system/rss_mib']) assert.ok(run[tag], `${server}: ${tag}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--logdir becomes an absolute folder (SHOAL_LOGDIR for every worker); an empty one is refused', () => {
  const o = parseRunArgs(['-n', '2', '--logdir', 'runs/a', 'train.js'], { cores: 2 });
  assert.is(o.logdir, join(process.cwd(), 'runs/a'));
  assert.throws(() => parseRunArgs(['-n', '2', '--logdir', '', 'train.js'], { cores: 2 }), /--logdir needs a folder/);
  assert.is(parseRunArgs(['-n', '2', 'train.js'], { cores: 2 }).env, undefined);
});

test('initWorker parses SHOAL_LOGDIR once into the handle and the engine it returns', async () => {
  const w = await initWorker({ env: { SHOAL_LOGDIR: '/tmp/tb-x' } });
  try {
    assert.equal(w.telemetry, { logdir: '/tmp/tb-x' });
    assert.equal(jobTelemetryOf(w.sync), { logdir: '/tmp/tb-x' });
  } finally {
    await w.close();
  }
  const plain = await initWorker({ env: {} });
  try {
    assert.is(plain.telemetry, undefined);
    assert.is(jobTelemetryOf(plain.sync), undefined);
  } finally {
    await plain.close();
  }
});

test.run();
