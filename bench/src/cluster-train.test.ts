/**
 * N workers on different namespace hosts follow the path of 1 worker (sync SGD, fixed data order), as the
 * same-host tests check on one host (test/src/train-multiprocess.test.ts): the digits example joins the job
 * from SHOAL_* (the environment `shoal run` gives its workers; SHOAL_HOST is each host's cluster address).
 * Skipped with the reason when not root or namespaces are unavailable.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clusterUnavailable, NetnsCluster } from './netns-cluster.js';
import { allExit, startPsServersOn, startStore } from './cluster-jobs.js';
import { BENCH_JOB_ID, benchAuth } from './bench-auth.js';
import { jsonLines } from './json-lines.js';

const why = clusterUnavailable({ rates: true });
const digits = fileURLToPath(new URL('../../examples/digits/dist/main.js', import.meta.url));
const common = ['--optimizer', 'sgd', '--lr', '0.1', '--steps', '20', '--epochs', '1'];
const dir = mkdtempSync(join(tmpdir(), 'shoal-cluster-train-'));
const weights = (f: string) => Float32Array.from(JSON.parse(readFileSync(f, 'utf8')).weights as number[]);

function maxRelDiff(a: Float32Array, b: Float32Array, floor = 1e-3): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor));
  return m;
}

/** Run the digits example on `hosts[r]` for every rank r with the SHOAL_* a launcher would set. */
async function trainOn(c: NetnsCluster, o: { hosts: number[]; store?: string; backend: string; transport: string; servers?: number; batch: number; out: string }): Promise<string> {
  const ps = o.hosts.map((h, rank) => {
    const env: Record<string, string> = { ...(process.env as Record<string, string>) };
    if (o.hosts.length > 1) {
      Object.assign(env, {
        SHOAL_RANK: String(rank),
        SHOAL_WORLD_SIZE: String(o.hosts.length),
        SHOAL_LOCAL_RANK: String(o.hosts.slice(0, rank).filter((x) => x === h).length),
        SHOAL_STORE: o.store!,
        // The store's job (cluster-jobs.ts starts it as the bench job): the id and secret the handshake binds.
        SHOAL_JOB_ID: BENCH_JOB_ID,
        ...benchAuth().childEnv(),
        SHOAL_TRANSPORT: o.transport,
        SHOAL_BACKEND: o.backend,
        SHOAL_SERVERS: String(o.servers ?? 1),
        SHOAL_HOST: c.hosts[h]!.address,
        SHOAL_TIMEOUT_MS: '30000',
      });
    }
    return jsonLines(c.spawn(h, process.execPath, [digits, ...common, '--batch-size', String(o.batch), '--out', o.out], { stdio: ['ignore', 'pipe', 'pipe'], env }));
  });
  await allExit(ps, 120_000, `digits ${o.backend} on hosts ${o.hosts.join(',')}`);
  return ps.map((p) => p.lines.map((l) => l.text ?? JSON.stringify(l)).join('\n')).join('\n');
}

if (why) {
  test(`cluster training (skipped: ${why})`, () => console.log(`  skipped: ${why}`));
} else {
  const cluster = await NetnsCluster.start({ hosts: 3, rateMbit: 10_000 });
  test.after(async () => {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const ref = join(dir, 'w1.json');

  test('reference: 1 worker with batch 32', async () => {
    await trainOn(cluster, { hosts: [0], backend: 'ring', transport: 'net', batch: 32, out: ref });
  });

  test('ring over net, 2 hosts x 2 ranks (hierarchical) with batch 8 each: the weights of 1 worker with batch 32', async () => {
    const store = await startStore(cluster, 0);
    try {
      const out = join(dir, 'w-hier.json');
      const log = await trainOn(cluster, { hosts: [0, 0, 1, 1], store: store.url, backend: 'ring', transport: 'net', batch: 8, out });
      assert.match(log, /4 worker\(s\), ring engine/);
      const d = maxRelDiff(weights(out), weights(ref));
      assert.ok(d <= 1e-5, `max relative difference ${d}`);
    } finally {
      await store.stop();
    }
  });

  for (const backend of ['ps', 'hybrid'])
    // hybrid: the digits model has no embedding table, so its dense layers take the ring across the hosts and the
    // servers only see the engine's connection; ps sends every value to host 2 in messages.
    test(`${backend} with 2 server shards on host 2, workers on hosts 0 and 1 (batch 16 each): the weights of 1 worker with batch 32`, async () => {
      const ps = await startPsServersOn(cluster, 2, 2, 2, 'assign', 30_000);
      try {
        const out = join(dir, `w-${backend}.json`);
        const log = await trainOn(cluster, { hosts: [0, 1], store: ps.store, backend, transport: 'net', servers: 2, batch: 16, out });
        assert.match(log, new RegExp(`2 worker\\(s\\), ${backend} engine`));
        const d = maxRelDiff(weights(out), weights(ref));
        assert.ok(d <= 1e-5, `max relative difference ${d}`);
      } finally {
        await ps.stop();
      }
    });
}

test.run();
