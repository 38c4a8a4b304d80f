import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Errors } from '../errors.js';
import { JOB_SECRET_ENV, type JobAuth } from '../security/job-auth.js';

/**
 * A serialisable recipe for an object built in another process: `import(module)[export]`, then either
 * `new Export(...args)` or, with `method`, `await Export[method](...args)`. Args must be JSON values.
 * Used to ship an actor's class, its transport and its store to a child process or worker thread.
 */
export interface ModuleRef {
  /** A package specifier (`@shoal/core`) or an absolute file path. */
  module: string;
  export: string;
  args?: unknown[];
  /** Static factory to call instead of `new`, e.g. `connect`. */
  method?: string;
  /** The export is a factory function: `await Export(...args)` instead of `new`. */
  call?: boolean;
  /**
   * Index of the options-object argument that gets the job's `auth` (a JobAuth cannot travel as JSON: the host
   * process reads the secret from its environment and adds it here). Transports and stores name it.
   */
  authArg?: number;
}

/** Build the object a ModuleRef describes. Errors name the module and export. */
export async function instantiate<T>(ref: ModuleRef, auth?: JobAuth): Promise<T> {
  const spec = isAbsolute(ref.module) ? pathToFileURL(ref.module).href : ref.module;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(spec)) as Record<string, unknown>;
  } catch (e) {
    throw Errors.config('module', `cannot import ${ref.module}: ${(e as Error).message}`);
  }
  const ex = mod[ref.export] as ((...a: unknown[]) => unknown) & Record<string, unknown>;
  if (ex === undefined) throw Errors.config('export', `${ref.module} has no export ${JSON.stringify(ref.export)}`);
  const args = [...(ref.args ?? [])];
  if (ref.authArg !== undefined) {
    if (!auth) throw Errors.config(JOB_SECRET_ENV, `${ref.module}.${ref.export} needs the job secret, and this process has none`);
    while (args.length < ref.authArg) args.push(undefined);
    args[ref.authArg] = { ...((args[ref.authArg] as object | undefined) ?? {}), auth };
  }
  if (ref.method) {
    const f = ex[ref.method];
    if (typeof f !== 'function') throw Errors.config('method', `${ref.module}.${ref.export} has no static method ${ref.method}`);
    return (await (f as (...a: unknown[]) => unknown).apply(ex, args)) as T;
  }
  if (typeof ex !== 'function') throw Errors.config('export', `${ref.module}.${ref.export} is not a class`);
  if (ref.call) return (await ex(...args)) as T;
  return new (ex as unknown as new (...a: unknown[]) => T)(...args);
}
