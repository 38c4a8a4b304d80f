import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseWorkerOptions } from './config.js';

const base = { SHOAL_RANK: '0', SHOAL_WORLD_SIZE: '1' };

test('SHOAL_PS_PLACEMENT: worker puts the servers in rank 0, process (or unset) is the default, anything else is ERR_CONFIG naming it', () => {
  assert.is(parseWorkerOptions({ ...base, SHOAL_PS_PLACEMENT: 'worker' }).psPlacement, 'worker');
  assert.is(parseWorkerOptions({ ...base, SHOAL_PS_PLACEMENT: 'process' }).psPlacement, undefined);
  assert.is(parseWorkerOptions(base).psPlacement, undefined);
  assert.throws(() => parseWorkerOptions({ ...base, SHOAL_PS_PLACEMENT: 'thread' }), (e: Error & { code?: string }) => e.code === 'ERR_CONFIG' && /SHOAL_PS_PLACEMENT/.test(e.message));
});

test.run();
