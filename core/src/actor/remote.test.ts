import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryNetwork } from '../transport/memory.js';
import { MemoryStore } from '../store/memory.js';
import { ActorClient } from './actor-handle.js';
import { ActorServer } from './actor-server.js';
import { arg, remoteMethods } from './remote.js';
import { CounterActor } from './testing/counter-actor.js';

async function serve(instance: object, name = 'counter') {
  const net = new MemoryNetwork();
  const store = new MemoryStore();
  const server = await ActorServer.start(instance, { name, epoch: 1, store, transport: net.transport(), listenUrl: 'mem://auto', mailbox: 'reentrant' });
  const client = await ActorClient.connect<CounterActor>(name, { store, transport: net.transport(), timeoutMs: 5000 });
  return {
    client,
    close: async () => {
      await client.close();
      await server.stop();
    },
  };
}

async function errorOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('the call succeeded');
}

test('a method not declared remote is refused: private helpers, hooks, Object methods, prototype tricks', async () => {
  const inst = new CounterActor(5);
  const { client, close } = await serve(inst);
  try {
    for (const m of ['_secret', 'onActorStart', 'constructor', 'toString', '__proto__', 'hasOwnProperty', 'nope']) {
      const e = await errorOf(client.call(m, []));
      assert.match(e.message, /not a remote method of actor counter/, m);
    }
    // a method name that is not a string: still an error reply, and the actor keeps serving
    assert.match((await errorOf(client.call(42 as unknown as string, []))).message, /not a remote method/);
    assert.is(await client.api.value(), 5, 'nothing ran, the actor is unchanged and alive');
  } finally {
    await close();
  }
});

test('every remote method called with wrong argument types gets an error reply and has no side effect', async () => {
  const inst = new CounterActor(5);
  const { client, close } = await serve(inst);
  const wrong: Record<string, unknown[][]> = {
    add: [['1'], [null], [Number.NaN], [1, 7], [1, 'tag', 'extra'], []],
    value: [[1]],
    calls: [['x']],
    whoami: [[{}]],
    scale: [[[1, 2], 2, Int32Array.of(1)], [Float32Array.of(1), '2', Int32Array.of(1)], [Float32Array.of(1), 2, [1]], [Float32Array.of(1)]],
    slow: [[-1, 'x'], [1.5, 'x'], [10, 3], ['10', 'x']],
    fail: [[undefined], [{ message: 'x' }]],
    crash: [['9'], [-1], [1000]],
  };
  try {
    assert.equal(Object.keys(wrong).sort(), Object.keys(CounterActor.remote).sort(), 'every remote method is covered');
    for (const [m, calls] of Object.entries(wrong)) {
      for (const args of calls) {
        const e = await errorOf(client.call(m, args));
        assert.is((e as { code?: string }).code, 'ERR_REMOTE', `${m}(${args.map(String).join(', ')})`);
        assert.match(e.message, new RegExp(`counter\\.${m} argument|arguments of counter\\.${m}`), `${m}: ${e.message}`);
      }
    }
    assert.is(await client.api.value(), 5, 'no bad call changed the state');
    assert.equal(await client.api.calls(), []);
    assert.is(await client.api.add(2, 'ok'), 7, 'good calls still work');
  } finally {
    await close();
  }
});

test('a class that declares no remote methods is not served; a spec naming a hook or a non-method is refused', async () => {
  class Bare {
    ping(): number {
      return 1;
    }
  }
  await errorOf(serve(new Bare(), 'bare')).then((e) => assert.match(e.message, /declares no remote methods/));
  class Hooky {
    static readonly remote = remoteMethods<Hooky>({ onCallerClosed: [arg.string()] });
    onCallerClosed(): void {}
  }
  await errorOf(serve(new Hooky(), 'hooky')).then((e) => assert.match(e.message, /lifecycle hook/));
  class Ghost {
    static readonly remote = { missing: [] };
  }
  await errorOf(serve(new Ghost(), 'ghost')).then((e) => assert.match(e.message, /not a method/));
});

test('arg checks name the argument and the problem', () => {
  assert.throws(() => arg.int(0, 3)(4, 'x.rank'), /x\.rank must be an integer in \[0, 3\], got 4/);
  assert.throws(() => arg.array(arg.string())(['a', 2], 'keys'), /keys\[1\] must be a string/);
  assert.throws(() => arg.object({ key: arg.string() })({ key: 1 }, 'e'), /e\.key must be a string/);
  assert.throws(() => arg.floatArray()(new Int32Array(2), 'g'), /g must be a Float32Array or Float64Array, got Int32Array\[2\]/);
  assert.throws(() => arg.oneOf('a', 'b')('c', 'm'), /m must be one of "a", "b", got "c"/);
  arg.nullable(arg.floatArray())(null, 'g');
  arg.optional(arg.int())(undefined, 'r');
});

test.run();
