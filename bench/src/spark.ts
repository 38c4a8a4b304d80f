/**
 * `npm run bench -- spark [--quick] [--rows N] [--cols C] [--workers 1,2] [--batch-rows B] [--reps R]`
 *
 * How fast a Spark partition reaches a shoal worker's batches, and the Arrow hand-off vs. the Parquet hand-off,
 * end to end. The measuring is done by python/bench/spark_feed.py (a local Spark, `local[W]`, one barrier task
 * per core); this suite runs it once per worker count (default 1 then 2: one task alone, then every core busy),
 * checks its verification passed, and writes `bench/results/spark.json`. `--rows` is per worker.
 *
 * Row format of bench/results/spark.json (one row per measured path; MB = 10^6 bytes of Arrow column data):
 *
 *   { suite: 'spark', version: 1, started, quick, host: { cpus, node, python, pyspark, loadavg1 },
 *     config: { rows_per_worker, cols, workers: [1, 2], batch_rows, reps },
 *     rows: [                    // every row also has `workers` (W) and `rows_total`
 *       { path: 'pipe-node',    what, mbps, bytes },        // pyarrow -> pipe -> datasets openArrowStream (one process)
 *       { path: 'pipe-pyarrow', what, mbps, bytes },        // anchor: pyarrow -> pipe -> pyarrow reader
 *       { path: 'spark-only',   what, mbps_per_task[] },    // Spark mapInArrow -> Python task, batches counted
 *       { path: 'arrow',        what, mbps_per_task[], feed_mbps_per_task[], wall_s, bytes, temp_files: 0 },
 *       { path: 'parquet',      what, wall_s, write_s, read_run_s, file_bytes, files },
 *     ],
 *     ratios: [ { workers, node_vs_pyarrow_pipe, arrow_vs_spark_only, parquet_wall_vs_arrow_wall, oversubscribed } ],
 *     // oversubscribed: W Spark tasks + W node workers + the JVM need more than `cpus` cores
 *     verified: true }
 *
 * `mbps_per_task` (arrow) is the steady-state rate inside each worker: bytes decoded after its first batch over
 * the time from that batch to the end of its stream (so Node start-up and Spark's task launch are excluded);
 * `feed_mbps_per_task` is the Python side's rate including the wait for the worker to start reading.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

interface PipeRow {
  bytes: number;
  process_s: number;
  stream_s: number;
  mbps: number;
}
interface FeedOut {
  rows_total: number;
  cols: number;
  workers: number;
  batch_rows: number;
  pipe: { 'node-datasets': PipeRow; pyarrow: PipeRow };
  spark_only: { per_task_mbps: number[]; bytes: number };
  arrow: {
    wall_s: number;
    bytes: number;
    per_task: { rank: number; rows: number; bytes: number; feed_mbps: number; worker_mbps: number | null }[];
    temp_files: number;
  };
  parquet: { write_s: number; read_run_s: number; wall_s: number; files: number; file_bytes: number };
  arrow_vs_parquet_wall: number;
}

function runPython(python: string, argv: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, argv, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
    });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function versionOf(python: string, mod: string): Promise<string> {
  return runPython(python, ['-c', `import ${mod}; print(${mod}.__version__)`], 60_000).then((r) => r.stdout.trim() || 'missing');
}

/** `npm run bench -- spark`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench spark',
  synopsis: '[options]',
  description: 'the Arrow feed from Spark into workers, against Parquet files',
  options: {
    'quick': { type: 'boolean', help: 'fewer rows and repeats' },
    'workers': { type: 'string', arg: 'N,N', help: 'worker counts (default 1,2)' },
    'rows': { type: 'string', arg: 'N', help: 'rows per worker' },
    'cols': { type: 'string', arg: 'N', help: 'columns (default 16)' },
    'batch-rows': { type: 'string', arg: 'N', help: 'rows per Arrow batch (default 10000)' },
    'reps': { type: 'string', arg: 'N', help: 'repeats' },
    'out': { type: 'string', arg: 'FILE', help: 'result file (default bench/results/spark.json)' },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const quick = v['quick'] === true;
  const python = process.env.SHOAL_PYTHON ?? 'python3';
  const workerCounts = (v['workers'] ?? '1,2').split(',').map(Number);
  if (workerCounts.some((w) => !Number.isInteger(w) || w < 1)) throw new RangeError(`--workers must be a list of positive integers, got ${(v['workers'] ?? '')}`);
  const config = {
    rows_per_worker: Number((v['rows'] ?? quick ? '200000' : '1000000')),
    cols: Number((v['cols'] ?? '16')),
    workers: workerCounts,
    batch_rows: Number((v['batch-rows'] ?? '10000')),
    reps: Number((v['reps'] ?? quick ? '1' : '3')),
  };
  const started = new Date().toISOString();
  const pyspark = await versionOf(python, 'pyspark');
  if (pyspark === 'missing') throw new Error(`bench spark: pyspark is not importable by ${python} (pip install -r requirements.txt)`);
  const mb = (x: number) => Math.round(x * 10) / 10;
  const rows: Record<string, unknown>[] = [];
  const ratios: Record<string, unknown>[] = [];
  for (const workers of workerCounts) {
    const total = config.rows_per_worker * workers;
    console.log(`spark bench: ${total} rows x ${config.cols} f64 columns over ${workers} task(s) (pyspark ${pyspark}, loadavg ${loadavg()[0]!.toFixed(1)})`);
    const r = await runPython(
      python,
      [
        'python/bench/spark_feed.py',
        '--rows', String(total),
        '--cols', String(config.cols),
        '--workers', String(workers),
        '--batch-rows', String(config.batch_rows),
        '--reps', String(config.reps),
      ],
      15 * 60_000,
    );
    if (r.code !== 0) throw new Error(`bench spark: spark_feed.py exited ${r.code}:\n${r.stderr.split('\n').filter((l) => !/^\s+at /.test(l)).slice(-40).join('\n')}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as FeedOut;
    const base = { workers, rows_total: total };
    const mine: Record<string, unknown>[] = [
      { ...base, path: 'pipe-node', what: 'pyarrow -> pipe -> datasets openArrowStream, steady state', mbps: mb(out.pipe['node-datasets'].mbps), bytes: out.pipe['node-datasets'].bytes },
      { ...base, path: 'pipe-pyarrow', what: 'anchor: pyarrow -> pipe -> pyarrow reader, steady state', mbps: mb(out.pipe.pyarrow.mbps), bytes: out.pipe.pyarrow.bytes },
      { ...base, path: 'spark-only', what: 'Spark mapInArrow -> Python task, batches counted', mbps_per_task: out.spark_only.per_task_mbps.map(mb) },
      {
        ...base,
        path: 'arrow',
        what: 'shoal_spark.run: Spark -> task -> worker stdin -> datasets chunks',
        mbps_per_task: out.arrow.per_task.map((t) => (t.worker_mbps === null ? null : mb(t.worker_mbps))),
        feed_mbps_per_task: out.arrow.per_task.map((t) => mb(t.feed_mbps)),
        wall_s: out.arrow.wall_s,
        bytes: out.arrow.bytes,
        temp_files: out.arrow.temp_files,
      },
      {
        ...base,
        path: 'parquet',
        what: 'df.write.parquet + shoal run workers reading the part files',
        wall_s: out.parquet.wall_s,
        write_s: out.parquet.write_s,
        read_run_s: out.parquet.read_run_s,
        file_bytes: out.parquet.file_bytes,
        files: out.parquet.files,
      },
    ];
    rows.push(...mine);
    const arrowMin = Math.min(...out.arrow.per_task.map((t) => t.worker_mbps ?? 0));
    const sparkMin = Math.min(...out.spark_only.per_task_mbps);
    const ratio = {
      workers,
      node_vs_pyarrow_pipe: out.pipe['node-datasets'].mbps / out.pipe.pyarrow.mbps,
      arrow_vs_spark_only: arrowMin / sparkMin,
      parquet_wall_vs_arrow_wall: out.arrow_vs_parquet_wall,
      oversubscribed: 2 * workers + 1 > cpus().length,
    };
    ratios.push(ratio);
    console.table(
      mine.map((x) => ({
        path: x.path,
        'MB/s (per task)': x.mbps ?? ((x.mbps_per_task as (number | null)[] | undefined) ?? []).join(' / '),
        wall_s: typeof x.wall_s === 'number' ? x.wall_s.toFixed(2) : '',
      })),
    );
    console.log(
      `W=${workers} ratios: node/pyarrow pipe ${ratio.node_vs_pyarrow_pipe.toFixed(2)}, arrow/spark-only ${ratio.arrow_vs_spark_only.toFixed(2)}, ` +
        `parquet wall / arrow wall ${ratio.parquet_wall_vs_arrow_wall.toFixed(2)}${ratio.oversubscribed ? ' (oversubscribed: tasks + workers + JVM > cores)' : ''}`,
    );
  }
  const result = {
    suite: 'spark',
    version: 1,
    started,
    quick,
    host: { cpus: cpus().length, node: process.version, python, pyspark, loadavg1: loadavg()[0] },
    config,
    rows,
    ratios,
    verified: true,
  };
  const file = v.out ?? `${REPO}bench/results/spark.json`;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${file}`);
}
