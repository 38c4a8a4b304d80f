import { asText, Errors, ProcessGroup, localHostId, type NumericArray, type ReduceKernels, type Store, type Transport } from '@shoal/core';
import { ShmCollective, shmCollectiveAvailable } from '../shm/shm-collective.js';
import { allreduceRing, type AllreduceOp } from './allreduce-ring.js';
import { broadcastRing } from './broadcast.js';
import type { OpTrace } from './common.js';
import { traceIf } from '@shoal/core/telemetry';

/**
 * Hierarchical allreduce for jobs with several ranks per host (NCCL/Horovod's hierarchical mode, on CPUs):
 *
 *   1. reduce within each host over a fast local transport (shared memory): a ring allreduce of the local ranks;
 *   2. ring allreduce across hosts among the host leaders (local rank 0) over the network transport;
 *   3. broadcast from the leader within each host.
 *
 * Bytes on the network per host: 2(H-1)/H * bytes (H hosts) instead of 2(N-1)/N * bytes per rank for a flat
 * ring over N ranks; the rest moves through shared memory. Works for any placement (hosts may have different
 * numbers of ranks). With one host, step 2 is skipped; with one rank per host, steps 1 and 3 are no-ops.
 *
 * Host membership comes from the rendezvous store (each rank publishes `localHostId()`: hostname + boot id),
 * never from user configuration. Tests may pass `hostId` to simulate several hosts on one machine.
 */
export interface HierarchicalGroupOptions {
  rank: number;
  size: number;
  /** Rendezvous store namespaced for this group. */
  store: Store;
  /** Transport and listen URL between ranks of one host, e.g. shm and 'shm://auto'. */
  local: { transport: Transport; listenUrl: string };
  /** Transport and listen URL between host leaders, e.g. net and 'tcp://<host>:0'. */
  cross: { transport: Transport; listenUrl: string };
  /** Override the host identity (tests). Default: `localHostId()`. */
  hostId?: string;
  timeoutMs?: number;
  /**
   * Within-host stages: 'shm-collective' (default when the addon is built) maps one shared segment per host
   * (`ShmCollective`); 'transport' uses ring collectives over `local.transport`.
   */
  sameHost?: 'shm-collective' | 'transport';
  /** Segment name prefix of the collective (normally the job id). Default 'shoal'. */
  prefix?: string;
}

export class HierarchicalGroup {
  constructor(
    readonly rank: number,
    readonly size: number,
    /** Host id of every rank, indexed by rank. */
    readonly hostOf: readonly string[],
    /** The ranks of this host, in rank order. */
    readonly localRanks: readonly number[],
    readonly local: ProcessGroup,
    /** Present on host leaders when there is more than one host. */
    readonly cross: ProcessGroup | undefined,
    /** The local ranks' shared-segment collective, when used for the within-host stages. */
    readonly collective?: ShmCollective,
  ) {}
  get hosts(): number {
    return new Set(this.hostOf).size;
  }
  get localRank(): number {
    return this.local.rank;
  }
  async close(): Promise<void> {
    await Promise.all([this.local.close(), this.cross?.close(), this.collective?.close()]);
  }
}

/**
 * True when a hierarchical allreduce pays off for this placement (`hostOf[r]` = host id of rank r): the job spans
 * more than one host AND some host runs more than one rank. Otherwise the flat ring moves the same bytes.
 */
export function hierarchyHelps(hostOf: readonly string[]): boolean {
  const perHost = new Map<string, number>();
  for (const h of hostOf) perHost.set(h, (perHost.get(h) ?? 0) + 1);
  return perHost.size > 1 && [...perHost.values()].some((n) => n > 1);
}

/**
 * Publish this rank's host id (`opts.hostId`, default `localHostId()`) under `host/<rank>` in `opts.store` and
 * read every rank's (indexed by rank). Collective over all ranks.
 */
export async function discoverHosts(
  opts: { rank: number; size: number; store: Store; hostId?: string },
  timeoutMs: number,
): Promise<{ me: string; hostOf: string[] }> {
  const me = opts.hostId ?? localHostId();
  if (me === '') throw Errors.invalidArg('options.hostId', 'must be a non-empty string');
  await opts.store.set(`host/${opts.rank}`, me);
  const hostOf: string[] = [];
  for (let r = 0; r < opts.size; r++) hostOf.push(asText(await opts.store.get(`host/${r}`, timeoutMs)));
  return { me, hostOf };
}

/** Discover hosts through the store and connect the local and cross-host groups. Collective over all ranks. */
export async function connectHierarchical(opts: HierarchicalGroupOptions): Promise<HierarchicalGroup> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const { me, hostOf } = await discoverHosts(opts, timeoutMs);
  return connectWithHosts(opts, me, hostOf, timeoutMs);
}

/**
 * Like `connectHierarchical`, but only when `hierarchyHelps` the placement found in the store; otherwise returns
 * undefined on every rank (all ranks read the same host list, so they all decide alike) and connects nothing.
 * The caller owns the returned group. Collective over all ranks.
 */
export async function connectHierarchicalIfHelpful(opts: HierarchicalGroupOptions): Promise<HierarchicalGroup | undefined> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const { me, hostOf } = await discoverHosts(opts, timeoutMs);
  return hierarchyHelps(hostOf) ? connectWithHosts(opts, me, hostOf, timeoutMs) : undefined;
}

async function connectWithHosts(opts: HierarchicalGroupOptions, me: string, hostOf: string[], timeoutMs: number): Promise<HierarchicalGroup> {
  const hostOrder = [...new Set(hostOf)];
  const hostIndex = hostOrder.indexOf(me);
  const localRanks = hostOf.flatMap((h, r) => (h === me ? [r] : []));
  const localRank = localRanks.indexOf(opts.rank);
  const local = new ProcessGroup({
    rank: localRank,
    size: localRanks.length,
    store: opts.store.prefixed(`local-${hostIndex}`),
    transport: opts.local.transport,
    listenUrl: opts.local.listenUrl,
    timeoutMs,
  });
  let cross: ProcessGroup | undefined;
  if (localRank === 0 && hostOrder.length > 1) {
    cross = new ProcessGroup({
      rank: hostIndex,
      size: hostOrder.length,
      store: opts.store.prefixed('cross'),
      transport: opts.cross.transport,
      listenUrl: opts.cross.listenUrl,
      timeoutMs,
    });
  }
  const useColl = (opts.sameHost ?? 'shm-collective') === 'shm-collective' && localRanks.length > 1 && shmCollectiveAvailable();
  let coll: ShmCollective | undefined;
  try {
    const c = useColl
      ? ShmCollective.connect({ rank: localRank, size: localRanks.length, store: opts.store.prefixed(`local-${hostIndex}-coll`), prefix: opts.prefix ?? 'shoal', timeoutMs })
      : undefined;
    [, , coll] = await Promise.all([local.connectRing(), cross?.connectRing(), c]);
  } catch (e) {
    await Promise.all([local.close(), cross?.close(), coll?.close()]);
    throw e;
  }
  return new HierarchicalGroup(opts.rank, opts.size, hostOf, localRanks, local, cross, coll);
}

export interface HierarchicalAllreduceOptions {
  kernels: ReduceKernels;
  op?: AllreduceOp;
  segmentBytes?: number;
  /** Wire format of the cross-host stage only (float32 data; see AllreduceOptions.wire). Default 'native'. */
  wire?: 'native' | 'float16';
  /** Record the stages on a timeline: `local reduce`, `cross allreduce` (its ring stages inside), `local broadcast`. */
  trace?: OpTrace;
}

/** In place on `data`; every rank ends with the reduction over all `size` ranks. Collective. */
export async function allreduceHierarchical(h: HierarchicalGroup, data: NumericArray, opts: HierarchicalAllreduceOptions): Promise<void> {
  const op = opts.op ?? 'sum';
  if (!['sum', 'mean', 'min', 'max'].includes(op)) throw Errors.invalidArg('options.op', `must be sum|mean|min|max, got ${String(op)}`);
  const inner = op === 'mean' ? 'sum' : op;
  const seg = opts.segmentBytes === undefined ? {} : { segmentBytes: opts.segmentBytes };
  const c = h.collective;
  const tr = opts.trace;
  const stage = (name: string, fn: () => Promise<void>) => traceIf(tr, name, fn);
  await stage('local reduce', () => (c !== undefined ? c.allreduce(data, inner) : allreduceRing(h.local, data, { kernels: opts.kernels, op: inner, ...seg })));
  const cross = h.cross;
  if (cross) await stage('cross allreduce', () => allreduceRing(cross, data, { kernels: opts.kernels, op: inner, wire: opts.wire ?? 'native', ...seg, ...(tr ? { trace: tr } : {}) }));
  if (h.hosts > 1) await stage('local broadcast', () => (c !== undefined ? c.broadcast(data, 0) : broadcastRing(h.local, data, { root: 0, ...seg })));
  if (op === 'mean') {
    if (data instanceof Int32Array) for (let i = 0; i < data.length; i++) data[i] = Math.trunc(data[i]! / h.size);
    else opts.kernels.scale(data, 1 / h.size);
  }
}
