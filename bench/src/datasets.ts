/**
 * `npm run bench -- datasets [--rows N] [--reps N] [--batch N] [--no-anchor] [--keep DIR]`
 *
 * Rows/s and MB/s from each source into training batches (Float32Array features [batch x 16], Int32Array user and
 * item, Float32Array label) for a table of `rows` (default 1e6) rows: user int32, item int32, label float32,
 * features FixedSizeList<16, float32> (76 bytes a row). The files are written first by real writers (apache-arrow
 * for Arrow, parquet-wasm for Parquet in a Spark-like part-file directory, plain text for CSV); each source is read
 * once to verify checksums (warm-up), then `reps` timed epochs; the median is reported. Streams are reopened for
 * every epoch (open time included), so is an Arrow file (opening reads it); Parquet and CSV directories are opened
 * once, as in training (`open_seconds`), and decoded again every epoch.
 *
 * `bench/results/datasets.json`:
 *   { suite: 'datasets', version: 1, started, host: { cpus, node, loadavg1 }, table: { rows, row_bytes, batch },
 *     rows: [ { source, codec, rows, bytes, seconds, rows_per_s, mb_per_s, file_bytes, threads, oversubscribed,
 *               reps, open_seconds, cpu_seconds, mb_per_cpu_s, note } ],
 *     anchor: { rows: [ same shape, source prefixed 'pyarrow-' ] } | { skipped: reason } }
 * `bytes` is the decoded payload (rows x 76), so `mb_per_s` (10^6 bytes/s) compares sources on equal terms;
 * `file_bytes` is what lay on disk. `oversubscribed` marks rows with more busy threads than the machine's cores.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Field, FixedSizeList, Float32, Int32, RecordBatch, Table, makeData, tableToIPC } from 'apache-arrow';
import { Compression, Table as WasmTable, WriterPropertiesBuilder, writeParquet } from 'parquet-wasm';
import { batches, cached, openArrowFile, openArrowStream, openCsv, openParquetDir, type Dataset } from '@shoal/datasets';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';

const ROW_BYTES = 76;
const F = 16;

interface Row {
  source: string;
  codec: string;
  rows: number;
  bytes: number;
  seconds: number;
  rows_per_s: number;
  mb_per_s: number;
  file_bytes: number;
  threads: number;
  oversubscribed: boolean;
  reps: number;
  /** Time to open the dataset (not in `seconds` except for streams, which are reopened every epoch). */
  open_seconds: number;
  /** CPU time of this process (all its threads) per epoch, median: less sensitive to other load than `seconds`. */
  cpu_seconds: number;
  /** bytes / cpu_seconds / 1e6. */
  mb_per_cpu_s: number;
  note: string;
}

function makeBatch(start: number, n: number): RecordBatch {
  const user = new Int32Array(n);
  const item = new Int32Array(n);
  const label = new Float32Array(n);
  const feats = new Float32Array(n * F);
  for (let r = 0; r < n; r++) {
    const i = start + r;
    user[r] = i % 50_000;
    item[r] = (i * 7) % 20_000;
    label[r] = i % 2;
    for (let j = 0; j < F; j++) feats[r * F + j] = (i % 1000) + j / 16;
  }
  const fsl = new FixedSizeList(F, new Field('element', new Float32(), false));
  return new RecordBatch({
    user: makeData({ type: new Int32(), length: n, data: user }),
    item: makeData({ type: new Int32(), length: n, data: item }),
    label: makeData({ type: new Float32(), length: n, data: label }),
    features: makeData({ type: fsl, length: n, nullCount: 0, child: makeData({ type: new Float32(), length: n * F, data: feats }) }),
  });
}

function table(start: number, rows: number, batchRows: number): Table {
  const bs: RecordBatch[] = [];
  for (let at = 0; at < rows; at += batchRows) bs.push(makeBatch(start + at, Math.min(batchRows, rows - at)));
  return new Table(bs);
}

/** Expected checksums of the whole table (order-independent sums). */
function expected(rows: number): number[] {
  let u = 0, it = 0, l = 0, f = 0;
  for (let i = 0; i < rows; i++) {
    u += i % 50_000;
    it += (i * 7) % 20_000;
    l += i % 2;
    f += i % 1000;
  }
  return [u, it, l, f];
}

function dirBytes(p: string): number {
  const st = statSync(p);
  if (!st.isDirectory()) return st.size;
  return readdirSync(p).reduce((a, n) => a + dirBytes(join(p, n)), 0);
}

interface Source {
  source: string;
  codec: string;
  path: string;
  threads: number;
  note: string;
  open: () => Promise<Dataset>;
  features: string[];
  /** Seeded shuffle buffer of this many rows (undefined: sequential). */
  shuffle?: number;
}

async function epoch(ds: Dataset, src: Source, batchSize: number, verify: boolean): Promise<{ rows: number; sums: number[] }> {
  let rows = 0;
  const sums = [0, 0, 0, 0];
  const opts = { features: src.features, label: 'label', columns: ['user', 'item'], batchSize, ...(src.shuffle ? { shuffle: { seed: 1, buffer: src.shuffle } } : {}) };
  for await (const b of batches(ds, opts)) {
    rows += b.size;
    if (verify) {
      const u = b.columns.user!, it = b.columns.item!, l = b.columns.label!, f = b.columns.features!;
      for (let r = 0; r < b.size; r++) {
        sums[0]! += u[r]!;
        sums[1]! += it[r]!;
        sums[2]! += l[r]!;
        sums[3]! += f[r * F]!;
        if (f[r * F + 15] !== f[r * F]! + 15 / 16) throw new Error(`${src.source}/${src.codec}: feature 15 of a row is ${f[r * F + 15]}, want ${f[r * F]! + 15 / 16}`);
      }
    }
  }
  return { rows, sums };
}

/** `npm run bench -- datasets`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench datasets',
  synopsis: '[options]',
  description: 'dataset readers: Arrow stream and file, Parquet, CSV, against pyarrow',
  options: {
    'rows': { type: 'string', arg: 'N', help: 'rows (default 1000000)' },
    'reps': { type: 'string', arg: 'N', help: 'repeats (default 3)' },
    'batch': { type: 'string', arg: 'N', help: 'batch size (default 1024)' },
    'no-anchor': { type: 'boolean', help: 'skip the pyarrow anchor' },
    'keep': { type: 'string', arg: 'DIR', help: 'write the data files here and keep them' },
    'out': { type: 'string', arg: 'FILE', help: 'result file (default bench/results/datasets.json)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const rows = (v['rows'] === undefined ? 1_000_000 : Number(v['rows']));
  const reps = (v['reps'] === undefined ? 3 : Number(v['reps']));
  const batchSize = (v['batch'] === undefined ? 1024 : Number(v['batch']));
  const keep = v['keep'];
  const dir = keep !== undefined ? resolve(keep) : mkdtempSync(join(tmpdir(), 'shoal-bench-datasets-'));
  mkdirSync(dir, { recursive: true });
  const cores = availableParallelism();
  const started = new Date().toISOString();
  console.log(`datasets: ${rows} rows x ${ROW_BYTES} B, batch ${batchSize}, ${reps} timed reps; files in ${dir}`);

  // --- write the inputs with real writers
  const t0 = performance.now();
  // Spark's mapInArrow hands batches of spark.sql.execution.arrow.maxRecordsPerBatch = 10 000 rows.
  const full = table(0, rows, 10_000);
  const streamPath = join(dir, 'table.arrows');
  writeFileSync(streamPath, tableToIPC(full, 'stream'));
  const filePath = join(dir, 'table.arrow');
  writeFileSync(filePath, tableToIPC(table(0, rows, 131_072), 'file'));
  const PARTS = 4;
  const per = Math.ceil(rows / PARTS);
  const codecs: [string, Compression][] = [
    ['uncompressed', Compression.UNCOMPRESSED],
    ['snappy', Compression.SNAPPY],
    ['zstd', Compression.ZSTD],
  ];
  for (const [name, codec] of codecs) {
    const d = join(dir, `parquet-${name}`);
    mkdirSync(d, { recursive: true });
    for (let p = 0; p < PARTS; p++) {
      const start = p * per;
      const n = Math.min(per, rows - start);
      const props = new WriterPropertiesBuilder().setCompression(codec).setMaxRowGroupSize(1 << 20).build();
      const bytes = writeParquet(WasmTable.fromIPCStream(tableToIPC(table(start, n, 131_072), 'stream')), props);
      writeFileSync(join(d, `part-${String(p).padStart(5, '0')}-bench.c000.${name}.parquet`), bytes);
    }
    writeFileSync(join(d, '_SUCCESS'), '');
  }
  const csvDir = join(dir, 'csv');
  mkdirSync(csvDir, { recursive: true });
  const head = ['user', 'item', 'label', ...Array.from({ length: F }, (_, j) => `f${j}`)].join(',');
  for (let p = 0; p < PARTS; p++) {
    const start = p * per;
    const n = Math.min(per, rows - start);
    const lines: string[] = [head];
    for (let r = 0; r < n; r++) {
      const i = start + r;
      const base = i % 1000;
      let l = `${i % 50_000},${(i * 7) % 20_000},${i % 2}`;
      for (let j = 0; j < F; j++) l += `,${base + j / 16}`;
      lines.push(l);
    }
    writeFileSync(join(csvDir, `part-${String(p).padStart(5, '0')}.csv`), lines.join('\n') + '\n');
  }
  console.log(`inputs written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const fsl = ['features'];
  const csvFeatures = Array.from({ length: F }, (_, j) => `f${j}`);
  const csvSchema: Record<string, 'int32' | 'float32'> = { user: 'int32', item: 'int32', label: 'float32' };
  for (const f of csvFeatures) csvSchema[f] = 'float32';
  const sources: Source[] = [
    { source: 'arrow-stream-file', codec: 'none', path: streamPath, threads: 0, note: 'openArrowStream(path): 4 MiB reads', open: () => openArrowStream(streamPath), features: fsl },
    {
      source: 'arrow-stream-pipe',
      codec: 'none',
      path: streamPath,
      threads: 0,
      note: "openArrowStream(child stdout): `cat` through a pipe, as from a Spark task's stdin",
      open: () => openArrowStream(spawn('cat', [streamPath], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout),
      features: fsl,
    },
    {
      source: 'arrow-stream-file-shuffled',
      codec: 'none',
      path: streamPath,
      threads: 0,
      note: 'as arrow-stream-file, through a seeded 16384-row shuffle buffer (every row copied)',
      open: () => openArrowStream(streamPath),
      features: fsl,
      shuffle: 16_384,
    },
    { source: 'arrow-file', codec: 'none', path: filePath, threads: 0, note: 'openArrowFile: whole file read, batches as partitions', open: () => openArrowFile(filePath), features: fsl },
  ];
  for (const [name] of codecs) {
    const p = join(dir, `parquet-${name}`);
    for (const threads of [0, 1, 2]) {
      sources.push({ source: 'parquet', codec: name, path: p, threads, note: `${PARTS} part files, 1 row group each`, open: () => openParquetDir(p, { threads }), features: fsl });
    }
  }
  {
    const p = join(dir, 'parquet-snappy');
    sources.push({ source: 'parquet-cached', codec: 'snappy', path: p, threads: 1, note: 'cached(openParquetDir): epochs after the warm-up replay decoded chunks', open: async () => cached(await openParquetDir(p, { threads: 1 })), features: fsl });
  }
  for (const threads of [1, 2]) {
    sources.push({ source: 'csv', codec: 'none', path: csvDir, threads, note: `${PARTS} files, 19 columns`, open: () => openCsv(csvDir, csvSchema, { threads }), features: csvFeatures });
  }

  const want = expected(rows);
  const out: Row[] = [];
  for (const src of sources) {
    // Streams are read once per open, and an Arrow file is read from disk when opened, so each epoch reopens
    // them (open included in the time). Parquet and CSV are opened once, as a training run does (open time
    // reported apart: footers, CSV scan, worker start), then the warm-up epoch verifies the checksums and `reps`
    // timed epochs follow (each decodes the files again).
    const reopen = src.source.startsWith('arrow');
    let t = performance.now();
    let ds = await src.open();
    const openSeconds = (performance.now() - t) / 1000;
    const v = await epoch(ds, src, batchSize, true);
    if (reopen) await ds.close();
    if (v.rows !== rows || v.sums.some((s, i) => Math.abs(s - want[i]!) > 1e-6 * Math.max(1, want[i]!))) {
      throw new Error(`${src.source}/${src.codec}: verification failed: ${v.rows} rows, sums ${v.sums} want ${want}`);
    }
    const times: number[] = [];
    const cpus: number[] = [];
    for (let r = 0; r < reps; r++) {
      const c0 = process.cpuUsage();
      t = performance.now();
      if (reopen) ds = await src.open();
      const e = await epoch(ds, src, batchSize, false);
      times.push((performance.now() - t) / 1000);
      const c = process.cpuUsage(c0);
      cpus.push((c.user + c.system) / 1e6);
      if (reopen) await ds.close();
      if (e.rows !== rows) throw new Error(`${src.source}: ${e.rows} rows`);
    }
    if (!reopen) await ds.close();
    times.sort((a, b) => a - b);
    cpus.sort((a, b) => a - b);
    const seconds = times[Math.floor(times.length / 2)]!;
    const cpuSeconds = cpus[Math.floor(cpus.length / 2)]!;
    const bytes = rows * ROW_BYTES;
    const row: Row = {
      source: src.source,
      codec: src.codec,
      rows,
      bytes,
      seconds: Number(seconds.toFixed(4)),
      rows_per_s: Math.round(rows / seconds),
      mb_per_s: Number((bytes / seconds / 1e6).toFixed(1)),
      file_bytes: dirBytes(src.path),
      threads: src.threads,
      oversubscribed: src.threads + 1 > cores,
      reps,
      open_seconds: Number(openSeconds.toFixed(4)),
      cpu_seconds: Number(cpuSeconds.toFixed(4)),
      mb_per_cpu_s: Number((bytes / cpuSeconds / 1e6).toFixed(1)),
      note: src.note,
    };
    out.push(row);
    console.log(`${src.source.padEnd(18)} ${src.codec.padEnd(12)} threads ${src.threads}  ${row.seconds.toFixed(3)} s  ${(row.rows_per_s / 1e6).toFixed(2)} Mrows/s  ${row.mb_per_s} MB/s  (cpu ${row.cpu_seconds.toFixed(3)} s, ${row.mb_per_cpu_s} MB/cpu-s)${row.oversubscribed ? '  (oversubscribed)' : ''}`);
  }

  let anchor: unknown = { skipped: '--no-anchor' };
  if (!v['no-anchor'] === true) {
    const script = resolve(new URL('../anchors/datasets_pyarrow.py', import.meta.url).pathname);
    const r = spawnSync('python3', [script, dir, String(rows), String(batchSize), String(reps)], { encoding: 'utf8', timeout: 600_000 });
    if (r.status === 0) {
      anchor = JSON.parse(r.stdout);
      for (const a of (anchor as { rows: Row[] }).rows) {
        const mine = out.find((o) => `pyarrow-${o.source}` === a.source && o.codec === a.codec);
        const ratio = mine ? `  shoal/pyarrow = ${(mine.mb_per_s / a.mb_per_s).toFixed(2)} wall, ${(mine.mb_per_cpu_s / a.mb_per_cpu_s).toFixed(2)} cpu` : '';
        console.log(`${a.source.padEnd(26)} ${a.codec.padEnd(12)} ${a.seconds.toFixed(3)} s  ${a.mb_per_s} MB/s  (${a.mb_per_cpu_s} MB/cpu-s)${ratio}`);
      }
    } else anchor = { skipped: `python3 anchor failed: ${(r.stderr || r.error?.message || '').slice(0, 400)}` };
  }

  const result = { suite: 'datasets', version: 1, started, host: { cpus: cores, node: process.version, loadavg1: loadavg()[0] }, table: { rows, row_bytes: ROW_BYTES, batch: batchSize }, rows: out, anchor };
  const file = v.out !== undefined ? resolve(v.out) : join(resolve(new URL('../results', import.meta.url).pathname), 'datasets.json');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${file}`);
  if (keep === undefined) rmSync(dir, { recursive: true, force: true });
}
