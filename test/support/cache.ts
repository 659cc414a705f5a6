/**
 * The cache suites' shared fixture on a {@link RedisHarness}: ioredis clients on node 0 (one
 * retry per request, so a test that stops the node sees errors rather than a queue), caches
 * built on them with the suites' defaults (no ttl jitter, no XFetch), and one `afterEach` that
 * closes every cache, brings node 0 back (resumed or restarted), disconnects the clients and
 * flushes the data.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect } from 'vitest';
import { Cache, type CacheOptions } from '../../src/cache/index.js';
import { RedisTier, type CacheRedisClient } from '../../src/cache/redis-tier.js';
import type { Clock } from '../../src/core/index.js';
import { until } from './helpers.js';
import type { RedisHarness } from './redis.js';

/** What a cache suite builds its tests from. */
export interface CacheFixture {
  /** A new client on node 0, disconnected after the test. */
  readonly client: () => Redis;
  /** A new cache on a new client, `jitter: 0`, `beta: 0`, then `defaults`, then `options`. */
  readonly cacheOf: (options?: CacheOptions) => Cache;
}

/** Registers the fixture's `afterEach`; call it inside the suite's `describe`. */
export function useCaches(redis: () => RedisHarness, defaults: CacheOptions = {}): CacheFixture {
  const opened: Cache[] = [];
  const clients: Redis[] = [];
  const client = (): Redis => {
    const c = redis().client(0, { maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };
  afterEach(async () => {
    for (const c of opened.splice(0)) await c.close();
    const node = redis().node(0);
    if (node.state === 'paused') redis().resume(0);
    if (node.state === 'killed') await redis().restart(0);
    for (const c of clients.splice(0)) c.disconnect();
    await redis().flushAll();
  });
  return {
    client,
    cacheOf: (options = {}) => {
      const cache = new Cache({ redis: client(), jitter: 0, beta: 0, ...defaults, ...options });
      opened.push(cache);
      return cache;
    },
  };
}

/** A load that holds its lease until released (see {@link heldLoad}). */
export interface HeldLoad<V> {
  /** What `getOrLoad` resolves to. */
  readonly loading: Promise<V | undefined>;
  /** Lets the loader return its value. */
  readonly release: () => void;
}

/**
 * `cache.getOrLoad(key)` whose loader returns `value` only when released: resolves once the
 * loader runs, i.e. once `cache` holds the key's lease (other caches then wait for its fill).
 */
export async function heldLoad<V>(cache: Cache, key: string, value: V): Promise<HeldLoad<V>> {
  let release: (() => void) | undefined;
  const loading = cache.getOrLoad(
    key,
    () => new Promise<V>((resolve) => (release = () => resolve(value))),
  );
  await until(() => expect(release).toBeDefined(), 5_000);
  return { loading, release: () => release?.() };
}

/** A Redis tier whose GET replies come from a real server but wait in `held` until let through. */
export interface HeldTier {
  readonly tier: RedisTier;
  /** One function per reply that reached the hold, in arrival order: call it to deliver. */
  readonly held: (() => void)[];
}

/**
 * A {@link RedisTier} on `real` (no subscriber, no degraded pause) whose GET replies are held
 * back until the test lets them through (a slow server, step by step), timing out after
 * `timeoutMs` on `clock`.
 */
export function heldTier(real: Redis, clock: Clock, timeoutMs: number): HeldTier {
  const held: (() => void)[] = [];
  const client: CacheRedisClient = {
    evalsha: () => Promise.reject(new Error('unused')),
    eval: () => Promise.reject(new Error('unused')),
    get: (key) =>
      real
        .get(key)
        .then((reply) => new Promise<string | null>((resolve) => held.push(() => resolve(reply)))),
  };
  const tier = new RedisTier({
    client,
    clock,
    timeoutMs,
    retryMs: 0,
    channel: 'unused',
    subscribe: false,
    onMessage: () => undefined,
    onDegraded: () => undefined,
    onRecovered: () => undefined,
  });
  return { tier, held };
}
