/**
 * A Spark standalone cluster across namespace hosts (issue 19): the master and the driver on host 0, one worker
 * (one core) on each of hosts 1 and 2, all started from the pyspark install (`spark-class` Master/Worker).
 * `shoal_spark.run` (python/tests/cluster_driver.py) runs the probe worker in 2 barrier tasks, which land on
 * different hosts and do their ring pass across the link. Skipped with the reason when not root, namespaces,
 * Java or pyspark are unavailable. Start-up waits are generous: three JVMs, the driver's and two executors on a
 * shared 2-core machine took 73 s at load 14 and 243 s at load 34.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clusterUnavailable, NetnsCluster } from './netns-cluster.js';
import { jsonLines } from './json-lines.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const python = process.env.SHOAL_PYTHON ?? 'python3';

function sparkSkipReason(): string | undefined {
  const c = clusterUnavailable({ rates: true });
  if (c) return c;
  if (spawnSync('java', ['-version'], { stdio: 'ignore' }).error) return 'java is not installed';
  const r = spawnSync(python, ['-c', 'from pyspark.find_spark_home import _find_spark_home; import pyarrow; print(_find_spark_home())'], { encoding: 'utf8' });
  if (r.status !== 0) return `pyspark/pyarrow not importable by ${python}: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}`;
  return undefined;
}

/** Resolves once `text` appears in the child's stderr (Spark logs there); rejects on exit or after `ms`. */
function logged(p: ChildProcess, text: string, ms: number, what: string): Promise<void> {
  let seen = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no '${text}' after ${ms} ms; log tail: ${seen.slice(-2000)}`)), ms);
    const on = (d: Buffer) => {
      seen = (seen + d.toString()).slice(-20_000);
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    p.stderr!.on('data', on);
    p.stdout!.on('data', on);
    p.once('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${c}) before '${text}'; log tail: ${seen.slice(-2000)}`));
    });
  });
}

const why = sparkSkipReason();
if (why) {
  test(`spark standalone on the namespace cluster (skipped: ${why})`, () => console.log(`  skipped: ${why}`));
} else {
  test('spark standalone, master + 2 workers on 3 hosts: shoal_spark.run puts its barrier tasks on different hosts, exact', async () => {
    const sparkHome = spawnSync(python, ['-c', 'from pyspark.find_spark_home import _find_spark_home; print(_find_spark_home())'], { encoding: 'utf8' }).stdout.trim();
    const work = mkdtempSync(join(tmpdir(), 'shoal-netns-spark-'));
    const c = await NetnsCluster.start({ hosts: 3, rateMbit: 10_000 });
    try {
      const env = (h: number) => ({ ...process.env, SPARK_LOCAL_IP: c.hosts[h]!.address, SPARK_WORKER_DIR: join(work, `w${h}`), SPARK_LOG_DIR: work, SPARK_NO_DAEMONIZE: '1', PYSPARK_PYTHON: python });
      const cls = `${sparkHome}/bin/spark-class`;
      const masterAddr = c.hosts[0]!.address;
      const master = c.spawn(0, cls, ['org.apache.spark.deploy.master.Master', '--host', masterAddr, '--port', '7077', '--webui-port', '8080'], { stdio: ['ignore', 'pipe', 'pipe'], env: env(0) });
      await logged(master, 'I have been elected leader', 150_000, 'spark master');
      const workers = [1, 2].map((h) =>
        c.spawn(h, cls, ['org.apache.spark.deploy.worker.Worker', `spark://${masterAddr}:7077`, '--host', c.hosts[h]!.address, '--cores', '1', '--memory', '1g', '--webui-port', '8081'], { stdio: ['ignore', 'pipe', 'pipe'], env: env(h) }),
      );
      await Promise.all(workers.map((w, i) => logged(w, 'Successfully registered with master', 150_000, `spark worker ${i + 1}`)));
      const tag = `nt${process.pid}`;
      const timeline = join(work, 'trace.json');
      const driver = jsonLines(c.spawn(0, python, [`${repo}python/tests/cluster_driver.py`, `spark://${masterAddr}:7077`, masterAddr, tag, timeline], { stdio: ['ignore', 'pipe', 'pipe'], env: env(0), cwd: repo }));
      const out = await driver.wait((o) => 'result' in o, 300_000, 'spark driver');
      const result = out.result as { rowsPerRank: number[]; totalSum: number };
      const ranks = out.ranks as { host: string; executor: string; exit_code: number }[];
      assert.equal(result.rowsPerRank, [50_000, 50_000]);
      assert.is(result.totalSum, (100_000 * 99_999) / 2);
      assert.equal(ranks.map((r) => r.exit_code), [0, 0]);
      assert.equal(ranks.map((r) => r.host).sort(), [c.hosts[1]!.address, c.hosts[2]!.address], JSON.stringify(ranks));
      console.log(`  ranks on ${ranks.map((r) => `${r.host} (executor ${r.executor})`).join(', ')}`);
      // timeline=PATH: each task returned its part, the driver merged them, each rank shifted by its clock offset
      const tl = out.timeline as { pids: number[]; clockOffsets: Record<string, { offsetUs: number; rttUs: number; reference: string }> };
      assert.equal(tl.pids, [0, 1]);
      assert.equal(Object.keys(tl.clockOffsets).sort(), ['0', '1'], 'both ranks measured against the store on the bridge');
      for (const [rank, o] of Object.entries(tl.clockOffsets)) {
        // one kernel clock under every namespace: the estimate lies within half its round trip of 0
        assert.ok(o.rttUs > 0 && Math.abs(o.offsetUs) <= o.rttUs / 2 + 1, `rank ${rank}: offset ${o.offsetUs} us, rtt ${o.rttUs} us`);
      }
      const doc = JSON.parse(readFileSync(timeline, 'utf8')) as { traceEvents: Array<{ name: string; ph: string; pid: number; ts: number; dur: number; args?: { name?: string } }> };
      const names = doc.traceEvents.filter((e) => e.name === 'process_name').map((e) => e.args?.name ?? '');
      assert.equal(names.length, 2);
      assert.ok(names[0] !== names[1] && names.every((n) => / \(h[12]-[^)]+\)$/.test(n)), `ranks named by their namespace hosts: ${names.join(', ')}`);
      const [a, b] = [0, 1].map((p) => doc.traceEvents.find((e) => e.pid === p && e.name === 'allgather')!);
      assert.ok(a!.ts <= b!.ts + b!.dur && b!.ts <= a!.ts + a!.dur, 'the two ranks\' ring passes overlap in the merged trace');
      console.log(`  clock offsets ${Object.values(tl.clockOffsets).map((o) => `${o.offsetUs.toFixed(1)} us (rtt ${o.rttUs.toFixed(1)})`).join(', ')}`);
    } finally {
      await c.stop();
      rmSync(work, { recursive: true, force: true });
    }
  });
}

test.run();
