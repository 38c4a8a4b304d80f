"""The Python half of `npm run bench -- spark` (bench/src/spark.ts runs it and writes bench/results/spark.json).

Measures, on a local Spark with one barrier task per core:

  pipe:    in-memory Arrow batches written by pyarrow into a pipe, read by (a) the Node probe worker through the
           datasets package, (b) a pyarrow reader (the anchor: what a pipe + Arrow IPC does on this machine);
  spark:   a cached DataFrame handed to Python tasks by mapInArrow, batches only counted (Spark's own cost);
  arrow:   shoal_spark.run of the probe worker: Spark -> Python task -> stdin -> datasets batches (the feed);
  parquet: the Petastorm/Horovod path: df.write.parquet(dir), then `shoal run -n N` probe workers read the part files.

Prints one JSON object on stdout. Every feed is verified (row counts and a column sum equal Spark's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))

PROBE = "test/dist/spark-probe-worker.js"


def result_line(text: str) -> dict:
    for ln in text.splitlines():
        if "SHOAL_RESULT " in ln:
            return json.loads(ln.split("SHOAL_RESULT ", 1)[1])
    raise RuntimeError(f"no SHOAL_RESULT line in:\n{text[-2000:]}")


def make_batches(rows: int, cols: int, batch_rows: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    out = []
    for start in range(0, rows, batch_rows):
        n = min(batch_rows, rows - start)
        arrays = [pa.array(np.arange(start, start + n, dtype=np.float64))] + [pa.array(rng.random(n)) for _ in range(cols - 1)]
        out.append(pa.RecordBatch.from_arrays(arrays, names=[f"c{i}" for i in range(cols)]))
    return out


def feed_pipe(argv, batches, env=None):
    """Write `batches` as one IPC stream into `argv`'s stdin; return (seconds, stdout)."""
    import pyarrow as pa

    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env, bufsize=0)
    t0 = time.perf_counter()
    with pa.ipc.new_stream(p.stdin, batches[0].schema) as w:
        for b in batches:
            w.write_batch(b)
    p.stdin.close()
    p.stdin = None  # closed: communicate() must not flush it
    out, err = p.communicate(timeout=300)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed: {err.decode()[-2000:]}")
    return dt, out.decode()


PYARROW_READER = (
    "import sys, time, json, pyarrow as pa, pyarrow.compute as pc\n"
    "r = pa.ipc.open_stream(pa.PythonFile(sys.stdin.buffer, mode='r'))\n"
    "n = s = nb = k = 0; t1 = fb = 0\n"
    "for b in r:\n"
    "    n += b.num_rows; nb += b.nbytes; k += 1; s += pc.sum(b.column(0)).as_py() or 0\n"
    "    if k == 1: t1 = time.perf_counter(); fb = nb\n"
    "print('SHOAL_RESULT ' + json.dumps({'totalRows': n, 'totalSum': s, 'bytes': nb,\n"
    "      'streamS': time.perf_counter() - t1 if k > 1 else 0, 'streamBytes': nb - fb}))\n"
)


def bench_pipe(rows, cols, batch_rows, reps):
    batches = make_batches(rows, cols, batch_rows)
    nbytes = sum(b.nbytes for b in batches)
    want_sum = float(rows * (rows - 1) // 2)
    env = dict(os.environ, SHOAL_WORLD_SIZE="1", SHOAL_RANK="0", SHOAL_INPUT="stdin")
    res = {}
    for name, argv in (("node-datasets", ["node", PROBE, "--sum", "c0"]), ("pyarrow", [sys.executable, "-c", PYARROW_READER])):
        feed_pipe(argv, batches[: max(1, len(batches) // 8)], env)  # warm-up
        best = None
        for _ in range(reps):
            dt, out = feed_pipe(argv, batches, env)
            r = result_line(out)
            if r["totalRows"] != rows or r["totalSum"] != want_sum:
                raise RuntimeError(f"pipe feed into {name} read {r['totalRows']} rows / sum {r['totalSum']}, want {rows} / {want_sum}")
            mbps = r["streamBytes"] / r["streamS"] / 1e6
            if best is None or mbps > best["mbps"]:
                best = {"bytes": nbytes, "process_s": dt, "stream_s": r["streamS"], "mbps": mbps}
        res[name] = best
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import shoal_spark

    out: dict = {"rows_total": a.rows, "cols": a.cols, "workers": a.workers, "batch_rows": a.batch_rows}
    out["pipe"] = bench_pipe(a.rows // a.workers, a.cols, a.batch_rows, a.reps)

    spark = (
        SparkSession.builder.master(f"local[{a.workers}]").appName("shoal-spark-bench")
        .config("spark.ui.enabled", "false").config("spark.driver.memory", "3g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(a.batch_rows))
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.range(0, a.rows, numPartitions=a.workers).selectExpr(
            "cast(id as double) as c0", *[f"rand({i}) as c{i}" for i in range(1, a.cols)]
        ).cache()
        assert df.count() == a.rows
        want = df.withColumn("_p", F.spark_partition_id()).groupBy("_p").agg(F.count("*").alias("n"), F.sum("c0").alias("s")).orderBy("_p").collect()
        want_rows = [r["n"] for r in want]
        want_sums = [r["s"] for r in want]

        # Spark alone: mapInArrow batches counted in the Python task (what Spark costs before shoal sees a byte).
        def count_only(it):
            import time as _t
            import pyarrow as pa

            t0 = _t.perf_counter()
            n = nb = 0
            for b in it:
                n += b.num_rows
                nb += b.nbytes
            yield pa.RecordBatch.from_pydict({"rows": [n], "bytes": [nb], "s": [_t.perf_counter() - t0]})

        spark_only = []
        for _ in range(a.reps):
            rows = df.mapInArrow(count_only, "rows long, bytes long, s double", barrier=True).collect()
            assert sorted(r["rows"] for r in rows) == sorted(want_rows)
            spark_only.append(rows)
        best = max(spark_only, key=lambda rs: min(r["bytes"] / max(r["s"], 1e-9) for r in rs))
        out["spark_only"] = {"per_task_mbps": [r["bytes"] / r["s"] / 1e6 for r in best], "bytes": sum(r["bytes"] for r in best)}

        # The Arrow path: shoal_spark.run of the probe.
        arrow_runs = []
        for _ in range(a.reps):
            res = shoal_spark.run(df, PROBE, num_workers=a.workers, args=["--sum", "c0"], timeout_s=600, cwd=REPO)
            if res.result["rowsPerRank"] != want_rows or res.result["sumPerRank"] != want_sums:
                raise RuntimeError(f"arrow feed mismatch: {res.result} vs rows {want_rows} sums {want_sums}")
            arrow_runs.append(res)
        # the repetition whose slowest task was fastest (the machine is shared: keep the least disturbed run)
        best = max(arrow_runs, key=lambda r: min(t["result"]["streamBytes"] / max(t["result"]["streamS"], 1e-9) for t in r.ranks))
        out["arrow"] = {
            "wall_s": best.wall_s,
            "bytes": sum(r["bytes"] for r in best.ranks),
            "per_task": [
                {
                    "rank": r["rank"], "rows": r["rows"], "bytes": r["bytes"], "batches": r["batches"],
                    "feed_s": r["feed_s"], "feed_mbps": r["bytes"] / r["feed_s"] / 1e6,
                    "worker_read_s": r["result"]["readS"], "worker_bytes": r["result"]["bytes"],
                    # steady state inside the worker: bytes after the first chunk / time from first chunk to end
                    "worker_mbps": r["result"]["streamBytes"] / r["result"]["streamS"] / 1e6 if r["result"]["streamS"] else None,
                }
                for r in best.ranks
            ],
            "temp_files": 0,
        }

        # The Parquet path: Spark writes part files, `shoal run` workers read them.
        parquet_runs = []
        for _ in range(a.reps):
            d = tempfile.mkdtemp(prefix="shoal-bench-parquet-")
            try:
                t0 = time.perf_counter()
                df.write.mode("overwrite").parquet(d)
                t1 = time.perf_counter()
                p = subprocess.run(
                    ["node", "run/dist/launcher/cli.js", "run", "-n", str(a.workers), PROBE, "--parquet", d, "--sum", "c0"],
                    cwd=REPO, capture_output=True, text=True, timeout=600,
                )
                t2 = time.perf_counter()
                if p.returncode != 0:
                    raise RuntimeError(f"shoal run failed: {p.stderr[-2000:]}")
                r = result_line(p.stdout)
                if r["totalRows"] != a.rows or r["totalSum"] != sum(want_sums):
                    raise RuntimeError(f"parquet path mismatch: {r}")
                files = [f for f in os.listdir(d) if f.endswith(".parquet")]
                size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
                parquet_runs.append({"write_s": t1 - t0, "read_run_s": t2 - t1, "wall_s": t2 - t0, "files": len(files), "file_bytes": size,
                                     "worker_read_s": r["readS"]})
            finally:
                shutil.rmtree(d, ignore_errors=True)
        out["parquet"] = min(parquet_runs, key=lambda r: r["wall_s"])
        out["arrow_vs_parquet_wall"] = out["parquet"]["wall_s"] / out["arrow"]["wall_s"]
    finally:
        spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
