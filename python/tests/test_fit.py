"""shoal_spark.fit, Orca-style: the digits MLP worker test/dist/fit-worker.js (which reads its data with
`worker.data({ features: ['pixels'], label: 'label' })`) fed a DataFrame whose `pixels` is a Spark ML vector,
equals `shoal run --data DIR` of the same script over the Parquet files Spark wrote; validation rows become
val_* metrics; a TypeScript worker runs under Spark too."""

import json
import os
import shutil
import subprocess

import pytest

import shoal_spark
from conftest import digits_columns

WORKER = "test/dist/fit-worker.js"
ROWS = 800  # 400 per partition: 12 steps of 32 per rank and epoch


@pytest.fixture(scope="module")
def digits_vec(spark, repo):
    import pandas as pd
    from pyspark.ml.feature import VectorAssembler

    df = spark.createDataFrame(pd.DataFrame(digits_columns(repo, ROWS))).coalesce(1)
    df = VectorAssembler(inputCols=[f"p{i}" for i in range(64)], outputCol="pixels").transform(df).select("pixels", "label")
    df = df.repartition(2).cache()
    assert df.rdd.getNumPartitions() == 2 and df.count() == ROWS
    return df


def test_fit_on_ml_vectors_equals_shoal_run_data_on_the_written_parquet(digits_vec, repo, tmp_path):
    from pyspark.ml.functions import vector_to_array

    res = shoal_spark.fit(digits_vec, WORKER, feature_cols=["pixels"], label_cols="label", num_workers=2, args=["--epochs", "3"], timeout_s=180, cwd=repo)
    assert isinstance(res, shoal_spark.FitResult)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    assert res.history[-1]["loss"] < res.history[0]["loss"] * 0.8, res.history
    assert res.model_path is None and res.result["steps"] == 12 and res.result["rows"] == 400
    assert [r["rows"] for r in res.ranks] == [400, 400]

    # The same worker under `shoal run --data` on what Spark wrote: arrays (vector_to_array), and the ML vectors
    # themselves (struct<type, size, indices, values> in Parquet, read as dense vectors by worker.data()).
    arrays, vectors = str(tmp_path / "arrays.parquet"), str(tmp_path / "vectors.parquet")
    digits_vec.select(vector_to_array("pixels", "float32").alias("pixels"), "label").write.parquet(arrays)
    digits_vec.write.parquet(vectors)
    for out in (arrays, vectors):
        p = subprocess.run(["node", "run/dist/launcher/cli.js", "run", "-n", "2", "--data", out, WORKER, "--epochs", "3"], cwd=repo, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
        ref = json.loads(next(ln for ln in p.stdout.splitlines() if "SHOAL_RESULT " in ln).split("SHOAL_RESULT ", 1)[1])
        diff = max(abs(a - b) for a, b in zip(res.result["weights"], ref["weights"]))
        assert len(res.result["weights"]) == len(ref["weights"]) and diff <= 1e-5, (out, diff)
        assert abs(res.history[-1]["loss"] - ref["history"][-1]["loss"]) <= 1e-5


def test_fit_with_validation_df_from_a_typescript_worker(digits_vec, repo, tmp_path):
    train, val = digits_vec.randomSplit([0.8, 0.2], seed=7)
    n_val = val.count()
    ts = os.path.join(repo, "test", "dist", "fit-worker-spark.mts")
    shutil.copyfile(os.path.join(repo, "test", "src", "fit-worker.ts"), ts)
    try:
        save = str(tmp_path / "model")
        res = shoal_spark.fit(train, ts, feature_cols="pixels", label_cols=["label"], validation_df=val, num_workers=2,
                              args=["--epochs", "2", "--save", save], timeout_s=180, cwd=repo)
    finally:
        os.remove(ts)
    assert len(res.history) == 2
    for h in res.history:
        assert "val_loss" in h and "val_accuracy" in h, h
    assert 0 < res.result["validationRows"] < n_val  # rank 0's share of the validation rows
    assert res.model_path == save and os.path.isfile(os.path.join(save, "model.json"))


def test_fit_argument_errors(digits_vec, repo):
    with pytest.raises(ValueError, match="label_cols must name one column"):
        shoal_spark.fit(digits_vec, WORKER, feature_cols=["pixels"], label_cols=["label", "pixels"], num_workers=2, cwd=repo)
    with pytest.raises(ValueError, match="df has no column 'nope' \\(have: pixels, label\\)"):
        shoal_spark.fit(digits_vec, WORKER, feature_cols=["nope"], label_cols="label", num_workers=2, cwd=repo)


def test_fit_with_logdir_writes_the_ranks_and_the_servers_tensorboard_runs(digits_vec, repo, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

    def scalars(run):
        acc = event_accumulator.EventAccumulator(os.path.join(logdir, run), size_guidance={"scalars": 0})
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    logdir = str(tmp_path / "tb")
    res = shoal_spark.fit(digits_vec, WORKER, feature_cols="pixels", label_cols="label", num_workers=2, backend="ps", servers=2,
                          args=["--epochs", "2"], timeout_s=180, cwd=repo, logdir=logdir)
    assert len(res.history) == 2
    assert sorted(os.listdir(logdir)) == ["rank-0", "rank-1", "server-0", "server-1", "train"]
    train = scalars("train")
    assert [s for s, _ in train["epoch_loss"]] == [1, 2]
    assert abs(train["epoch_loss"][-1][1] - res.history[-1]["loss"]) <= 1e-6 * max(1.0, abs(res.history[-1]["loss"]))
    for server in ("server-0", "server-1"):
        got = scalars(server)
        # 2 epochs x 12 steps, each updating every key slice the server holds at least once
        assert got["server/rounds_total"][-1][1] >= 24, (server, got["server/rounds_total"])
        assert got["server/bytes_in_total"][-1][1] > 0 and got["server/bytes_out_total"][-1][1] > 0, server
        assert "server/queue_depth_mean" in got and "server/apply_ms_per_round" in got, sorted(got)
    with pytest.raises(ValueError, match="logdir must be a folder path"):
        shoal_spark.fit(digits_vec, WORKER, feature_cols="pixels", label_cols="label", num_workers=2, cwd=repo, logdir="")
