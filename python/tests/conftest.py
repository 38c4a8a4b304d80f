"""Shared fixtures: one local SparkSession per test module (Spark start-up costs seconds), the repo paths.

Tests need the TypeScript side built (`npx tsc -b`): the store entry run/dist/launcher/spark-store.js and the
worker scripts under test/dist/. pyspark missing makes the whole run skip with a clear reason.
"""

import os
import sys
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python"))

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -r requirements.txt)")


def pytest_configure(config):
    # Spark picks a non-loopback address when the host name resolves to loopback; keep every socket on loopback.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def repo():
    return REPO


def make_session(master: str, **conf):
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
    b = (
        SparkSession.builder.master(master)
        .appName("shoal-spark-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
        .config("spark.pyspark.python", sys.executable)
    )
    for k, v in conf.items():
        b = b.config(k, v)
    s = b.getOrCreate()
    s.sparkContext.setLogLevel("ERROR")
    return s


@pytest.fixture(scope="module")
def spark():
    s = make_session("local[2]")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cluster():
    """`local-cluster[2,1,1024]`: a standalone master and two executor JVMs (one core each), so two ranks run in
    different executors and Python workers, as on a real cluster."""
    s = make_session("local-cluster[2,1,1024]", **{"spark.executor.memory": "512m"})
    app_id = s.sparkContext.applicationId
    yield s
    s.stop()
    # local-cluster workers keep executor logs in $SPARK_HOME/work/<app id> (SPARK_WORKER_DIR is not read in this
    # mode): remove this application's folder so the test leaves nothing behind in the pyspark install.
    import shutil

    from pyspark.find_spark_home import _find_spark_home

    work = os.path.join(_find_spark_home(), "work")
    shutil.rmtree(os.path.join(work, app_id), ignore_errors=True)
    try:
        os.rmdir(work)
    except OSError:
        pass


def digits_columns(repo: str, rows: int) -> dict:
    """The first `rows` rows of data/digits as columns p0..p63 (pixels / 16, float64) and `label` (int32)."""
    import numpy as np
    import pandas as pd

    raw = pd.read_csv(os.path.join(repo, "data", "digits", "digits.csv.gz"), header=None).to_numpy()[:rows]
    cols = {f"p{i}": (raw[:, i] / 16.0).astype(np.float64) for i in range(64)}
    cols["label"] = raw[:, 64].astype(np.int32)
    return cols


def node_processes(marker: str):
    """Pids of live processes whose command line or environment contains `marker` (zombies excluded). A job's
    workers, store and server actors all carry `SHOAL_JOB_ID=<job id>` in their environment."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if (marker in cmd or marker in env.split("\0")) and state != b"Z":
            out.append((int(pid), cmd))
    return out


def wait_no_processes(marker: str, timeout_s: float = 15.0):
    """Poll until no process matching `marker` is left; return the survivors after `timeout_s` (empty = good)."""
    end = time.monotonic() + timeout_s
    while True:
        left = node_processes(marker)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)
