"""Elastic training on Spark (`shoal_spark.run(elastic=True)`), on `local-cluster[2,1,1024]` (two executor JVMs, one
core each): an executor killed mid-training fails the barrier stage, the driver starts a new one with the one
executor left (the DataFrame repartitioned to 1), whose worker takes the last commit from the driver's store and
finishes. The final weights equal a one-process reference that followed the same membership schedule over the
same batches (test/dist/spark-elastic-worker.js --reference). Also: a job that keeps failing gives up after
max_restarts, and argument errors."""

import json
import os
import subprocess
import threading
import time
import uuid

import pytest

import shoal_spark
from conftest import wait_no_processes

WORKER = "test/dist/spark-elastic-worker.js"
ROWS = 480
BATCH = 20  # 2 workers: 240 rows each, 12 steps per epoch; 1 worker: 24 steps per epoch


def dataset():
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(ROWS, 4)).astype(np.float32)
    y = (np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 3]).astype(np.float32)
    return x, y


def frame(spark):
    import pandas as pd

    x, y = dataset()
    pdf = pd.DataFrame({f"x{i}": x[:, i] for i in range(4)})
    pdf["y"] = y
    pdf["id"] = [float(i) for i in range(ROWS)]
    pdf["id"] = pdf["id"].astype("float32")
    return spark.createDataFrame(pdf).repartition(2).cache()


def check_against_reference(repo, tmp_path, out, layout, resumed_at):
    """The ids each stage's ranks trained on partition the data, and the final weights equal the one-process
    reference that followed the same schedule (stage 0 until the commit of step `resumed_at`, then stage 1)."""

    def ids(stage, workers):
        return [json.load(open(tmp_path / f"ids-s{stage}-r{r}.json")) for r in range(workers)]

    stages = [ids(0, layout[0]), ids(1, layout[1])]
    for s in stages:
        assert sorted(int(i) for rank in s for i in rank) == list(range(ROWS))
    x, y = dataset()
    ref_in = tmp_path / "reference.json"
    ref_in.write_text(json.dumps({
        "x": x.tolist(), "y": y.tolist(), "batch": BATCH, "epochs": 3,
        "stages": [{"ids": [[int(i) for i in r] for r in stages[0]], "until": resumed_at}, {"ids": [[int(i) for i in r] for r in stages[1]]}],
    }))
    p = subprocess.run(["node", os.path.join(repo, WORKER), "--reference", str(ref_in)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    ref = json.loads(p.stdout)
    assert ref["steps"] == out["steps"]
    w, r = out["weights"], ref["weights"]
    assert len(w) == len(r)
    rel = max(abs(a - b) for a, b in zip(w, r)) / max(abs(b) for b in r)
    print(f"max difference {rel:.3g} relative to the reference")
    assert rel <= 1e-4, f"max difference {rel:.3g} relative to the reference"
    return ref


@pytest.mark.parametrize("kwargs,match", [
    ({"min_workers": 1}, "need elastic=True"),
    ({"elastic": True, "min_workers": 3}, r"1 <= min_workers \(3\) <= num_workers \(2\)"),
    ({"elastic": True, "max_workers": 1}, r"num_workers \(2\) <= max_workers \(1\)"),
    ({"elastic": True, "max_restarts": -1}, "max_restarts must be an integer >= 0"),
    ({"elastic": True, "backend": "ps", "ps_durable": "/tmp/x"}, "drop ps_durable"),
    ({"elastic": "yes"}, "elastic must be True or False"),
])
def test_elastic_argument_errors(cluster, repo, kwargs, match):
    df = cluster.range(0, 10, numPartitions=2)
    with pytest.raises(ValueError, match=match):
        shoal_spark.run(df, WORKER, num_workers=2, cwd=repo, **kwargs)


def test_a_job_that_keeps_failing_gives_up_after_max_restarts(cluster, repo, tmp_path):
    df = frame(cluster)
    job = f"spark-elastic-{uuid.uuid4().hex[:10]}"
    env = {"OUT_DIR": str(tmp_path), "BATCH": str(BATCH), "EPOCHS": "1", "KILL_STEP": "2"}
    with pytest.raises(shoal_spark.ShoalWorkerError, match=r"gave up after 1 restart\(s\)"):
        shoal_spark.run(df, WORKER, num_workers=2, elastic=True, min_workers=1, max_restarts=1, env=env,
                        timeout_s=90, net_timeout_s=20, cwd=repo, job_id=job, elastic_dir=str(tmp_path / "commits"))
    assert wait_no_processes(job) == []
    # the job's commit folder is removed when run returns
    assert not os.path.exists(tmp_path / "commits" / job)


def test_ps_stage_restarts_from_the_commit_when_a_worker_dies(cluster, repo, tmp_path):
    # rank 0 of stage 0 SIGKILLs itself after step 17; the two executors stay, so stage 1 has 2 workers again
    # and fresh parameter servers; its rank 0 starts from the step-15 commit held by the driver's store
    df = frame(cluster)
    job = f"spark-elastic-{uuid.uuid4().hex[:10]}"
    env = {"OUT_DIR": str(tmp_path), "BATCH": str(BATCH), "EPOCHS": "3", "COMMIT_EVERY": "5", "KILL_STEP": "17", "KILL_STAGE": "0"}
    res = shoal_spark.run(df, WORKER, num_workers=2, backend="ps", elastic=True, min_workers=1, max_restarts=1,
                          env=env, timeout_s=150, net_timeout_s=20, cwd=repo, job_id=job)
    assert [s["workers"] for s in res.stages] == [2, 2], res.stages
    assert "killed by signal 9" in res.stages[0]["error"], res.stages
    out = res.result
    assert [c["step"] for c in out["changes"]] == [15], out["changes"]
    assert out["changes"][0]["lost"][0]["rank"] == 0, out["changes"]
    check_against_reference(repo, tmp_path, out, [2, 2], 15)
    assert out["steps"] == 36
    assert wait_no_processes(job) == []


# last: it kills one of the module's two executors
def test_lost_executor_restarts_the_stage_with_fewer_workers_and_matches_the_reference(cluster, repo, tmp_path):
    df = frame(cluster)
    assert df.count() == ROWS
    job = f"spark-elastic-{uuid.uuid4().hex[:10]}"
    pause = str(tmp_path / "paused")
    env = {"OUT_DIR": str(tmp_path), "BATCH": str(BATCH), "EPOCHS": "3", "COMMIT_EVERY": "5", "PAUSE_STEP": "17", "PAUSE_FILE": pause}
    sc = cluster.sparkContext
    killed = []

    def kill_an_executor():
        # every rank waits at step 17 (the last commit: step 15); lose one executor's task there
        end = time.monotonic() + 150
        while not os.path.exists(pause) and time.monotonic() < end:
            time.sleep(0.2)
        if os.path.exists(pause):
            ids = str(sc._jsc.sc().getExecutorIds().mkString(",")).split(",")  # a Scala Seq
            killed.append(ids[0])
            sc._jsc.sc().killExecutor(ids[0])

    t = threading.Thread(target=kill_an_executor, daemon=True)
    t.start()
    res = shoal_spark.run(df, WORKER, num_workers=2, elastic=True, min_workers=1, max_workers=2, max_restarts=2,
                          env=env, timeout_s=150, net_timeout_s=20, cwd=repo, job_id=job)
    t.join(5)
    assert killed, "the workers never reached the pause step"
    # two stages: 2 workers (lost at step 17), then 1 worker on the executor left
    assert [s["workers"] for s in res.stages] == [2, 1], res.stages
    assert res.stages[0]["error"] and res.stages[1]["error"] is None, res.stages
    print(f"stages: {res.stages}")
    out = res.result
    assert out["stage"] == 1 and out["workers"] == 1
    # the new stage started from the commit of step 15 and told the user what was lost
    assert [c["step"] for c in out["changes"]] == [15], out["changes"]
    assert out["changes"][0]["workers"] == 1 and len(out["changes"][0]["lost"]) == 1, out["changes"]
    # the history covers every epoch, the ones of the lost stage included
    assert [e["epoch"] for e in out["history"]] == [0, 1, 2], out["history"]

    check_against_reference(repo, tmp_path, out, [2, 1], 15)
    # 15 steps with 2 workers, then the rest of epoch 1 (steps 3..23 of the 1-worker layout) and epoch 2
    assert out["steps"] == 15 + 21 + 24
    assert wait_no_processes(job) == []
