import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, statSync, copyFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './report.js';

const results = fileURLToPath(new URL('../results/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'shoal-report-'));

test('the report has a table per suite found, names the missing ones, and renders its charts as PNG', async () => {
  const res = join(dir, 'results');
  mkdirSync(res);
  for (const s of ['allreduce', 'cluster', 'ps']) copyFileSync(join(results, `${s}.json`), join(res, `${s}.json`));
  const out = join(dir, 'out', 'report.md');
  await run(['--results', res, '--out', out]);
  const md = readFileSync(out, 'utf8');
  assert.match(md, /^## allreduce$/m);
  assert.match(md, /^## cluster$/m);
  assert.match(md, /^## ps$/m);
  assert.match(md, /Missing suites \(no result file\): micro, transport, datasets, train, spark\./);
  // a cluster row as the JSON has it: 64 MiB ring over net at 1 Gbit/s
  const row = (JSON.parse(readFileSync(join(res, 'cluster.json'), 'utf8')).rows as Record<string, unknown>[]).find((r) => r.impl === 'shoal-ring' && r.transport === 'net' && r.rate_mbit === 1000 && r.bytes === 64 << 20)!;
  assert.ok(md.includes(`| shoal-ring | net | 4x1 | 1000 | 64 MiB | ${+(row.p50_us as number).toPrecision(3)} |`), 'the 64 MiB row');
  for (const name of ['allreduce-busbw', 'cluster-busbw', 'ps-rounds']) {
    const png = readFileSync(join(dir, 'out', 'report', `${name}.png`));
    assert.equal([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG', `${name} is a PNG`);
    assert.ok(png.readUInt32BE(16) >= 600 && png.readUInt32BE(20) >= 300, `${name}: ${png.readUInt32BE(16)} x ${png.readUInt32BE(20)} px`);
    assert.ok(statSync(join(dir, 'out', 'report', `${name}.png`)).size > 20_000, `${name} has content`);
    assert.ok(md.includes(`![${name}](report/${name}.png)`));
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
