/**
 * shoal_spark.run on `local-cluster[2,1,1024]` (two executor JVMs): python/tests/test_cluster.py.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-cluster', title: 'shoal_spark on local-cluster[2,1,1024] passes (test_cluster.py)', module: 'tests/test_cluster.py', timeoutMs: 240_000, minPassed: 2 });
test.run();
