/**
 * `Cache` options: the public interface and its resolution into a frozen, validated copy.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  booleanOption,
  functionOption,
  guardedOption,
  integerOption,
  isClock,
  isRandomSource,
  numberOption,
  resolveOptions,
  stringOption,
  systemClock,
  type Clock,
  type OptionRule,
  type ResolvedOptions,
} from '../core/index.js';
import { isCacheRedisClient, type CacheRedisClient } from './redis-tier.js';
import { isSerializer, jsonSerializer, type Serializer } from './serializer.js';

/**
 * Anything that can say a key certainly does not exist — a {@link BloomFilter} or a
 * {@link RedisBloomFilter} — consulted by `getOrLoad` before Redis and the loader.
 */
export interface CacheGuard {
  /** False only when `key` certainly was never added. */
  mightContain(key: string): boolean | Promise<boolean>;
}

/** The in-process tier (L1), an `lru-cache` bounded by count and, optionally, by size. */
export interface L1Options {
  /** Most entries kept. @defaultValue `10_000` */
  readonly max?: number;
  /** Most total size kept, as measured by `sizeOf`; no size bound when left out. */
  readonly maxSize?: number;
  /**
   * The size of one value (for `maxSize`). @defaultValue the length of its JSON text (1 for
   * values JSON cannot write)
   */
  readonly sizeOf?: (value: unknown) => number;
  /**
   * Longest time an L1 copy of a value read from Redis is served before Redis is asked again,
   * whatever the entry's own ttl: the staleness bound when invalidation messages are lost.
   * @defaultValue `Infinity` (the entry's own ttl and staleMs)
   */
  readonly ttlMs?: number;
}

/** Options of {@link Cache}. */
export interface CacheOptions {
  /**
   * The Redis client for L2 (an ioredis `Redis` or `Cluster`). Leave it out for an
   * in-process cache (L1 only).
   */
  readonly redis?: CacheRedisClient | undefined;
  /** The L1 tier's bounds, or `false` for Redis only (L2 only). @defaultValue `{ max: 10_000 }` */
  readonly l1?: L1Options | false | undefined;
  /** Key namespace: keys are `namespace:key`. @defaultValue `'default'` */
  readonly namespace?: string | undefined;
  /** Prefix of every Redis key and of the pub/sub channel; no `{` or `}`. @defaultValue `'keel:cache:'` */
  readonly prefix?: string | undefined;
  /** How long a loaded or set value is fresh, ms. @defaultValue `60_000` */
  readonly ttlMs?: number | undefined;
  /** How long after that a stale value is served while one caller refreshes it. @defaultValue `0` */
  readonly staleMs?: number | undefined;
  /**
   * How long after that the last value is still served when the loader fails (reported by
   * `onGrace`). @defaultValue `0`
   */
  readonly graceMs?: number | undefined;
  /**
   * How long an absence (the loader returned `undefined`) is cached, ms; `0` caches no
   * absence. @defaultValue `5_000`
   */
  readonly negativeTtlMs?: number | undefined;
  /**
   * Fraction (0–1) by which each write's ttl is shortened at random, so keys written together
   * do not expire together (avalanche). @defaultValue `0.1`
   */
  readonly jitter?: number | undefined;
  /** XFetch's β: `0` turns probabilistic early refresh off; `1` is the paper's optimum. @defaultValue `1` */
  readonly beta?: number | undefined;
  /**
   * Lifetime of a cross-process load lease, ms; the holder extends it while its loader runs, so
   * it only runs out when the holder dies. An integer from 10 to 2³¹ − 1 (a timer's longest
   * delay). @defaultValue `5_000`
   */
  readonly leaseTtlMs?: number | undefined;
  /** Longest a waiter waits for another process's load before loading itself. @defaultValue `2 × leaseTtlMs` */
  readonly maxWaitMs?: number | undefined;
  /**
   * Interval at which a waiter re-reads Redis if no notification came; at most 2³¹ − 1.
   * @defaultValue `200`
   */
  readonly pollIntervalMs?: number | undefined;
  /**
   * Longest wait for one Redis call before the cache degrades to L1 and the loader; at most
   * 2³¹ − 1. @defaultValue `1_000`
   */
  readonly redisTimeoutMs?: number | undefined;
  /** How long the cache stays off Redis after a failure before trying again. @defaultValue `1_000` */
  readonly degradedRetryMs?: number | undefined;
  /**
   * Publish sets, deletes and fills so other processes drop their L1 copy and waiters wake
   * (needs `redis.duplicate()`). @defaultValue `true`
   */
  readonly invalidation?: boolean | undefined;
  /**
   * Server-assisted invalidation: Redis (≥ 6, not a Cluster) reports every change to a key
   * under `prefix` — by any client, Keel or not — on the invalidation connection
   * (`CLIENT TRACKING on REDIRECT <its id> BCAST PREFIX <prefix>`), and this process drops its
   * L1 copy. Costs one message to every process per write under the prefix, and this process's
   * own writes drop its own copy too. Where the server refuses, the cache keeps to its pub/sub
   * invalidation (see `Cache.tracking`). Needs `invalidation`. @defaultValue `false`
   */
  readonly tracking?: boolean | undefined;
  /** Text format of values in Redis. @defaultValue {@link jsonSerializer} */
  readonly serializer?: Serializer | undefined;
  /** Keys it rules out are answered `undefined` without Redis or the loader. */
  readonly guard?: CacheGuard | undefined;
  /** Monotonic clock for deadlines and timers. @defaultValue `systemClock` */
  readonly clock?: Clock | undefined;
  /** Wall clock (epoch ms) for the deadlines stored in Redis, shared by processes. @defaultValue `Date.now` */
  readonly wallClock?: (() => number) | undefined;
  /** Random source in [0, 1) for jitter, XFetch and lease tokens' spread. @defaultValue `Math.random` */
  readonly random?: (() => number) | undefined;
}

const isGuard = (value: unknown): value is CacheGuard =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as CacheGuard).mightContain === 'function';

/**
 * Longest delay a timer holds: `setTimeout` fires after 1 ms past it, so a longer Redis timeout
 * would fail every call, a longer poll or lease heartbeat would spin.
 */
const TIMER_MAX_MS = 2 ** 31 - 1;

const duration = (fallback: number): OptionRule<number> =>
  numberOption({ min: 0, default: fallback, allowInfinity: true });

const l1Spec = {
  max: integerOption({ min: 1, default: 10_000 }),
  maxSize: numberOption({ min: 0, minExclusive: true, optional: true }),
  sizeOf: functionOption<(value: unknown) => number>({ optional: true }),
  ttlMs: numberOption({ min: 0, minExclusive: true, default: Infinity, allowInfinity: true }),
};

const l1Rule: OptionRule<false | ReturnType<typeof resolveL1>> = {
  parse(value, owner, option) {
    if (value === false) return false;
    return resolveL1(owner, value, option);
  },
};

function resolveL1(owner: string, value: unknown, option: string) {
  return resolveOptions(owner, value, l1Spec, option);
}

const spec = {
  redis: guardedOption(isCacheRedisClient, 'a Redis client (ioredis Redis or Cluster)', {
    optional: true,
  }),
  l1: l1Rule,
  namespace: stringOption({ default: 'default', nonEmpty: true }),
  prefix: stringOption({ default: 'keel:cache:' }),
  ttlMs: numberOption({ min: 0, minExclusive: true, default: 60_000 }),
  staleMs: duration(0),
  graceMs: duration(0),
  negativeTtlMs: numberOption({ min: 0, default: 5_000 }),
  jitter: numberOption({ min: 0, max: 1, default: 0.1 }),
  beta: numberOption({ min: 0, default: 1 }),
  leaseTtlMs: integerOption({ min: 10, max: TIMER_MAX_MS, default: 5_000 }),
  maxWaitMs: numberOption({ min: 0, optional: true }),
  pollIntervalMs: numberOption({ min: 1, max: TIMER_MAX_MS, default: 200 }),
  redisTimeoutMs: numberOption({ min: 1, max: TIMER_MAX_MS, default: 1_000 }),
  degradedRetryMs: numberOption({ min: 0, default: 1_000 }),
  invalidation: booleanOption({ default: true }),
  tracking: booleanOption({ default: false }),
  serializer: guardedOption(isSerializer, 'a serializer { serialize, deserialize }', {
    default: jsonSerializer,
  }),
  guard: guardedOption(isGuard, 'a guard { mightContain(key) }', { optional: true }),
  clock: guardedOption(isClock, 'a Clock { now(), setTimer() }', { default: systemClock }),
  wallClock: functionOption<() => number>({ default: () => Date.now() }),
  random: guardedOption(isRandomSource, 'a function returning a number in [0, 1)', {
    default: Math.random,
  }),
};

/** @internal */
export type ResolvedCacheOptions = ReturnType<typeof resolveCacheOptions>;

/** Validates `options` into a frozen copy. @internal */
export function resolveCacheOptions(options: unknown) {
  const resolved = resolveOptions('Cache', options, spec);
  if (/[{}]/.test(resolved.prefix)) {
    throw new InvalidOptionError(
      'Cache',
      'prefix',
      'a prefix without "{" or "}" (the key is the hash tag)',
      resolved.prefix,
    );
  }
  if (resolved.tracking && !resolved.invalidation) {
    throw new InvalidOptionError(
      'Cache',
      'tracking',
      'false when invalidation is false (tracking reports arrive on its connection)',
      true,
    );
  }
  if (resolved.l1 === false && resolved.redis === undefined) {
    throw new InvalidOptionError(
      'Cache',
      'l1',
      'an L1 tier when there is no Redis (or a redis client with l1: false)',
      false,
    );
  }
  return Object.freeze({
    ...resolved,
    maxWaitMs: resolved.maxWaitMs ?? 2 * resolved.leaseTtlMs,
  });
}

/** Per-call lifetimes (`getOrLoad` and `set`). */
export interface LifetimeOptions {
  /** Overrides the cache's `ttlMs` for this value. */
  readonly ttlMs?: number | undefined;
  /** Overrides the cache's `staleMs` for this value. */
  readonly staleMs?: number | undefined;
  /** Overrides the cache's `graceMs` for this value. */
  readonly graceMs?: number | undefined;
  /** Gives up this call's wait (the shared load goes on for others); rejects with its reason. */
  readonly signal?: AbortSignal | undefined;
}

function isSignal(v: unknown): v is AbortSignal {
  return typeof v === 'object' && v !== null && typeof (v as AbortSignal).aborted === 'boolean';
}

/** The per-call options' rules (exported for the test that holds the fast path to them). @internal */
export const callSpec = {
  ttlMs: numberOption({ min: 0, minExclusive: true, optional: true }),
  staleMs: numberOption({ min: 0, optional: true, allowInfinity: true }),
  graceMs: numberOption({ min: 0, optional: true, allowInfinity: true }),
  signal: guardedOption(isSignal, 'an AbortSignal', { optional: true }),
};

const signalSpec = { signal: callSpec.signal };

/** `Cache.warm`'s options' rules. @internal */
export const warmSpec = {
  concurrency: integerOption({ min: 1, default: 8 }),
  signal: callSpec.signal,
};

/**
 * The signal of `get`'s or `delete`'s options (`{ signal }`), validated: anything else there is
 * a typed error naming it. Nothing is checked (or built) when no options are given. @internal
 */
export function resolveSignal(owner: string, options: unknown): AbortSignal | undefined {
  return options === undefined ? undefined : resolveOptions(owner, options, signalSpec).signal;
}

/** Per-call options, validated and frozen. @internal */
export type CallOptions = ResolvedOptions<typeof callSpec>;

/**
 * Validates per-call options (skipped entirely when none are given) into the frozen copy a
 * call that loads or refreshes keeps. The common case, a plain object of valid per-call
 * options, is checked here directly; anything else goes to the general resolver, which
 * accepts the same and names whatever is wrong. @internal
 */
export function resolveCallOptions(owner: string, options: unknown): CallOptions {
  return quickCallOptions(options, freezeCall) ?? resolveOptions(owner, options, callSpec);
}

/**
 * Validates per-call options exactly as {@link resolveCallOptions} does, but builds no copy:
 * only the signal they carry. For a call that only waits — a caller joining a load in flight,
 * every one of a stampede's callers but the first, or an L1 hit — whose lifetimes nobody
 * reads: a frozen copy per such call was a few hundred bytes of garbage per waiter, and with
 * 250 waiters a round the young generation filled (and was scavenged) in the middle of rounds.
 * @internal
 */
export function callSignal(owner: string, options: unknown): AbortSignal | undefined {
  const quick = quickCallOptions(options, signalOf);
  if (quick === NO_SIGNAL) return undefined;
  return quick ?? resolveOptions(owner, options, callSpec).signal;
}

/** A valid plain object without a signal (see {@link callSignal}); `undefined` means "not quick". */
const NO_SIGNAL = Symbol('no signal');
const freezeCall = (
  ttlMs: number | undefined,
  staleMs: number | undefined,
  graceMs: number | undefined,
  signal: AbortSignal | undefined,
): CallOptions => Object.freeze({ ttlMs, staleMs, graceMs, signal });
const signalOf = (
  _ttlMs: number | undefined,
  _staleMs: number | undefined,
  _graceMs: number | undefined,
  signal: AbortSignal | undefined,
): AbortSignal | typeof NO_SIGNAL => signal ?? NO_SIGNAL;

/**
 * `take(ttlMs, staleMs, graceMs, signal)` — each read once — when `options` is a plain object
 * whose own enumerable keys are all per-call options and whose values all pass
 * {@link callSpec}'s rules; else `undefined`, for the general resolver to judge.
 */
function quickCallOptions<T>(
  options: unknown,
  take: (
    ttlMs: number | undefined,
    staleMs: number | undefined,
    graceMs: number | undefined,
    signal: AbortSignal | undefined,
  ) => T,
): T | undefined {
  if (options === null || typeof options !== 'object') return undefined;
  if (Object.getPrototypeOf(options) !== Object.prototype) return undefined;
  for (const key in options) {
    if (!Object.hasOwn(callSpec, key) && Object.hasOwn(options, key)) return undefined;
  }
  const { ttlMs, staleMs, graceMs, signal } = options as Record<string, unknown>;
  // ttlMs: finite and > 0; staleMs, graceMs: ≥ 0, Infinity allowed (NaN fails either test).
  return isWait(staleMs) &&
    isWait(graceMs) &&
    (signal === undefined || isSignal(signal)) &&
    (ttlMs === undefined || (isWait(ttlMs) && ttlMs > 0 && ttlMs < Infinity))
    ? take(ttlMs, staleMs, graceMs, signal)
    : undefined;
}

/** Absent, or a number ≥ 0 (Infinity included). */
function isWait(value: unknown): value is number | undefined {
  return value === undefined || (typeof value === 'number' && value >= 0);
}
