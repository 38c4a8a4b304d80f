// Builds every N-API addon under core/native/<name>/binding.gyp (nng transport, reduction kernels) offline: node-gyp is pointed at the headers of the running Node
// install (`<prefix>/include/node`) so it never tries to download them.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nativeRoot = resolve(here, '../native');
const dirs = existsSync(nativeRoot)
  ? readdirSync(nativeRoot).map((d) => join(nativeRoot, d)).filter((d) => existsSync(join(d, 'binding.gyp')))
  : [];
const nodedir = process.env.SHOAL_NODEDIR ?? resolve(process.execPath, '../..');
if (!existsSync(join(nodedir, 'include/node/node_api.h'))) {
  console.error(`[build-native] Node headers not found under ${nodedir}/include/node; set SHOAL_NODEDIR`);
  process.exit(1);
}
if (!existsSync('/usr/include/nng/nng.h')) {
  console.error('[build-native] /usr/include/nng/nng.h missing: apt-get install libnng-dev');
  process.exit(1);
}
const require = createRequire(import.meta.url);
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
for (const dir of dirs) {
  console.log(`[build-native] ${dir}`);
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '-j', '2'], { cwd: dir, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
