import { readFileSync } from 'node:fs';
import type { LaunchOptions } from './launch.js';
import { parseHostfile, parseHosts, placeRanks } from './hosts.js';

export const USAGE = `usage: shoal run -n N [--threads] [--backend ring|ps|hybrid] [--servers K] [--ps-link ipc|tcp|shm]
                 [--transport net|nng|shm] [--timeout-ms MS] [--job-timeout-s S] [--host ADDR] [--grace-ms MS]
                 [-H|--hosts h1:2,h2:2 | --hostfile FILE] [--rsh 'ssh -o BatchMode=yes'] script.js [args...]
  --threads      run the N workers as worker threads of one process
  --transport    between workers: shm (shared memory, default: all workers are on this host), net or nng
  --ps-link      how workers reach the ps servers: shm (default), ipc (unix sockets), or tcp on --host
  --hosts        ranks fill these hosts in order (host:slots); other hosts' ranks start through --rsh (default
                 ssh); default transport nng and ps link tcp; --hostfile: one 'host slots=N' per line`;

/** Parse the arguments after `shoal run`. Throws RangeError naming the bad flag. */
export function parseRunArgs(argv: readonly string[]): LaunchOptions {
  const o: Partial<LaunchOptions> & { numWorkers?: number } = {};
  let i = 0;
  const need = (flag: string) => {
    const v = argv[i + 1];
    if (v === undefined) throw new RangeError(`shoal run: ${flag} needs a value\n${USAGE}`);
    i += 2;
    return v;
  };
  const int = (flag: string, v: string, min: number) => {
    const x = Number(v);
    if (!Number.isInteger(x) || x < min) throw new RangeError(`shoal run: ${flag} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return x;
  };
  const oneOf = <T extends string>(flag: string, v: string, allowed: readonly T[]): T => {
    if (!(allowed as readonly string[]).includes(v)) throw new RangeError(`shoal run: ${flag} must be one of ${allowed.join('|')}, got ${JSON.stringify(v)}`);
    return v as T;
  };
  while (i < argv.length) {
    const a = argv[i]!;
    if (a === '-n' || a === '--num-workers' || a === '-np') o.numWorkers = int(a, need(a), 1);
    else if (a === '--backend') o.backend = oneOf(a, need(a), ['ring', 'ps', 'hybrid'] as const);
    else if (a === '--threads') (o.threads = true), i++;
    else if (a === '--ps-link') o.psLink = oneOf(a, need(a), ['ipc', 'tcp', 'shm'] as const);
    else if (a === '--servers') o.servers = int(a, need(a), 1);
    else if (a === '--transport') o.transport = oneOf(a, need(a), ['net', 'nng', 'shm'] as const);
    else if (a === '--timeout-ms') o.timeoutMs = int(a, need(a), 1);
    else if (a === '--job-timeout-s') o.jobTimeoutMs = int(a, need(a), 1) * 1000;
    else if (a === '--host') o.host = need(a);
    else if (a === '--grace-ms') o.graceMs = int(a, need(a), 0);
    else if (a === '--hosts' || a === '-H') {
      if (o.hosts) throw new RangeError('shoal run: give --hosts or --hostfile once');
      o.hosts = parseHosts(need(a), a);
    } else if (a === '--hostfile') {
      if (o.hosts) throw new RangeError('shoal run: give --hosts or --hostfile once');
      const path = need(a);
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (e) {
        throw new RangeError(`shoal run: --hostfile ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      o.hosts = parseHostfile(text, path);
    } else if (a === '--rsh') {
      o.rsh = need(a).split(/\s+/).filter((x) => x !== '');
      if (o.rsh.length === 0) throw new RangeError('shoal run: --rsh needs a command');
    }
    else if (a.startsWith('-')) throw new RangeError(`shoal run: unknown option ${a}\n${USAGE}`);
    else {
      o.script = a;
      o.args = argv.slice(i + 1);
      break;
    }
  }
  if (o.numWorkers === undefined) throw new RangeError(`shoal run: -n N is required\n${USAGE}`);
  if (!o.script) throw new RangeError(`shoal run: no script given\n${USAGE}`);
  if (o.hosts) placeRanks(o.hosts, o.numWorkers); // enough slots, checked before anything starts
  return o as LaunchOptions;
}

