/**
 * A shoal worker for the Spark launcher tests and the `spark` benchmark (not a test file itself): it joins the job
 * from the SHOAL_* environment (TCP store + net transport process group), reads its partition from stdin as an
 * Arrow IPC stream with the datasets package (or, with --parquet, its shard of a Parquet directory), and does a real collective over the group: a ring pass that gives
 * every rank every rank's [rows, sum of a column]. Rank 0 prints the job totals on its `SHOAL_RESULT {json}` line.
 *
 *   node test/dist/spark-probe-worker.js [--parquet DIR] [--sum <column>] [--fail-rank <r> --message <text>] [--hang-rank <r>]
 *
 * With SHOAL_TIMELINE (`shoal_spark.run(..., timeline=PATH)`) each rank records its clock offset from the store's
 * host and its ring pass as a span, in its part of the timeline (the library's `Timeline`, as `initWorker` does).
 *
 * --tag <id> is ignored (tests use it to find the job's processes). --fail-rank makes that rank throw `<text>` after reading its input and before any collective; --hang-rank makes
 * that rank sleep forever after reading (for the timeout test).
 */
import { connectGroup, createNetTransport, Errors, parseWorkerOptions, TcpStore, type ProcessGroup } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { estimateClockOffset, Timeline, timelinePartPath } from '@shoal/core/telemetry';
import { openArrowStream, openParquetDir, shard, type NumericArray } from '@shoal/datasets';
import { sparkInput } from '@shoal/run';

interface ProbeArgs {
  parquet: string;
  sum: string;
  failRank: number;
  message: string;
  hangRank: number;
}

function parseArgs(argv: readonly string[]): ProbeArgs {
  const a: ProbeArgs = { parquet: '', sum: '', failRank: -1, message: 'probe failure', hangRank: -1 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw Errors.invalidArg(k ?? 'argument', 'needs a value');
    if (k === '--sum') a.sum = v;
    else if (k === '--parquet') a.parquet = v;
    else if (k === '--fail-rank') a.failRank = Number(v);
    else if (k === '--message') a.message = v;
    else if (k === '--hang-rank') a.hangRank = Number(v);
    else if (k === '--tag') continue; // lets tests find this job's processes in the process table
    else throw Errors.invalidArg(k ?? 'argument', 'is not an option of spark-probe-worker');
  }
  return a;
}

/** Ring allgather of one Float64Array per rank over the group's pairs (size-1 steps, each forwards one part). */
function ringAllgather(g: ProcessGroup, mine: Float64Array): Promise<Float64Array[]> {
  return g.run('probe allgather', async (seq) => {
    const parts: Float64Array[] = new Array(g.size);
    parts[g.rank] = mine;
    let send = mine;
    for (let s = 0; s < g.size - 1; s++) {
      const sent = g.send(g.next, { tag: Tags.control, step: s, seq, aux: send.length }, new Uint8Array(send.buffer, send.byteOffset, send.byteLength));
      const { payload } = await g.recv(g.prev, { tag: Tags.control, step: s, seq, aux: mine.length });
      await sent;
      const from = (g.rank - s - 1 + g.size) % g.size;
      parts[from] = new Float64Array(payload.slice().buffer);
      send = parts[from];
    }
    return parts;
  });
}

function sumOf(v: NumericArray): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += Number(v[i]);
  return s;
}

async function main(): Promise<void> {
  const opts = parseWorkerOptions(process.env);
  const args = parseArgs(process.argv.slice(2));

  const t0 = performance.now();
  const ds = args.parquet
    ? await openParquetDir(args.parquet)
    : await openArrowStream(sparkInput(), { name: `rank ${opts.rank} stdin`, idleTimeoutMs: opts.timeoutMs });
  const partitions = args.parquet ? shard(ds, opts.rank, opts.worldSize).partitions : ds.partitions;
  const columns = ds.schema.fields.map((f) => f.name);
  if (args.sum && !columns.includes(args.sum)) throw Errors.data(ds.source, `no column ${args.sum} (columns: ${columns.join(', ')})`);
  let rows = 0;
  let bytes = 0;
  let sum = 0;
  let chunks = 0;
  let tFirst = 0;
  let firstBytes = 0;
  for (const p of partitions) {
    for await (const c of p.read({ columns })) {
      rows += c.rows;
      chunks += 1;
      for (const col of Object.values(c.columns)) bytes += col.values.byteLength;
      if (chunks === 1) {
        tFirst = performance.now();
        firstBytes = bytes;
      }
      if (args.sum) sum += sumOf(c.columns[args.sum]!.values);
    }
  }
  const tEnd = performance.now();
  const readS = (tEnd - t0) / 1000;
  // Steady-state rate: the bytes after the first chunk over the time from the first chunk to the end (excludes
  // process start-up and the wait for the producer's first batch).
  const streamS = chunks > 1 ? (tEnd - tFirst) / 1000 : 0;
  const streamBytes = bytes - firstBytes;
  await ds.close();
  process.stderr.write(`rank ${opts.rank}: read ${rows} rows (${chunks} chunks, ${(bytes / 1e6).toFixed(1)} MB) in ${readS.toFixed(3)} s\n`);

  if (opts.rank === args.failRank) throw new Error(args.message);
  if (opts.rank === args.hangRank) await new Promise(() => setInterval(() => {}, 1 << 30));

  let totals: Float64Array[] = [Float64Array.of(rows, sum)];
  if (opts.worldSize > 1) {
    const store = await TcpStore.connect(opts.storeUrl, { auth: opts.auth, timeoutMs: opts.timeoutMs, connectTimeoutMs: opts.timeoutMs });
    const transport = createNetTransport({ auth: opts.auth });
    const g = await connectGroup({
      rank: opts.rank,
      size: opts.worldSize,
      store: store.prefixed(opts.jobId).prefixed('probe'),
      transport,
      listenUrl: `tcp://${opts.host}:0`,
      timeoutMs: opts.timeoutMs,
    });
    const file = process.env.SHOAL_TIMELINE;
    const tl = file ? new Timeline({ path: timelinePartPath(file, opts.rank), pid: opts.rank }) : undefined;
    try {
      if (tl) tl.clockOffset(await estimateClockOffset(store.clock, `store ${opts.storeUrl}`));
      const pass = () => ringAllgather(g, Float64Array.of(rows, sum));
      totals = tl ? await tl.trace(tl.lane('sync'), 'allgather', pass) : await pass();
    } finally {
      await g.close();
      await store.close();
      await tl?.close();
    }
  }
  const result = {
    rank: opts.rank,
    worldSize: opts.worldSize,
    rowsPerRank: totals.map((t) => t[0]),
    sumPerRank: totals.map((t) => t[1]),
    totalRows: totals.reduce((a, t) => a + t[0]!, 0),
    totalSum: totals.reduce((a, t) => a + t[1]!, 0),
    bytes,
    chunks,
    readS,
    streamS,
    streamBytes,
    /** The job certificate's fingerprint this rank pinned (`tls=True`), else null. */
    tls: opts.auth.tls?.fingerprint ?? null,
  };
  process.stdout.write(`SHOAL_RESULT ${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`spark-probe-worker: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}\n`);
    process.exit(1);
  },
);
