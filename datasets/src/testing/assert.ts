/** Assertions shared by the datasets tests (not exported from the package). */
import * as assert from 'uvu/assert';
import { isShoalError } from '@shoal/core';

/** `p` must reject with ERR_DATA whose message matches `re` (the file, column or line it names). */
export async function expectData(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_DATA'), `expected ERR_DATA, got ${String(e)}`);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable('expected an ERR_DATA');
}
