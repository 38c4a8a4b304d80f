// Issue #15: the ring's data plane bounds what a peer may send by its segment size. allgatherBytes travels in
// segments (any length, exact results); RingSync limits every pair of its group to one segment plus headers, and
// a peer that announces more fails the collective with ERR_BAD_FRAME naming the bound, on net frames before a
// byte of the body is reserved.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connectGroup, isShoalError, MemoryNetwork, MemoryStore, NetTransport, type ProcessGroup } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { allgatherBytes } from './allgather.js';
import { connectHierarchical } from './allreduce-hierarchical.js';
import { memoryGroups, onAllRanks } from './memory-groups.js';
import { RingSync } from './ring-sync.js';
import { ringSegmentBytes } from './allreduce-ring.js';

test('allgatherBytes in segments: lengths 0, 1, a segment, odd, several segments, on 1..4 ranks', async () => {
  const seg = 64;
  const lengths = [0, 1, 63, 64, 65, 200, 640, 1001];
  for (let size = 1; size <= 4; size++) {
    const groups = await memoryGroups(size);
    for (const base of lengths) {
      const mine = (r: number) => Uint8Array.from({ length: base + r * 37 }, (_, i) => (i * 13 + r) & 0xff);
      const parts = await onAllRanks(groups, (g, r) => allgatherBytes(g, mine(r), { segmentBytes: seg }));
      for (const p of parts) p.forEach((b, r) => assert.equal(Buffer.compare(Buffer.from(b), Buffer.from(mine(r))), 0, `size ${size} length ${base} rank ${r}`));
    }
    await Promise.all(groups.map((g) => g.close()));
  }
});

test('RingSync: every collective fits its segment bound (sparse rows of 3 MiB included) over the memory transport', async () => {
  const groups = await memoryGroups(3);
  const syncs = groups.map((g) => new RingSync(g, { segmentBytes: 64 * 1024 }));
  // dense: 2 MiB fused, broadcast and allreduce
  const dense = (r: number) => [{ name: 'w', shape: [512, 1024], data: Float32Array.from({ length: 512 * 1024 }, (_, i) => ((i % 97) + r) / 8) }];
  const ts = syncs.map((_, r) => dense(r));
  await onAllRanks(groups, (_, r) => syncs[r]!.broadcastParameters(ts[r]!));
  await onAllRanks(groups, (_, r) => syncs[r]!.allreduceMean(ts[r]!));
  for (const t of ts) assert.is(t[0]!.data[5], ((5 % 97) + 0) / 8, 'broadcast then mean of equal values');
  // sparse: 6000 rows of 128 floats per rank (3 MiB), repeated ids, through the segmented allgather
  const rows = (r: number) => ({ name: 'emb', numRows: 1000, rowSize: 128, rowIds: Int32Array.from({ length: 6000 }, (_, i) => (i * 7 + r) % 1000), rows: new Float32Array(6000 * 128).fill(r + 1) });
  const out = await onAllRanks(groups, (_, r) => syncs[r]!.sparseAllreduceMean(rows(r)));
  const total = out[0]!.rows.reduce((a, x) => a + x, 0);
  assert.ok(Math.abs(total - (6000 * 128 * (1 + 2 + 3)) / 3) < 1e-3 * total, `sparse sum ${total}`);
  for (const o of out) assert.equal([...o.rowIds], [...out[0]!.rowIds]);
  await Promise.all(syncs.map((s) => s.close()));
});

/** Two ranks over the net transport (real frames), rank 0 wrapped in a RingSync with 64 KiB segments. */
async function netPair(): Promise<{ sync: RingSync; peer: ProcessGroup; close(): Promise<void> }> {
  const store = new MemoryStore();
  const t = new NetTransport();
  const [g0, g1] = await Promise.all([0, 1].map((rank) => connectGroup({ rank, size: 2, store, transport: t, listenUrl: 'tcp://127.0.0.1:0', timeoutMs: 10_000 })));
  const sync = new RingSync(g0!, { segmentBytes: 64 * 1024 });
  return { sync, peer: g1!, close: async () => (await sync.close(), await g1!.close()) };
}

test('a peer that sends more than a segment fails the collective with ERR_BAD_FRAME naming the bound', async () => {
  const { sync, peer, close } = await netPair();
  try {
    // rank 1 sends one 8 MiB message where the ring expects segments of 64 KiB
    const big = new Uint8Array(8 << 20);
    void peer.send(0, { tag: Tags.allreduce, step: 0, seq: 1, aux: 0 }, big).catch(() => {});
    const e = await sync.allreduceScalars(new Float64Array([1])).then(
      () => undefined,
      (x: unknown) => x,
    );
    assert.ok(isShoalError(e, 'ERR_BAD_FRAME'), String(e));
    assert.match((e as Error).message, /above the ring's segment size \(segmentBytes 65536\) \(65560 bytes\)/);
    assert.match((e as Error).message, /127\.0\.0\.1/, 'names the peer');
  } finally {
    await close();
  }
});

test('a frame header announcing 2 GiB reserves nothing: the connection fails at the header', async () => {
  const { sync, peer, close } = await netPair();
  try {
    global.gc?.();
    const vm0 = Number(/VmSize:\s+(\d+)/.exec(await import('node:fs').then((fs) => fs.readFileSync('/proc/self/status', 'utf8')))![1]);
    // the peer's socket, below the group: a bare SHLF header announcing 2^31 - 1 bytes, then nothing
    const conn = await peer.peer(0);
    const raw = (conn as unknown as { sock: import('node:net').Socket }).sock;
    const h = Buffer.alloc(8);
    h.writeUInt32LE(0x464c4853, 0);
    h.writeUInt32LE(2 ** 31 - 1, 4);
    raw.write(h);
    const e = await sync.barrier().then(
      () => undefined,
      (x: unknown) => x,
    );
    assert.ok(isShoalError(e, 'ERR_BAD_FRAME'), String(e));
    assert.match((e as Error).message, /2147483647 bytes, above the ring's segment size/);
    const vm1 = Number(/VmSize:\s+(\d+)/.exec(await import('node:fs').then((fs) => fs.readFileSync('/proc/self/status', 'utf8')))![1]);
    assert.ok(vm1 - vm0 < 256 * 1024, `virtual memory grew by ${((vm1 - vm0) / 1024).toFixed(0)} MiB`);
  } finally {
    await close();
  }
});

test('the hierarchical groups are bounded too: within a host and across hosts, a message above a segment fails', async () => {
  // hosts [a, a, b, b]: local rings {0, 1} and {2, 3}, the leaders 0 and 2 across; ring stages in 64 KiB segments
  const hosts = ['a', 'a', 'b', 'b'];
  const flat = await memoryGroups(4);
  const store = new MemoryStore().prefixed('hier');
  const net = new MemoryNetwork();
  const hs = await Promise.all(
    hosts.map((hostId, rank) =>
      connectHierarchical({ rank, size: 4, store, hostId, sameHost: 'transport', local: { transport: net.transport(), listenUrl: 'mem://' }, cross: { transport: net.transport(), listenUrl: 'mem://' }, timeoutMs: 10_000 }),
    ),
  );
  const syncs = flat.map((g, r) => new RingSync(g, { topology: 'hierarchical', hierarchical: hs[r]!, segmentBytes: 64 * 1024 }));
  try {
    // 2 MiB per rank goes through both stages in segments: the bound lets every legitimate message through
    const ts = syncs.map((_, r) => [{ name: 'w', shape: [512 * 1024], data: new Float32Array(512 * 1024).fill(r + 1) }]);
    await onAllRanks(flat, (_, r) => syncs[r]!.allreduceMean(ts[r]!));
    for (const t of ts) assert.is(t[0]!.data[12345], 2.5);
    // a peer sends 8 MiB where a segment is expected: within host (rank 1 to 0), across hosts (leader 2 to 0)
    for (const [from, group, where] of [
      [1, (h: (typeof hs)[number]) => h.local, 'within host'],
      [2, (h: (typeof hs)[number]) => h.cross!, 'across hosts'],
    ] as const) {
      const peerGroup = group(hs[from]!);
      const me = group(hs[0]!);
      void peerGroup.send(me.rank, { tag: Tags.allreduce, step: 0, seq: 1, aux: 0 }, new Uint8Array(8 << 20)).catch(() => {});
      const e = await me.recv(peerGroup.rank, { tag: Tags.allreduce, step: 0, seq: 1, aux: 0 }).then(
        () => undefined,
        (x: unknown) => x,
      );
      assert.ok(isShoalError(e, 'ERR_BAD_FRAME'), `${where}: ${String(e)}`);
      assert.match((e as Error).message, new RegExp(`above the ring's segment size \\(segmentBytes 65536, ${where}\\) \\(65560 bytes\\)`));
    }
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

test('RingSync with default options over net: the ring of 3 picks segments above 1 MiB for a 24 MiB gradient, within its bound', async () => {
  const transport = new NetTransport();
  const store = new MemoryStore().prefixed('auto-seg');
  const groups = await Promise.all(Array.from({ length: 3 }, (_, rank) => connectGroup({ rank, size: 3, store, transport, listenUrl: 'tcp://127.0.0.1:0', timeoutMs: 20_000 })));
  const syncs = groups.map((g) => new RingSync(g));
  try {
    assert.is(ringSegmentBytes(24 << 20, 3), 2 << 20, '8 MiB chunks travel in 2 MiB segments');
    const n = 6 << 20;
    const ts = syncs.map((_, r) => [{ name: 'w', shape: [n], data: Float32Array.from({ length: n }, (_, i) => 3 * (r + (i % 1000))) }]);
    await onAllRanks(groups, (_, r) => syncs[r]!.allreduceMean(ts[r]!));
    for (const t of ts) for (let i = 0; i < n; i += 4099) if (t[0]!.data[i] !== 3 + 3 * (i % 1000)) assert.unreachable(`[${i}] = ${t[0]!.data[i]}`);
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

test.run();
