/**
 * Hostile inputs for the public-API fuzz suites (issue 14), and the one assertion they share:
 * a call either returns (and the suite checks the documented result) or throws a typed
 * KeelError — or the caller's own error, thrown by a getter, trap or callback the caller gave
 * us. Never a plain TypeError or RangeError from Keel itself.
 */
import fc from 'fast-check';
import { afterAll, expect } from 'vitest';
import { isInvalidOptionError, isKeelError } from '../../src/core/index.js';

/** What hostile getters, traps and callbacks throw: the caller's own error, passed through. */
export class HostileError extends Error {
  override readonly name = 'HostileError';
}

const hostile = (): never => {
  throw new HostileError('hostile input');
};

/** Numbers that break naive arithmetic: NaN, ±Infinity, −0, extremes, near-integers. */
export const hostileNumber: fc.Arbitrary<number> = fc.oneof(
  fc.constantFrom(
    Number.NaN,
    Infinity,
    -Infinity,
    -0,
    0,
    1,
    -1,
    0.5,
    Number.MAX_VALUE,
    -Number.MAX_VALUE,
    Number.MIN_VALUE,
    Number.MAX_SAFE_INTEGER,
    Number.MAX_SAFE_INTEGER + 2,
    2 ** 32,
    2 ** 31,
    2 ** 16,
    3.5e38,
    1e300,
    1e-300,
    1 - Number.EPSILON / 2,
  ),
  fc.double(),
  fc.integer(),
  fc.double({ min: -10, max: 10 }),
);

/** One megabyte of text, built once (a 1 MB string per run would dominate the run time). */
const MEGABYTE = 'x'.repeat(1 << 20);

/** Strings: empty, lone surrogates, 1 MB, prototype-polluting names, ordinary ones. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '',
    '\uD800',
    'a\uDC00b',
    '\uDBFF\uDFFF',
    '\u0000',
    MEGABYTE,
    '__proto__',
    'constructor',
    'prototype',
    'toString',
    'hasOwnProperty',
  ),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
);

/** A Proxy whose every trap throws the caller's error. */
function throwingProxy<T extends object>(target: T): T {
  return new Proxy(target, {
    get: hostile,
    has: hostile,
    ownKeys: hostile,
    getOwnPropertyDescriptor: hostile,
    getPrototypeOf: hostile,
    apply: hostile,
    construct: hostile,
  });
}

/**
 * A hostile object not built yet. fast-check inspects generated values (to clone and print
 * them), which a throwing Proxy would trip, so the generators yield these placeholders and the
 * property builds the real objects with {@link real} just before the call.
 */
export class Lazy {
  constructor(
    readonly label: string,
    readonly make: () => unknown,
  ) {}
  toString(): string {
    return `<${this.label}>`;
  }
}

const lazy = (label: string, make: () => unknown): Lazy => new Lazy(label, make);

/** Objects built to trip validators: throwing getters, Proxies, `__proto__` keys, odd prototypes. */
export const hostileObject: fc.Arbitrary<unknown> = fc.constantFrom<unknown>(
  lazy('__proto__ key', () => JSON.parse('{"__proto__": {"polluted": true}, "id": "p"}')),
  lazy('constructor.prototype', () => JSON.parse('{"constructor": {"prototype": {"x": 1}}}')),
  lazy('null prototype', () => Object.create(null)),
  lazy('inherited fields', () => Object.create({ id: 'inherited', weight: 2 })),
  lazy('throwing id getter', () =>
    Object.defineProperty({}, 'id', { enumerable: true, get: hostile }),
  ),
  lazy('throwing weight getter', () =>
    Object.defineProperty({ id: 'g' }, 'weight', { enumerable: true, get: hostile }),
  ),
  lazy('throwing Proxy object', () => throwingProxy({})),
  lazy('throwing Proxy array', () => throwingProxy([])),
  lazy('throwing Proxy function', () => throwingProxy(() => 0)),
  lazy('transparent Proxy', () => new Proxy({ id: 'px' }, {})),
  lazy('transparent Proxy array', () => new Proxy([{ id: 'x' }], {})),
  lazy('transparent Proxy Set', () => new Proxy(new Set(['a']), {})),
  lazy('throwing iterator', () => ({ [Symbol.iterator]: hostile })),
  lazy('iterator throwing midway', () => ({
    *[Symbol.iterator]() {
      yield { id: 'a' };
      hostile();
    },
  })),
  lazy('broken iterator', () => ({ [Symbol.iterator]: () => ({ next: () => 42 }) })),
  lazy('Map', () => new Map([['id', 'm']])),
  lazy('Set', () => new Set(['a'])),
  lazy('Date', () => new Date(0)),
  lazy('symbol', () => Symbol('s')),
  lazy('bigint', () => 10n),
  lazy('fn -> 0.5', () => () => 0.5),
  lazy('fn -> NaN', () => () => Number.NaN),
  lazy('fn -> symbol', () => () => Symbol('out')),
  lazy('fn -> bigint', () => () => 1n),
  lazy('fn -> object', () => () => ({})),
  lazy('throwing fn', () => hostile),
  lazy('throwing valueOf', () => ({ valueOf: hostile, toString: hostile })),
);

/**
 * Builds the hostile objects a generated value holds: {@link Lazy} placeholders anywhere in
 * plain arrays and objects (own keys copied as own properties, `__proto__` included).
 */
export function real(value: unknown, depth = 4): unknown {
  if (value instanceof Lazy) return value.make();
  if (depth === 0 || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map((v) => real(v, depth - 1));
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const out = Object.create(proto) as Record<string, unknown>;
  for (const key of Reflect.ownKeys(value)) {
    const v = (value as Record<string | symbol, unknown>)[key];
    Object.defineProperty(out, key, {
      value: real(v, depth - 1),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/** Anything at all: fast-check's values, hostile numbers, strings and objects. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.anything({
    withBigInt: true,
    withBoxedValues: true,
    withMap: true,
    withSet: true,
    withNullPrototype: true,
    withTypedArray: true,
    withSparseArray: true,
    withObjectString: true,
    maxDepth: 2,
  }),
  hostileNumber,
  hostileString,
  hostileObject,
  fc.constant(undefined),
  fc.constant(null),
);

/** A node / endpoint spec, mostly well formed, with any field replaced by a hostile value. */
export const hostileNodeSpec: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record(
      {
        id: fc.oneof(fc.constantFrom('a', 'b', 'c', 'd', '10.0.0.1:11211'), hostileString),
        weight: fc.oneof(fc.constantFrom(1, 2, 0.5, 3), hostileNumber),
        zone: fc.oneof(fc.constantFrom('z1', 'z2'), hostileValue),
        data: hostileValue,
      },
      { requiredKeys: ['id'] },
    ),
  },
  { weight: 1, arbitrary: hostileValue },
);

/** Lists of node specs, sometimes hostile as a whole. */
export const hostileNodeList: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.array(hostileNodeSpec, { maxLength: 6 }) },
  { weight: 1, arbitrary: hostileValue },
);

/** Counts of calls made and how they ended, for the report. */
export interface Tally {
  /** Properties' cases run (each may make several calls). */
  cases: number;
  returned: number;
  typed: number;
  hostile: number;
}

export const newTally = (): Tally => ({ cases: 0, returned: 0, typed: 0, hostile: 0 });

/** Prints a suite's tally when its file ends (issue 14's report asks how many cases ran). */
export function reportTally(suite: string, tally: Tally): void {
  afterAll(() => {
    console.info(
      `${suite}: ${tally.cases} cases, ${tally.returned} returned, ${tally.typed} typed errors, ` +
        `${tally.hostile} hostile errors passed through`,
    );
  });
}

/**
 * Runs `fn` and checks how it ended: a return (true), a typed KeelError (an InvalidOptionError
 * must name its option), or the caller's own HostileError passed through. Anything else — a
 * plain TypeError or RangeError escaping Keel — fails the property, with `what` in the message.
 */
export function settle(what: string, fn: () => unknown, tally?: Tally): boolean {
  try {
    fn();
    if (tally !== undefined) tally.returned++;
    return true;
  } catch (error) {
    if (error instanceof HostileError) {
      if (tally !== undefined) tally.hostile++;
      return false;
    }
    expect(isKeelError(error), `${what} threw ${String(error)}`).toBe(true);
    if (isInvalidOptionError(error)) {
      // (An unknown option literally named '' is named '' — so only the type is checked.)
      expect(typeof error.option, `${what}: the error names no option`).toBe('string');
      expect(error.message).toContain(error.owner);
    }
    if (tally !== undefined) tally.typed++;
    return false;
  }
}

/** Wraps a property body so it receives its arguments with every {@link Lazy} built. */
export function built<A extends unknown[]>(body: (...args: A) => void): (...args: A) => void {
  return (...args: A) => {
    body(...(real(args, 6) as A));
  };
}
