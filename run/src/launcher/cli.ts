#!/usr/bin/env node
/**
 * `shoal`: the command-line launcher (like horovodrun / torchrun).
 *
 *   shoal run -n N [options] script.js [script args...]      (`shoal run --help` lists the options)
 *   shoal --version | --help
 *
 * Starts the rendezvous store and N worker processes (or threads) of `script` on this host, streams their output
 * prefixed with the rank, and exits with 0 when all succeed. The first worker to fail stops the others; `shoal`
 * then prints the failing rank and its error and exits with that worker's code. Ctrl-C / SIGTERM stop every
 * worker. Mistakes on the command line are one line on stderr and exit code 2, with nothing started; any other
 * error of the launcher itself is one line too (SHOAL_DEBUG=1 adds its stack trace).
 *
 * Scripts run as compiled JavaScript (`tsc` first); a `.ts` script runs through `node --import tsx` when tsx is
 * installed. Workers call `initWorker()` (from @shoal/run) to join the job.
 */
import { createRequire } from 'node:module';
import { helpText, parseCommand, runCommand, suggest, UsageError, type CommandSpec } from '../cli/command.js';
import { launch } from './launch.js';
import { parseRunCommand, RUN_COMMAND } from './run-args.js';

const COMMANDS = { run: 'start N workers of a script on this host' } as const;

const SHOAL_COMMAND = {
  name: 'shoal',
  synopsis: '<command> [options]',
  description: `commands:\n${Object.entries(COMMANDS).map(([c, h]) => `  ${c.padEnd(8)}${h}`).join('\n')}\n\n\`shoal <command> --help\` describes a command.`,
  positionals: 'command',
  options: { version: { type: 'boolean', short: 'v', help: 'print the version and exit' } },
} as const satisfies CommandSpec;

function version(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

async function main(argv: readonly string[]): Promise<number> {
  const top = parseCommand(SHOAL_COMMAND, argv);
  if (top.help || argv.length === 0) {
    process.stdout.write(`${helpText(SHOAL_COMMAND)}\n`);
    return argv.length === 0 ? 2 : 0;
  }
  if (top.values.version === true) {
    process.stdout.write(`shoal ${version()}\n`);
    return 0;
  }
  const cmd = top.script!;
  if (!(cmd in COMMANDS)) {
    const guess = suggest(cmd, Object.keys(COMMANDS));
    throw new UsageError(`shoal: unknown command ${JSON.stringify(cmd)}${guess ? ` (did you mean ${guess}?)` : ''}; see shoal --help`);
  }
  const parsed = parseRunCommand(top.scriptArgs, { SHOAL_TIMELINE: process.env.SHOAL_TIMELINE });
  if (parsed.help) {
    process.stdout.write(`${helpText(RUN_COMMAND)}\n`);
    return 0;
  }
  const opts = parsed.options;
  for (const w of parsed.warnings) process.stderr.write(`${w}\n`);
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
  if (r.timeline) process.stderr.write(`shoal run: timeline of ${r.timeline.pids.length} process(es), ${r.timeline.spans} spans in ${opts.timeline} (open it in chrome://tracing or ui.perfetto.dev)\n`);
  if (r.timeline?.missing.length) process.stderr.write(`shoal run: timeline: no part found at ${r.timeline.missing.join(', ')} (a rank that never started, or on another host)\n`);
  if (r.code === 0) {
    const e = r.elastic;
    const how = e && (e.lost.length || e.joined.length) ? ` (elastic: generation ${e.generation}, ${e.lost.length} lost, ${e.joined.length} joined)` : '';
    process.stderr.write(`shoal run: ${e ? e.workers : opts.numWorkers} worker(s) finished in ${secs} s${how}\n`);
    return 0;
  }
  if (r.aborted) return signalled === 'SIGTERM' ? 143 : 130;
  // A lost server comes first: the workers' errors are its consequences.
  const who = r.failedProcess !== undefined ? `${r.failedProcess} failed` : r.failedRank !== undefined ? `rank ${r.failedRank} failed (exit code ${r.code})` : 'job failed';
  const others = r.exits.filter((e) => e.rank !== r.failedRank).map((e) => e.rank);
  process.stderr.write(
    `shoal run: ${who} after ${secs} s:\n${(r.error ?? '').split('\n').map((l) => `  ${l}`).join('\n')}\n` +
      (others.length ? `shoal run: stopped rank(s) ${others.join(', ')}\n` : ''),
  );
  return r.code;
}

runCommand('shoal', () => main(process.argv.slice(2)));
