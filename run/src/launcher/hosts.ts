import { hostname } from 'node:os';
import { Errors } from '@shoal/core';

/**
 * Multi-host launches (`shoal run --hosts h1:2,h2:2` or `--hostfile FILE`, as horovodrun's `-H` / `-hostfile`):
 * which host each rank runs on, and the command line that starts a worker on another host through a remote
 * shell (`ssh` by default: the same contract as horovodrun and mpirun, the same paths on every host).
 */
export interface HostSlots {
  /** Host name or address the other hosts can reach (also the worker's SHOAL_HOST). */
  host: string;
  /** Ranks this host takes. */
  slots: number;
}

const HOST_RE = /^[A-Za-z0-9_.:[\]-]+$/;

function hostSlots(entry: string, slots: string | undefined, where: string): HostSlots {
  if (!HOST_RE.test(entry)) throw Errors.config(where, `bad host name ${JSON.stringify(entry)}`);
  const n = slots === undefined ? 1 : Number(slots);
  if (!Number.isInteger(n) || n < 1) throw Errors.config(where, `slots of ${entry} must be a positive integer, got ${JSON.stringify(slots)}`);
  return { host: entry, slots: n };
}

/** `h1:2,h2:2` (slots after the last colon; `h1` alone is one slot). Throws ERR_CONFIG naming `where`. */
export function parseHosts(spec: string, where = '--hosts'): HostSlots[] {
  const out = spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const m = /^(.*):(\d+)$/.exec(s);
      return m ? hostSlots(m[1]!, m[2], where) : hostSlots(s, undefined, where);
    });
  if (out.length === 0) throw Errors.config(where, 'names no host');
  return checkUnique(out, where);
}

/** A hostfile: one host per line, `h1 slots=2` (mpirun), `h1:2` or `h1`; `#` starts a comment. */
export function parseHostfile(text: string, path: string): HostSlots[] {
  const out: HostSlots[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const where = `${path}:${i + 1}`;
    const m = /^(\S+)\s+slots\s*=\s*(\S+)$/.exec(line) ?? /^(\S+?):(\d+)$/.exec(line);
    if (m) out.push(hostSlots(m[1]!, m[2], where));
    else if (/^\S+$/.test(line)) out.push(hostSlots(line, undefined, where));
    else throw Errors.config(where, `expected 'host slots=N', 'host:N' or 'host', got ${JSON.stringify(line)}`);
  });
  if (out.length === 0) throw Errors.config(path, 'names no host');
  return checkUnique(out, path);
}

function checkUnique(hosts: HostSlots[], where: string): HostSlots[] {
  const seen = new Set<string>();
  for (const h of hosts) {
    if (seen.has(h.host)) throw Errors.config(where, `host ${h.host} is listed twice`);
    seen.add(h.host);
  }
  return hosts;
}

export interface Placement {
  rank: number;
  host: string;
  /** Rank among the ranks of its host (SHOAL_LOCAL_RANK). */
  localRank: number;
}

/** Ranks 0..n-1 fill the hosts in order (horovodrun's default): h1 gets ranks 0..slots-1, and so on. */
export function placeRanks(hosts: readonly HostSlots[], n: number): Placement[] {
  const total = hosts.reduce((a, h) => a + h.slots, 0);
  if (n > total) throw Errors.config('-n', `${n} workers but the hosts offer ${total} slot(s) (${hosts.map((h) => `${h.host}:${h.slots}`).join(',')})`);
  const out: Placement[] = [];
  for (const h of hosts) for (let l = 0; l < h.slots && out.length < n; l++) out.push({ rank: out.length, host: h.host, localRank: l });
  return out;
}

/** True for the host this launcher runs on (its ranks are started directly, without the remote shell). */
export function isLocalHost(host: string, self = hostname()): boolean {
  return host === 'localhost' || host === '127.0.0.1' || host === '::1' || host === self;
}

/** Quote one word for a POSIX shell. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The shell command a remote shell runs to start a worker: `cd <cwd> && exec env K=V ... <argv>`. The remote
 * environment is only what is listed (ssh does not forward ours). SHOAL_PARENT_PID is the remote shell's parent
 * (sshd's session, or the remote-shell process): when the launcher's connection goes, the worker is re-parented
 * and exits by itself (`watchParent` in join-job.ts).
 */
export function remoteCommand(cwd: string, env: Readonly<Record<string, string>>, argv: readonly string[]): string {
  const vars = Object.entries(env).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw Errors.config('env', `bad variable name ${JSON.stringify(k)}`);
    return `${k}=${shellQuote(v)}`;
  });
  return `cd ${shellQuote(cwd)} && exec env ${[...vars, 'SHOAL_PARENT_PID=$PPID'].join(' ')} ${argv.map(shellQuote).join(' ')}`;
}
