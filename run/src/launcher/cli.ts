#!/usr/bin/env node
/**
 * `shoal`: the command-line launcher (like horovodrun / torchrun).
 *
 *   shoal run -n N [--threads] [--backend ring|ps|hybrid] [--servers K] [--ps-link ipc|tcp|shm]
 *             [--transport net|nng|shm] [--timeout-ms MS] [--job-timeout-s S] [--host ADDR] [--grace-ms MS]
 *             script.js [script args...]
 *
 * `--threads` runs the workers as worker threads of the launcher's process (shm transport by default);
 * `--ps-link` picks how workers reach the ps servers (unix sockets by default, shm, or tcp for other hosts).
 *
 * Starts the rendezvous store and N worker processes of `script` on this host, streams their output prefixed
 * with the rank, and exits with 0 when all succeed. The first worker to fail stops the others; `shoal` then
 * prints the failing rank and its error and exits with that worker's code. Ctrl-C / SIGTERM stop every worker.
 *
 * Scripts run as compiled JavaScript (`tsc` first); a `.ts` script runs through `node --import tsx` when tsx is
 * installed. Workers call `initWorker()` (from @shoal/run) to join the job.
 */
import { launch, type LaunchOptions } from './launch.js';
import { parseRunArgs, USAGE } from './run-args.js';

async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h' || argv.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] !== 'run') {
    process.stderr.write(`shoal: unknown command ${JSON.stringify(argv[0])}\n${USAGE}\n`);
    return 2;
  }
  let opts: LaunchOptions;
  try {
    opts = parseRunArgs(argv.slice(1));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return 2;
  }
  const ac = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      process.stderr.write(`shoal run: ${sig} again, exiting now\n`);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    signalled = sig;
    process.stderr.write(`\nshoal run: ${sig}, stopping workers\n`);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  const r = await launch({ ...opts, signal: ac.signal });
  const secs = (r.durationMs / 1000).toFixed(1);
  if (r.code === 0) {
    process.stderr.write(`shoal run: ${opts.numWorkers} worker(s) finished in ${secs} s\n`);
    return 0;
  }
  if (r.aborted) return signalled === 'SIGTERM' ? 143 : 130;
  const who = r.failedRank !== undefined ? `rank ${r.failedRank} failed (exit code ${r.code})` : 'job failed';
  const others = r.exits.filter((e) => e.rank !== r.failedRank).map((e) => e.rank);
  process.stderr.write(
    `shoal run: ${who} after ${secs} s:\n${(r.error ?? '').split('\n').map((l) => `  ${l}`).join('\n')}\n` +
      (others.length ? `shoal run: stopped rank(s) ${others.join(', ')}\n` : ''),
  );
  return r.code;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`shoal: ${(e as Error)?.stack ?? e}\n`);
    process.exit(1);
  },
);
