import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  buildTask, cleanRows, historyLists, ONLINE_RETAIL, parseCsv, parseDemoOptions, prepare, SYNTHETIC_CONFIG, validateConfig, type DatasetConfig,
} from '../../examples/recommender/dist/index.js';

// A tiny Online Retail extract: every cleaning rule fires once or more.
const CSV = [
  'InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country',
  '536365,85123A,"WHITE HANGING HEART, T-LIGHT HOLDER",6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom',
  '536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom',
  '536365,71053,WHITE METAL LANTERN,2,2010-12-01 08:26:00,3.39,17850.0,United Kingdom', // duplicate line: counts once
  '536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,,United Kingdom', // no customer
  'C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-01 09:41:00,2.55,17850.0,United Kingdom', // cancelled
  '536380,22728,ALARM CLOCK BAKELIKE PINK,0,2010-12-01 09:45:00,3.75,12583.0,France', // quantity 0
  '536381,POST,POSTAGE,1,2010-12-01 09:45:00,18.0,12583.0,France', // non-product
  '536382,BANK CHARGES,Bank Charges,1,2010-12-01 09:46:00,15.0,12583.0,France', // non-product
  '536383,22728,ALARM CLOCK BAKELIKE PINK,4,2010-12-02 10:00:00,3.75,12583.0,France',
  '536383,85123A,"WHITE HANGING HEART, T-LIGHT HOLDER",4,2010-12-02 10:00:00,2.55,12583.0,France',
  // Test period (last 2 days): customer 17850 again, an unknown customer, a basket with a new item only.
  '536400,85123A,"WHITE HANGING HEART, T-LIGHT HOLDER",1,2010-12-09 11:00:00,2.55,17850.0,United Kingdom',
  '536400,22728,ALARM CLOCK BAKELIKE PINK,1,2010-12-09 11:00:00,3.75,17850.0,United Kingdom',
  '536400,71053,WHITE METAL LANTERN,1,2010-12-09 11:00:00,3.39,17850.0,United Kingdom',
  '536401,71053,WHITE METAL LANTERN,1,2010-12-10 12:00:00,3.39,99999.0,United Kingdom',
  '536401,22728,ALARM CLOCK BAKELIKE PINK,1,2010-12-10 12:00:00,3.75,99999.0,United Kingdom',
  '536402,99999Z,NEW ITEM,1,2010-12-10 12:30:00,1.00,17850.0,United Kingdom',
  '536402,71053,WHITE METAL LANTERN,1,2010-12-10 12:30:00,3.39,17850.0,United Kingdom',
].join('\r\n');

const cfg: DatasetConfig = { ...ONLINE_RETAIL, split: { testDays: 2 } };

test('csv: quoted commas, doubled quotes, newlines in quotes, CRLF, BOM', () => {
  const { header, rows } = parseCsv('\ufeffa,b,c\r\n1,"x, y","say ""hi"""\n2,"two\nlines",\n', 't');
  assert.equal(header, ['a', 'b', 'c']);
  assert.equal(rows, [['1', 'x, y', 'say "hi"'], ['2', 'two\nlines', '']]);
});

test('csv: a short row and an unterminated quote are errors naming the row', () => {
  assert.throws(() => parseCsv('a,b\n1\n', 'f.csv'), /f\.csv: row 2 has 1 fields, the header has 2/);
  assert.throws(() => parseCsv('a,b\n1,"x\n', 'f.csv'), /unterminated quoted field/);
});

test('cleaning drops no-customer, cancelled, non-positive quantity and non-product rows (SOURCE.md rules)', () => {
  const { rows, stats } = cleanRows(CSV, cfg, 'tiny.csv');
  assert.equal(stats, { rawRows: 17, droppedEmptyUser: 1, droppedCancelled: 1, droppedQuantity: 1, droppedItem: 2, keptRows: 12 });
  assert.ok(rows.every((r) => r.user !== '' && !r.basket.startsWith('C')));
  assert.ok(!rows.some((r) => r.item === 'POST' || r.item === 'BANK CHARGES'));
  assert.is(rows[0]!.name, 'WHITE HANGING HEART, T-LIGHT HOLDER');
  assert.is(rows[0]!.time, Date.UTC(2010, 11, 1, 8, 26));
});

test('time split, catalog from training, unknown users, >= 2 catalog items per test basket', () => {
  const { rows, stats } = cleanRows(CSV, cfg, 'tiny.csv');
  const t = buildTask(rows, stats, cfg, 5);
  assert.is(t.stats.cutoff, '2010-12-09');
  assert.is(t.stats.trainBaskets, 2);
  assert.is(t.stats.testPeriodBaskets, 3);
  assert.is(t.stats.testBaskets, 2); // 536402 has one catalog item left (99999Z is new)
  assert.is(t.numItems, 3);
  assert.equal(t.itemKeys, ['85123A', '71053', '22728']);
  assert.equal(t.userKeys, ['<unknown>', '17850.0', '12583.0']);
  // Duplicate line of 71053 in 536365 counts once.
  assert.equal(Array.from(t.train.items), [0, 1, 2, 0]);
  assert.equal(Array.from(t.test.users), [1, 0]);
  assert.is(t.stats.testColdUsers, 1);
  for (let b = 0; b < 2; b++) {
    const visible = Array.from(t.test.items.subarray(t.test.offsets[b]!, t.test.offsets[b + 1]!));
    assert.ok(!visible.includes(t.test.hidden[b]!), 'hidden item is not visible');
    assert.is(visible.length + 1, b === 0 ? 3 : 2);
  }
});

test('history lists: earlier baskets of the same user only, newest first, with counts', () => {
  const { rows, stats } = cleanRows(CSV, cfg, 'tiny.csv');
  const t = buildTask(rows, stats, cfg, 5);
  const h = historyLists(t.train, t.train, 10);
  assert.equal(Array.from(h.offsets), [0, 0, 0]); // each training user has one earlier-free basket
  const th = historyLists(t.train, t.test, 10);
  assert.equal(Array.from(th.items.subarray(th.offsets[0]!, th.offsets[1]!)), [0, 1]); // customer 17850's basket 536365
  assert.equal(Array.from(th.counts.subarray(0, 2)), [1, 1]);
  assert.is(th.offsets[2]! - th.offsets[1]!, 0); // unknown user
});

test('config validation names the bad key', () => {
  assert.throws(() => validateConfig({ ...ONLINE_RETAIL, columns: { ...ONLINE_RETAIL.columns, item: '' } }, 'c.json'), /c\.json\.columns\.item/);
  assert.throws(() => validateConfig({ ...ONLINE_RETAIL, timestampFormat: 'excel' }, 'c.json'), /timestampFormat/);
  assert.throws(() => validateConfig({ ...ONLINE_RETAIL, filters: { dropEmptyUser: true, itemPattern: '(' } }, 'c.json'), /itemPattern/);
  assert.throws(() => cleanRows('a,b\n1,2\n', ONLINE_RETAIL, 'x.csv'), /column "CustomerID" not found/);
});

test('a second data set works from a config alone: the shipped synthetic grocery log', () => {
  const dir = new URL('../../examples/recommender/fixtures/', import.meta.url).pathname;
  const c = validateConfig(JSON.parse(readFileSync(join(dir, 'synthetic-grocery.json'), 'utf8')), 'synthetic-grocery.json');
  assert.equal(c.columns, SYNTHETIC_CONFIG.columns);
  const cache = mkdtempSync(join(tmpdir(), 'rec-cache-'));
  try {
    const a = prepare(c, dir, cache);
    assert.is(a.cached, false);
    const s = a.data.stats;
    assert.ok(s.droppedCancelled > 0 && s.droppedQuantity > 0 && s.droppedItem > 0, JSON.stringify(s));
    assert.ok(a.data.itemKeys.every((k) => /^SKU\d{4}$/.test(k)));
    assert.ok(s.testBaskets > 300 && s.trainBaskets > 3000, JSON.stringify(s));
    const b = prepare(c, dir, cache);
    assert.is(b.cached, true);
    assert.equal(Array.from(b.data.test.hidden), Array.from(a.data.test.hidden));
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('prepare reads a gzip file relative to the config folder and rebuilds when the file changes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rec-data-'));
  try {
    writeFileSync(join(dir, 'log.csv.gz'), gzipSync(CSV));
    const c = { ...cfg, file: 'log.csv.gz' };
    const a = prepare(c, dir, join(dir, 'cache'));
    assert.is(a.data.stats.keptRows, 12);
    const lines = CSV.split('\r\n');
    writeFileSync(join(dir, 'log.csv.gz'), gzipSync([...lines.slice(0, 9), ...lines.slice(11)].join('\n')));
    const b = prepare(c, dir, join(dir, 'cache'));
    assert.is(b.cached, false);
    assert.is(b.data.stats.rawRows, 15);
    assert.is(b.data.stats.trainBaskets, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('demo flags: defaults, values, and errors that name the flag', () => {
  const d = parseDemoOptions([]);
  assert.equal([d.workers, d.backend, d.epochs, d.batch, d.out], [2, 'hybrid', 4, 512, null]);
  const o = parseDemoOptions(['--workers', '4', '--backend', 'ps', '--epochs', '2', '--out', 'x', '--compare-workers', '1,2']);
  assert.equal([o.workers, o.backend, o.epochs, o.out, o.compareWorkers], [4, 'ps', 2, 'x', [1, 2]]);
  assert.throws(() => parseDemoOptions(['--backend', 'mpi']), /--backend must be ring\|ps\|hybrid/);
  assert.throws(() => parseDemoOptions(['--workers', '0']), /--workers must be an integer >= 1/);
  assert.throws(() => parseDemoOptions(['--workers', '3']), /--batch \(512\) must be a multiple of the worker count 3/);
  assert.throws(() => parseDemoOptions(['--epoch', '3']), /--epoch is not a known option/);
  // Tables: on the servers when there are servers (auto), replicated on request; ring has no servers.
  assert.equal([d.tables, d.serverOptimizer], ['auto', 'adam']);
  const t = parseDemoOptions(['--tables', 'replicated', '--server-optimizer', 'adagrad']);
  assert.equal([t.tables, t.serverOptimizer], ['replicated', 'adagrad']);
  assert.throws(() => parseDemoOptions(['--backend', 'ring', '--tables', 'server']), /--tables server needs parameter servers/);
  assert.throws(() => parseDemoOptions(['--tables', 'sharded']), /--tables must be server\|replicated/);
});

test.run();
