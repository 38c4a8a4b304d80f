import type { JobAuth } from '../security/job-auth.js';
import type { Transport } from './transport.js';

/**
 * How another process builds the same transport: `(await import(module))[factory](factoryArg)`. Used to start
 * transport peers in child processes (the conformance suite's killed-peer case, the transport benchmark).
 */
export interface TransportFactoryRef {
  /** Absolute file: URL (or path) of a compiled ES module. */
  module: string;
  /** Named export of a (possibly async) function returning a Transport. */
  factory: string;
  /** JSON-serialisable argument passed to the factory. */
  factoryArg?: unknown;
  /**
   * The job the transport belongs to. Serialised as its job id only (`JobAuth.toJSON`): the secret travels in
   * the child's environment (`auth.childEnv()`), and the child's entry point reads it back with `JobAuth.fromEnv`.
   */
  auth?: JobAuth;
}

/**
 * Build the transport a `TransportFactoryRef` names, with `auth` (when given) added to its options argument.
 * Throws if the module lacks the export.
 */
export async function transportFromRef(ref: Omit<TransportFactoryRef, 'auth'>, auth?: JobAuth): Promise<Transport> {
  const mod = (await import(ref.module)) as Record<string, unknown>;
  const make = mod[ref.factory];
  if (typeof make !== 'function') throw new Error(`${ref.module} has no function export ${ref.factory}`);
  const arg = auth ? { ...((ref.factoryArg as object | undefined) ?? {}), auth } : ref.factoryArg;
  return (await make(arg)) as Transport;
}
