#!/usr/bin/env node
/**
 * `npm run bench -- <suite> [args...]` (after a build: `node bench/dist/cli.js <suite> [args...]`).
 * Each suite is `bench/src/<suite>.ts` exporting `run(args)` and writing `bench/results/<suite>.json`; see
 * bench/README.md. Add a suite with one line in the table below.
 */
import { benchAuth } from './bench-auth.js';
import { helpText, parseCommand, runCommand, suggest, UsageError, type CommandSpec } from '@shoal/run/cli';

interface Suite {
  /** The suite's options: its parser and its `--help`. */
  command: CommandSpec;
  run(args: string[]): Promise<void>;
}

const suites: Record<string, () => Promise<Suite>> = {
  transport: () => import('./transport.js'),
  allreduce: () => import('./allreduce.js'),
  ps: () => import('./ps.js'),
  datasets: () => import('./datasets.js'),
  train: () => import('./train.js'),
  spark: () => import('./spark.js'),
  micro: () => import('./micro.js'),
  tensorboard: () => import('./tensorboard.js'),
  cluster: () => import('./cluster.js'),
  onnx: () => import('./onnx.js'),
  soak: () => import('./soak.js'),
  security: () => import('./security.js'),
};

const BENCH = {
  name: 'bench',
  synopsis: '<suite> [options]',
  description: `suites: ${Object.keys(suites).join(', ')}\n\`npm run bench -- <suite> --help\` lists a suite's options.`,
  positionals: 'command',
  options: {},
} as const satisfies CommandSpec;

async function main(argv: string[]): Promise<number> {
  const top = parseCommand(BENCH, argv);
  if (top.help || top.script === undefined) {
    process.stdout.write(`${helpText(BENCH)}\n`);
    return top.help ? 0 : 2;
  }
  const name = top.script;
  const load = suites[name];
  if (!load) {
    const guess = suggest(name, Object.keys(suites));
    throw new UsageError(`bench: unknown suite ${JSON.stringify(name)}${guess ? ` (did you mean ${guess}?)` : ''}; available: ${Object.keys(suites).join(', ')}`);
  }
  // One job secret for the whole run, in this process's environment: every process a suite starts (workers,
  // servers, peers, namespace hosts) inherits it, as a launcher's children do.
  benchAuth();
  const suite = await load();
  // Parsed here first so a mistake or --help costs nothing (the suite parses the same table again).
  if (parseCommand(suite.command, top.scriptArgs).help) {
    process.stdout.write(`${helpText(suite.command)}\n`);
    return 0;
  }
  await suite.run(top.scriptArgs);
  return 0;
}

runCommand('bench', () => main(process.argv.slice(2)));
