"""`fit(df, script, feature_cols, label_cols, ...)`: Orca-style training on a DataFrame, one call.

The worker script reads its data with `await worker.data({ features, label })` (or with no columns named: the
ones given here arrive as SHOAL_FEATURES / SHOAL_LABEL) and reports with `worker.result({ history, model })`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from .launcher import run

#: The flag column that carries validation rows to the workers (1 = validation, 0 = training); `worker.data()`
#: holds the flagged rows apart (datasets/src/training-data.ts VALIDATION_COLUMN).
VALIDATION_COLUMN = "shoal_validation"


@dataclass
class FitResult:
    """What `fit` returns.

    history: one dict per epoch, as the Trainer logged it (rank-averaged `loss`, metrics, `val_*` with validation
             data, `epoch`, `seconds`, ...): the `history` of rank 0's `worker.result(...)`, [] if it gave none.
    model_path: where the worker saved the model (the `model` it reported), or None.
    result: rank 0's whole SHOAL_RESULT object.
    ranks: per-rank rows of the Spark job (see `ShoalResult.ranks`); wall_s: the job's driver-side time.
    """

    history: List[Dict[str, Any]]
    model_path: Optional[str]
    result: Dict[str, Any]
    ranks: List[Dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


def _as_list(name: str, v: Union[str, Sequence[str]]) -> List[str]:
    cols = [v] if isinstance(v, str) else list(v)
    if not cols or any(not isinstance(c, str) or not c for c in cols):
        raise ValueError(f"{name} must be a column name or a non-empty list of them, got {v!r}")
    return cols


def _select(df: Any, cols: List[str], where: str) -> Any:
    """`df` reduced to `cols`, Spark ML vectors turned into float32 arrays (the worker sees list<float>)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    have = df.columns
    missing = [c for c in cols if c not in have]
    if missing:
        raise ValueError(f"{where} has no column {missing[0]!r} (have: {', '.join(have)})")
    types = {f.name: f.dataType for f in df.schema.fields}
    return df.select(*[vector_to_array(F.col(c), "float32").alias(c) if isinstance(types[c], VectorUDT) else F.col(c) for c in cols])


def fit(
    df: Any,
    script: str,
    feature_cols: Union[str, Sequence[str]],
    label_cols: Union[str, Sequence[str]],
    validation_df: Any = None,
    num_workers: Optional[int] = None,
    backend: str = "ring",
    args: Sequence[str] = (),
    **run_options: Any,
) -> FitResult:
    """Train `script` on `df` with `num_workers` shoal workers placed on Spark, as `run` does (see its doc for
    `backend`, `args` and the other keyword options), but fed only `feature_cols` and `label_cols`.

    Spark ML vector columns (VectorUDT) are converted to float32 arrays (`vector_to_array`); array columns pass
    as they are; the worker's `worker.data()` turns each row's features into one float32 vector. One label
    column. With `validation_df` (same columns), its rows travel with the training rows, flagged in a
    `shoal_validation` column, spread over the workers (both are repartitioned to `num_workers` together), and
    the Trainer scores them after every epoch (`val_*` in the history).

    Returns a FitResult. Raises ValueError for a missing column or bad arguments, ShoalWorkerError when a worker
    fails, and ValueError when the worker reported no result.
    """
    from pyspark.sql import functions as F

    features = _as_list("feature_cols", feature_cols)
    labels = _as_list("label_cols", label_cols)
    if len(labels) != 1:
        raise ValueError(f"label_cols must name one column (combine several with F.array), got {labels!r}")
    cols = features + [c for c in labels if c not in features]
    data = _select(df, cols, "df")
    n = num_workers if num_workers is not None else data.rdd.getNumPartitions()
    if validation_df is not None:
        val = _select(validation_df, cols, "validation_df")
        flag = F.lit(1).cast("byte")
        data = data.withColumn(VALIDATION_COLUMN, F.lit(0).cast("byte")).unionByName(val.withColumn(VALIDATION_COLUMN, flag))
        if isinstance(n, int) and n >= 1:
            data = data.repartition(n)
    env = dict(run_options.pop("env", None) or {})
    env.update({"SHOAL_FEATURES": ",".join(features), "SHOAL_LABEL": labels[0]})
    res = run(data, script, num_workers=n, backend=backend, args=args, env=env, **run_options)
    result = res.result or {}
    history = result.get("history") or []
    if isinstance(history, dict):  # a Trainer History object printed as is
        history = history.get("epochs") or []
    return FitResult(history=list(history), model_path=result.get("model"), result=result, ranks=res.ranks, wall_s=res.wall_s)
