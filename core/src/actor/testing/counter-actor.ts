import { Errors } from '../../errors.js';
import type { ActorContext } from '../actor-host.js';
import { arg, remoteMethods } from '../remote.js';

/**
 * A small actor used by the actor runtime's own tests (and handy as an example): it records call order,
 * echoes typed arrays, sleeps, throws, and can crash its process.
 */
export class CounterActor {
  /** Everything but `_secret` and `onActorStart` (a hook), with each argument checked. */
  static readonly remote = remoteMethods<CounterActor>({
    add: [arg.number(), arg.optional(arg.string())],
    value: [],
    calls: [],
    whoami: [],
    scale: [arg.floatArray(), arg.number(), arg.int32Array()],
    slow: [arg.int(0, 600_000), arg.string()],
    fail: [arg.string()],
    crash: [arg.optional(arg.int(0, 255))],
  });
  private count: number;
  private readonly log: string[] = [];
  epoch = 0;
  constructor(start = 0) {
    this.count = start;
  }
  onActorStart(ctx: ActorContext): void {
    this.epoch = ctx.epoch;
  }
  add(n: number, tag = ''): number {
    this.count += n;
    if (tag) this.log.push(tag);
    return this.count;
  }
  value(): number {
    return this.count;
  }
  calls(): string[] {
    return this.log;
  }
  whoami(): { pid: number; epoch: number } {
    return { pid: process.pid, epoch: this.epoch };
  }
  /** Returns `x * k` (a new array) and the sum of `ids`. */
  scale(x: Float32Array, k: number, ids: Int32Array): { y: Float32Array; idSum: number; n: number } {
    const y = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) y[i] = x[i]! * k;
    let s = 0;
    for (const v of ids) s += v;
    return { y, idSum: s, n: x.length };
  }
  async slow(ms: number, tag: string): Promise<string> {
    await new Promise((r) => setTimeout(r, ms));
    this.log.push(tag);
    return tag;
  }
  fail(msg: string): never {
    throw Errors.data('CounterActor.fail', msg);
  }
  crash(code = 7): void {
    setTimeout(() => process.exit(code), 5);
  }
  _secret(): number {
    return 42;
  }
}
