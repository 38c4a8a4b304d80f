import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { openCsv, batches, shard, cached, type Dataset } from './index.js';
import { expectData } from './testing/assert.js';

const root = resolve(new URL('../..', import.meta.url).pathname);
const tmp = mkdtempSync(join(tmpdir(), 'shoal-csv-'));

/**
 * The by-day folder: ../shared/data/online-retail/by-day if present (SHOAL_RETAIL_DIR overrides), else rebuilt
 * from the repository's online_retail_all.csv.gz by splitting on the InvoiceDate day (the same layout).
 */
function retailDir(): string {
  const env = process.env.SHOAL_RETAIL_DIR;
  if (env) return env;
  const shared = resolve(root, '../shared/data/online-retail/by-day');
  if (existsSync(shared)) return shared;
  const text = gunzipSync(readFileSync(join(root, 'data/online-retail/online_retail_all.csv.gz'))).toString('utf8');
  const lines = text.split('\n');
  const head = lines[0]!;
  const byDay = new Map<string, string[]>();
  for (const l of lines.slice(1)) {
    if (!l) continue;
    const m = /,(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2},/.exec(l);
    const day = m![1]!;
    let a = byDay.get(day);
    if (!a) byDay.set(day, (a = []));
    a.push(l);
  }
  const out = join(tmp, 'by-day');
  mkdirSync(out);
  for (const [d, ls] of byDay) writeFileSync(join(out, `${d}.csv`), `${head}\n${ls.join('\n')}\n`);
  return out;
}

const DIR = retailDir();
const SCHEMA = {
  InvoiceNo: { type: 'hash', buckets: 1 << 20 },
  StockCode: { type: 'category' },
  Description: { type: 'category' },
  Quantity: 'int32',
  InvoiceDate: 'timestamp',
  UnitPrice: 'float32',
  CustomerID: 'int32',
  Country: { type: 'category' },
} as const;


/** Records per file counted the simple way (no field of this data spans lines). */
function lineCounts(): Map<string, number> {
  const m = new Map<string, number>();
  for (const n of readdirSync(DIR).filter((x) => x.endsWith('.csv'))) {
    const b = readFileSync(join(DIR, n));
    let lf = 0;
    for (const c of b) if (c === 10) lf++;
    const endsLf = b[b.length - 1] === 10;
    m.set(n, lf + (endsLf ? 0 : 1) - 1);
  }
  return m;
}

let ds: Dataset;
test.before(async () => {
  ds = await openCsv(DIR, SCHEMA as never, { threads: 1 });
});
test.after(async () => {
  await ds?.close();
  rmSync(tmp, { recursive: true, force: true });
});

test('Online Retail by-day folder: one partition per day, row counts match the files', () => {
  const counts = lineCounts();
  assert.is(ds.partitions.length, counts.size);
  let total = 0;
  for (const p of ds.partitions) {
    assert.is(p.rows, counts.get(p.name), p.name);
    total += p.rows!;
  }
  assert.is(total, 541909);
  const dict = (n: string) => ds.schema.fields.find((f) => f.name === n)!.dictionary!;
  assert.is(dict('Country').length, 38);
  assert.is(dict('StockCode').length, 4070);
  assert.ok(dict('Description').includes('AIRLINE LOUNGE,METAL SIGN'));
  assert.ok(dict('Description').includes('RECORD FRAME 7" SINGLE SIZE '));
});

test('Online Retail: known values of the first day, quoted fields, timestamps', async () => {
  const first = ds.partitions.find((p) => p.name === '2010-12-01.csv')!;
  const dict = (n: string) => ds.schema.fields.find((f) => f.name === n)!.dictionary!;
  const lines = readFileSync(join(DIR, '2010-12-01.csv'), 'utf8').split('\n');
  for await (const c of first.read({ columns: ['StockCode', 'Description', 'Quantity', 'InvoiceDate', 'UnitPrice', 'CustomerID', 'Country'] })) {
    assert.is(c.rows, lines.filter((l) => l.length > 0).length - 1);
    // 536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
    assert.is(dict('StockCode')[Number(c.columns.StockCode!.values[0])], '85123A');
    assert.is(dict('Description')[Number(c.columns.Description!.values[0])], 'WHITE HANGING HEART T-LIGHT HOLDER');
    assert.is(c.columns.Quantity!.values[0], 6);
    assert.is(c.columns.InvoiceDate!.values[0], Date.UTC(2010, 11, 1, 8, 26, 0) / 1000);
    assert.is(c.columns.UnitPrice!.values[0], Math.fround(2.55));
    assert.is(c.columns.CustomerID!.values[0], 17850);
    assert.is(dict('Country')[Number(c.columns.Country!.values[0])], 'United Kingdom');
    // Every row checked against a straightforward split of the same line where no field is quoted.
    let checked = 0;
    for (let r = 0; r < c.rows; r++) {
      const l = lines[r + 1]!;
      if (l.includes('"')) {
        if (l.includes('AIRLINE LOUNGE,METAL SIGN')) assert.is(dict('Description')[Number(c.columns.Description!.values[r])], 'AIRLINE LOUNGE,METAL SIGN');
        continue;
      }
      const f = l.split(',');
      assert.is(c.columns.Quantity!.values[r], Number(f[3]));
      assert.is(c.columns.UnitPrice!.values[r], Math.fround(Number(f[5])));
      if (f[6] !== '') assert.is(c.columns.CustomerID!.values[r], Number(f[6]));
      assert.is(dict('StockCode')[Number(c.columns.StockCode!.values[r])], f[1]);
      checked++;
    }
    assert.ok(checked > 3000);
  }
});

test('Online Retail: empty CustomerID is refused unless filled; 3 ranks read every row once', async () => {
  await expectData(
    (async () => {
      for await (const _ of batches(ds, { columns: ['CustomerID'], batchSize: 4096 })) void _;
    })(),
    // The line is the file's own (line 1 is the header), found independently with Python's csv module.
    /2010-12-01\.csv: column 'CustomerID' has \d+ null values where none are allowed, the first at line 624 \(pass fill/,
  );
  let rows = 0;
  let missing = 0;
  for (let rank = 0; rank < 3; rank++) {
    const s = shard(ds, rank, 3);
    for await (const b of batches(s, { columns: ['CustomerID', 'StockCode'], features: ['UnitPrice', 'Quantity'], batchSize: 8192, fill: { CustomerID: -1 } })) {
      rows += b.size;
      const ids = b.columns.CustomerID!;
      for (let i = 0; i < b.size; i++) if (ids[i] === -1) missing++;
      assert.is(b.widths.features, 2);
    }
  }
  assert.is(rows, 541909);
  assert.is(missing, 135080);
});

test('cached(): the second epoch replays decoded chunks (same values, no decode)', async () => {
  const sub = { ...ds, partitions: ds.partitions.slice(0, 5) };
  const c = cached(sub);
  const run = async () => {
    const out: number[] = [];
    for await (const b of batches(c, { columns: ['Quantity'], features: ['UnitPrice'], batchSize: 1000 })) out.push(b.columns.Quantity![0]!, b.columns.features![b.size - 1]!);
    return out;
  };
  const first = await run();
  const firstChunk = await c.partitions[0]!.read({ columns: ['Quantity', 'UnitPrice'] })[Symbol.asyncIterator]().next();
  const again = await c.partitions[0]!.read({ columns: ['UnitPrice', 'Quantity'] })[Symbol.asyncIterator]().next();
  assert.ok(firstChunk.value === again.value, 'the same chunk object is replayed');
  const second = await run();
  assert.equal(second, first);
});

test('malformed CSV: missing column, bad number, unterminated quote, wrong field count, unknown category', async () => {
  const d = join(tmp, 'bad');
  mkdirSync(d);
  const file = (n: string, s: string) => {
    const p = join(d, n);
    writeFileSync(p, s);
    return p;
  };
  await expectData(openCsv(file('a.csv', 'x,y\n1,2\n'), { z: 'int32' }, { threads: 0 }), /a\.csv: missing column 'z'/);
  await expectData(openCsv(file('b.csv', 'x,y\n1,"2\n3,4\n'), { x: 'int32' }, { threads: 0 }), /b\.csv: line 2: unterminated quoted field/);
  await expectData(openCsv(file('c.csv', 'x,y\n1,2\n3\n'), { x: 'int32' }, { threads: 1 }), /c\.csv: line 3: 1 fields but the header has 2/);
  const ds2 = await openCsv(file('e.csv', 'x,y\n1,2\n1.5,3\n'), { x: 'int32', y: { type: 'category', vocab: ['2'] } }, { threads: 1 });
  try {
    await expectData(
      (async () => {
        for await (const _ of batches(ds2, { columns: ['x'], batchSize: 10 })) void _;
      })(),
      /e\.csv: line 3: column 'x' value '1\.5' is not an int32 integer/,
    );
    await expectData(
      (async () => {
        for await (const _ of batches(ds2, { columns: ['y'], batchSize: 10 })) void _;
      })(),
      /e\.csv: line 3: column 'y' value '3' is not in its vocabulary/,
    );
  } finally {
    await ds2.close();
  }
  const ok = await openCsv(file('f.csv', 'a,"b, c",t\r\n-1.25e2,"x ""q"", y",2011-12-09T12:50\r\n3,,2011-12-09\r\n'), {
    a: 'float64',
    'b, c': { type: 'category' },
    t: 'timestamp',
  }, { threads: 0 });
  const got: number[][] = [];
  for await (const b of batches(ok, { columns: ['a', 'b, c', 't'], batchSize: 10, fill: { 'b, c': -1 } })) {
    got.push([...b.columns.a!], [...b.columns['b, c']!], [...b.columns.t!]);
  }
  assert.equal(got, [[-125, 3], [0, -1], [Date.UTC(2011, 11, 9, 12, 50) / 1000, Date.UTC(2011, 11, 9) / 1000]]);
  assert.equal(ok.schema.fields[1]!.dictionary, ['x "q", y']);
  await ok.close();
  const nums = await openCsv(file('g.csv', 'v\n1e-3\n.5\n-0.25\n12345678901234567\n 7 \n0.1\n'), { v: 'float64' }, { threads: 0 });
  const vs: number[] = [];
  for await (const b of batches(nums, { columns: ['v'], batchSize: 10 })) vs.push(...b.columns.v!);
  assert.equal(vs, [0.001, 0.5, -0.25, 12345678901234567, 7, 0.1].map(Math.fround));
  await nums.close();
  for (const badNum of ['0x10', 'NaN', '1.2.3', 'Infinity']) {
    const ds3 = await openCsv(file('h.csv', `v\n1\n${badNum}\n`), { v: 'float32' }, { threads: 0 });
    await expectData(
      (async () => {
        for await (const _ of batches(ds3, { columns: ['v'], batchSize: 10 })) void _;
      })(),
      new RegExp(`h\\.csv: line 3: column 'v' value '${badNum.replace('.', '\\.')}' is not a number`),
    );
    await ds3.close();
  }
});

test('dialects: a "::" delimiter without header or quoting, names by position or given, gzip files', async () => {
  const d = join(tmp, 'dialects');
  mkdirSync(d);
  // MovieLens-style: "::" separated, no header; a ':' and a '"' inside a field are ordinary characters.
  const ratings = '1::1193::5::978300760\n1::661::3::978302109\r\n2::3068::4::978299000\n\n';
  writeFileSync(join(d, 'ratings.dat'), ratings);
  const byPos = await openCsv(join(d, 'ratings.dat'), { '0': { type: 'category' }, '1': 'int32', '3': 'int32' }, { delimiter: '::', header: false, quote: null, threads: 0 });
  const got: number[][] = [];
  for await (const b of batches(byPos, { columns: ['0', '1', '3'], batchSize: 10 })) got.push([...b.columns['0']!], [...b.columns['1']!], [...b.columns['3']!]);
  assert.equal(got, [[0, 0, 1], [1193, 661, 3068], [978300760, 978302109, 978299000]]);
  assert.equal(byPos.schema.fields[0]!.dictionary, ['1', '2']);
  assert.is(byPos.partitions[0]!.rows, 3);
  await byPos.close();
  writeFileSync(join(d, 'movies.dat.gz'), gzipSync('1::Toy Story (1995)::Animation|Children\'s\n2::Star Wars: Episode IV - "A New Hope" (1977)::Sci-Fi\n'));
  const named = await openCsv(join(d, 'movies.dat.gz'), { title: { type: 'category' }, id: 'int32' }, { delimiter: '::', header: false, quote: null, names: ['id', 'title', 'genres'], threads: 1 });
  const titles: string[] = [];
  const dict = named.schema.fields.find((f) => f.name === 'title')!.dictionary!;
  for await (const b of batches(named, { columns: ['id', 'title'], batchSize: 10 })) for (const t of b.columns.title!) titles.push(dict[t]!);
  assert.equal(titles, ['Toy Story (1995)', 'Star Wars: Episode IV - "A New Hope" (1977)']);
  await named.close();
  // Tab-separated with a header and a quoted tab; a single ':' never splits a '::' file.
  writeFileSync(join(d, 't.tsv'), 'a\tb\n"x\ty"\t2\n');
  const tsv = await openCsv(join(d, 't.tsv'), { a: { type: 'category' }, b: 'int32' }, { delimiter: '\t', threads: 0 });
  assert.equal(tsv.schema.fields[0]!.dictionary, ['x\ty']);
  await tsv.close();
  await expectData(openCsv(join(d, 'ratings.dat'), { a: 'int32' }, { delimiter: '::', header: false, names: ['a', 'b'], threads: 0 }), /ratings\.dat: line 1 has 4 fields but 2 column names were given/);
  writeFileSync(join(d, 'short.dat'), '1::2::3\n4::5\n');
  await expectData(openCsv(join(d, 'short.dat'), { '0': 'int32' }, { delimiter: '::', header: false, threads: 0 }), /short\.dat: line 2: 2 fields but the first line has 3/);
  for (const [o, re] of [
    [{ delimiter: '' }, /delimiter must be a non-empty string/],
    [{ delimiter: '"' }, /must not contain the quote character/],
    [{ delimiter: '\n' }, /line break/],
    [{ names: ['a'] }, /names are for header-less files/],
  ] as const) {
    try {
      await openCsv(join(d, 'ratings.dat'), { '0': 'int32' }, o as never);
      assert.unreachable('expected ERR_INVALID_ARG');
    } catch (e) {
      assert.match((e as Error).message, re);
    }
  }
});

test.run();
