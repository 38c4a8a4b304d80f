"""shoal_spark.run end to end on a real local Spark (local[2]) with the probe worker (test/dist/spark-probe-worker.js):
partitions reach the workers as Arrow, the workers join one job through the rank-0 store and do a ring pass.
Failures are in test_failures.py."""

import os
import re
import uuid

import pytest

import shoal_spark
from conftest import wait_no_processes

PROBE = "test/dist/spark-probe-worker.js"


def tag():
    return f"t{uuid.uuid4().hex[:10]}"


def expected_per_partition(df, col):
    from pyspark.sql import functions as F

    rows = df.withColumn("_p", F.spark_partition_id()).groupBy("_p").agg(F.count("*").alias("n"), F.sum(col).alias("s")).collect()
    n = df.rdd.getNumPartitions()
    by = {r["_p"]: (r["n"], float(r["s"] or 0.0)) for r in rows}
    return [by.get(p, (0, 0.0)) for p in range(n)]


def test_two_workers_get_their_partitions_and_run_a_ring_pass(spark, repo):
    df = spark.range(0, 200_000, numPartitions=2).selectExpr("cast(id as double) as x", "cast(id % 7 as int) as k")
    want = expected_per_partition(df, "x")
    t = tag()
    res = shoal_spark.run(df, PROBE, num_workers=2, args=["--sum", "x", "--tag", t], timeout_s=120, cwd=repo)
    assert res.result is not None
    assert res.result["rowsPerRank"] == [w[0] for w in want]
    assert res.result["sumPerRank"] == [w[1] for w in want]
    assert res.result["totalRows"] == 200_000
    assert [r["rank"] for r in res.ranks] == [0, 1]
    for r in res.ranks:
        assert r["exit_code"] == 0
        assert r["rows"] == want[r["rank"]][0]
        # what Python streamed is what the worker decoded (12 bytes per row: f64 + i32)
        assert r["result"]["rowsPerRank"][r["rank"]] == r["rows"]
        assert r["result"]["bytes"] == 12 * r["rows"]
    assert wait_no_processes(t) == []


def test_tls_job_pins_one_certificate_and_runs_a_ring_pass(spark, repo):
    df = spark.range(0, 20_000, numPartitions=2).selectExpr("cast(id as double) as x", "cast(id % 7 as int) as k")
    want = expected_per_partition(df, "x")
    t = tag()
    res = shoal_spark.run(df, PROBE, num_workers=2, args=["--sum", "x", "--tag", t], timeout_s=120, cwd=repo, tls=True)
    assert res.result["sumPerRank"] == [w[1] for w in want]
    prints = {r["result"]["tls"] for r in res.ranks}
    assert len(prints) == 1 and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", prints.pop()), "every rank pinned the job's certificate"
    with pytest.raises(ValueError, match="nng transport has no TLS"):
        shoal_spark.run(df, PROBE, num_workers=2, cwd=repo, tls=True, transport="nng")
    assert wait_no_processes(t) == []


def test_repartitions_to_num_workers(spark, repo):
    df = spark.range(0, 10_000, numPartitions=5).selectExpr("cast(id as double) as x")
    res = shoal_spark.run(df, PROBE, num_workers=2, args=["--sum", "x"], timeout_s=120, cwd=repo)
    assert res.result["totalRows"] == 10_000
    assert res.result["totalSum"] == float(sum(range(10_000)))
    assert len(res.result["rowsPerRank"]) == 2


def test_empty_partition_does_not_hang(spark, repo):
    df = spark.range(0, 1000, numPartitions=2).where("id < 500").selectExpr("cast(id as double) as x")
    assert [w[0] for w in expected_per_partition(df, "x")] == [500, 0]
    res = shoal_spark.run(df, PROBE, num_workers=2, args=["--sum", "x"], timeout_s=60, cwd=repo)
    assert res.result["rowsPerRank"] == [500, 0]
    assert res.ranks[1]["rows"] == 0 and res.ranks[1]["batches"] == 0
    assert res.result["totalSum"] == float(sum(range(500)))


def test_bad_arguments_are_rejected_before_spark_runs(spark, repo):
    df = spark.range(0, 10, numPartitions=2)
    with pytest.raises(ValueError, match="needs 3 task slots"):
        shoal_spark.run(df, PROBE, num_workers=3, cwd=repo)
    with pytest.raises(ValueError, match="backend must be one of"):
        shoal_spark.run(df, PROBE, backend="allreduce", cwd=repo)
    with pytest.raises(ValueError, match="does not exist"):
        shoal_spark.run(df, "no/such/script.js", cwd=repo)
