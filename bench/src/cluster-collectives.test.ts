/**
 * shoal's cross-host paths on the namespace cluster (issue 19): every rank runs in a "host" (own network, UTS
 * and mount namespace, so its own host id and /dev/shm) on 10 Gbit/s tbf-shaped links. Exact results as on one
 * host; link bytes counted on the switch. Skipped with the reason when not root or namespaces are unavailable.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { clusterUnavailable, NetnsCluster } from './netns-cluster.js';
import { runPs, runRing } from './cluster-jobs.js';

const why = clusterUnavailable({ rates: true });
const nngBuilt = existsSync(fileURLToPath(new URL('../../core/native/nng/build/Release/shoal_nng.node', import.meta.url)));
const transports = nngBuilt ? (['net', 'nng'] as const) : (['net'] as const);
const MiB = 1 << 20;

if (why) {
  test(`cluster collectives (skipped: ${why})`, () => console.log(`  skipped: ${why}`));
} else {
  const cluster = await NetnsCluster.start({ hosts: 4, rateMbit: 10_000 });
  test.after(() => cluster.stop());
  if (!nngBuilt) console.log('  nng addon not built: nng cases skipped');

  for (const transport of transports) {
    test(`flat ring over ${transport}, 4 hosts x 1 rank: exact int32 sums and float64 mean`, async () => {
      const { results } = await runRing(cluster, { placement: [0, 1, 2, 3], transport, topology: 'flat' });
      assert.is(results.length, 4);
      results.forEach((r, i) => assert.is(r.rank, i));
    });

    test(`hierarchical over ${transport}, 2 hosts x 2 ranks: exact; only the leaders' share crosses the links, less than the flat ring's`, async () => {
      const B = 4 * MiB;
      const hier = await runRing(cluster, { placement: [0, 0, 1, 1], transport, topology: 'hierarchical', linkBytes: B });
      for (const r of hier.results) {
        assert.is(r.hosts, 2, JSON.stringify(r));
        assert.is((r.localRanks as number[]).length, 2, JSON.stringify(r));
      }
      assert.equal(hier.results.map((r) => r.leader), [true, false, true, false]);
      const flat = await runRing(cluster, { placement: [0, 0, 1, 1], transport, topology: 'flat', linkBytes: B });
      const [h0, h1] = hier.linkTx!;
      const [f0, f1] = flat.linkTx!;
      console.log(`  ${transport}: bytes sent across each host's link for a 4 MiB allreduce: hierarchical ${h0}, ${h1}; flat ${f0}, ${f1}`);
      // 2 hosts: each leader sends 2(H-1)/H x B = B; the flat ring over 4 ranks (2 per host) sends 2(N-1)/N x B =
      // 1.5 B over each host's one cross edge. Headers and acknowledgements add a few per cent.
      for (const x of [h0!, h1!]) assert.ok(x >= B && x <= 1.15 * B, `hierarchical: ${x} bytes, want B..1.15 B (B = ${B})`);
      for (const x of [f0!, f1!]) assert.ok(x >= 1.5 * B && x <= 1.15 * 1.5 * B, `flat: ${x} bytes, want 1.5 B..1.73 B`);
      // the four ranks never share a host id across hosts (h2, h3 idle: nothing crossed their links)
      assert.equal(hier.linkTx!.slice(2).map((x) => x < 64 * 1024), [true, true]);
    });
  }

  test('parameter servers on their own host (2 shards on host 2), workers on hosts 0 and 1: values in messages, exact', async () => {
    const bytes = MiB;
    const rounds = 5;
    const res = await runPs(cluster, { serverHost: 2, workerHosts: [0, 1], numServers: 2, bytes, rounds });
    for (const r of res) {
      assert.is(r.sharedCalls, 0, `no data-plane request across hosts: ${JSON.stringify(r)}`);
      assert.ok((r.bytesSent as number) >= rounds * bytes && (r.bytesReceived as number) >= rounds * bytes, `values travelled in messages: ${JSON.stringify(r)}`);
    }
  });
}

test.run();
