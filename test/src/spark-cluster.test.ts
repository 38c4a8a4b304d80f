/**
 * shoal_spark.run on `local-cluster[2,1,1024]` (two executor JVMs): python/tests/test_cluster.py.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-cluster] SKIPPED: ${skip}`);
  test.skip('shoal_spark local-cluster pytest suite', () => {});
} else {
  test('shoal_spark on local-cluster[2,1,1024] passes (test_cluster.py)', async () => {
    const r = await runPytest('tests/test_cluster.py', 240_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 2, `expected >= 2 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
