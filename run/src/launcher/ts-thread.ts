/**
 * Entry of a `shoal run --threads` worker thread whose script is TypeScript: loads it through tsx's `tsImport`
 * (Node 20 applies `--import` hooks to the main thread only). `workerData[TS_THREAD_KEY]` = { api, script }.
 * Nothing imports this module: it is only ever a thread's entry.
 */
import { workerData } from 'node:worker_threads';
import { TS_THREAD_KEY } from './typescript.js';

const spec = (workerData as Record<string, { api: string; script: string } | undefined> | null)?.[TS_THREAD_KEY];
if (spec) {
  const { tsImport } = (await import(spec.api)) as { tsImport: (url: string, parent: string) => Promise<unknown> };
  await tsImport(spec.script, import.meta.url);
}
