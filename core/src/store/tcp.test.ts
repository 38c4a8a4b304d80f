import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { asText } from './store.js';
import { TcpStore } from './tcp.js';
import { TcpStoreServer } from './tcp-server.js';
import { expectCode, guard, later } from '../transport/conformance.js';
import { JobAuth } from '../security/job-auth.js';

/** This test job's identity: every store and transport connection authenticates with it. */
const auth = JobAuth.generate('test-job');

test('many clients rendezvous: each sets its address, all wait for all and read them', guard('many clients', 20_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  assert.match(server.url, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  const N = 16;
  const clients = await Promise.all(Array.from({ length: N }, () => TcpStore.connect(server.url, { auth, timeoutMs: 5_000 })));
  const keys = clients.map((_, r) => `addr/${r}`);
  await Promise.all(
    clients.map(async (c, r) => {
      const job = c.prefixed('job1');
      await new Promise((res) => setTimeout(res, (r * 7) % 40));
      await job.set(`addr/${r}`, `tcp://10.0.0.${r}:${5000 + r}`);
      await job.wait(keys, 5_000);
      for (let q = 0; q < N; q++) assert.is(asText(await job.get(`addr/${q}`)), `tcp://10.0.0.${q}:${5000 + q}`);
    }),
  );
  assert.is(server.clientCount, N);
  await Promise.all(clients.map((c) => c.close()));
  await server.close();
}));

test('a get issued before the set is answered by a push when another client sets the key', guard('wait before set', 10_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const [a, b] = await Promise.all([TcpStore.connect(server.url, { auth }), TcpStore.connect(server.url, { auth })]);
  const t0 = Date.now();
  const got = later(a.get('late', 5_000));
  const waited = later(a.wait(['late', 'late2'], 5_000));
  setTimeout(() => void b.set('late', new Uint8Array([0, 255, 7])), 100);
  assert.equal([...(await got)], [0, 255, 7]);
  assert.ok(Date.now() - t0 >= 90);
  await b.set('late2', 'x');
  await waited;
  const big = new Uint8Array(1 << 20).map((_, i) => (i * 13) & 0xff);
  await b.set('big', big);
  assert.equal(await a.get('big'), big);
  await Promise.all([a.close(), b.close()]);
  await server.close();
}));

test('add is atomic across clients and returns every intermediate value once', guard('add', 20_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const clients = await Promise.all(Array.from({ length: 8 }, () => TcpStore.connect(server.url, { auth })));
  const results = await Promise.all(clients.flatMap((c) => Array.from({ length: 50 }, () => c.add('counter', 1))));
  assert.equal([...results].sort((x, y) => x - y), Array.from({ length: 400 }, (_, i) => i + 1));
  assert.is(await clients[0]!.add('counter', -400), 0);
  assert.is(asText(await clients[1]!.get('counter')), '0');
  await clients[0]!.set('notnum', 'abc');
  await expectCode(clients[0]!.add('notnum', 1), 'ERR_DATA', 'add on a non-integer value');
  await Promise.all(clients.map((c) => c.close()));
  await server.close();
}));

test('timeouts name the missing keys (and only those)', guard('timeouts', 10_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const c = (await TcpStore.connect(server.url, { auth })).prefixed('job7');
  await c.set('present', '1');
  const t0 = Date.now();
  const e = await expectCode(c.wait(['present', 'absent-a', 'absent-b'], 150), 'ERR_TIMEOUT', 'wait for missing keys');
  assert.ok(Date.now() - t0 >= 140);
  assert.match(e.message, /job7\/absent-a, job7\/absent-b/);
  assert.not.match(e.message, /present/);
  const e2 = await expectCode(c.get('nope', 50), 'ERR_TIMEOUT', 'get of a missing key');
  assert.match(e2.message, /job7\/nope/);
  // The timed-out waits left nothing behind: a later set still works and a new get succeeds.
  await c.set('absent-a', 'now');
  assert.is(asText(await c.get('absent-a', 1_000)), 'now');
  await server.close();
}));

test('the server survives clients that disconnect mid-wait or send garbage', guard('client churn', 10_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const quitter = await TcpStore.connect(server.url, { auth });
  const abandoned = later(quitter.get('never', 5_000));
  await quitter.close();
  await expectCode(abandoned, 'ERR_CLOSED', 'get pending on a closed client');
  const { port } = new URL(server.url.replace('tcp:', 'http:'));
  const garbage = net.connect({ host: '127.0.0.1', port: Number(port) });
  garbage.on('error', () => {});
  await new Promise((r) => garbage.once('connect', r));
  garbage.write('this is not a frame at all');
  await new Promise((r) => garbage.once('close', r));
  const c = await TcpStore.connect(server.url, { auth });
  await c.set('k', 'v');
  assert.is(asText(await c.get('k')), 'v');
  await new Promise((r) => setTimeout(r, 20));
  assert.is(server.clientCount, 1);
  await c.close();
  await server.close();
}));

test('a client whose server dies gets ERR_PEER_CLOSED on pending and later calls', guard('server death', 10_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const c = await TcpStore.connect(server.url, { auth });
  const pending = later(c.get('never', 5_000));
  await server.close();
  const e = await expectCode(pending, 'ERR_PEER_CLOSED', 'get pending when the server dies');
  assert.match(e.message, /store tcp:\/\/127\.0\.0\.1:\d+/);
  await expectCode(c.set('x', 'y'), 'ERR_PEER_CLOSED', 'set after the server died');
  await c.close();
}));

test('connect retries until the server is up, and times out when it never comes', guard('connect', 15_000, async () => {
  const probe = await TcpStoreServer.start({ auth });
  const url = probe.url;
  const port = Number(url.split(':').pop());
  await probe.close();
  const t0 = Date.now();
  await expectCode(TcpStore.connect(url, { auth, connectTimeoutMs: 300 }), 'ERR_TIMEOUT', 'connect with no server');
  assert.ok(Date.now() - t0 < 2_000);
  const connecting = later(TcpStore.connect(url, { auth, connectTimeoutMs: 5_000 }));
  await new Promise((r) => setTimeout(r, 200));
  const server = await TcpStoreServer.start({ auth, port });
  const c = await connecting;
  assert.is(await c.add('n', 5), 5);
  await c.close();
  await server.close();
}));

test('infinite timeouts mean no limit (not a timer overflow that fires at once)', guard('infinite', 10_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const c = await TcpStore.connect(server.url, { auth, connectTimeoutMs: Infinity, timeoutMs: Infinity });
  const got = later(c.get('slow', Infinity));
  const waited = later(c.wait(['slow']));
  await new Promise((r) => setTimeout(r, 150));
  await c.set('slow', 'ok');
  assert.is(asText(await got), 'ok');
  await waited;
  await c.close();
  await server.close();
}));

test.run();
