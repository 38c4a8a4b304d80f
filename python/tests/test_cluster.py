"""shoal_spark.run on `local-cluster[2,1,1024]`: a standalone master and two executor JVMs (one core each), so the
two ranks run in different executors and Python workers, as on a real cluster."""

import uuid

import pytest

import shoal_spark
from conftest import wait_no_processes

PROBE = "test/dist/spark-probe-worker.js"


def test_two_executors_run_one_job(cluster, repo):
    df = cluster.range(0, 100_000, numPartitions=2).selectExpr("cast(id as double) as x")
    t = f"t{uuid.uuid4().hex[:10]}"
    res = shoal_spark.run(df, PROBE, num_workers=2, args=["--sum", "x", "--tag", t], timeout_s=120, cwd=repo)
    assert res.result["rowsPerRank"] == [50_000, 50_000]
    assert res.result["totalSum"] == float(sum(range(100_000)))
    # two executors: the two ranks ran in different executor JVMs (distinct executor addresses)
    assert all(r["exit_code"] == 0 for r in res.ranks)
    assert res.ranks[0]["executor"] != res.ranks[1]["executor"], res.ranks
    assert wait_no_processes(t) == []


def test_failure_in_one_executor_fails_the_job(cluster, repo):
    df = cluster.range(0, 1000, numPartitions=2).selectExpr("cast(id as double) as x")
    t = f"t{uuid.uuid4().hex[:10]}"
    with pytest.raises(shoal_spark.ShoalWorkerError, match=f"boom {t}") as ei:
        shoal_spark.run(df, PROBE, num_workers=2, args=["--fail-rank", "0", "--message", f"boom {t}", "--tag", t], timeout_s=60, cwd=repo)
    assert ei.value.rank == 0
    assert wait_no_processes(t) == []
