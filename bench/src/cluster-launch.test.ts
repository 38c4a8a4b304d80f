/**
 * `shoal run --hosts` across namespace hosts (issue 19), horovodrun -H style: the launcher runs on host 0, starts
 * host 0's ranks itself and host 1's through a remote shell (`--rsh 'node cluster-rsh.js'`, the cluster's
 * stand-in for ssh). Skipped with the reason when not root or namespaces are unavailable.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clusterUnavailable, NetnsCluster } from './netns-cluster.js';
import { jsonLines } from './json-lines.js';

const why = clusterUnavailable({ rates: true });
const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const cli = here('../../run/dist/launcher/cli.js');
const rsh = `${process.execPath} ${here('./cluster-rsh.js')}`;
const digits = here('../../examples/digits/dist/main.js');
const dir = mkdtempSync(join(tmpdir(), 'shoal-cluster-launch-'));

/** Run `shoal ...` on host 0 to completion: exit code, stdout lines, stderr. */
async function shoal(c: NetnsCluster, args: string[], ms = 120_000): Promise<{ code: number | null; out: string; lines: Record<string, unknown>[]; err: string }> {
  const p = jsonLines(c.spawn(0, process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const t = setTimeout(() => p.child.kill('SIGKILL'), ms);
  const code = await p.exited;
  clearTimeout(t);
  return { code, out: p.lines.map((l) => (typeof l.text === 'string' ? l.text : JSON.stringify(l))).join('\n'), lines: p.lines, err: p.stderr() };
}

function maxRelDiff(a: Float32Array, b: Float32Array, floor = 1e-3): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor));
  return m;
}

if (why) {
  test(`shoal run --hosts on the namespace cluster (skipped: ${why})`, () => console.log(`  skipped: ${why}`));
} else {
  const cluster = await NetnsCluster.start({ hosts: 2, rateMbit: 10_000 });
  test.after(async () => {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const [h0, h1] = cluster.hosts.map((h) => h.hostname) as [string, string];
  /** Processes on the hosts other than their holders: `cmdline` of each. */
  const inHosts = (): string[] => {
    const holders = new Set(cluster.hosts.map((h) => String(h.pid)));
    const ns = new Set(cluster.hosts.map((h) => readlinkSync(`/proc/${h.pid}/ns/net`)));
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d) && !holders.has(d))
      .filter((d) => {
        try {
          return ns.has(readlinkSync(`/proc/${d}/ns/net`));
        } catch {
          return false;
        }
      })
      .map((d) => {
        try {
          return readFileSync(`/proc/${d}/cmdline`, 'latin1').replace(/\0/g, ' ');
        } catch {
          return '';
        }
      })
      .filter((x) => x !== '');
  };

  test('shoal run -n 4 --hosts h0:2,h1:2: ranks 0-1 on host 0, 2-3 on host 1 through the remote shell, nng by default', async () => {
    const r = await shoal(cluster, ['run', '-n', '4', '--hosts', `${h0}:2,${h1}:2`, '--rsh', rsh, here('./cluster-launch-probe.js')]);
    assert.is(r.code, 0, r.err);
    const ranks = r.out.split('\n').map((l) => /^\[rank \d+\] (\{.*\})$/.exec(l)?.[1]).filter((x) => x !== undefined).map((x) => JSON.parse(x!) as Record<string, unknown>).sort((a, b) => (a.rank as number) - (b.rank as number));
    assert.equal(ranks.map((x) => [x.rank, x.hostname, x.localRank, x.host]), [[0, h0, 0, h0], [1, h0, 1, h0], [2, h1, 0, h1], [3, h1, 1, h1]]);
    for (const x of ranks) {
      assert.is(x.transport, 'nng');
      assert.is(x.mean, 2.5, 'the allreduce crossed the hosts');
    }
  });

  test('--tls across hosts: the remote ranks read the job certificate from their ssh stdin; net by default', async () => {
    const r = await shoal(cluster, ['run', '-n', '4', '--hosts', `${h0}:2,${h1}:2`, '--rsh', rsh, '--tls', here('./cluster-launch-probe.js')]);
    assert.is(r.code, 0, r.err);
    const ranks = r.out.split('\n').map((l) => /^\[rank \d+\] (\{.*\})$/.exec(l)?.[1]).filter((x) => x !== undefined).map((x) => JSON.parse(x!) as Record<string, unknown>);
    assert.is(ranks.length, 4);
    const prints = new Set(ranks.map((x) => x.tls));
    assert.is(prints.size, 1, `one certificate pinned by every rank: ${[...prints].join(', ')}`);
    assert.match(String([...prints][0]), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    for (const x of ranks) {
      assert.is(x.transport, 'net');
      assert.is(x.mean, 2.5, 'the allreduce crossed the hosts under TLS');
    }
    assert.not.match(r.out + r.err, /SHOAL_JOB_TLS=|MII/, 'the certificate and key are in no output');
  });

  test('a hostfile, and the digits example on 2 hosts x 2 ranks with batch 8 matches 1 worker with batch 32', async () => {
    const common = ['--optimizer', 'sgd', '--lr', '0.1', '--steps', '20', '--epochs', '1'];
    const one = await shoal(cluster, ['run', '-n', '1', digits, ...common, '--batch-size', '32', '--out', join(dir, 'w1.json')]);
    assert.is(one.code, 0, one.err);
    const hostfile = join(dir, 'hosts');
    writeFileSync(hostfile, `# two hosts\n${h0} slots=2\n${h1} slots=2\n`);
    const four = await shoal(cluster, ['run', '-n', '4', '--hostfile', hostfile, '--rsh', rsh, digits, ...common, '--batch-size', '8', '--out', join(dir, 'w4.json')]);
    assert.is(four.code, 0, four.err);
    assert.match(four.out, /4 worker\(s\), ring engine/);
    const w = (f: string) => Float32Array.from(JSON.parse(readFileSync(join(dir, f), 'utf8')).weights as number[]);
    const d = maxRelDiff(w('w4.json'), w('w1.json'));
    assert.ok(d <= 1e-5, `max relative difference ${d}`);
  });

  test('--timeline across hosts: each rank measures its clock against the store host and the merge lines them up', async () => {
    const file = join(dir, 'tl', 'digits.json');
    const r = await shoal(cluster, ['run', '-n', '2', '--hosts', `${h0}:1,${h1}:1`, '--rsh', rsh, '--timeline', file, digits, '--steps', '4', '--epochs', '1', '--batch-size', '16']);
    assert.is(r.code, 0, r.err);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { metadata?: { shoal_clock_offsets?: Record<string, { offsetUs: number; rttUs: number; reference: string; samples?: number; driftPpm?: number }> }; traceEvents: Array<{ name: string; ph: string; pid: number; ts: number; dur: number; args?: { name?: string } }> };
    const offsets = doc.metadata?.shoal_clock_offsets ?? {};
    assert.equal(Object.keys(offsets).sort(), ['0', '1'], 'both ranks measured (the store is on a bridge address, not loopback)');
    for (const [rank, o] of Object.entries(offsets)) {
      assert.match(o.reference, /^store tcp:\/\/(?!127\.)/, `rank ${rank} measured against the store`);
      assert.ok(o.rttUs > 0 && o.rttUs < 1_000_000, `rank ${rank}: round trip ${o.rttUs} µs`);
      // the namespaces share one kernel clock: the true offset is 0, so the estimate is within half its round trip
      assert.ok(Math.abs(o.offsetUs) <= o.rttUs / 2 + 1, `rank ${rank}: offset ${o.offsetUs} µs, rtt ${o.rttUs} µs`);
      // measured again as the rank closed: the merge interpolates between the two (drift; ~0 on one kernel clock)
      assert.is(o.samples, 2, `rank ${rank}: offsets at join and at close`);
      assert.type(o.driftPpm, 'number');
    }
    const procs = doc.traceEvents.filter((e) => e.name === 'process_name').map((e) => [e.pid, e.args?.name]).sort();
    assert.equal(procs, [[0, `rank 0 (${h0})`], [1, `rank 1 (${h1})`]], 'one process per rank, named by its host');
    const ar = [0, 1].map((p) => doc.traceEvents.filter((e) => e.pid === p && e.ph === 'X' && e.name === 'allreduce'));
    assert.ok(ar[0]!.length >= 4 && ar[0]!.length === ar[1]!.length, `${ar[0]!.length} and ${ar[1]!.length} allreduces`);
    ar[0]!.forEach((x, k) => {
      const y = ar[1]![k]!;
      assert.ok(x.ts <= y.ts + y.dur && y.ts <= x.ts + x.dur, `allreduce ${k} overlaps across the hosts`);
    });
  });

  test('a rank failing on host 1 fails the job naming it; no worker is left on either host', async () => {
    const r = await shoal(cluster, ['run', '-n', '4', '--hosts', `${h0}:2,${h1}:2`, '--rsh', rsh, '--grace-ms', '1000', here('./cluster-launch-probe.js'), '--fail-rank', '3']);
    assert.is.not(r.code, 0);
    assert.match(r.err, /rank 3 failed/);
    assert.match(r.err, /probe rank 3 fails on purpose/);
    // only the holders remain in the hosts' namespaces (remote workers exit once their remote shell is gone)
    const end = Date.now() + 5000;
    let left = inHosts();
    while (left.length > 0 && Date.now() < end) {
      await new Promise((res) => setTimeout(res, 100));
      left = inHosts();
    }
    assert.equal(left, [], 'processes left on the hosts');
  });

  test('bad host lists are one clear error, nothing started', async () => {
    const r = await shoal(cluster, ['run', '-n', '5', '--hosts', `${h0}:2,${h1}:2`, '--rsh', rsh, here('./cluster-launch-probe.js')], 30_000);
    assert.is.not(r.code, 0);
    assert.match(r.err, /5 workers but the hosts offer 4 slot\(s\)/);
    assert.not.match(r.err, /\n\s+at /, 'no stack trace');
    const twice = await shoal(cluster, ['run', '-n', '2', '--hosts', `${h0}:1,${h0}:1`, here('./cluster-launch-probe.js')], 30_000);
    assert.match(twice.err, /listed twice/);
    assert.not.match(twice.err, /\n\s+at /, 'no stack trace');
  });
}

test.run();
