"""`pip install ./python` in a fresh virtualenv (system site packages: pyspark and pyarrow need no download):
shoal_spark imports from the venv, not the checkout, outside the repository; without SHOAL_HOME and without an
npm-installed @shoal/run it says how to point it at the Node side; with SHOAL_HOME it trains a 2-worker job."""

import os
import subprocess
import sys
import textwrap

import pytest


@pytest.fixture(scope="module")
def venv(repo, tmp_path_factory):
    d = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(d)], check=True, timeout=120)
    py = str(d / "bin" / "python")
    # A build copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    src = tmp_path_factory.mktemp("src")
    subprocess.run(["cp", "-r", os.path.join(repo, "python", "pyproject.toml"), os.path.join(repo, "python", "README.md"),
                    os.path.join(repo, "python", "shoal_spark"), str(src)], check=True)
    p = subprocess.run([py, "-m", "pip", "install", "-q", "--no-input", str(src)], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return py


def test_installed_package_finds_the_node_side_or_says_how(venv, repo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SHOAL_HOME", "PYTHONPATH")}
    code = "import shoal_spark; print(shoal_spark.__file__)"
    p = subprocess.run([venv, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith(os.path.dirname(os.path.dirname(venv))) and repo not in p.stdout
    p = subprocess.run([venv, "-c", "import shoal_spark.launcher as l; l.shoal_home()"], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "npm install @shoal/run" in p.stderr and "SHOAL_HOME" in p.stderr, p.stderr[-2000:]


def test_installed_package_trains_with_shoal_home(venv, repo, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from pyspark.sql import SparkSession
        import pandas as pd, numpy as np
        import shoal_spark
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.pyspark.python", sys.executable).getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        raw = pd.read_csv({os.path.join(repo, "data", "digits", "digits.csv.gz")!r}, header=None).to_numpy()[:256]
        pdf = pd.DataFrame({{"pixels": [[float(v) for v in r[:64] / 16.0] for r in raw], "label": raw[:, 64].astype(np.int32)}})
        df = spark.createDataFrame(pdf).repartition(2)
        res = shoal_spark.fit(df, {os.path.join(repo, WORKER)!r}, feature_cols=["pixels"], label_cols="label", num_workers=2, args=["--epochs", "2"], timeout_s=120)
        print("EPOCHS", len(res.history), res.result["steps"])
        spark.stop()
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SHOAL_HOME=repo, SPARK_LOCAL_IP="127.0.0.1")
    p = subprocess.run([venv, "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "EPOCHS 2 4" in p.stdout, p.stdout


WORKER = "test/dist/fit-worker.js"
