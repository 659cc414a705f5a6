/**
 * Errors thrown by `keel/cache`. Each has a stable `code`, an explicit `name` and, where one
 * exists, the underlying error as `cause`.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode } from '../core/index.js';

/** Error code of {@link CacheRedisError}. */
export const CACHE_REDIS = 'KEEL_CACHE_REDIS';
/** Error code of {@link CacheClosedError}. */
export const CACHE_CLOSED = 'KEEL_CACHE_CLOSED';
/** Error code of {@link CacheSerializationError}. */
export const CACHE_SERIALIZATION = 'KEEL_CACHE_SERIALIZATION';

/**
 * What went wrong talking to Redis:
 *
 * - `timed-out`: no answer within the cache's `redisTimeoutMs` (a paused or overloaded node,
 *   or a client queueing commands while it reconnects).
 * - `connection-refused`: nothing listens there (`ECONNREFUSED`).
 * - `not-connected`: the client is closed or its connection dropped.
 * - `out-of-memory`: Redis is at `maxmemory` under `noeviction` and refused a write (`OOM …`):
 *   nothing was written, and the same call succeeds once memory is freed. Redis still answers
 *   reads and deletes meanwhile, so the cache keeps using it (see `Cache.onDegraded`).
 * - `script-error`: Redis answered the script with an error (a key of the wrong type, …).
 * - `failed`: anything else the client reported.
 */
export type RedisFailureKind =
  | 'timed-out'
  | 'connection-refused'
  | 'not-connected'
  | 'out-of-memory'
  | 'script-error'
  | 'failed';

/**
 * A Redis call of the cache failed. Reads never throw it (they degrade to L1 and the loader,
 * and report `onDegraded`); `set` and `delete` do, after updating L1, because a write that
 * silently missed Redis would leave other processes reading the old value.
 *
 * @example
 * ```ts
 * import { isCacheRedisError } from 'keel/cache';
 *
 * function explain(error: unknown): string {
 *   return isCacheRedisError(error) ? `${error.address}: ${error.kind}` : String(error);
 * }
 * ```
 */
export class CacheRedisError extends KeelError {
  override readonly name: string = 'CacheRedisError';
  declare readonly code: typeof CACHE_REDIS;
  /** The operation that failed (`read`, `fill`, `set`, `delete`, `bloom-add`, …). */
  readonly operation: string;
  /** The Redis server, `host:port` (or `cluster via …`), when the client says. */
  readonly address: string;
  /** What happened. */
  readonly kind: RedisFailureKind;

  constructor(operation: string, address: string, kind: RedisFailureKind, cause?: unknown) {
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    super(CACHE_REDIS, `cache ${operation} on ${address}: ${kind}${detail}`, { cause });
    this.operation = operation;
    this.address = address;
    this.kind = kind;
  }
}

/** True when `value` is a {@link CacheRedisError} from any copy of Keel. */
export function isCacheRedisError(value: unknown): value is CacheRedisError {
  return hasKeelCode<CacheRedisError>(value, CACHE_REDIS);
}

/**
 * The cache (or the Bloom filter) was closed: calls made after `close()`, and calls still
 * waiting when it closed, reject with this.
 */
export class CacheClosedError extends KeelError {
  override readonly name: string = 'CacheClosedError';
  declare readonly code: typeof CACHE_CLOSED;
  constructor(what = 'cache') {
    super(CACHE_CLOSED, `the ${what} is closed`);
  }
}

/** True when `value` is a {@link CacheClosedError} from any copy of Keel. */
export function isCacheClosedError(value: unknown): value is CacheClosedError {
  return hasKeelCode<CacheClosedError>(value, CACHE_CLOSED);
}

/**
 * The serializer could not turn a value into text for Redis (`set`, or a loaded value being
 * written back). The key is named; the serializer's own error is the `cause`.
 */
export class CacheSerializationError extends KeelError {
  override readonly name: string = 'CacheSerializationError';
  declare readonly code: typeof CACHE_SERIALIZATION;
  /** The cache key (with its namespace) whose value could not be serialized. */
  readonly key: string;
  constructor(key: string, cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(CACHE_SERIALIZATION, `cannot serialize the value of "${key}": ${detail}`, { cause });
    this.key = key;
  }
}

/** True when `value` is a {@link CacheSerializationError} from any copy of Keel. */
export function isCacheSerializationError(value: unknown): value is CacheSerializationError {
  return hasKeelCode<CacheSerializationError>(value, CACHE_SERIALIZATION);
}
