import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { MAX_TIMER_MS } from '@shoal/core/util';
import { resolve } from 'node:path';
import { choiceOption, helpText, intOption, parseCommand, UsageError, type CommandSpec } from '../cli/command.js';
import type { LaunchOptions } from './launch-options.js';
import { parseHostfile, parseHosts, placeRanks, type HostSlots } from './hosts.js';

/** Workers per core `shoal run` starts without `--oversubscribe`. */
export const MAX_WORKERS_PER_CORE = 4;
/** Workers one `shoal run` starts at most, even with `--oversubscribe` (each is a Node process or thread). */
export const MAX_WORKERS = 1024;

/** `shoal run`'s options: the one table its parser, its `--help` and its docs come from. */
export const RUN_COMMAND = {
  name: 'shoal run',
  synopsis: '-n N [options] script.js [script args...]',
  description:
    'Start N workers of script on this host (processes, or threads with --threads), the rendezvous store and, for\n' +
    'the ps and hybrid backends, the parameter-server actors. Worker output is prefixed with its rank; the first\n' +
    'worker to fail stops the others and shoal exits with its code. A .ts script runs through tsx when installed.',
  positionals: 'script',
  options: {
    'num-workers': { type: 'string', short: 'n', arg: 'N', help: `number of workers (ranks 0..N-1); more than ${MAX_WORKERS_PER_CORE}x the cores needs --oversubscribe`, aliases: ['-np'] },
    backend: { type: 'string', arg: 'ring|ps|hybrid', help: 'gradient engine (default ring)' },
    servers: { type: 'string', arg: 'K', help: 'parameter-server shards for ps and hybrid (default 1)' },
    threads: { type: 'boolean', help: 'run the workers as worker threads of one process' },
    data: { type: 'string', arg: 'PATH', help: 'Parquet, Arrow or CSV file or folder; each worker reads its shard with worker.data()' },
    transport: { type: 'string', arg: 'shm|net|nng', help: 'between workers (default shm: every worker is on this host)' },
    'ps-durable': { type: 'string', arg: 'DIR', help: 'ps/hybrid: servers checkpoint every update under DIR; a server that dies is restarted from it and workers resend, so the job goes on' },
    'ps-mode': { type: 'string', arg: 'sync|async', help: 'ps: sync rounds (default), or async: each update applied on arrival, workers never wait for each other' },
    staleness: { type: 'string', arg: 'S', help: 'with --ps-mode async: no worker runs more than S steps ahead of the slowest (default unbounded; 0 = sync)' },
    'ps-link': { type: 'string', arg: 'shm|ipc|tcp', help: 'how workers reach the ps servers (default shm; tcp on --host)' },
    'ps-placement': { type: 'string', arg: 'process|worker', help: 'ps servers in their own processes (default) or in rank 0 (same host)' },
    elastic: { type: 'boolean', help: 'elastic training (one host): a lost worker does not end the job while --min-workers remain; the others roll back to their last commit and go on' },
    'min-workers': { type: 'string', arg: 'A', help: 'with --elastic: fewest workers the job goes on with (default -n)' },
    'max-workers': { type: 'string', arg: 'B', help: 'with --elastic: most workers at once (default -n)' },
    replacements: { type: 'string', arg: 'K', help: "with --elastic: start up to K new workers in all in lost ones' places; each joins at the next commit (default 0)" },
    host: { type: 'string', arg: 'ADDR', help: 'address workers listen on and peers dial (default 127.0.0.1)' },
    tls: { type: 'boolean', help: "encrypt the job's TCP connections (store, net transport, tcp ps links) with TLS under a per-job pinned certificate" },
    'timeout-ms': { type: 'string', arg: 'MS', help: 'every network wait of the workers (default 60000)' },
    'job-timeout-s': { type: 'string', arg: 'S', help: 'stop everything and fail after S seconds (default: no limit)' },
    'grace-ms': { type: 'string', arg: 'MS', help: 'time between SIGTERM and SIGKILL when stopping workers (default 3000)' },
    logdir: { type: 'string', arg: 'DIR', help: 'TensorBoard logs from every rank: a Trainer writes DIR/train, DIR/val, DIR/rank-<r> (sets SHOAL_LOGDIR); ps servers DIR/server-<i>' },
    timeline: { type: 'string', arg: 'FILE', help: 'every rank records a timeline (compute, sync ops, apply, data); merged into FILE for chrome://tracing or Perfetto (also SHOAL_TIMELINE)' },
    oversubscribe: { type: 'boolean', help: `allow more than ${MAX_WORKERS_PER_CORE} workers per core (up to ${MAX_WORKERS})` },
    hosts: { type: 'string', short: 'H', arg: 'H1:S,H2:S', help: "ranks fill these hosts in order (host:slots, as horovodrun -H); other hosts' ranks start through --rsh; transport nng and ps link tcp by default" },
    hostfile: { type: 'string', arg: 'FILE', help: "the hosts from a file: one 'host slots=N' (or host:N) per line, # comments" },
    rsh: { type: 'string', arg: 'CMD', help: "remote shell for the other hosts' ranks; the host and the command are appended (default 'ssh -o BatchMode=yes')" },
  },
  epilog:
    'Everything after the script goes to the script, as with horovodrun and torchrun. One of the options above\n' +
    "written after the script is an error rather than silently the script's: put it before the script, or put\n" +
    '`--` before the script to give the script every argument that follows it:\n' +
    '  shoal run -n 2 --backend ps train.js --epochs 3      the script gets --epochs 3\n' +
    '  shoal run -n 2 -- train.js --backend custom          the script gets --backend custom',
} as const satisfies CommandSpec;

export interface ParsedRun {
  /** `--help` was given: print `helpText(RUN_COMMAND)`, launch nothing. */
  readonly help: boolean;
  readonly options: LaunchOptions;
  /** Things worth telling the user before the job starts (more workers than cores). */
  readonly warnings: string[];
}

/**
 * Parse the arguments after `shoal run` into launch options. `cores` (default `os.availableParallelism()`) bounds
 * `-n`: up to `MAX_WORKERS_PER_CORE` per core, more with `--oversubscribe`, never more than `MAX_WORKERS`; more
 * workers than cores gives a warning. Throws `UsageError` naming the bad flag; nothing is started.
 */
export function parseRunCommand(argv: readonly string[], env: { cores?: number; SHOAL_TIMELINE?: string } = {}): ParsedRun {
  const p = parseCommand(RUN_COMMAND, argv);
  const v = p.values;
  const name = RUN_COMMAND.name;
  if (p.help) return { help: true, options: { script: '', numWorkers: 0 }, warnings: [] };
  if (v['num-workers'] === undefined) throw new UsageError(`${name}: -n N is required (the number of workers); see ${name} --help`);
  const n = intOption(name, '-n', v['num-workers'], 1, MAX_WORKERS);
  const hosts = hostsOption(v.hosts, v.hostfile, n);
  // with --hosts the cores that bound -n are the hosts' slots, not this machine's
  const cores = hosts ? Number.POSITIVE_INFINITY : (env.cores ?? availableParallelism());
  const warnings: string[] = [];
  if (n > MAX_WORKERS_PER_CORE * cores && v.oversubscribe !== true) {
    throw new UsageError(`${name}: -n ${n} is more than ${MAX_WORKERS_PER_CORE} workers per core on this host's ${cores} core(s); pass --oversubscribe to start them anyway`);
  }
  if (n > cores) warnings.push(`${name}: warning: ${n} workers on ${cores} core(s): they share the cores, and every step waits for the slowest`);
  if (p.script === undefined) throw new UsageError(`${name}: no script given; see ${name} --help`);
  const o: LaunchOptions = { script: p.script, args: p.scriptArgs, numWorkers: n };
  if (v.backend !== undefined) o.backend = choiceOption(name, '--backend', v.backend, ['ring', 'ps', 'hybrid'] as const);
  if (v.servers !== undefined) o.servers = intOption(name, '--servers', v.servers, 1, MAX_WORKERS);
  if (v.threads === true) o.threads = true;
  if (v.data !== undefined) o.data = v.data;
  if (v.transport !== undefined) o.transport = choiceOption(name, '--transport', v.transport, ['net', 'nng', 'shm'] as const);
  if (v['ps-link'] !== undefined) o.psLink = choiceOption(name, '--ps-link', v['ps-link'], ['ipc', 'tcp', 'shm'] as const);
  if (v['ps-placement'] !== undefined) o.psPlacement = choiceOption(name, '--ps-placement', v['ps-placement'], ['process', 'worker'] as const);
  if (v['ps-durable'] !== undefined) {
    if (v['ps-durable'] === '') throw new UsageError(`${name}: --ps-durable needs a folder`);
    if (o.backend !== 'ps' && o.backend !== 'hybrid') throw new UsageError(`${name}: --ps-durable needs --backend ps or hybrid`);
    o.psDurable = resolve(v['ps-durable']);
  }
  const elasticOnly = (['min-workers', 'max-workers', 'replacements'] as const).find((k) => v[k] !== undefined);
  if (v.elastic === true) {
    const min = v['min-workers'] === undefined ? n : intOption(name, '--min-workers', v['min-workers'], 1, n);
    const max = v['max-workers'] === undefined ? n : intOption(name, '--max-workers', v['max-workers'], n, MAX_WORKERS);
    o.elastic = { minWorkers: min, maxWorkers: max };
    if (v.replacements !== undefined) o.elastic.replacements = intOption(name, '--replacements', v.replacements, 0, MAX_WORKERS);
  } else if (elasticOnly !== undefined) throw new UsageError(`${name}: --${elasticOnly} needs --elastic`);
  if (v['ps-mode'] !== undefined) {
    o.psMode = choiceOption(name, '--ps-mode', v['ps-mode'], ['sync', 'async'] as const);
    if (o.psMode === 'async' && o.backend !== 'ps') throw new UsageError(`${name}: --ps-mode async needs --backend ps`);
  }
  if (v.staleness !== undefined) {
    if (o.psMode !== 'async') throw new UsageError(`${name}: --staleness needs --ps-mode async`);
    o.staleness = intOption(name, '--staleness', v.staleness, 0, 1_000_000);
  }
  if (v.host !== undefined) o.host = v.host;
  if (v.tls === true) {
    if (o.transport === 'nng') throw new UsageError(`${name}: --tls needs --transport net or shm (nng's TLS is not built)`);
    o.tls = true;
  }
  if (v['timeout-ms'] !== undefined) o.timeoutMs = intOption(name, '--timeout-ms', v['timeout-ms'], 1);
  if (v['job-timeout-s'] !== undefined) o.jobTimeoutMs = intOption(name, '--job-timeout-s', v['job-timeout-s'], 1, Math.floor(MAX_TIMER_MS / 1000)) * 1000;
  if (v['grace-ms'] !== undefined) o.graceMs = intOption(name, '--grace-ms', v['grace-ms'], 0);
  if (v.logdir !== undefined) {
    if (v.logdir === '') throw new UsageError(`${name}: --logdir needs a folder`);
    o.logdir = resolve(v.logdir); // absolute: workers may start elsewhere (--rsh)
  }
  const timeline = v.timeline ?? (env.SHOAL_TIMELINE === '' ? undefined : env.SHOAL_TIMELINE);
  if (timeline !== undefined) {
    if (timeline === '') throw new UsageError(`${name}: --timeline needs a file`);
    o.timeline = resolve(timeline); // absolute: workers may start elsewhere (--rsh)
  }
  if (hosts) o.hosts = hosts;
  if (v.rsh !== undefined) {
    o.rsh = v.rsh.split(/\s+/).filter((x) => x !== '');
    if (o.rsh.length === 0) throw new UsageError(`${name}: --rsh needs a command`);
  }
  return { help: false, options: o, warnings };
}

/** `--hosts` or `--hostfile` (not both), with enough slots for `n` ranks; undefined when neither is given. */
function hostsOption(spec: string | undefined, file: string | undefined, n: number): HostSlots[] | undefined {
  const name = RUN_COMMAND.name;
  if (spec !== undefined && file !== undefined) throw new UsageError(`${name}: give --hosts or --hostfile, not both`);
  if (spec === undefined && file === undefined) return undefined;
  try {
    let hosts: HostSlots[];
    if (spec !== undefined) hosts = parseHosts(spec, '--hosts');
    else {
      let text: string;
      try {
        text = readFileSync(file!, 'utf8');
      } catch (e) {
        throw new UsageError(`--hostfile ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      hosts = parseHostfile(text, file!);
    }
    placeRanks(hosts, n); // enough slots, checked before anything starts
    return hosts;
  } catch (e) {
    throw new UsageError(`${name}: ${(e as Error).message}`);
  }
}

/** Parse the arguments after `shoal run` (see `parseRunCommand`); `--help` is a `UsageError` here. */
export function parseRunArgs(argv: readonly string[], env: { cores?: number; SHOAL_TIMELINE?: string } = {}): LaunchOptions {
  const r = parseRunCommand(argv, env);
  if (r.help) throw new UsageError(helpText(RUN_COMMAND));
  return r.options;
}
