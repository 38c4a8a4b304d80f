/**
 * A remote shell into a namespace-cluster host, for `shoal run --hosts ... --rsh 'node cluster-rsh.js'` (what
 * `ssh` is on a real cluster): `node cluster-rsh.js <hostname> <command line>` runs the command line with `sh -c`
 * in that host's network, UTS and mount namespaces. The host is found by its name (`h<i>-<run id>`, see
 * netns-cluster.ts) through its holder process. Signals are passed on to the command; if this process dies, the
 * command is re-parented, which shoal workers notice (SHOAL_PARENT_PID).
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const [host, command] = process.argv.slice(2);
const m = host ? /^h(\d+)-(\d+-[0-9a-f]+)$/.exec(host) : null;
if (!m || command === undefined) {
  process.stderr.write(`cluster-rsh: usage: cluster-rsh.js <cluster hostname h<i>-<run id>> '<command line>' (got ${JSON.stringify(process.argv.slice(2))})\n`);
  process.exit(255);
}
const holder = `shoal-netns-${m[2]}-h${m[1]}`;
const pid = readdirSync('/proc').find((d) => {
  if (!/^\d+$/.test(d)) return false;
  try {
    return readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0')[0] === holder;
  } catch {
    return false;
  }
});
if (pid === undefined) {
  process.stderr.write(`cluster-rsh: no cluster host ${host} (holder ${holder} not running)\n`);
  process.exit(255);
}
const child = spawn('nsenter', ['-t', pid, '--net', '--uts', '--mount', `--wd=${process.cwd()}`, '--', 'sh', '-c', command], { stdio: 'inherit' });
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGTERM' ? 15 : 1)));
