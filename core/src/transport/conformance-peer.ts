/**
 * Child-process peer for the conformance suite's killed-peer case (and anything else that needs a transport
 * peer in another process). Usage: `node conformance-peer.js '<json>'` with `{ module, factory, factoryArg, url }`:
 * builds the transport with `(await import(module))[factory](factoryArg)`, dials `url`, sends `ready`, then echoes
 * every message until the connection ends, then exits 0. Exits 2 with a message on any other error.
 */
import { isShoalError } from '../errors.js';
import { JobAuth } from '../security/job-auth.js';
import { transportFromRef, type TransportFactoryRef } from './factory.js';

interface PeerArgs extends Omit<TransportFactoryRef, 'auth'> {
  url: string;
  /** The job id of `TransportFactoryRef.auth`; the secret comes from SHOAL_JOB_SECRET. */
  auth?: { jobId: string };
}

async function main(): Promise<void> {
  const raw = process.argv[2];
  if (!raw) throw new Error('usage: conformance-peer.js <json {module, factory, factoryArg, url}>');
  const args = JSON.parse(raw) as PeerArgs;
  const auth = args.auth ? JobAuth.fromEnv(args.auth.jobId, process.env) : undefined;
  const transport = await transportFromRef(args, auth);
  const conn = await transport.dial(args.url, { timeoutMs: 15_000 });
  await conn.send(new TextEncoder().encode('ready'));
  try {
    for (;;) {
      const m = await conn.recv({ timeoutMs: 120_000 });
      await conn.send(m);
    }
  } catch (e) {
    if (!isShoalError(e, 'ERR_PEER_CLOSED')) throw e;
  } finally {
    await conn.close();
    await transport.close?.();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`[conformance-peer] ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    process.exit(2);
  },
);
