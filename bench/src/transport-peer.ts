/**
 * The remote half of the transport benchmark (run by transport.ts as a child process):
 * `node transport-peer.js '<json {module, factory, factoryArg, url}>'`. Builds the transport, dials `url`, then
 * obeys JSON commands until `exit`:
 * - `{op:'verify', bytes}`: receive one payload, check it, answer `ok`, send the peer's own check payload;
 * - `{op:'sink', bytes, count}`: receive `count` messages (lengths checked), answer `ok`;
 * - `{op:'echo', bytes, count}`: send each of `count` received messages straight back.
 */
import { JobAuth, transportFromRef, type TransportFactoryRef } from '@shoal/core';
import { BENCH_JOB_ID } from './bench-auth.js';
import { benchPayload, sameBytes } from './transport.js';

interface PeerArgs extends TransportFactoryRef {
  url: string;
}
interface Command {
  op: 'verify' | 'sink' | 'echo' | 'exit';
  bytes?: number;
  count?: number;
}

const TIMEOUT = { timeoutMs: 120_000 };
const enc = (s: string) => new TextEncoder().encode(s);

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as PeerArgs;
  // The secret comes from the environment (the benchmark put it there); the job id is the benchmark's.
  const transport = await transportFromRef(args, JobAuth.fromEnv(BENCH_JOB_ID, process.env));
  const conn = await transport.dial(args.url, { timeoutMs: 30_000 });
  try {
    for (;;) {
      const cmd = JSON.parse(new TextDecoder().decode(await conn.recv(TIMEOUT))) as Command;
      const bytes = cmd.bytes ?? 0;
      const count = cmd.count ?? 0;
      if (cmd.op === 'exit') break;
      if (cmd.op === 'verify') {
        const got = await conn.recv(TIMEOUT);
        await conn.send(enc(sameBytes(got, benchPayload(bytes, 1)) ? 'ok' : `corrupt ${bytes} B payload`), TIMEOUT);
        await conn.send(benchPayload(bytes, 2), TIMEOUT);
      } else if (cmd.op === 'sink') {
        let bad = 0;
        for (let i = 0; i < count; i++) if ((await conn.recv(TIMEOUT)).byteLength !== bytes) bad++;
        await conn.send(enc(bad ? `${bad} messages of the wrong length` : 'ok'), TIMEOUT);
      } else if (cmd.op === 'echo') {
        for (let i = 0; i < count; i++) await conn.send(await conn.recv(TIMEOUT), TIMEOUT);
      } else throw new Error(`unknown command ${JSON.stringify(cmd)}`);
    }
  } finally {
    await conn.close();
    await transport.close?.();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`[transport-peer] ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    process.exit(2);
  },
);
