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
}

/** Build the transport a `TransportFactoryRef` names. Throws if the module lacks the export. */
export async function transportFromRef(ref: TransportFactoryRef): Promise<Transport> {
  const mod = (await import(ref.module)) as Record<string, unknown>;
  const make = mod[ref.factory];
  if (typeof make !== 'function') throw new Error(`${ref.module} has no function export ${ref.factory}`);
  return (await make(ref.factoryArg)) as Transport;
}
