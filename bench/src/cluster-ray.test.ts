/**
 * The Ray anchor's launch and report logic (cluster-ray.ts, cluster-ps.ts) without Ray: the `ray start` command
 * lines per node, the log lines picked to explain a failure, the pairing of shoal rows with their anchors and the
 * note saying which anchor ran. The run itself is `npm run bench -- cluster --only-ps` (bench/README.md).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RAY_TEMP_DIR, rayLogDiagnosis, rayPython, rayStartArgs } from './cluster-ray.js';
import { pairPsRows, psAnchorNote, type PsRow } from './cluster-ps.js';

const opt = (args: string[], name: string) => args[args.indexOf(name) + 1];

test('ray start: the head binds its own address with a GCS port and no dashboard; a node joins the head', () => {
  const head = rayStartArgs({ address: '10.77.0.3', port: 6379, resources: { shoal_ps_server: 1 }, objectStoreBytes: 256 << 20, numCpus: 1 });
  assert.ok(head.includes('--head') && head.includes('--block'));
  assert.is(opt(head, '--node-ip-address'), '10.77.0.3');
  assert.is(opt(head, '--port'), '6379');
  assert.is(opt(head, '--include-dashboard'), 'false');
  assert.is(opt(head, '--temp-dir'), RAY_TEMP_DIR);
  assert.ok(RAY_TEMP_DIR.startsWith('/dev/shm/'), 'the session lives in the host\'s private /dev/shm');
  assert.equal(JSON.parse(opt(head, '--resources')!), { shoal_ps_server: 1 });
  assert.is(opt(head, '--object-store-memory'), String(256 << 20));
  const node = rayStartArgs({ address: '10.77.0.1', head: '10.77.0.3:6379', port: 6379, resources: { shoal_ps_worker_0: 1 }, objectStoreBytes: 1 << 28, numCpus: 1 });
  assert.not.ok(node.includes('--head'));
  assert.not.ok(node.includes('--port'), 'a node has no GCS port');
  assert.is(opt(node, '--address'), '10.77.0.3:6379');
  assert.is(opt(node, '--node-ip-address'), '10.77.0.1');
});

test('Ray log diagnosis: keeps errors, fatal checks and unreachable peers, drops the 8.8.8.8 probe and info', () => {
  const log = [
    '[2026-12-08 02:33:00,564 W 24896 24896] network_util.cc:330: Failed to determine local IP via external connectivity to: 8.8.8.8:53, falling back to hostname resolution',
    '[2026-12-08 02:33:01,000 I 1 1] raylet.cc:1: started',
    '[2026-12-08 02:33:02,000 W 1 2] retryable_grpc_client.cc:1: Core worker 10.77.0.3:10005 has been unavailable for more than 60 seconds',
    '[2026-12-08 02:33:03,000 E 1 2] node_manager.cc:1: lost the GCS',
    '[2026-12-08 02:33:04,000 F 1 2] x.cc:1: Check failed: ok',
    'plain line',
  ].join('\n');
  const got = rayLogDiagnosis(log);
  assert.is(got.length, 3);
  assert.match(got[0]!, /has been unavailable/);
  assert.match(got[1]!, / E 1 2\]/);
  assert.match(got[2]!, /Check failed/);
  assert.is(rayLogDiagnosis(log, 1).length, 1, 'at most max lines, the last ones');
  assert.equal(rayLogDiagnosis(''), []);
});

test('rayPython names the interpreter that cannot import Ray', () => {
  const r = rayPython('/nonexistent/python3');
  assert.ok('missing' in r);
  if ('missing' in r) assert.match(r.missing, /nonexistent/);
});

test('ps rows: shoal pairs with Ray (rounds/s and p50) and gloo of its rate and size; missing rows pair with none', () => {
  const rows: PsRow[] = [
    { impl: 'shoal-ps', rate_mbit: 1000, bytes: 1 << 20, rounds_per_s: 30, p50_us: 30_000 },
    { impl: 'shoal-ps', request_bytes: 65536, rate_mbit: 1000, bytes: 1 << 20, rounds_per_s: 45, p50_us: 20_000 },
    { impl: 'torch-gloo-average', rate_mbit: 1000, bytes: 1 << 20, rounds_per_s: 60, p50_us: 15_000 },
    { impl: 'ray', rate_mbit: 1000, bytes: 1 << 20, rounds_per_s: 10, p50_us: 120_000 },
    { impl: 'shoal-ps', rate_mbit: 1000, bytes: 16 << 20, rounds_per_s: 2, p50_us: 500_000 },
    { impl: 'ray', rate_mbit: 1000, bytes: 16 << 20, missing: 'Ray head on host 2: nothing after 120000 ms' },
    { impl: 'ray', rate_mbit: 10000, bytes: 1 << 20, rounds_per_s: 99, p50_us: 1 },
  ];
  pairPsRows(rows);
  assert.is(rows[0]!.vs_ray, 3);
  assert.is(rows[0]!.vs_ray_p50, 4);
  assert.is(rows[0]!.vs_anchor, 0.5);
  assert.is(rows[1]!.vs_ray, 4.5, 'each shoal variant pairs with the same anchors');
  assert.is(rows[1]!.vs_ray_p50, 6);
  assert.is(rows[4]!.vs_ray, undefined, 'a missing Ray row gives no ratio');
  assert.is(rows[4]!.vs_anchor, undefined);
  const note = psAnchorNote(rows);
  assert.is(note.ps_anchor, 'ray');
  assert.equal(note.ps_anchors, ['ray', 'torch-gloo-average']);
  assert.match(note.ps_anchor_note, /nothing after 120000 ms/, 'a partial failure is named');
  const none = psAnchorNote(rows.filter((r) => r.impl !== 'ray' || 'missing' in r));
  assert.is(none.ps_anchor, 'torch-gloo-average');
  assert.match(none.ps_anchor_note, /did not run.*nothing after 120000 ms/);
});

test.run();
