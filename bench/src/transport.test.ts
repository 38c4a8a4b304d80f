import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { benchPayload, defaultBenchTransports, itersFor, runTransportBench } from './transport.js';

test('iteration counts stay within their bounds', () => {
  for (const bytes of [1, 1024, 1 << 20, 64 << 20]) {
    for (const quick of [false, true]) {
      const it = itersFor(bytes, quick);
      assert.ok(it.oneway >= 4 && it.oneway <= 200_000 && it.rtt >= 4 && it.rtt <= 2_000 && it.warm >= 2, JSON.stringify({ bytes, it }));
    }
  }
});

test('payloads differ by seed and size (a stale or shifted buffer cannot pass verification)', () => {
  assert.not.equal(benchPayload(5000, 1), benchPayload(5000, 2));
  assert.not.equal(benchPayload(5000, 1).subarray(0, 4999), benchPayload(4999, 1));
});

test('a small run over net (tcp and ipc) and the Python anchor gives verified rows with ratios', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'shoal-bench-test-'));
  try {
    const doc = await runTransportBench(defaultBenchTransports(tmp), tmp, { sizes: [1024, 200_000], quick: true, transports: ['net'], log: () => {} });
    assert.equal(doc.skipped, []);
    const net = doc.rows.filter((r) => r.transport === 'net');
    assert.equal(net.map((r) => `${r.url_scheme}:${r.bytes}`), ['tcp:1024', 'tcp:200000', 'ipc:1024', 'ipc:200000']);
    for (const r of net) {
      assert.ok(r.verified && r.oneway_mbps > 0 && r.rtt_p50_us > 0 && r.rtt_p99_us >= r.rtt_p50_us, JSON.stringify(r));
      assert.is(r.iters, r.oneway_iters);
    }
    const anchor = doc.rows.filter((r) => r.transport === 'python-socket');
    assert.is(anchor.length, 4, 'python3 anchor rows');
    assert.ok(net.every((r) => typeof r.oneway_vs_anchor === 'number' && typeof r.rtt_p50_vs_anchor === 'number'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test.run();
