"""Failures under shoal_spark.run on a real local Spark (local[2]): a failing, hung or unstartable worker and a
failing Spark input fail the job with a clear error, and no worker, store or server actor of the job survives
(checked in /proc by job id)."""

import uuid

import pytest

import shoal_spark
from conftest import wait_no_processes

PROBE = "test/dist/spark-probe-worker.js"


def tag():
    return f"t{uuid.uuid4().hex[:10]}"


def test_failing_worker_fails_the_job_with_its_message_and_leaves_no_process(spark, repo):
    df = spark.range(0, 10_000, numPartitions=2).selectExpr("cast(id as double) as x")
    t = tag()
    with pytest.raises(shoal_spark.ShoalWorkerError) as ei:
        shoal_spark.run(df, PROBE, num_workers=2, args=["--fail-rank", "1", "--message", f"boom {t}", "--tag", t], timeout_s=60, cwd=repo, job_id=t)
    err = ei.value
    assert err.rank == 1
    assert f"boom {t}" in str(err)
    assert any("read 5000 rows" in line for line in err.log_tail), err.log_tail
    assert wait_no_processes(t) == []
    assert wait_no_processes(f"SHOAL_JOB_ID={t}") == []  # the store of this job too


def test_failing_ps_job_leaves_no_store_or_server_actor(spark, repo):
    # backend ps: rank 0's task hosts the store and the parameter-server actor processes; all go with the job
    df = spark.range(0, 1000, numPartitions=2).selectExpr("cast(id as double) as x")
    t = tag()
    with pytest.raises(shoal_spark.ShoalWorkerError, match=f"boom {t}"):
        shoal_spark.run(df, PROBE, num_workers=2, backend="ps", servers=2, args=["--fail-rank", "0", "--message", f"boom {t}"], timeout_s=60, cwd=repo, job_id=t)
    assert wait_no_processes(f"SHOAL_JOB_ID={t}") == []


def test_hung_worker_is_killed_at_the_deadline(spark, repo):
    df = spark.range(0, 1000, numPartitions=2).selectExpr("cast(id as double) as x")
    t = tag()
    with pytest.raises(shoal_spark.ShoalWorkerError) as ei:
        shoal_spark.run(df, PROBE, num_workers=2, args=["--hang-rank", "0", "--tag", t], timeout_s=8, cwd=repo, net_timeout_s=30)
    assert "timed out after 8 s" in str(ei.value)
    assert wait_no_processes(t) == []


def test_missing_node_binary_is_a_clear_error(spark, repo):
    df = spark.range(0, 10, numPartitions=1)
    with pytest.raises(shoal_spark.ShoalWorkerError, match="cannot start worker"):
        shoal_spark.run(df, PROBE, num_workers=1, node="/nonexistent/node", cwd=repo, timeout_s=30)


def test_failing_spark_input_fails_the_job_and_leaves_no_process(spark, repo):
    # the input breaks mid-partition (after some batches went out): the worker gets a truncated stream, never an
    # end-of-stream marker that would make a partial partition look complete
    df = spark.range(0, 200_000, numPartitions=2).where("assert_true(id < 150000, 'input broke at row 150000') is null").selectExpr("cast(id as double) as x")
    t = tag()
    with pytest.raises(Exception, match="input broke at row 150000"):
        shoal_spark.run(df, PROBE, num_workers=2, args=["--sum", "x"], timeout_s=60, cwd=repo, job_id=t)
    assert wait_no_processes(f"SHOAL_JOB_ID={t}") == []
