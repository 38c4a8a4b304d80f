import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CommitStore, ElasticControl, LostWorker, MembershipChange } from '@shoal/backends';
import { asText, Errors, TcpStore, type JobAuth, type Store, type WorkerOptions } from '@shoal/core';

/**
 * Where the commits of an elastic Spark job (`shoal_spark.run(elastic=True)`) outlive its barrier stages. The
 * driver keeps them, in the store it serves for the whole job (`StoreCommits`), or they go to a folder every
 * executor reaches (`DirCommits`). Either way only members of the job can write or read one: the store takes
 * only connections that prove the job secret (TLS too with `tls=True`), and a folder's commit carries a MAC under it.
 */

/** Largest piece of a commit in one store value (the store's messages are at most 4 MiB). */
const PART_BYTES = 3 * 1024 * 1024;
const HEAD_KEY = 'elastic/commit/head';
const COUNT_KEY = 'elastic/commit/count';
const partKey = (slot: number, i: number) => `elastic/commit/${slot}/${i}`;

interface Head {
  seq: number;
  slot: number;
  parts: number;
  bytes: number;
  sha256: string;
}

/**
 * Commits in a store (the driver's): each one in pieces under one of two slots, then a head naming the slot, its
 * size and its SHA-256, so a commit cut short (rank 0 lost while writing) leaves the previous head and its slot
 * whole. The store holds at most two commits.
 */
export class StoreCommits implements CommitStore {
  private seq: number | undefined;

  constructor(
    private readonly store: Store,
    readonly where: string,
    private readonly timeoutMs: number,
    private readonly onClose: () => Promise<void> = async () => {},
  ) {}

  async save(commit: Uint8Array): Promise<void> {
    if (this.seq === undefined) this.seq = (await this.readHead())?.seq ?? 0;
    const seq = this.seq + 1;
    const slot = seq % 2;
    const parts = Math.max(1, Math.ceil(commit.byteLength / PART_BYTES));
    for (let i = 0; i < parts; i++) await this.store.set(partKey(slot, i), commit.subarray(i * PART_BYTES, Math.min(commit.byteLength, (i + 1) * PART_BYTES)));
    const head: Head = { seq, slot, parts, bytes: commit.byteLength, sha256: createHash('sha256').update(commit).digest('hex') };
    await this.store.set(HEAD_KEY, JSON.stringify(head));
    await this.store.add(COUNT_KEY, 1);
    this.seq = seq;
  }

  async load(): Promise<Uint8Array | undefined> {
    const head = await this.readHead();
    if (head === undefined) return undefined;
    this.seq = head.seq;
    const out = new Uint8Array(head.bytes);
    let off = 0;
    for (let i = 0; i < head.parts; i++) {
      const p = await this.store.get(partKey(head.slot, i), this.timeoutMs);
      if (off + p.byteLength > head.bytes) break;
      out.set(p, off);
      off += p.byteLength;
    }
    if (off !== head.bytes || createHash('sha256').update(out).digest('hex') !== head.sha256) {
      throw Errors.data(this.where, `commit ${head.seq} is damaged: ${off} of ${head.bytes} bytes, or its SHA-256 differs`);
    }
    return out;
  }

  close(): Promise<void> {
    return this.onClose();
  }

  private async readHead(): Promise<Head | undefined> {
    if ((await this.store.add(COUNT_KEY, 0)) === 0) return undefined;
    const text = asText(await this.store.get(HEAD_KEY, this.timeoutMs));
    let h: Head;
    try {
      h = JSON.parse(text) as Head;
    } catch {
      throw Errors.data(this.where, `${HEAD_KEY} is not JSON: ${text.slice(0, 200)}`);
    }
    if (![h.seq, h.slot, h.parts, h.bytes].every((v) => Number.isInteger(v) && v >= 0) || typeof h.sha256 !== 'string') throw Errors.data(this.where, `${HEAD_KEY} is not a commit head: ${text.slice(0, 200)}`);
    return h;
  }
}

const MAGIC = Buffer.from('shoalEC1');
const SEAL = 'elastic-commit';

/**
 * Commits in a folder (`elastic_dir`), one file `commit.bin` replaced atomically (written beside, fsynced,
 * renamed): `shoalEC1`, an HMAC-SHA256 under the job secret (`JobAuth.seal`), the commit. A file that another job,
 * a truncation or a flipped byte produced fails `load` with ERR_DATA.
 */
export class DirCommits implements CommitStore {
  readonly where: string;
  private readonly file: string;

  constructor(
    private readonly dir: string,
    private readonly auth: JobAuth,
  ) {
    this.where = `folder ${dir}`;
    this.file = join(dir, 'commit.bin');
  }

  async save(commit: Uint8Array): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.commit-${process.pid}.tmp`);
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(Buffer.concat([MAGIC, this.auth.seal(SEAL, commit), commit]));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.file);
  }

  async load(): Promise<Uint8Array | undefined> {
    let b: Buffer;
    try {
      b = await readFile(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const body = b.subarray(MAGIC.length + 32);
    if (b.byteLength < MAGIC.length + 32 || !b.subarray(0, MAGIC.length).equals(MAGIC)) throw Errors.data(this.file, 'is not an elastic commit (bad magic)');
    if (!this.auth.verifySeal(SEAL, body, b.subarray(MAGIC.length, MAGIC.length + 32))) {
      throw Errors.data(this.file, "fails its MAC: it was not written by this job (another job's secret, or damaged)");
    }
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  }

  async close(): Promise<void> {}

  /** Remove the job's folder (the driver does it when the job ends). */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * The commit store a stage's environment names (SHOAL_ELASTIC_STORE or SHOAL_ELASTIC_DIR). The driver's store is
 * dialled on first use only (rank 0 is the only rank that reads or writes commits).
 */
export function openCommitStore(options: WorkerOptions): CommitStore | undefined {
  const s = options.elasticStage;
  if (s === undefined) return undefined;
  if ('dir' in s.commits) return new DirCommits(join(s.commits.dir, options.jobId), options.auth);
  const url = s.commits.store;
  let client: Promise<TcpStore> | undefined;
  const lazy: Store = {
    set: async (k, v) => (await dial()).prefixed(options.jobId).set(k, v),
    get: async (k, t) => (await dial()).prefixed(options.jobId).get(k, t),
    wait: async (k, t) => (await dial()).prefixed(options.jobId).wait(k, t),
    add: async (k, d) => (await dial()).prefixed(options.jobId).add(k, d),
    prefixed: () => {
      throw Errors.state('the commit store is not prefixed further');
    },
  };
  function dial(): Promise<TcpStore> {
    client ??= TcpStore.connect(url, { auth: options.auth, connectTimeoutMs: options.timeoutMs, timeoutMs: options.timeoutMs });
    return client;
  }
  return new StoreCommits(lazy, `the driver's store ${url}`, options.timeoutMs, async () => {
    if (client) await (await client.catch(() => undefined))?.close();
  });
}

/**
 * The elastic control of a stage of an elastic Spark job: membership never changes inside a stage (a lost task
 * fails the whole barrier stage, and the driver starts the next one), so it only carries the stage number, the
 * commit store and what the previous stage lost.
 */
export class StageElastic implements ElasticControl {
  constructor(
    readonly generation: number,
    readonly durable: CommitStore,
    readonly lostBefore: readonly LostWorker[],
  ) {}

  async joinPending(): Promise<boolean> {
    return false;
  }

  async reset(): Promise<MembershipChange> {
    throw Errors.state(`stage ${this.generation} of an elastic Spark job cannot change membership in place: the driver restarts the stage`);
  }
}
