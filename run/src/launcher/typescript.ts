import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Errors } from '@shoal/core';

/** The `workerData` key of a TypeScript worker thread's { api, script } (read by ts-thread.ts). */
export const TS_THREAD_KEY = 'shoalTsThread';

/** Does `path` name a TypeScript file (`.ts`, `.mts`, `.cts`)? */
export function isTypeScript(path: string): boolean {
  return /\.(c|m)?ts$/.test(path);
}

/**
 * Where tsx is for running `script`: the copy the script's own project resolves, else the one @shoal/run depends
 * on. `loader` is what `node --import` takes (processes, Spark); `api` is `tsx/esm/api` (its `tsImport` loads a
 * TypeScript module inside a worker thread, where Node 20 does not apply `--import` hooks). Both are file URLs.
 * Throws ERR_CONFIG naming the script when tsx is nowhere.
 */
export function tsxFor(script: string): { loader: string; api: string } {
  for (const from of [resolve(script), import.meta.filename ?? new URL(import.meta.url).pathname]) {
    try {
      const pkg = createRequire(from).resolve('tsx/package.json');
      const root = dirname(pkg);
      const loader = join(root, 'dist', 'loader.mjs');
      const api = join(root, 'dist', 'esm', 'api', 'index.mjs');
      if (existsSync(loader) && existsSync(api)) return { loader: pathToFileURL(loader).href, api: pathToFileURL(api).href };
    } catch {
      // not resolvable from here: try the next place
    }
  }
  throw Errors.config('script', `${script} is TypeScript but tsx is not installed: npm install tsx, or compile it (tsc) and run the .js`);
}
