import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError } from '@shoal/core';
import {
  buildFeatures, buildTask, cleanRows, deriveSessions, historyLists, loadConfig, ONLINE_RETAIL, parseDemoOptions, prepare, timestampParser, validateConfig,
  type CleanRow, type DatasetConfig,
} from '../../examples/recommender/dist/index.js';

const root = new URL('../../', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'rec-data-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

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
writeFileSync(join(tmp, 'tiny.csv'), CSV);
const cfg: DatasetConfig = { ...ONLINE_RETAIL, interactions: { ...ONLINE_RETAIL.interactions, file: 'tiny.csv' }, split: { testDays: 2, validDays: 2 } };
const cfgRaw = (): Record<string, unknown> => structuredClone(cfg) as unknown as Record<string, unknown>;

test('cleaning drops no-customer, cancelled, non-positive quantity and non-product rows (SOURCE.md rules)', async () => {
  const { rows, stats } = await cleanRows(cfg, tmp);
  assert.equal(stats, { rawRows: 17, droppedEmptyUser: 1, droppedCancelled: 1, droppedQuantity: 1, droppedRating: 0, droppedItem: 2, keptRows: 12 });
  assert.ok(rows.every((r) => r.user !== '' && !r.basket.startsWith('C')));
  assert.ok(!rows.some((r) => r.item === 'POST' || r.item === 'BANK CHARGES'));
  assert.is(rows[0]!.name, 'WHITE HANGING HEART, T-LIGHT HOLDER');
  assert.is(rows[0]!.time, Date.UTC(2010, 11, 1, 8, 26));
});

test('time split, catalog from training, unknown users, >= 2 catalog items per test basket, validation period', async () => {
  const { rows, stats } = await cleanRows(cfg, tmp);
  const t = buildTask(rows, stats, cfg, 5);
  assert.is(t.stats.cutoff, '2010-12-09');
  assert.is(t.stats.validFrom, '2010-12-07');
  assert.is(t.stats.trainBaskets, 2);
  assert.is(t.fitBaskets, 2); // nothing in the validation days of this extract
  assert.is(t.valid.hidden.length, 0);
  assert.is(t.stats.testPeriodBaskets, 3);
  assert.is(t.stats.testBaskets, 2); // 536402 has one catalog item left (99999Z is new)
  assert.is(t.numItems, 3);
  assert.equal(t.itemKeys, ['85123A', '71053', '22728']);
  assert.equal(t.userKeys, ['<unknown>', '17850.0', '12583.0']);
  assert.equal(t.words, { basket: 'invoice', baskets: 'invoices', user: 'customer', users: 'customers', item: 'product', items: 'products' });
  // Duplicate line of 71053 in 536365 counts once.
  assert.equal(Array.from(t.train.items), [0, 1, 2, 0]);
  assert.equal(Array.from(t.test.users), [1, 0]);
  assert.is(t.stats.testColdUsers, 1);
  for (let b = 0; b < 2; b++) {
    const visible = Array.from(t.test.items.subarray(t.test.offsets[b]!, t.test.offsets[b + 1]!));
    assert.ok(!visible.includes(t.test.hidden[b]!), 'hidden item is not visible');
    assert.is(visible.length + 1, b === 0 ? 3 : 2);
  }
  // A validation period of 7 days holds the second training basket.
  const v = buildTask(rows, stats, { ...cfg, split: { testDays: 2, validDays: 7 } }, 5);
  assert.is(v.fitBaskets, 1);
  assert.is(v.stats.validBaskets, 1);
  assert.is(v.valid.users[0], 0, 'the validation customer has no basket before the period: unknown there');
});

test('history lists: earlier baskets of the same user only, newest first, with counts', async () => {
  const { rows, stats } = await cleanRows(cfg, tmp);
  const t = buildTask(rows, stats, cfg, 5);
  const h = historyLists(t.train, t.train, 10);
  assert.equal(Array.from(h.offsets), [0, 0, 0]); // each training user has one earlier-free basket
  const th = historyLists(t.train, t.test, 10);
  assert.equal(Array.from(th.items.subarray(th.offsets[0]!, th.offsets[1]!)), [0, 1]); // customer 17850's basket 536365
  assert.equal(Array.from(th.counts.subarray(0, 2)), [1, 1]);
  assert.is(th.offsets[2]! - th.offsets[1]!, 0); // unknown user
});

/** The ERR_CONFIG message of validating `o` (fails the test if it validates). */
function configError(o: unknown): string {
  try {
    validateConfig(o, 'c.json');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_CONFIG'), String(e));
    return (e as Error).message;
  }
  assert.unreachable(`validated: ${JSON.stringify(o)}`);
  return '';
}

const RATINGS = {
  name: 'r', interactions: { file: 'r.dat', delimiter: '::', header: false, quote: null, columns: { user: 0, item: 1, rating: 2, timestamp: 3 } },
  timestamp: { format: 'unix-s' }, feedback: { minRating: 4 }, split: { testDays: 3 },
};

test('config: defaults from the schema, words, sessions derived without a basket column', () => {
  const c = validateConfig(RATINGS, 'c.json');
  assert.equal(c.sessions, { by: 'idle-gap', idleMinutes: 30, maxItems: 200 });
  assert.equal(c.words, { basket: 'basket', baskets: 'baskets', user: 'customer', users: 'customers', item: 'item', items: 'items' });
  assert.equal(c.filters, { dropEmptyUser: true });
  assert.is(c.split.validDays, 3);
  assert.is(c.attribution, '');
  const w = validateConfig({ ...RATINGS, words: { basket: 'session', user: 'user', item: 'movie', items: 'films' } }, 'c.json');
  assert.equal([w.words.baskets, w.words.users, w.words.items], ['sessions', 'users', 'films']);
  assert.is(ONLINE_RETAIL.sessions.by, 'column');
});

test('config: every bad key is one ERR_CONFIG naming it', () => {
  const cases: [unknown, RegExp][] = [
    [[], /c\.json: must be a JSON object/],
    [{ ...RATINGS, name: '' }, /c\.json: name: must not be empty/],
    [{ ...RATINGS, nmae: 'x' }, /c\.json: nmae: is not a known key \(known: name, attribution/],
    [{ ...RATINGS, interactions: undefined }, /c\.json: interactions: is required/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, columns: { user: 0, item: 1 } } }, /interactions\.columns\.timestamp: is required/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, columns: { ...RATINGS.interactions.columns, user: 'u' } } }, /interactions\.columns\.user: is "u": without a header line, give the 0-based field position/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, header: true } }, /interactions\.columns\.user: is 0: with a header line, name the column/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, columns: { ...RATINGS.interactions.columns, item: 1.5 } } }, /interactions\.columns\.item: must be string or integer, got 1\.5/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, delimiter: '' } }, /interactions\.delimiter: must not be empty/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, quote: ':' } }, /interactions\.quote: must be one character not in the delimiter/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, header: 'no' } }, /interactions\.header: must be boolean, got "no"/],
    [{ ...RATINGS, timestamp: { format: 'excel' } }, /timestamp\.format: must be one of "iso", "unix-s", "unix-ms", "pattern", got "excel"/],
    [{ ...RATINGS, timestamp: { format: 'pattern' } }, /timestamp\.pattern: is required with format "pattern"/],
    [{ ...RATINGS, timestamp: { format: 'pattern', pattern: 'HH:mm' } }, /timestamp\.pattern: "HH:mm" needs YYYY, MM \(or M\) and DD \(or D\)/],
    [{ ...RATINGS, timestamp: { format: 'unix-s', pattern: 'YYYY' } }, /timestamp\.pattern: needs format "pattern"/],
    [{ ...RATINGS, interactions: { ...RATINGS.interactions, columns: { user: 0, item: 1, timestamp: 3 } } }, /feedback\.minRating: needs interactions\.columns\.rating/],
    [{ ...RATINGS, filters: { minQuantity: 1 } }, /filters\.minQuantity: needs interactions\.columns\.quantity/],
    [{ ...RATINGS, filters: { itemPattern: '(' } }, /filters\.itemPattern: is not a valid regular expression/],
    [{ ...RATINGS, filters: { cancelledBasketPrefix: 'C' } }, /filters\.cancelledBasketPrefix: needs basket ids/],
    [{ ...RATINGS, sessions: { by: 'column' } }, /sessions\.by: is "column" but interactions\.columns\.basket is not set/],
    [{ ...RATINGS, sessions: { idleMinutes: 0 } }, /sessions\.idleMinutes: must be > 0, got 0/],
    [{ ...RATINGS, split: { testDays: -1 } }, /split\.testDays: must be > 0, got -1/],
    [{ ...RATINGS, split: {} }, /split\.testDays: is required/],
    [{ ...RATINGS, itemNames: { file: 'm.dat', columns: { item: 0 } } }, /itemNames\.columns\.name: is required/],
    [{ ...RATINGS, words: { basket: 'session', plural: 'x' } }, /words\.plural: is not a known key/],
  ];
  for (const [o, re] of cases) assert.match(configError(o), re);
  const bad = join(tmp, 'bad.json');
  writeFileSync(bad, '{ "name": ');
  assert.throws(() => loadConfig(bad), /bad\.json: is not valid JSON/);
  assert.throws(() => loadConfig(join(tmp, 'missing.json')), /missing\.json: file not found/);
});

test('the demo prints a bad config as one line naming the key, without a stack trace', () => {
  const bad = join(tmp, 'bad-demo.json');
  writeFileSync(bad, JSON.stringify({ ...RATINGS, interactions: { ...RATINGS.interactions, colums: {} } }));
  const r = spawnSync(process.execPath, [join(root, 'examples/recommender/dist/main.js'), '--config', bad, '--out', join(tmp, 'o')], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 2, r.stderr);
  assert.match(r.stderr, /^error: bad config .*bad-demo\.json: interactions\.colums: is not a known key/);
  assert.not.match(r.stderr, /\n\s+at /);
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
});

test('timestamps: unix seconds / milliseconds, ISO with and without a zone, custom patterns', () => {
  assert.is(timestampParser({ format: 'unix-s' })('978300760'), 978300760000);
  assert.is(timestampParser({ format: 'unix-ms' })('978300760123'), 978300760123);
  assert.ok(Number.isNaN(timestampParser({ format: 'unix-s' })('2010-12-01')));
  const iso = timestampParser({ format: 'iso' });
  assert.is(iso('2010-12-01 08:26:00'), Date.UTC(2010, 11, 1, 8, 26));
  assert.is(iso('2010-12-01T08:26:00+01:00'), Date.UTC(2010, 11, 1, 7, 26));
  assert.is(iso('2010-12-01'), Date.UTC(2010, 11, 1));
  assert.ok(Number.isNaN(iso('12/01/2010')));
  const p = timestampParser({ format: 'pattern', pattern: 'DD/MM/YYYY HH:mm' });
  assert.is(p('09/12/2011 12:50'), Date.UTC(2011, 11, 9, 12, 50));
  assert.ok(Number.isNaN(p('2011-12-09 12:50')));
  assert.is(timestampParser({ format: 'pattern', pattern: 'M/D/YYYY H:mm' })('1/4/2011 9:05'), Date.UTC(2011, 0, 4, 9, 5));
  assert.ok(Number.isNaN(timestampParser({ format: 'pattern', pattern: 'YYYY-MM-DD' })('2011-13-01')));
});

test('sessions without a basket column: split by idle gap or by calendar day, capped in length', () => {
  const h = 3_600_000, day0 = Date.UTC(2024, 0, 1);
  const mk = (): CleanRow[] => [
    { user: 'a', item: '1', basket: '', time: day0 + 22 * h, name: '' },
    { user: 'a', item: '2', basket: '', time: day0 + 22.5 * h, name: '' },
    { user: 'a', item: '3', basket: '', time: day0 + 24.2 * h, name: '' }, // next day, 1.7 h later
    { user: 'b', item: '1', basket: '', time: day0 + 22.1 * h, name: '' },
    { user: 'a', item: '4', basket: '', time: day0 + 24.3 * h, name: '' },
  ];
  const gap = mk();
  deriveSessions(gap, { by: 'idle-gap', idleMinutes: 60, maxItems: 200 });
  assert.equal(gap.map((r) => r.basket), ['a#0', 'a#0', 'a#1', 'b#0', 'a#1']);
  const long = mk();
  deriveSessions(long, { by: 'idle-gap', idleMinutes: 180, maxItems: 200 });
  assert.equal(long.map((r) => r.basket), ['a#0', 'a#0', 'a#0', 'b#0', 'a#0']);
  const day = mk();
  deriveSessions(day, { by: 'day', idleMinutes: 30, maxItems: 200 });
  assert.equal(day.map((r) => r.basket), ['a#0', 'a#0', 'a#1', 'b#0', 'a#1']);
  const capped = mk();
  deriveSessions(capped, { by: 'idle-gap', idleMinutes: 600, maxItems: 2 });
  assert.equal(capped.map((r) => r.basket), ['a#0', 'a#0', 'a#1', 'b#0', 'a#1']);
});

test('a "::" header-less ratings log: threshold, derived sessions, names from a side file in its own format', async () => {
  const dir = join(tmp, 'ratings');
  mkdirSync(dir);
  const t0 = Date.UTC(2024, 0, 1) / 1000;
  const lines: string[] = [];
  // 3 users, sessions of 2-3 ratings 10 minutes apart, a day apart; ratings 5, 4, 2 (the 2 is dropped).
  for (let u = 1; u <= 3; u++) {
    for (let s = 0; s < 6; s++) {
      for (let k = 0; k < 3; k++) lines.push(`${u}::${10 + ((u + s + k) % 5)}::${k === 2 ? 2 : 5 - k}::${t0 + s * 86_400 + k * 600}`);
    }
  }
  writeFileSync(join(dir, 'ratings.dat.gz'), gzipSync(lines.join('\n') + '\n'));
  writeFileSync(join(dir, 'movies.csv'), 'title|id\n"Heat: The Return"|10\nCasino|11\n"Ran, the film"|12\nAlien|13\nBrazil|14\n');
  const c = validateConfig({
    ...RATINGS, words: { basket: 'session', user: 'user', item: 'movie' }, interactions: { ...RATINGS.interactions, file: 'ratings.dat.gz' },
    sessions: { by: 'idle-gap', idleMinutes: 60 }, split: { testDays: 1, validDays: 1 },
    itemNames: { file: 'movies.csv', delimiter: '|', columns: { item: 'id', name: 'title' } },
  }, 'r.json');
  const { rows, stats } = await cleanRows(c, dir);
  assert.is(stats.rawRows, 54);
  assert.is(stats.droppedRating, 18);
  assert.is(rows.find((r) => r.item === '10')!.name, 'Heat: The Return');
  assert.is(rows.find((r) => r.item === '12')!.name, 'Ran, the film');
  const t = buildTask(rows, stats, c, 1);
  assert.is(t.stats.baskets, 18); // 3 users x 6 days, 2 kept ratings each
  assert.is(t.stats.testBaskets, 3);
  assert.is(t.stats.validBaskets, 3);
  assert.is(t.train.offsets[1]! - t.train.offsets[0]!, 2);
  assert.is(t.words.baskets, 'sessions');
});

test('the shipped configs validate; online-retail.json is the built-in default; the ratings fixture prepares', async () => {
  const dir = join(root, 'examples/recommender/configs');
  const or = loadConfig(join(dir, 'online-retail.json'));
  assert.equal({ ...or, interactions: { ...or.interactions, file: resolve(dir, or.interactions.file) } },
    { ...ONLINE_RETAIL, interactions: { ...ONLINE_RETAIL.interactions, file: resolve(root, ONLINE_RETAIL.interactions.file) } });
  loadConfig(join(dir, 'synthetic-grocery.json'));
  const c = loadConfig(join(dir, 'synthetic-ratings.json'));
  const cache = join(tmp, 'cache');
  const a = await prepare(c, dir, cache);
  assert.is(a.cached, false);
  const s = a.data.stats;
  assert.ok(s.droppedRating > 0 && s.testBaskets > 500 && s.validBaskets > 500 && s.trainBaskets > 5000, JSON.stringify(s));
  assert.match(a.data.itemNames[0]!, /^.+ \(\d{4}\)$/);
  assert.is(a.data.words.item, 'title');
  const b = await prepare(c, dir, cache);
  assert.is(b.cached, true);
  assert.equal(Array.from(b.data.test.hidden), Array.from(a.data.test.hidden));
  assert.equal(Array.from(b.data.valid.hidden), Array.from(a.data.valid.hidden));
  // The committed script regenerates the committed fixture byte for byte.
  const out = join(tmp, 'regen');
  const r = spawnSync(process.execPath, [join(root, 'examples/recommender/dist/make-fixture.js'), out], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  assert.ok(readFileSync(join(out, 'titles.dat')).equals(readFileSync(join(root, 'examples/recommender/fixtures/synthetic-ratings/titles.dat'))));
  assert.ok(readFileSync(join(out, 'ratings.dat.gz')).equals(readFileSync(join(root, 'examples/recommender/fixtures/synthetic-ratings/ratings.dat.gz'))));
});

test('the README\'s config example validates and matches the shipped ratings config', () => {
  const md = readFileSync(join(root, 'examples/recommender/README.md'), 'utf8');
  const blocks = [...md.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 1);
  for (const b of blocks) {
    const c = validateConfig(JSON.parse(b), 'README.md');
    const shipped = loadConfig(join(root, 'examples/recommender/configs', `${c.name}.json`));
    assert.equal({ ...c, attribution: '' }, { ...shipped, attribution: '' });
  }
});

test('prepare reads a gzip file relative to the config folder and rebuilds when the file changes', async () => {
  const dir = join(tmp, 'gz');
  mkdirSync(dir);
  writeFileSync(join(dir, 'log.csv.gz'), gzipSync(CSV));
  const c = { ...cfg, interactions: { ...cfg.interactions, file: 'log.csv.gz' } };
  const a = await prepare(c, dir, join(dir, 'cache'));
  assert.is(a.data.stats.keptRows, 12);
  const lines = CSV.split('\r\n');
  writeFileSync(join(dir, 'log.csv.gz'), gzipSync([...lines.slice(0, 9), ...lines.slice(11)].join('\n')));
  const b = await prepare(c, dir, join(dir, 'cache'));
  assert.is(b.cached, false);
  assert.is(b.data.stats.rawRows, 15);
  assert.is(b.data.stats.trainBaskets, 1);
  try {
    await prepare({ ...c, interactions: { ...c.interactions, file: 'nope.csv' } }, dir, join(dir, 'cache'));
    assert.unreachable('missing file');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_DATA'));
    assert.match((e as Error).message, /nope\.csv: data file not found/);
  }
});

test('demo flags (node:util parseArgs): defaults, values, and errors that name the flag', () => {
  const d = parseDemoOptions([]);
  assert.equal([d.workers, d.backend, d.epochs, d.batch, d.out, d.lr], [2, 'hybrid', 0, 512, null, null]);
  const o = parseDemoOptions(['--workers', '4', '--backend', 'ps', '--epochs', '2', '--out', 'x', '--compare-workers', '1,2', '--lr', '0.003']);
  assert.equal([o.workers, o.backend, o.epochs, o.out, o.compareWorkers, o.lr], [4, 'ps', 2, 'x', [1, 2], 0.003]);
  assert.ok(parseDemoOptions(['-h']).help && parseDemoOptions(['--help']).help);
  assert.throws(() => parseDemoOptions(['--backend', 'mpi']), /--backend must be ring\|ps\|hybrid/);
  assert.throws(() => parseDemoOptions(['--workers', '0']), /--workers must be an integer >= 1/);
  assert.throws(() => parseDemoOptions(['--workers', '3']), /--batch \(512\) must be a multiple of the worker count 3/);
  assert.throws(() => parseDemoOptions(['--epoch', '3']), /--epoch is not a known option/);
  assert.throws(() => parseDemoOptions(['--lr', 'fast']), /--lr must be a positive number/);
  assert.is(parseDemoOptions(['--tower-weight', '0.5']).towerWeight, 0.5);
  assert.is(d.towerWeight, null);
  assert.throws(() => parseDemoOptions(['--tower-weight=-1']), /--tower-weight must be a number >= 0/);
  assert.throws(() => parseDemoOptions(['--out']), /--out .*argument missing/);
  assert.equal([d.tables, d.serverOptimizer], ['auto', 'adam']);
  const t = parseDemoOptions(['--tables', 'replicated', '--server-optimizer', 'adagrad']);
  assert.equal([t.tables, t.serverOptimizer], ['replicated', 'adagrad']);
  assert.throws(() => parseDemoOptions(['--backend', 'ring', '--tables', 'server']), /--tables server needs parameter servers/);
  assert.throws(() => parseDemoOptions(['--tables', 'sharded']), /--tables must be server\|replicated/);
  assert.equal([d.accumulateSteps, d.psPlacement], [1, 'process']);
  const a = parseDemoOptions(['--accumulate-steps', '4', '--ps-placement', 'worker']);
  assert.equal([a.accumulateSteps, a.psPlacement], [4, 'worker']);
  assert.throws(() => parseDemoOptions(['--accumulate-steps', '0']), /--accumulate-steps must be an integer >= 1/);
  assert.throws(() => parseDemoOptions(['--ps-placement', 'rank0']), /--ps-placement must be process\|worker/);
  // Step checkpoints (issue 16): every 60 s unless told; the cadence flags need the folder.
  assert.equal([d.checkpoint, d.checkpointEverySteps, d.checkpointEverySeconds], [null, null, null]);
  const c = parseDemoOptions(['--checkpoint', 'ck']);
  assert.equal([c.checkpoint, c.checkpointEverySteps, c.checkpointEverySeconds], ['ck', null, 60]);
  const c2 = parseDemoOptions(['--checkpoint', 'ck', '--checkpoint-every-steps', '50']);
  assert.equal([c2.checkpointEverySteps, c2.checkpointEverySeconds], [50, null]);
  assert.throws(() => parseDemoOptions(['--checkpoint-every-steps', '5']), /--checkpoint-every-steps needs --checkpoint DIR/);
  assert.throws(() => parseDemoOptions(['--checkpoint', 'ck', '--checkpoint-every-seconds', '0']), /--checkpoint-every-seconds must be a positive number/);
  assert.throws(() => parseDemoOptions(['--checkpoint', ' ']), /--checkpoint must be a folder path/);
});

test('every demo command in the README parses with the demo\'s flags', () => {
  const md = readFileSync(join(root, 'examples/recommender/README.md'), 'utf8');
  const cmds = [...md.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) => m[1]!.split('\n')).map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l.startsWith('npm run demo') || l.includes('recommender/dist/main.js') || l.includes('recommender/dist/worker.js'));
  assert.ok(cmds.length >= 5, cmds.join('\n'));
  for (const c of cmds) {
    const args = c.startsWith('npm run demo') ? c.replace(/^npm run demo( --)?/, '') : c.replace(/^.*?recommender\/dist\/(main|worker)\.js/, '');
    const o = parseDemoOptions(args.split(/\s+/).filter((x) => x !== ''));
    assert.ok(o.workers >= 1, c);
  }
  assert.is(parseDemoOptions(['--logdir', 'out/tb']).logdir, 'out/tb');
  // The README's resume example writes a checkpoint every 200 steps into out/rec-ckpt.
  const ck = cmds.find((c) => c.includes('--checkpoint '));
  assert.ok(ck, 'a --checkpoint example');
  const o = parseDemoOptions(ck.replace(/^npm run demo( --)?/, '').split(/\s+/).filter((x) => x !== ''));
  assert.equal([o.checkpoint, o.checkpointEverySteps], ['out/rec-ckpt', 200]);
  assert.throws(() => parseDemoOptions(['--logdir', ' ']), /--logdir must be a folder path/);
});

test('item and user features from side files: tokens per item and user, multi-valued fields, bad feature configs', async () => {
  const dir = join(root, 'examples/recommender/configs');
  // The ratings fixture with each title's genre (field 2 of titles.dat) as an item feature.
  const c = loadConfig(join(dir, 'synthetic-ratings-genres.json'));
  const a = await prepare(c, dir, join(tmp, 'cache-genres'));
  const f = a.data.features!;
  assert.ok(f.names.length >= 5 && f.names.every((n) => /^item:c2=[A-Za-z'-]+$/.test(n)), f.names.join(', '));
  assert.is(f.item.offsets.length, a.data.numItems + 1);
  assert.is(f.user.ids.length, 0);
  // Every title's tokens are its genres ('|'-separated in field 2, e.g. 'Musical|Documentary').
  const titles = readFileSync(join(root, 'examples/recommender/fixtures/synthetic-ratings/titles.dat'), 'utf8').split('\n').filter((l) => l !== '');
  const genres = new Map(titles.map((l) => { const [id, , g] = l.split('::'); return [id!, g!.split('|').map((x) => `item:c2=${x}`).sort()]; }));
  let multi = 0;
  for (let j = 0; j < a.data.numItems; j++) {
    const got = Array.from(f.item.ids.subarray(f.item.offsets[j]!, f.item.offsets[j + 1]!)).map((x) => f.names[x]!).sort();
    assert.equal(got, genres.get(a.data.itemKeys[j]!), `title ${a.data.itemKeys[j]}`);
    if (got.length > 1) multi++;
  }
  assert.ok(multi > 100, `${multi} catalog titles with several genres`);
  // The same task without features is the plain ratings config's (features add to it, change nothing else).
  const plain = await prepare(loadConfig(join(dir, 'synthetic-ratings.json')), dir, join(tmp, 'cache-genres'));
  assert.equal(Array.from(plain.data.test.hidden), Array.from(a.data.test.hidden));
  assert.is(plain.data.features, undefined);
  // A header side file with two feature columns, one multi-valued; users and items; unknown ids ignored.
  writeFileSync(join(tmp, 'users.csv'), 'id;segment;tags\n17850.0;retail;a|b\n12583.0;trade;\n555;x;y\n');
  writeFileSync(join(tmp, 'items.tsv'), '85123A\thome\n22728\tclock\n');
  const fc = validateConfig({ ...cfgRaw(), userFeatures: { file: 'users.csv', delimiter: ';', separator: '|', columns: { user: 'id', features: ['segment', 'tags'] } },
    itemFeatures: { file: 'items.tsv', delimiter: '\t', header: false, columns: { item: 0, features: [1] } } }, 'f.json');
  const { rows, stats } = await cleanRows(fc, tmp);
  const t = buildTask(rows, stats, fc, 1);
  const ff = (await buildFeatures(fc, tmp, t))!;
  const toks = (l: { offsets: Int32Array; ids: Int32Array }, e: number): string[] => Array.from(l.ids.subarray(l.offsets[e]!, l.offsets[e + 1]!)).map((x) => ff.names[x]!).sort();
  assert.equal(toks(ff.user, t.userKeys.indexOf('17850.0')), ['user:segment=retail', 'user:tags=a', 'user:tags=b']);
  assert.equal(toks(ff.user, t.userKeys.indexOf('12583.0')), ['user:segment=trade']);
  assert.equal(toks(ff.user, 0), [], 'the unknown user has no features');
  assert.equal(toks(ff.item, t.itemKeys.indexOf('22728')), ['item:c1=clock']);
  assert.equal(toks(ff.item, t.itemKeys.indexOf('71053')), [], 'an item missing from the side file has none');
  assert.not.ok(ff.names.some((n) => n.includes('=x') || n.includes('=y')), 'tokens of users outside the task are not in the vocabulary');
  // Bad feature configs: one ERR_CONFIG naming the key.
  const bad = (extra: Record<string, unknown>, re: RegExp): void => {
    try { validateConfig({ ...cfgRaw(), ...extra }, 'f.json'); assert.unreachable(JSON.stringify(extra)); } catch (e) {
      assert.ok(isShoalError(e, 'ERR_CONFIG'), String(e));
      assert.match((e as Error).message, re);
    }
  };
  bad({ itemFeatures: { file: 'i.csv', columns: { item: 'id', features: [] } } }, /f\.json: itemFeatures\.columns\.features: must be a non-empty list/);
  bad({ itemFeatures: { file: 'i.csv', columns: { item: 'id' } } }, /itemFeatures\.columns\.features: is required/);
  bad({ userFeatures: { file: 'u.csv', columns: { user: 'id', features: [1] } } }, /userFeatures\.columns\.features\[0\]: is 1: with a header line, name the column/);
  bad({ userFeatures: { file: 'u.csv', columns: { user: 'id', features: [true] } } }, /userFeatures\.columns\.features\[0\]: must be a column name or position/);
  bad({ itemFeatures: { file: 'i.csv', separator: '', columns: { item: 'id', features: ['g'] } } }, /itemFeatures\.separator: must not be empty/);
  bad({ itemFeatures: { file: 'i.csv', columns: { item: 'id', features: ['g'] }, colums: {} } }, /itemFeatures\.colums: is not a known key/);
});

test.run();
