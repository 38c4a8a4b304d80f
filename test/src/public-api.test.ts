import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ROOT } from './train-helpers.js';

// Issue #14 part 3: each package's entry names its public API (no `export *`), and test kits live under
// `/testing` subpaths, so importing a package never loads uvu (a dev dependency).

const PACKAGES = ['core', 'datasets', 'backends', 'wrappers', 'run'] as const;

// A resolve hook that refuses uvu: importing an entry that reaches uvu fails, naming the importer.
const HOOKS = `export async function resolve(s, c, next) {
  if (s === 'uvu' || s.startsWith('uvu/')) throw new Error('LOADED-UVU from ' + c.parentURL);
  return next(s, c);
}`;
const REGISTER = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});`;

function importWithoutUvu(specifier: string) {
  return spawnSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(REGISTER)}`, '--input-type=module', '-e', `await import(${JSON.stringify(specifier)});`], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
}

for (const p of PACKAGES) {
  test(`importing @shoal/${p} does not load uvu`, () => {
    const r = importWithoutUvu(`@shoal/${p}`);
    assert.is(r.status, 0, r.stderr);
  });
}

test('the hook does catch a test kit: @shoal/backends/testing and @shoal/core/testing load uvu', () => {
  for (const kit of ['@shoal/backends/testing', '@shoal/core/testing']) {
    const r = importWithoutUvu(kit);
    assert.is.not(r.status, 0, kit);
    assert.match(r.stderr, /LOADED-UVU from file:.*compliance\.js|LOADED-UVU from file:.*conformance\.js/);
  }
});

test('package entries name their exports: no `export *`', () => {
  for (const p of PACKAGES) {
    const src = readFileSync(`${ROOT}${p}/src/index.ts`, 'utf8');
    assert.not.match(src, /^export \* from/m, `${p}/src/index.ts`);
  }
});

test('what user code imports is there: the entry points of a training script and of the launcher', async () => {
  const run = await import('@shoal/run');
  const wrappers = await import('@shoal/wrappers');
  const backends = await import('@shoal/backends');
  for (const [mod, names] of [
    [run, ['initWorker', 'launch', 'joinJob', 'sparkInput']],
    [wrappers, ['Trainer', 'setupTfjs', 'GradientBridge', 'OnnxModel']],
    [backends, ['RingSync', 'PsSync', 'HybridSync', 'LocalSync', 'KVWorker', 'startPsServers', 'ServerTables']],
  ] as const) {
    for (const n of names) assert.type((mod as Record<string, unknown>)[n], 'function', n);
  }
  assert.is((backends as Record<string, unknown>).gradientSyncCompliance, undefined, 'the compliance suite is under /testing');
  assert.is((wrappers as Record<string, unknown>).denseReluOnnx, undefined, 'the ONNX fixture is under /testing');
});

test.run();
