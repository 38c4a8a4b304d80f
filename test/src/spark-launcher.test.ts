/**
 * shoal_spark.run on a real local Spark (python/tests/test_launcher.py): partitions streamed as Arrow into workers
 * that join one job and do a ring pass; repartitioning; an empty partition; argument checks.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-launcher', title: 'shoal_spark launcher pytest suite passes (test_launcher.py)', module: 'tests/test_launcher.py', timeoutMs: 300_000, minPassed: 4 });
test.run();
