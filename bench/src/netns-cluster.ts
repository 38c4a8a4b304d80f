/**
 * A cluster of K "hosts" on one Linux machine, for tests and benchmarks of shoal's cross-host paths (issue 19).
 *
 * Each host is a process (`sleep`, the holder) that owns a fresh network, UTS and mount namespace: its own
 * hostname, its own `/dev/shm` (a tmpfs mounted in its mount namespace, so same-host shared memory stops at the
 * host's edge), an `/etc/hosts` naming every host of the cluster (bind-mounted from that tmpfs) and one `eth0`
 * with address `<subnet>.<i+1>/24`. A further namespace, the switch, holds a bridge
 * and the other end of every host's veth pair. Nothing is created in the caller's namespaces: no bridge, no
 * veth, no address, no route, no `ip netns` bind mount. A namespace lives as long as a process inside it, so
 * tear-down is "kill every process in our namespaces"; the kernel then deletes the links, the bridge and the
 * qdiscs with them. That makes tear-down idempotent and complete, concurrent runs cannot collide (their
 * interface names and subnets live in different namespaces), and traffic cannot leave (the switch has no
 * uplink, the hosts no default route).
 *
 * Link rate: `tc` `tbf` on both ends of each host's veth (host egress and switch-port egress), so each host's
 * link carries `rateMbit` in each direction. The kernel here has no netem: delay and loss are not modelled.
 *
 * shoal's host id (`localHostId()`: hostname, boot id, pid and mount namespace) differs per host without any
 * override: processes started with `spawn(host, ...)` enter the holder's UTS and mount namespaces, so ranks of
 * one host share an id and ranks of two hosts never do.
 *
 * Leaks: holders and spawned processes get `PR_SET_PDEATHSIG` (setpriv), so if the caller dies, even by
 * SIGKILL, they die with it; `stop()` also runs on SIGINT/SIGTERM and at exit, and every `start()` first sweeps
 * holders of runs whose owner process is gone (a holder's argv[0] is `shoal-netns-<owner pid>-<run>-<role>`).
 * Needs root, `unshare`, `nsenter`, `setpriv`, `ip` and (for rates) `tc` with sch_tbf: `unavailable()` says what
 * is missing.
 */
import { spawn, spawnSync, execFile, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { processAlive as alive } from '@shoal/core/util';

const execFileP = promisify(execFile);
const MARK = 'shoal-netns-';

export interface NetnsClusterOptions {
  /** Number of hosts (1..200). */
  hosts: number;
  /** Link rate of every host in Mbit/s (tbf, each direction); undefined = unshaped veth. */
  rateMbit?: number;
  /** First three octets of the hosts' /24, used only inside the cluster's namespaces. Default '10.77.0'. */
  subnet?: string;
  /** Size of each host's /dev/shm tmpfs in bytes. Default 1 GiB. */
  shmBytes?: number;
  /** Tear down on SIGINT/SIGTERM (then re-raise) and at process exit. Default true. */
  handleSignals?: boolean;
}

export interface ClusterHost {
  index: number;
  hostname: string;
  /** IPv4 address on the cluster's bridge. */
  address: string;
  /** Holder process id: `nsenter -t <pid>` enters the host. */
  pid: number;
}

export interface LinkCounters {
  /** Bytes the host sent onto its link / received from it (IP packets with headers, from the switch port). */
  txBytes: number;
  rxBytes: number;
}

/** Why a namespace cluster cannot run here, or undefined when it can. `rates` also requires tc tbf. */
export function clusterUnavailable(opts: { rates?: boolean } = {}): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (platform ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (uid is not 0)';
  for (const tool of ['unshare', 'nsenter', 'setpriv', 'ip', ...(opts.rates ? ['tc'] : [])]) {
    const r = spawnSync(tool, ['--version'], { stdio: 'ignore' });
    if (r.error) return `${tool} is not installed (${(r.error as NodeJS.ErrnoException).code})`;
  }
  const probe = opts.rates
    ? 'ip link add v0 type veth peer name v1 && tc qdisc add dev v0 root tbf rate 1gbit burst 128kb latency 20ms'
    : 'ip link add v0 type veth peer name v1 && ip link add b0 type bridge';
  const r = spawnSync('unshare', ['--net', '--uts', '--mount', 'sh', '-c', probe], { encoding: 'utf8' });
  if (r.status !== 0) return `the kernel refused a test namespace (${probe}): ${(r.stderr || r.error?.message || '').trim()}`;
  return undefined;
}

function nsInode(pid: number, kind: string): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return undefined;
  }
}

function pidsInNetns(inodes: ReadonlySet<string>): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const ino = nsInode(Number(d), 'net');
    if (ino !== undefined && inodes.has(ino)) out.push(Number(d));
  }
  return out;
}

/** Kill the holders (and everything in their namespaces) of runs whose owner process has exited. */
export function sweepStaleClusters(): number {
  const stale = new Set<string>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let argv0 = '';
    try {
      argv0 = readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0')[0] ?? '';
    } catch {
      continue;
    }
    const m = argv0.startsWith(MARK) ? /^shoal-netns-(\d+)-/.exec(argv0) : null;
    if (m && !alive(Number(m[1]))) {
      const ino = nsInode(Number(d), 'net');
      if (ino) stale.add(ino);
    }
  }
  if (stale.size === 0) return 0;
  const pids = pidsInNetns(stale);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return pids.length;
}

const rateArgs = (mbit: number): string[] => {
  // burst: 1 ms at the link rate (at least 64 KiB, a GSO packet), queue limit 20 ms of it.
  const burst = Math.max(64 * 1024, Math.round((mbit * 1e6) / 8 / 1000));
  return ['tbf', 'rate', `${mbit}mbit`, 'burst', String(burst), 'latency', '20ms'];
};

export class NetnsCluster {
  readonly id: string;
  readonly hosts: ClusterHost[] = [];
  private switchPid = 0;
  private readonly holders: ChildProcess[] = [];
  private readonly children = new Set<ChildProcess>();
  private readonly inodes = new Set<string>();
  private stopped = false;
  private rate: number | undefined;
  private readonly onSignal = (sig: NodeJS.Signals): void => {
    this.killAll();
    this.unhook();
    process.kill(process.pid, sig);
  };
  private readonly onExit = (): void => this.killAll();

  private constructor(readonly options: Required<Omit<NetnsClusterOptions, 'rateMbit'>> & { rateMbit?: number }) {
    this.id = `${process.pid}-${randomBytes(3).toString('hex')}`;
    this.rate = options.rateMbit;
  }

  /** Build the cluster; on any failure everything built so far is torn down and the error rethrown. */
  static async start(opts: NetnsClusterOptions): Promise<NetnsCluster> {
    if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > 200) throw new RangeError(`options.hosts must be an integer in 1..200, got ${opts.hosts}`);
    if (opts.rateMbit !== undefined && !(opts.rateMbit > 0)) throw new RangeError(`options.rateMbit must be positive, got ${opts.rateMbit}`);
    const subnet = opts.subnet ?? '10.77.0';
    if (!/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(subnet)) throw new RangeError(`options.subnet must be three octets like '10.77.0', got ${subnet}`);
    const why = clusterUnavailable({ rates: opts.rateMbit !== undefined });
    if (why) throw new Error(`namespace cluster unavailable: ${why}`);
    sweepStaleClusters();
    const c = new NetnsCluster({ hosts: opts.hosts, rateMbit: opts.rateMbit, subnet, shmBytes: opts.shmBytes ?? 1 << 30, handleSignals: opts.handleSignals ?? true });
    if (c.options.handleSignals) {
      process.once('SIGINT', c.onSignal);
      process.once('SIGTERM', c.onSignal);
      process.once('exit', c.onExit);
    }
    try {
      await c.build();
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  private async holder(role: string, ns: string[]): Promise<number> {
    const name = `${MARK}${this.id}-${role}`;
    const p = spawn('setpriv', ['--pdeathsig', 'KILL', 'unshare', ...ns, 'bash', '-c', `exec -a ${name} sleep infinity`], { stdio: 'ignore' });
    this.holders.push(p);
    const pid = p.pid;
    if (pid === undefined) throw new Error(`could not start the ${role} holder`);
    // wait until the holder has exec'd sleep inside its namespaces
    for (let i = 0; i < 200; i++) {
      let argv0 = '';
      try {
        argv0 = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')[0] ?? '';
      } catch {
        /* not there yet or gone */
      }
      if (argv0 === name) {
        const ino = nsInode(pid, 'net');
        if (ino) this.inodes.add(ino);
        return pid;
      }
      if (p.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`the ${role} holder did not start (exit ${p.exitCode})`);
  }

  private async build(): Promise<void> {
    this.switchPid = await this.holder('switch', ['--net']);
    await this.inNs(this.switchPid, ['--net'], 'ip link set lo up && ip link add br0 type bridge && ip link set br0 up');
    for (let i = 0; i < this.options.hosts; i++) {
      const pid = await this.holder(`h${i}`, ['--net', '--uts', '--mount']);
      const host: ClusterHost = { index: i, hostname: `h${i}-${this.id}`.slice(0, 63), address: `${this.options.subnet}.${i + 1}`, pid };
      this.hosts.push(host);
      await this.inNs(this.switchPid, ['--net'], `ip link add p${i} type veth peer name e${i} && ip link set e${i} netns ${pid} && ip link set p${i} master br0 up`);
      await this.inNs(pid, ['--net', '--uts', '--mount'], [
        `hostname ${host.hostname}`,
        `mount -t tmpfs -o size=${this.options.shmBytes},mode=1777 shoal-shm /dev/shm`,
        'ip link set lo up',
        `ip link set e${i} name eth0`,
        'ip link set eth0 up',
        `ip addr add ${host.address}/24 dev eth0`,
      ].join(' && '));
    }
    // Every host resolves every hostname (JVMs and gloo look their own up): an /etc/hosts of the cluster, kept in
    // the host's own /dev/shm and bind-mounted in its mount namespace, so it goes away with the namespace.
    const hostsFile = ['127.0.0.1 localhost', '::1 localhost ip6-localhost', ...this.hosts.map((h) => `${h.address} ${h.hostname}`), ''].join('\n');
    for (const h of this.hosts) {
      await this.inNs(h.pid, ['--mount'], 'printf "%s" "$SHOAL_CLUSTER_HOSTS" > /dev/shm/.shoal-cluster-hosts && mount --bind /dev/shm/.shoal-cluster-hosts /etc/hosts', { SHOAL_CLUSTER_HOSTS: hostsFile });
    }
    if (this.rate !== undefined) await this.setRate(this.rate);
  }

  private async inNs(pid: number, ns: string[], script: string, env: Record<string, string> = {}): Promise<string> {
    try {
      const { stdout } = await execFileP('nsenter', ['-t', String(pid), ...ns, '--', 'sh', '-c', script], { timeout: 20_000, env: { ...process.env, ...env } });
      return stdout;
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(`cluster ${this.id}: '${script}' failed: ${(err.stderr ?? err.message).trim()}`);
    }
  }

  /** The current link rate (Mbit/s), undefined when unshaped. */
  get rateMbit(): number | undefined {
    return this.rate;
  }

  /** Shape every link to `mbit` Mbit/s in each direction (replacing the previous rate); undefined removes it. */
  async setRate(mbit: number | undefined): Promise<void> {
    const verb = (dev: string) => (mbit === undefined ? `tc qdisc del dev ${dev} root 2>/dev/null || true` : `tc qdisc replace dev ${dev} root ${rateArgs(mbit).join(' ')}`);
    await this.inNs(this.switchPid, ['--net'], this.hosts.map((h) => verb(`p${h.index}`)).join(' && '));
    for (const h of this.hosts) await this.inNs(h.pid, ['--net'], verb('eth0'));
    this.rate = mbit;
  }

  /** Per host, the bytes through its link so far (read from the switch's ports; a port's tx is the host's rx). */
  async linkCounters(): Promise<LinkCounters[]> {
    const text = await this.inNs(this.switchPid, ['--net'], 'cat /proc/net/dev');
    return this.hosts.map((h) => {
      const line = text.split('\n').find((l) => l.trim().startsWith(`p${h.index}:`));
      if (!line) throw new Error(`cluster ${this.id}: no counters for port p${h.index}`);
      const f = line.split(':')[1]!.trim().split(/\s+/).map(Number);
      return { rxBytes: f[8]!, txBytes: f[0]! };
    });
  }

  /**
   * Start `command args` on host `host` (in its network, UTS and mount namespaces, with the caller's environment
   * and working directory). The process gets PDEATHSIG=KILL and is killed by `stop()`.
   */
  spawn(host: number, command: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const h = this.hosts[host];
    if (!h) throw new RangeError(`host ${host} is not in this cluster (0..${this.hosts.length - 1})`);
    if (this.stopped) throw new Error(`cluster ${this.id} is stopped`);
    const cwd = String(opts.cwd ?? process.cwd());
    const p = spawn('setpriv', ['--pdeathsig', 'KILL', 'nsenter', '-t', String(h.pid), '--net', '--uts', '--mount', `--wd=${cwd}`, '--', command, ...args], { ...opts, cwd });
    this.children.add(p);
    p.once('exit', () => this.children.delete(p));
    return p;
  }

  /** Run `command args` on a host to completion; resolves with stdout, rejects naming the host on failure. */
  async exec(host: number, command: string, args: readonly string[], timeoutMs = 30_000): Promise<string> {
    const p = this.spawn(host, command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout!.on('data', (d) => (out += d));
    p.stderr!.on('data', (d) => (err += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    const code = await new Promise<number | null>((res) => p.once('exit', (c) => res(c)));
    clearTimeout(timer);
    if (code !== 0) throw new Error(`host ${host} (${this.hosts[host]!.hostname}): ${command} ${args.join(' ')} exited ${code}: ${err.trim()}`);
    return out;
  }

  /** How many processes run on these hosts now (their holders not counted). */
  processCount(hosts: readonly number[]): number {
    const holders = new Set(hosts.map((h) => this.hosts[h]!.pid));
    const inodes = new Set(hosts.map((h) => nsInode(this.hosts[h]!.pid, 'net')).filter((x): x is string => x !== undefined));
    return pidsInNetns(inodes).filter((p) => !holders.has(p)).length;
  }

  /**
   * Kill every process in host `host`'s namespaces except its holder (daemons a spawned command left behind,
   * such as Ray's raylet and workers) and wait until none is left: a per-host `ray stop`, which itself would
   * kill every Ray process of the machine, other users' included.
   */
  async killOnHost(host: number, timeoutMs = 10_000): Promise<void> {
    const h = this.hosts[host];
    if (!h) throw new RangeError(`host ${host} is not in this cluster (0..${this.hosts.length - 1})`);
    const ino = nsInode(h.pid, 'net');
    if (ino === undefined) return;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pids = pidsInNetns(new Set([ino])).filter((p) => p !== h.pid);
      if (pids.length === 0) return;
      if (Date.now() > deadline) throw new Error(`cluster ${this.id}: processes ${pids.join(', ')} survive on host ${host} (${h.hostname})`);
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Network namespace ids (`net:[inode]`) of the switch and the hosts. */
  get namespaces(): ReadonlySet<string> {
    return this.inodes;
  }

  private killAll(): void {
    for (const p of this.children) p.kill('SIGKILL');
    // everything inside our namespaces, including grandchildren of spawned processes
    if (this.inodes.size > 0) {
      for (const pid of pidsInNetns(this.inodes)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const h of this.holders) h.kill('SIGKILL');
  }

  private unhook(): void {
    process.removeListener('SIGINT', this.onSignal);
    process.removeListener('SIGTERM', this.onSignal);
    process.removeListener('exit', this.onExit);
  }

  /** Kill every process in the cluster's namespaces and wait until none is left. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.unhook();
    for (let i = 0; i < 100; i++) {
      this.killAll();
      if (pidsInNetns(this.inodes).length === 0) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`cluster ${this.id}: processes ${pidsInNetns(this.inodes).join(', ')} survive in its namespaces`);
  }
}
