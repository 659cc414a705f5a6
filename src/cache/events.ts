/**
 * The cache's events: typed subscriptions (`cache.onDegraded(fn)`) and, fed from the same
 * place, `node:diagnostics_channel` channels named `keel:cache:<event>`.
 *
 * @packageDocumentation
 */
import type { CacheRedisError } from './errors.js';

/**
 * Redis stopped answering (or, out of memory, refuses writes): the cache serves from L1 and the
 * loader until it answers again.
 */
export interface CacheDegradedEvent {
  /** The operation that failed first (`read`, `fill`, `set`, …). */
  readonly operation: string;
  /** What failed, with the node and the kind. */
  readonly error: CacheRedisError;
  /** Wall-clock epoch ms. */
  readonly time: number;
}

/** Redis answered again after a degraded period (after out of memory: it took a write). */
export interface CacheRecoveredEvent {
  /** How long the cache was degraded, ms (monotonic). */
  readonly degradedMs: number;
  /** Wall-clock epoch ms. */
  readonly time: number;
}

/**
 * A value read back from Redis was not trusted, or the value or lease key held another type than
 * a string (foreign data): it was moved aside (when Redis allowed) and treated as a miss.
 */
export interface CacheQuarantineEvent {
  /** The key, with its namespace (`namespace:key`). */
  readonly key: string;
  /**
   * Why it was refused (unknown header, deadlines out of order, the serializer threw, the key
   * holds a hash, …).
   */
  readonly reason: string;
  /**
   * The Redis key it was moved to (kept for a day for inspection; `<key>:lease:quarantine` for a
   * lease key of another type), when the move happened.
   */
  readonly quarantineKey: string | undefined;
  /** The serializer's error, when it threw; Redis's `WRONGTYPE` reply, for a move that failed. */
  readonly cause?: unknown;
  /** Wall-clock epoch ms. */
  readonly time: number;
}

/** The loader failed and the last value was served instead (grace period). */
export interface CacheGraceEvent {
  /** The key, with its namespace. */
  readonly key: string;
  /** What the loader threw. */
  readonly error: unknown;
  /** How far past its fresh deadline the served value is, ms. */
  readonly staleByMs: number;
  /** Wall-clock epoch ms. */
  readonly time: number;
}

/** A background refresh (stale-while-revalidate or XFetch) failed; the old value stays. */
export interface CacheRefreshErrorEvent {
  /** The key, with its namespace. */
  readonly key: string;
  /** What the loader (or Redis) threw. */
  readonly error: unknown;
  /** Wall-clock epoch ms. */
  readonly time: number;
}

/**
 * A loaded value was not written back because the key was set or deleted while it loaded
 * (its lease was voided): the load may have read data older than the delete (memcache leases,
 * NSDI 2013 §3.2.1). The callers of that load still got its value.
 */
export interface CacheStaleWriteRefusedEvent {
  /** The key, with its namespace. */
  readonly key: string;
  /** Wall-clock epoch ms. */
  readonly time: number;
}
