/**
 * The L2-hit row's subject, shared by the cache suite (bench/cache.bench.ts) and the tools that
 * take that row apart (bench/cache-l2-cost.ts, bench/cache-l2-tail.ts), so that all of them
 * measure the same read.
 *
 * @packageDocumentation
 */
import type { Redis } from 'ioredis';
import type * as CacheModule from '../src/cache/index.js';

/** The value read. */
export const L2_VALUE = { sku: 'sku-1', cents: 1999 };

/**
 * A cache with L1 off, no subscriber connection (nothing but the reads measured reaches Redis)
 * and XFetch off, whose key `l2` holds {@link L2_VALUE} in Redis; and the raw read's key `raw`
 * written with `JSON.stringify` of the same value.
 */
export async function l2HitCache(
  Cache: typeof CacheModule.Cache,
  client: Redis,
  namespace = 'default',
): Promise<CacheModule.Cache> {
  const cache = new Cache({
    redis: client,
    l1: false,
    ttlMs: 3_600_000,
    beta: 0,
    invalidation: false,
    namespace,
  });
  await cache.set('l2', L2_VALUE);
  await client.set('raw', JSON.stringify(L2_VALUE));
  return cache;
}
