import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryNetwork } from './memory.js';
import { MemoryStore } from '../store/memory.js';

test('memory pair delivers whole messages in order', async () => {
  const t = new MemoryNetwork().transport();
  const l = await t.listen('mem://a');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  await b.send(new Uint8Array([1, 2, 3]));
  await b.send(new Uint8Array(0));
  assert.equal([...(await a.recv())], [1, 2, 3]);
  assert.is((await a.recv()).byteLength, 0);
  await a.close();
  try {
    await b.recv({ timeoutMs: 1000 });
    assert.unreachable('recv after peer close must reject');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_PEER_CLOSED');
  }
});

test('memory store waits for keys and times out naming them', async () => {
  const s = new MemoryStore().prefixed('job');
  setTimeout(() => void s.set('x', 'hello'), 5);
  assert.is(new TextDecoder().decode(await s.get('x', 1000)), 'hello');
  try {
    await s.wait(['missing'], 20);
    assert.unreachable();
  } catch (e) {
    assert.match(String(e), /job\/missing/);
  }
});

test('a timeout beyond what Node timers hold is treated as unbounded, not as 1 ms', async () => {
  const t = new MemoryNetwork().transport();
  const l = await t.listen('mem://');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const got = a.recv({ timeoutMs: 2 ** 31 + 5 });
  await new Promise((r) => setTimeout(r, 30));
  await b.send(new Uint8Array([9]));
  assert.equal([...(await got)], [9]);
});

test('memory send copies a Buffer (Buffer#slice would share the caller\'s bytes)', async () => {
  const t = new MemoryNetwork().transport();
  const l = await t.listen('mem://');
  const [b, a] = await Promise.all([t.dial(l.url), l.accept()]);
  const buf = Buffer.from([1, 2, 3]);
  await b.send(buf);
  buf[0] = 99;
  assert.equal([...(await a.recv())], [1, 2, 3]);
});

test.run();
