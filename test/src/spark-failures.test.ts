/**
 * Failures under shoal_spark.run on a real local Spark (python/tests/test_failures.py): a failing worker fails the
 * job with its rank and message, a hung one is killed at the deadline, a missing node binary and a broken Spark
 * input are clear errors, and no worker, store or ps server actor of the job is left in the process table.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-failures', title: 'shoal_spark failure pytest suite passes (test_failures.py)', module: 'tests/test_failures.py', timeoutMs: 300_000, minPassed: 5 });
test.run();
