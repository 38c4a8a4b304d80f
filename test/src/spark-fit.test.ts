/**
 * shoal_spark.fit (python/tests/test_fit.py): a DataFrame with a Spark ML vector column trains the worker that
 * reads `worker.data()`, equal to `shoal run --data` on the Parquet Spark wrote; validation rows become val_*
 * metrics; a TypeScript worker runs under Spark; `logdir` gives every rank and every ps server its TensorBoard run.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-fit', title: 'shoal_spark.fit: ML vectors, equal to shoal run --data; validation_df; .mts worker; logdir (test_fit.py)', module: 'tests/test_fit.py', timeoutMs: 300_000, minPassed: 4 });
test.run();
