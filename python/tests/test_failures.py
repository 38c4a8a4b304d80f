"""Failures under shoal_spark.run on a real local Spark (local[2]): a failing, hung or unstartable worker and a
failing Spark input fail the job with a clear error, and no worker, store or server actor of the job survives
(checked in /proc by job id)."""

import json
import os
import signal
import threading
import time
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


def _server_pid(job_id: str, name: str):
    """Pid of the server actor `name` of job `job_id` (its actor spec, in its environment, names it)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if f'"name":"{name}"' in env and job_id in env:
            return int(pid)
    return None


def test_ps_durable_restarts_a_killed_server_and_ends_with_the_clean_weights(spark, repo, tmp_path):
    # ps_durable: the servers checkpoint every update, rank 0's store restarts a SIGKILLed one from its checkpoint and
    # the workers resend; the job ends with the weights of the same job without the kill (fault-worker's steps are
    # exact in float32, so bit for bit)
    df = spark.range(0, 100, numPartitions=2).selectExpr("cast(id as double) as x")

    def once(kill: bool):
        t = tag()
        prog = tmp_path / f"progress-{t}"
        prog.mkdir()
        out = tmp_path / f"weights-{t}.json"
        killed = []

        def killer():
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    if int((prog / "0").read_text() or "0") >= 10:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.01)
            pid = _server_pid(t, "ps-server-1")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        th = threading.Thread(target=killer, daemon=True)
        if kill:
            th.start()
        shoal_spark.run(df, "test/dist/fault-worker.js", num_workers=2, backend="ps", servers=2, ps_durable=str(tmp_path / "durable"),
                        env={"PROGRESS_DIR": str(prog), "OUT": str(out), "STEPS": "40", "STEP_MS": "20"},
                        cwd=repo, job_id=t, timeout_s=120, require_result=False)
        if kill:
            th.join(5)
        assert wait_no_processes(f"SHOAL_JOB_ID={t}") == []
        return json.loads(out.read_text()), killed

    clean, _ = once(False)
    faulty, killed = once(True)
    assert killed, "ps-server-1 was not found to kill"
    assert faulty == clean
    assert not any((tmp_path / "durable").iterdir()), "the job's checkpoint folder was not removed"


def test_ps_durable_is_refused_on_the_ring(spark, repo):
    df = spark.range(0, 10, numPartitions=2)
    with pytest.raises(ValueError, match="needs backend ps or hybrid"):
        shoal_spark.run(df, PROBE, ps_durable="/tmp/x", cwd=repo)


def test_a_consequence_is_told_by_its_message_not_by_a_stack_frame():
    # The tail of rank 1 after rank 0 was SIGKILLed: its last "error"-looking line is a stack frame whose path
    # says errors.ts. The telling line is the message, and the task waits for the root cause's task to report.
    from shoal_spark.task import failed_as_consequence, telling_line

    tail = [
        "ShoalError [ERR_PEER_CLOSED]: rank 0 (tcp://10.0.0.1:4100) closed the connection",
        "    at Object.peerClosed (/repo/core/src/errors.ts:64:5)",
        "'    at Object.peerClosed (/repo/core/src/errors.ts:64:5)\\n' +",
    ]
    assert telling_line(tail) == tail[0]
    assert failed_as_consequence(tail)
    own = ["Error: bad batch at row 7", "    at parse (/repo/worker.js:3:9)"]
    assert telling_line(own) == own[0]
    assert not failed_as_consequence(own)
    assert telling_line(["no error words here"]) == "no error words here"
