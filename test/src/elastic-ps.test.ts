/**
 * Issue #16, elastic training on the ps and hybrid engines (`shoal run --elastic --backend ps|hybrid`): each
 * membership generation gets parameter servers of its own; after a SIGKILL at step 25 (and, on ps, a replacement
 * joining) the workers end bit-identical and equal (to float rounding) to the membership-schedule reference.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertSameWeights, reference, run } from './elastic-helpers.js';
import { maxRelDiff } from './train-helpers.js';

for (const backend of ['ps', 'hybrid'] as const) {
  test(`elastic ${backend}: each generation gets its own servers; after a kill at step 25${backend === 'ps' ? ' and a replacement' : ''} the workers end bit-equal and match the reference`, async () => {
    // ps: a replacement too; hybrid: the loss alone (its ring half is the ring's, tested above)
    const replace = backend === 'ps';
    const { result, outs, stderr, leftovers } = await run({ backend, elastic: { minWorkers: 2, maxWorkers: 3, replacements: replace ? 1 : 0 } }, { KILL_WORKER: '2', KILL_STEP: '25', COMMIT_EVERY: '10', ...(replace ? { STEP_DELAY_MS: '40' } : {}) });
    assert.is(result.code, 0, `${result.error}\n${stderr}`);
    assert.equal(result.elastic?.lost.map((l) => l.workerId), [2]);
    assert.equal(result.elastic?.joined, replace ? [3] : []);
    assert.equal(outs.map((o) => o.id), replace ? [0, 1, 3] : [0, 1]);
    assertSameWeights(outs);
    const join = outs[0]!.changes[1];
    const ref = reference(`0:3,20:2${join ? `,${join.step}:3` : ''}`);
    assert.is(outs[0]!.steps, ref.steps);
    const d = maxRelDiff(outs[0]!.weights, ref.weights);
    assert.ok(d < 1e-4, `max relative difference from the reference ${d}`);
    assert.equal(leftovers, []);
    // generation 0's servers stop while the job runs, once every live worker has entered a later generation
    // (not at a fixed generation count: members keep using g after a join until their next commit)
    assert.match(stderr, /generation 0's \d server\(s\) stop: no live worker uses them/);
    if (replace) assert.match(stderr, /generation 1's \d server\(s\) stop: no live worker uses them/);
  });
}

test.run();
