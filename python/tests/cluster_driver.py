"""Driver of the namespace-cluster Spark test (bench/src/cluster-spark.test.ts), run inside the master's host:

    python3 python/tests/cluster_driver.py spark://ADDR:7077 ADDR TAG [TIMELINE]

Connects to the standalone master (whose two workers are other namespace hosts), runs `shoal_spark.run` with the
probe worker over 2 barrier tasks (one core per worker, so one task per host) and prints one JSON line:
{"result": rank 0's result, "ranks": per-rank rows (host, executor, exit_code, rows), "timeline": the merge's
summary or null}. With TIMELINE, the job records a timeline merged there on the driver.
"""
import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))

from pyspark.sql import SparkSession  # noqa: E402

import shoal_spark  # noqa: E402


def main():
    master, host, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    timeline = sys.argv[4] if len(sys.argv) > 4 else None
    s = (
        SparkSession.builder.master(master)
        .appName(f"shoal-netns-{tag}")
        .config("spark.driver.host", host)
        .config("spark.driver.bindAddress", host)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "512m")
        .config("spark.executor.memory", "512m")
        .config("spark.executor.cores", "1")
        .config("spark.cores.max", "2")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    try:
        df = s.range(0, 100_000, numPartitions=2).selectExpr("cast(id as double) as x")
        res = shoal_spark.run(df, "test/dist/spark-probe-worker.js", num_workers=2, args=["--sum", "x", "--tag", tag], timeout_s=120, cwd=REPO, timeline=timeline)
        print(json.dumps({"result": res.result, "ranks": res.ranks, "timeline": res.timeline}), flush=True)
    finally:
        s.stop()


if __name__ == "__main__":
    main()
