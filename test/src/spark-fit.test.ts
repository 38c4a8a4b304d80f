/**
 * shoal_spark.fit (python/tests/test_fit.py): a DataFrame with a Spark ML vector column trains the worker that
 * reads `worker.data()`, equal to `shoal run --data` on the Parquet Spark wrote; validation rows become val_*
 * metrics; a TypeScript worker runs under Spark; `logdir` gives every rank and every ps server its TensorBoard run.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-fit] SKIPPED: ${skip}`);
  test.skip('shoal_spark.fit pytest suite', () => {});
} else {
  test('shoal_spark.fit: ML vectors, equal to shoal run --data; validation_df; .mts worker; logdir (test_fit.py)', async () => {
    const r = await runPytest('tests/test_fit.py', 300_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 4, `expected >= 4 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
