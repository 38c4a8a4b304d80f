import { randomBytes } from 'node:crypto';
import { readdirSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Errors, ShoalError, type ShoalErrorCode } from '../errors.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import { DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type Listener, type Transport } from './transport.js';

/**
 * Same-host transport over POSIX shared memory (core/native/shm): one segment per pair, a single-producer /
 * single-consumer ring per direction, futex wake-ups (no core spins while idle), dead-peer detection by pid.
 * Messages never cross the kernel: each byte is copied once into the ring and once out of it.
 *
 * URLs: `shm://<name>`; `shm://auto` (or `shm://`) picks a unique name under the options' prefix.
 * Segment names carry the job id (`shoal-<job>-...`), and a segment is unlinked as soon as both ends have
 * mapped it, so a killed rank leaves nothing in /dev/shm; `removeStaleSegments(job)` clears the only window
 * (a listener killed before its peer attached).
 */
export interface ShmOptions {
  /** Bytes per direction; a power of two >= 4096. Messages larger than this stream through. Default 8 MiB. */
  ringBytes?: number;
  /** Largest message accepted; larger is ERR_BAD_FRAME. Default 2^40. */
  maxMessageBytes?: number;
  /** Busy-poll iterations of the reader thread before it sleeps on the futex (latency vs. CPU). Default 2000. */
  spin?: number;
  /**
   * Microseconds a `recv` may spin on the JS thread for a message to arrive before it waits for the reader
   * thread's notification (MPI-style polling: spares two thread hops on small messages). 0 disables; set 0
   * when ranks outnumber cores, where spinning steals the peer's CPU. Default 50.
   */
  pollMicros?: number;
  /** Name prefix, normally the job id. Default 'shoal'. */
  prefix?: string;
  /**
   * Raise glibc's mmap threshold to 512 MiB (process-wide) so that large receive buffers are recycled from the
   * heap instead of being mapped and page-faulted afresh for every message. Default true.
   */
  tuneMalloc?: boolean;
}

interface NativeSegment {
  attached(): boolean;
  start(cb: (kind: number, id: number, buf: Uint8Array | Uint8Array[] | undefined, err: string | undefined, code: string | undefined) => void): void;
  /** Returns true when the message was copied into the ring synchronously (no completion event follows). */
  send(data: Uint8Array, id: number): boolean;
  tryRecv(pollMicros: number): Uint8Array | undefined;
  close(): void;
  info(): { name: string; side: number; capacity: number; pid: number; peerPid: number };
}
interface ShmAddon {
  tuneMalloc(bytes: number): boolean;
  Segment: new (name: string, create: boolean, ringBytes: number, maxMessage: number, spin: number) => NativeSegment;
}

function loadAddon(): ShmAddon {
  const require = createRequire(import.meta.url);
  try {
    return require('../../native/shm/build/Release/shoal_shm.node') as ShmAddon;
  } catch (e) {
    throw Errors.transport('shm', 'the shared-memory addon is not built: run `npm run build:native`', e);
  }
}

const SHM_DIR = '/dev/shm';

/** Remove segments left by a job (a listener killed before its peer attached). Returns how many. */
export function removeStaleSegments(prefix: string): number {
  let n = 0;
  let names: string[] = [];
  try {
    names = readdirSync(SHM_DIR);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(`shoal-${prefix}-`)) continue;
    try {
      unlinkSync(`${SHM_DIR}/${name}`);
      n++;
    } catch {
      /* already gone */
    }
  }
  return n;
}

/** List this job's segments currently visible in /dev/shm (for tests and cleanup checks). */
export function listSegments(prefix: string): string[] {
  try {
    return readdirSync(SHM_DIR).filter((n) => n.startsWith(`shoal-${prefix}-`));
  } catch {
    return [];
  }
}

export function shmTransport(opts: ShmOptions = {}): Transport {
  return new ShmTransport(opts);
}

class ShmTransport implements Transport {
  readonly name = 'shm';
  readonly schemes = ['shm'] as const;
  private readonly addon: ShmAddon;
  private readonly ringBytes: number;
  private readonly maxMessage: number;
  private readonly spin: number;
  private readonly prefix: string;
  private readonly pollMicros: number;
  private seq = 0;
  constructor(opts: ShmOptions) {
    this.ringBytes = opts.ringBytes ?? 8 << 20;
    if (!Number.isInteger(this.ringBytes) || this.ringBytes < 4096 || (this.ringBytes & (this.ringBytes - 1)) !== 0) {
      throw Errors.invalidArg('options.ringBytes', `must be a power of two >= 4096, got ${opts.ringBytes}`);
    }
    this.maxMessage = opts.maxMessageBytes ?? 2 ** 40;
    this.spin = opts.spin ?? 2000;
    this.pollMicros = opts.pollMicros ?? 50;
    if (!(this.pollMicros >= 0)) throw Errors.invalidArg('options.pollMicros', `must be >= 0, got ${opts.pollMicros}`);
    this.prefix = opts.prefix ?? 'shoal';
    if (!/^[A-Za-z0-9_.-]+$/.test(this.prefix)) throw Errors.invalidArg('options.prefix', `must match [A-Za-z0-9_.-]+, got ${this.prefix}`);
    this.addon = loadAddon();
    if (opts.tuneMalloc ?? true) this.addon.tuneMalloc(512 << 20);
  }

  private parse(url: string): string {
    const m = /^shm:\/\/(.*)$/.exec(url);
    if (!m) throw Errors.invalidArg('url', `must be shm://<name>, got ${url}`);
    const name = m[1] ?? '';
    if (name !== '' && name !== 'auto' && !/^[A-Za-z0-9_.-]+$/.test(name)) {
      throw Errors.invalidArg('url', `shm name must match [A-Za-z0-9_.-]+, got ${name}`);
    }
    return name;
  }

  async listen(url: string): Promise<Listener> {
    let name = this.parse(url);
    if (name === '' || name === 'auto') {
      name = `shoal-${this.prefix}-${process.pid}-${++this.seq}-${randomBytes(4).toString('hex')}`;
    }
    let seg: NativeSegment;
    try {
      seg = new this.addon.Segment(`/${name}`, true, this.ringBytes, this.maxMessage, this.spin);
    } catch (e) {
      throw Errors.transport(`listen shm://${name}`, (e as Error).message, e);
    }
    return new ShmListener(`shm://${name}`, seg, this.pollMicros);
  }

  async dial(url: string, opts?: IoOptions): Promise<Connection> {
    const name = this.parse(url);
    const timeout = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const start = Date.now();
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      try {
        const seg = new this.addon.Segment(`/${name}`, false, 0, this.maxMessage, this.spin);
        return new ShmConnection(seg, `listener ${url}`, this.pollMicros);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code !== 'ENOENT' && code !== 'ENOTREADY') throw Errors.transport(`dial ${url}`, (e as Error).message, e);
      }
      if (opts?.signal?.aborted) throw Errors.aborted(`dial ${url}`, opts.signal.reason);
      if (Date.now() - start >= timeout) throw Errors.timeout(`dial ${url}`, timeout);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

class ShmListener implements Listener {
  private state: 'open' | 'accepted' | 'closed' = 'open';
  constructor(
    readonly url: string,
    private readonly seg: NativeSegment,
    private readonly pollMicros: number,
  ) {}
  async accept(opts?: IoOptions): Promise<Connection> {
    if (this.state !== 'open') throw Errors.state(`listener ${this.url} is ${this.state}: a pair accepts one peer`);
    const timeout = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const start = Date.now();
    for (let delay = 1; ; delay = Math.min(delay * 2, 10)) {
      if ((this.state as string) === 'closed') throw Errors.closed(`listener ${this.url}`);
      if (this.seg.attached()) {
        this.state = 'accepted';
        return new ShmConnection(this.seg, `dialer of ${this.url}`, this.pollMicros);
      }
      if (opts?.signal?.aborted) throw Errors.aborted(`accept on ${this.url}`, opts.signal.reason);
      if (Date.now() - start >= timeout) throw Errors.timeout(`accept on ${this.url}`, timeout);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  async close(): Promise<void> {
    if (this.state === 'open') this.seg.close();
    this.state = 'closed';
  }
}

const EV_MESSAGE = 0;
const EV_SEND_DONE = 1;
const EV_SEND_FAILED = 2;
const EV_RECV_FAILED = 3;

class ShmConnection implements Connection {
  readonly transport = 'shm';
  private readonly inbox: Uint8Array[] = [];
  private readonly waiters: Deferred<Uint8Array>[] = [];
  private readonly sends = new Map<number, { data: Uint8Array; done: Deferred<void> }>();
  private nextId = 1;
  private failure: ShoalError | undefined;
  private closedSelf = false;
  constructor(
    private readonly seg: NativeSegment,
    readonly remote: string,
    private readonly pollMicros: number,
  ) {
    seg.start((kind, id, buf, err, code) => this.onEvent(kind, id, buf, err, code));
  }
  get closed() {
    return this.closedSelf;
  }

  private deliver(m: Uint8Array) {
    const w = this.waiters.shift();
    if (w) w.resolve(m);
    else this.inbox.push(m);
  }

  private onEvent(kind: number, id: number, buf: Uint8Array | Uint8Array[] | undefined, err?: string, code?: string) {
    switch (kind) {
      case EV_MESSAGE: {
        if (Array.isArray(buf)) for (const m of buf) this.deliver(m);
        else this.deliver(buf!);
        return;
      }
      case EV_SEND_DONE: {
        const s = this.sends.get(id);
        this.sends.delete(id);
        s?.done.resolve();
        return;
      }
      case EV_SEND_FAILED: {
        const s = this.sends.get(id);
        this.sends.delete(id);
        s?.done.reject(this.toError(code, err ?? 'send failed'));
        return;
      }
      case EV_RECV_FAILED: {
        this.failure = this.toError(code, err ?? 'receive failed');
        for (const w of this.waiters.splice(0)) w.reject(this.failure);
        return;
      }
    }
  }

  private toError(code: string | undefined, message: string): ShoalError {
    switch (code as ShoalErrorCode | undefined) {
      case 'ERR_PEER_CLOSED':
        return Errors.peerClosed(this.remote, message);
      case 'ERR_CLOSED':
        return Errors.closed(`connection to ${this.remote}`);
      case 'ERR_BAD_FRAME':
        return Errors.badFrame(this.remote, message);
      default:
        return Errors.transport(this.remote, message);
    }
  }

  send(data: Uint8Array, opts?: IoOptions): Promise<void> {
    if (this.closedSelf) return Promise.reject(Errors.closed(`connection to ${this.remote}`));
    if (opts?.signal?.aborted) return Promise.reject(Errors.aborted('send', opts.signal.reason));
    if (this.failure?.code === 'ERR_PEER_CLOSED') return Promise.reject(this.failure);
    const id = this.nextId++;
    if (this.seg.send(data, id)) return Promise.resolve();
    const done = deferred<void>();
    this.sends.set(id, { data, done });
    // A send that cannot complete in time means the peer stopped reading: the pair is unusable after that.
    return withDeadline(`send to ${this.remote}`, done.promise, opts, () => void this.close());
  }

  recv(opts?: IoOptions): Promise<Uint8Array> {
    if (this.closedSelf) return Promise.reject(Errors.closed(`connection to ${this.remote}`));
    const m = this.inbox.shift();
    if (m) return Promise.resolve(m);
    if (this.failure) return Promise.reject(this.failure);
    if (this.waiters.length === 0 && !opts?.signal?.aborted) {
      const got = this.seg.tryRecv(this.pollMicros);
      if (got) return Promise.resolve(got);
    }
    const d = deferred<Uint8Array>();
    this.waiters.push(d);
    return withDeadline(`recv from ${this.remote}`, d.promise, opts, () => {
      const i = this.waiters.indexOf(d);
      if (i >= 0) this.waiters.splice(i, 1);
    });
  }

  async close(): Promise<void> {
    if (this.closedSelf) return;
    this.closedSelf = true;
    this.seg.close();
    const err = Errors.closed(`connection to ${this.remote}`);
    for (const w of this.waiters.splice(0)) w.reject(err);
    for (const s of this.sends.values()) s.done.reject(err);
    this.sends.clear();
  }
}
