// Builds every N-API addon under core/native/<name>/binding.gyp (nng transport, shared memory, collective,
// reduction kernels) offline: node-gyp is pointed at the headers of the running Node install
// (`<prefix>/include/node`) so it never tries to download them.
//
// Quiet by design: node-gyp's output is kept and printed only when a build fails (SHOAL_BUILD_VERBOSE=1 shows it
// always). An addon whose .node file is newer than every file of its sources (and of core/native/include) is not
// rebuilt. Without libnng's headers the nng addon is skipped with one line: the nng transport then reports itself
// unavailable when a job asks for it, and everything else works.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nativeRoot = resolve(here, '../native');
const verbose = process.env.SHOAL_BUILD_VERBOSE === '1';
const force = process.argv.includes('--force');
const dirs = existsSync(nativeRoot)
  ? readdirSync(nativeRoot).map((d) => join(nativeRoot, d)).filter((d) => existsSync(join(d, 'binding.gyp')))
  : [];
const nodedir = process.env.SHOAL_NODEDIR ?? resolve(process.execPath, '../..');
if (!existsSync(join(nodedir, 'include/node/node_api.h'))) {
  console.error(`[build-native] Node headers not found under ${nodedir}/include/node; set SHOAL_NODEDIR`);
  process.exit(1);
}
const haveNng = existsSync('/usr/include/nng/nng.h');
const require = createRequire(import.meta.url);
const gyp = require.resolve('node-gyp/bin/node-gyp.js');

/** Newest modification time (ms) of the files under `path`, skipping build output. */
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let t = 0;
  for (const name of readdirSync(path)) if (name !== 'build') t = Math.max(t, newest(join(path, name)));
  return t;
}

function product(dir) {
  const out = join(dir, 'build/Release');
  if (!existsSync(out)) return undefined;
  const node = readdirSync(out).find((f) => f.endsWith('.node'));
  return node ? join(out, node) : undefined;
}

const include = join(nativeRoot, 'include');
const sharedT = existsSync(include) ? newest(include) : 0;
for (const dir of dirs) {
  const name = dir.slice(nativeRoot.length + 1);
  if (name === 'nng' && !haveNng) {
    console.error('[build-native] libnng headers missing (apt-get install libnng-dev): the nng transport is disabled');
    continue;
  }
  const built = product(dir);
  if (!force && built && statSync(built).mtimeMs >= Math.max(newest(dir), sharedT, statSync(process.execPath).mtimeMs)) continue;
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '-j', '2'], {
    cwd: dir, stdio: verbose ? 'inherit' : 'pipe', encoding: 'utf8',
  });
  if (r.status !== 0) {
    if (!verbose) process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
    console.error(`[build-native] building ${name} failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status ?? 1);
  }
}
