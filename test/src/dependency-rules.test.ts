import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ROOT } from './train-helpers.js';

// Issue #14, "Checks that keep it so": dependency-cruiser with the floor rules (.dependency-cruiser.cjs) passes
// on the repository, and each rule does fire on a small tree that breaks it.

const DEPCRUISE = join(ROOT, 'node_modules/.bin/depcruise');
const SOURCES = ['core/src', 'datasets/src', 'backends/src', 'wrappers/src', 'run/src', 'bench/src', 'test/src', 'examples/recommender/src', 'examples/digits/src'];

function cruise(cwd: string, dirs: readonly string[]) {
  return spawnSync(DEPCRUISE, ['--config', join(ROOT, '.dependency-cruiser.cjs'), '--output-type', 'err', ...dirs], { cwd, encoding: 'utf8', timeout: 120_000 });
}

test('the repository keeps its floors: no violations', () => {
  const r = cruise(ROOT, SOURCES);
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /no dependency violations found/);
});

test('each rule fires: an upward import, a cycle, a deep import, a dev dependency at runtime', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-depcruise-'));
  try {
    const put = (path: string, text: string) => {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    };
    copyFileSync(join(ROOT, 'tsconfig.base.json'), join(dir, 'tsconfig.base.json'));
    copyFileSync(join(ROOT, 'tsconfig.depcruise.json'), join(dir, 'tsconfig.depcruise.json'));
    copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    put('core/src/index.ts', "export { up } from './up.js';\n");
    put('core/src/up.ts', "import { b } from '@shoal/backends';\nexport const up = b;\n");
    put('backends/src/index.ts', "export { b } from './x.js';\n");
    put('backends/src/x.ts', "import type { Y } from './y.js';\nexport const b = 1;\nexport type X = Y | number;\n");
    put('backends/src/y.ts', "import type { X } from './x.js';\nexport type Y = X | string;\n");
    put('wrappers/src/index.ts', "export { e } from '../../core/src/up.js';\n");
    put('datasets/src/index.ts', "import { test } from 'uvu';\nexport const t = test;\n");
    put('datasets/src/ok.test.ts', "import { test } from 'uvu';\ntest('x', () => {});\n");
    const r = cruise(dir, ['core/src', 'backends/src', 'wrappers/src', 'datasets/src']);
    const out = r.stdout + r.stderr;
    assert.is.not(r.status, 0, out);
    assert.match(out, /error core-floor: core\/src\/up\.ts → backends\/src\/index\.ts/);
    assert.match(out, /error no-circular: backends\/src\/(x|y)\.ts → \s*backends\/src\/(y|x)\.ts/);
    assert.match(out, /error no-deep-import: wrappers\/src\/index\.ts → core\/src\/up\.ts/);
    assert.match(out, /error no-dev-dep-at-runtime: datasets\/src\/index\.ts → \S*node_modules\/uvu/);
    assert.not.match(out, /ok\.test\.ts/, 'tests may use dev dependencies');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
