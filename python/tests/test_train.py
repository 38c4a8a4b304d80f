"""Real training from Spark: the digits MLP (test/dist/spark-digits-worker.js) with 2 workers fed their partitions
as Arrow by shoal_spark.run, compared with `shoal run` of the same script over the Parquet files Spark wrote from
the same DataFrame (same partitions, same row order): the final weights agree within 1e-5."""

import json
import os
import subprocess
import sys
import uuid

import pytest

import shoal_spark
from conftest import digits_columns, wait_no_processes

WORKER = "test/dist/spark-digits-worker.js"
ROWS = 1600  # 800 per partition: 25 batches of 32 per rank and epoch


@pytest.fixture(scope="module")
def digits_df(spark, repo):
    import pandas as pd

    df = spark.createDataFrame(pd.DataFrame(digits_columns(repo, ROWS)))
    if df.rdd.getNumPartitions() != 2:
        df = df.repartition(2)
    assert df.rdd.getNumPartitions() == 2
    return df.cache()


def shoal_run(repo, backend, args, timeout_s=180):
    cmd = ["node", os.path.join(repo, "run/dist/launcher/cli.js"), "run", "-n", "2", "--backend", backend, "--job-timeout-s", str(timeout_s - 10), WORKER, *args]
    p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout_s)
    sys.stderr.write(p.stderr[-4000:])
    assert p.returncode == 0, f"shoal run failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith(shoal_spark.RESULT_MARKER) or "SHOAL_RESULT " in ln)
    return json.loads(line.split("SHOAL_RESULT ", 1)[1])


def max_abs_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def parquet_dir(digits_df, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("digits") / "digits.parquet")
    digits_df.write.parquet(d)
    parts = sorted(f for f in os.listdir(d) if f.startswith("part-") and f.endswith(".parquet"))
    assert len(parts) == 2, parts
    return d


@pytest.fixture(scope="module")
def references(repo, parquet_dir, tmp_path_factory):
    """`shoal run` of the worker over the Parquet files, once per backend (weights and result), on demand."""
    cache = {}

    def get(backend):
        if backend not in cache:
            out = str(tmp_path_factory.mktemp(f"ref-{backend}") / "weights.json")
            ref = shoal_run(repo, backend, ["--parquet", parquet_dir, "--epochs", "3", "--out", out])
            assert ref["steps"] == 25
            cache[backend] = (ref, json.load(open(out))["weights"])
        return cache[backend]

    return get


# hybrid sends dense gradients through the ring (the ps side carries row-sparse ones, which this MLP has none of),
# so its reference is the ring run
@pytest.mark.parametrize("backend,reference", [("ring", "ring"), ("ps", "ps"), ("hybrid", "ring")])
def test_spark_training_equals_shoal_run_on_the_parquet_files(digits_df, repo, tmp_path, references, backend, reference):
    spark_out = str(tmp_path / "spark.json")
    job = f"spark-test-{uuid.uuid4().hex[:10]}"
    res = shoal_spark.run(digits_df, WORKER, num_workers=2, backend=backend, args=["--epochs", "3", "--out", spark_out], timeout_s=180, cwd=repo, job_id=job)
    assert res.result["steps"] == 25 and res.result["rows"] == 3 * 25 * 32
    assert [r["rows"] for r in res.ranks] == [800, 800]
    assert res.result["loss"] < res.result["firstLoss"], res.result

    ref, b = references(reference)
    a = json.load(open(spark_out))["weights"]
    diff = max_abs_diff(a, b)
    sys.stderr.write(f"[{backend}] max |w_spark - w_shoal_run({reference})| = {diff:g}, loss {res.result['loss']:.5f} vs {ref['loss']:.5f}\n")
    assert diff <= 1e-5
    assert abs(res.result["loss"] - ref["loss"]) <= 1e-5
    # no worker, store or (ps) server actor of this job is left
    assert wait_no_processes(f"SHOAL_JOB_ID={job}") == []


def test_spark_written_parquet_is_read_back_by_the_datasets_package(digits_df, repo, parquet_dir):
    """The Petastorm-style hand-off alone: Spark writes, `shoal run` workers (probe) read their part files."""
    parquet = parquet_dir
    cmd = ["node", "run/dist/launcher/cli.js", "run", "-n", "2", "test/dist/spark-probe-worker.js", "--parquet", parquet, "--sum", "p10"]
    p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(next(ln for ln in p.stdout.splitlines() if "SHOAL_RESULT " in ln).split("SHOAL_RESULT ", 1)[1])
    from pyspark.sql import functions as F

    want = digits_df.withColumn("_p", F.spark_partition_id()).groupBy("_p").agg(F.count("*").alias("n"), F.sum("p10").alias("s")).orderBy("_p").collect()
    assert got["rowsPerRank"] == [r["n"] for r in want]
    for g, w in zip(got["sumPerRank"], want):
        assert abs(g - w["s"]) <= 1e-9 * max(1.0, abs(w["s"]))


def test_spark_timeline_each_task_returns_its_parts_and_the_driver_merges_them(digits_df, repo, tmp_path):
    """timeline=PATH: every rank (and the ps server, in rank 0's task) writes its part on its executor; the driver
    merges the parts the rows carried into one Chrome trace. One worker too: it leaves the merge to the driver."""
    path = tmp_path / "tl" / "trace.json"
    job = f"spark-test-{uuid.uuid4().hex[:10]}"
    res = shoal_spark.run(digits_df, WORKER, num_workers=2, backend="ps", args=["--epochs", "1"], timeout_s=180, cwd=repo, job_id=job, timeline=str(path))
    assert res.timeline["pids"] == [0, 1, 10_000], res.timeline
    assert res.timeline["missing"] == []
    # the store is on loopback here: the ranks share its clock and measure no offset (cluster tests measure one)
    assert res.timeline["clockOffsets"] == {}
    assert sorted(os.listdir(path.parent)) == ["trace.json"], "the parts were merged and removed"
    assert all("timeline" not in r for r in res.ranks), "the parts are not handed back in the ranks"
    doc = json.load(open(path))
    spans = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [e["ts"] for e in spans] == sorted(e["ts"] for e in spans)
    for rank in (0, 1):
        assert sum(1 for e in spans if e["pid"] == rank and e["name"] == "step") == 25, f"rank {rank}: a step span per batch"
        assert sum(1 for e in spans if e["pid"] == rank and e["name"] == "push+pull") == 25, f"rank {rank}: a push+pull per step"
    assert any(e["pid"] == 10_000 and e["name"] == "apply" for e in spans), "the server's updates"
    assert wait_no_processes(f"SHOAL_JOB_ID={job}") == []

    one = tmp_path / "one.json"
    r1 = shoal_spark.run(digits_df, WORKER, num_workers=1, args=["--epochs", "1"], timeout_s=180, cwd=repo, timeline=str(one))
    assert r1.timeline["pids"] == [0]
    assert sum(1 for e in json.load(open(one))["traceEvents"] if e.get("name") == "step") == r1.result["steps"]
    with pytest.raises(ValueError, match="timeline must be a file path"):
        shoal_spark.run(digits_df, WORKER, num_workers=2, cwd=repo, timeline="")
