"""shoal_spark: run shoal training jobs inside Spark, fed from the DataFrame's partitions as Arrow.

    import shoal_spark
    fit = shoal_spark.fit(df, "train.js", feature_cols=["features"], label_cols=["label"], num_workers=2)
    fit.history               # per-epoch metrics; fit.model_path: where the worker saved the model
    res = shoal_spark.run(df, "train.js", num_workers=2, backend="ring", args=["--epochs", "3"])
    print(res.result)          # rank 0's SHOAL_RESULT {json}

Keep this package thin: it places workers (one Spark barrier task per rank), wires the rendezvous store and streams
each partition as Arrow; everything else happens in the TypeScript worker. See python/README.md.
"""

from .fit import VALIDATION_COLUMN, FitResult, fit
from .launcher import OUTPUT_DDL, ShoalResult, default_store_script, run
from .task import RESULT_MARKER, ShoalWorkerError

__all__ = ["fit", "FitResult", "VALIDATION_COLUMN", "run", "ShoalResult", "ShoalWorkerError", "RESULT_MARKER", "OUTPUT_DDL", "default_store_script"]
