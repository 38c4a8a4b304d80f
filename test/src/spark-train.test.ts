/**
 * Real training from Spark (python/tests/test_train.py): the digits MLP with 2 workers on ring, ps and hybrid, fed by
 * shoal_spark.run, equals `shoal run` of the same script over the Parquet files Spark wrote (within 1e-5); the
 * Spark-written Parquet is read back by the datasets package.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-train', title: 'Spark-fed training equals shoal run on Spark-written Parquet; Parquet read back (test_train.py)', module: 'tests/test_train.py', timeoutMs: 360_000, minPassed: 4 });
test.run();
