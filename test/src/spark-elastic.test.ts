/**
 * Elastic training on Spark (python/tests/test_elastic.py, `local-cluster[2,1,1024]`): an executor killed at step 17
 * fails the barrier stage, the driver restarts it on the executor left, the new worker resumes from the step-15
 * commit held by the driver's store, and the final weights equal a one-process reference that followed the same
 * membership schedule over the same batches (within 1e-4 relative); the same on the ps backend after a worker
 * SIGKILLs itself (2 workers again, fresh servers); a job that keeps failing gives up after max_restarts; argument
 * errors. No process of the jobs is left.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-elastic', title: 'shoal_spark elastic pytest suite passes (test_elastic.py)', module: 'tests/test_elastic.py', timeoutMs: 600_000, minPassed: 9 });
test.run();
