/**
 * `keel/cache` — a two-tier cache (lru-cache L1 in front of an optional Redis L2) that does not
 * stampede, avalanche or let absent keys through: single-flight loads in-process and across
 * processes (Redis leases whose tokens also refuse stale write-backs), stale-while-revalidate,
 * XFetch early refresh, grace on loader failure, ttl jitter, negative caching, Bloom filters in
 * memory and on Redis, and cross-process L1 invalidation.
 *
 * @module keel/cache
 */
export { Cache } from './cache.js';
export type { Loader, LoaderContext, WarmOptions, CallOptions } from './cache.js';
export type { CacheOptions, L1Options, LifetimeOptions, CacheGuard } from './options.js';
export type { CacheRedisClient, CacheSubscriber } from './redis-tier.js';
export { jsonSerializer } from './serializer.js';
export type { Serializer } from './serializer.js';
export { BloomFilter, bloomShape, MAX_BLOOM_BITS } from './bloom.js';
export type { BloomOptions, BloomShape } from './bloom.js';
export { RedisBloomFilter } from './redis-bloom.js';
export type { RedisBloomOptions } from './redis-bloom.js';
export {
  CacheRedisError,
  isCacheRedisError,
  CACHE_REDIS,
  CacheClosedError,
  isCacheClosedError,
  CACHE_CLOSED,
  CacheSerializationError,
  isCacheSerializationError,
  CACHE_SERIALIZATION,
} from './errors.js';
export type { RedisFailureKind } from './errors.js';
export type {
  CacheDegradedEvent,
  CacheRecoveredEvent,
  CacheQuarantineEvent,
  CacheGraceEvent,
  CacheRefreshErrorEvent,
  CacheStaleWriteRefusedEvent,
} from './events.js';
