import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Errors, isShoalError, ShoalError } from './errors.js';

test('Errors.invalidArg: a RangeError with code ERR_INVALID_ARG and the argument named in its context', () => {
  const e = Errors.invalidArg('options.timeoutMs', 'must be > 0, got -1');
  assert.instance(e, RangeError);
  assert.is(e.code, 'ERR_INVALID_ARG');
  assert.is(e.message, 'options.timeoutMs must be > 0, got -1');
  assert.equal(e.context, { name: 'options.timeoutMs' });
  assert.ok(isShoalError(e));
  assert.ok(isShoalError(e, 'ERR_INVALID_ARG'));
  assert.not.ok(isShoalError(e, 'ERR_CONFIG'));
});

test('the other factories are ShoalErrors with their codes; plain errors are not shoal errors', () => {
  assert.ok(isShoalError(Errors.config('SHOAL_RANK', 'missing'), 'ERR_CONFIG'));
  assert.instance(Errors.timeout('x', 5), ShoalError);
  assert.not.ok(isShoalError(new RangeError('x')));
});

test.run();
