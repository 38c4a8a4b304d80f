import { Errors } from '../errors.js';

/**
 * The remote surface of an actor: the methods callers may reach over the wire, each with a check per argument.
 * TypeScript `private` is not a wire boundary, so an actor class names its remote methods explicitly:
 *
 *   class Counter {
 *     static readonly remote = remoteMethods<Counter>({ add: [arg.int(), arg.optional(arg.string())], value: [] });
 *     add(n: number, tag = ''): number { ... }
 *     value(): number { ... }
 *   }
 *
 * `ActorServer` serves only those methods and runs the checks before the method: a request naming another method,
 * or with an argument that fails its check (or with more arguments than declared), gets an error reply naming the
 * method and the argument; the method does not run, so a bad call has no side effect.
 *
 * Hand-written instead of a schema library: the checks run on every request of the parameter server's hot path
 * (one push per key slice and step) and allocate nothing when they pass.
 */
export type ArgCheck = (value: unknown, where: string) => void;

/** Per remote method, one check per argument (missing trailing arguments are checked as `undefined`). */
export type RemoteSpec<T = unknown> = { readonly [K in keyof T & string]?: readonly ArgCheck[] };

/** Declare the remote methods of class `T` (the keys must be its method names). */
export function remoteMethods<T>(spec: { [K in keyof T & string as T[K] extends (...a: never[]) => unknown ? K : never]?: readonly ArgCheck[] }): RemoteSpec<T> {
  return Object.freeze({ ...spec }) as RemoteSpec<T>;
}

const bad = (where: string, want: string, v: unknown): RangeError => Errors.invalidArg(where, `must be ${want}, got ${describe(v)}`);

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}[${(v as unknown as { length?: number }).length ?? v.byteLength}]`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === undefined) return String(v);
  return typeof v;
}

/** Argument checks (see `remoteMethods`). */
export const arg = {
  /** Anything (the method checks it itself, or any value is fine). */
  any: (): ArgCheck => () => {},
  /** An integer in [min, max] (defaults: 0 and Number.MAX_SAFE_INTEGER). */
  int:
    (min = 0, max = Number.MAX_SAFE_INTEGER): ArgCheck =>
    (v, where) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw bad(where, `an integer in [${min}, ${max}]`, v);
    },
  /** A finite number. */
  number: (): ArgCheck => (v, where) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(where, 'a finite number', v);
  },
  /** A string of at most `maxLength` characters (default 4096). */
  string:
    (maxLength = 4096): ArgCheck =>
    (v, where) => {
      if (typeof v !== 'string' || v.length > maxLength) throw bad(where, `a string of at most ${maxLength} characters`, v);
    },
  boolean: (): ArgCheck => (v, where) => {
    if (typeof v !== 'boolean') throw bad(where, 'a boolean', v);
  },
  /** A Float32Array or Float64Array. */
  floatArray: (): ArgCheck => (v, where) => {
    if (!(v instanceof Float32Array || v instanceof Float64Array)) throw bad(where, 'a Float32Array or Float64Array', v);
  },
  int32Array: (): ArgCheck => (v, where) => {
    if (!(v instanceof Int32Array)) throw bad(where, 'an Int32Array', v);
  },
  optional:
    (c: ArgCheck): ArgCheck =>
    (v, where) => {
      if (v !== undefined) c(v, where);
    },
  nullable:
    (c: ArgCheck): ArgCheck =>
    (v, where) => {
      if (v !== null) c(v, where);
    },
  /** An array (at most `maxLength` long, default 1e6) whose elements pass `c`. */
  array:
    (c: ArgCheck, maxLength = 1_000_000): ArgCheck =>
    (v, where) => {
      if (!Array.isArray(v) || v.length > maxLength) throw bad(where, `an array of at most ${maxLength} elements`, v);
      for (let i = 0; i < v.length; i++) c(v[i], `${where}[${i}]`);
    },
  /** A plain object whose listed fields pass their checks (other fields are allowed and left alone). */
  object:
    (fields: Readonly<Record<string, ArgCheck>>): ArgCheck =>
    (v, where) => {
      if (v === null || typeof v !== 'object' || Array.isArray(v) || ArrayBuffer.isView(v)) throw bad(where, 'an object', v);
      for (const k in fields) fields[k]!((v as Record<string, unknown>)[k], `${where}.${k}`);
    },
  /** One of the given primitive values. */
  oneOf:
    (...values: readonly (string | number | boolean | null)[]): ArgCheck =>
    (v, where) => {
      if (!values.includes(v as string)) throw bad(where, `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`, v);
    },
};

/** The remote spec of `instance`'s class (its static `remote`), or undefined when it declares none. */
export function remoteSpecOf(instance: object): Readonly<Record<string, readonly ArgCheck[]>> | undefined {
  const spec = (instance.constructor as { remote?: unknown } | undefined)?.remote;
  return spec && typeof spec === 'object' ? (spec as Record<string, readonly ArgCheck[]>) : undefined;
}

/** Check a request's arguments against a method's declared checks (throws RangeError naming the argument). */
export function checkArgs(actor: string, method: string, checks: readonly ArgCheck[], args: unknown): void {
  if (!Array.isArray(args)) throw Errors.invalidArg(`arguments of ${actor}.${method}`, `must be an array, got ${describe(args)}`);
  if (args.length > checks.length) throw Errors.invalidArg(`arguments of ${actor}.${method}`, `must be at most ${checks.length}, got ${args.length}`);
  for (let i = 0; i < checks.length; i++) checks[i]!(args[i], `${actor}.${method} argument ${i + 1}`);
}
