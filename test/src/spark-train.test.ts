/**
 * Real training from Spark (python/tests/test_train.py): the digits MLP with 2 workers on ring, ps and hybrid, fed by
 * shoal_spark.run, equals `shoal run` of the same script over the Parquet files Spark wrote (within 1e-5); the
 * Spark-written Parquet is read back by the datasets package.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-train] SKIPPED: ${skip}`);
  test.skip('shoal_spark training pytest suite', () => {});
} else {
  test('Spark-fed training equals shoal run on Spark-written Parquet; Parquet read back (test_train.py)', async () => {
    const r = await runPytest('tests/test_train.py', 360_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 4, `expected >= 4 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
