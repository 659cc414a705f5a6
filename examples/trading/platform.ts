/**
 * What every service gets to work with — a lock service, a registry and the store — built
 * for Redis mode (one set per process, over the Redis servers) or embedded mode (one shared
 * set in the process, over Keel's in-memory backends).
 */
import { Redis } from 'ioredis';
import { MemoryBackend, RedisBackend, Registry, type DiscoveryBackend } from 'keel/discovery';
import { MemoryLock, Redlock, type LockService } from 'keel/lock';
import { OrderEvents } from './events.js';
import { MemorySagaBackend, type SagaCoordinatorOptions } from 'keel/saga';
import type { Store } from './store.js';
import { MemoryStore } from './store-memory.js';
import { RedisStore } from './store-redis.js';

/** Registration ttl: short, so a killed instance leaves every view within a couple of seconds. */
export const REGISTRATION_TTL_MS = 1500;

/** A service instance's view of the infrastructure. */
export interface Platform {
  readonly mode: 'redis' | 'memory';
  readonly locks: LockService;
  readonly registry: Registry;
  readonly store: Store;
  /** Redis mode: the first server's client, the run's key prefix and the order-event outbox. */
  readonly redis?: Redis | undefined;
  readonly prefix?: string | undefined;
  readonly events?: OrderEvents | undefined;
  /**
   * Where keel/saga keeps the order sagas and the buyers' idempotency keys: the first Redis
   * server, or (embedded mode) one MemorySagaBackend shared by every instance in the process.
   */
  readonly sagaRedis: SagaCoordinatorOptions['redis'];
  /** Prefix of this run's saga and idempotency keys there. */
  readonly sagaPrefix: string;
  /** Deregisters, then closes what this platform opened. */
  close(): Promise<void>;
}

/** Settings shared by both modes. */
const registryOptions = { ttlMs: REGISTRATION_TTL_MS, reapIntervalMs: 500 } as const;

/** The lock ttl: longer than any critical section of a healthy instance. */
export const LOCK_TTL_MS = 1000;

/** Embedded mode: one of each, shared by every service in the process. */
export class SharedMemoryInfra {
  readonly backend: DiscoveryBackend = new MemoryBackend();
  // Waiters are woken by the release (or the holder's expiry); each acquisition bounds its wait
  // with `waitMs`, so no retry count or delay needs tuning.
  readonly locks = new MemoryLock({ ttlMs: LOCK_TTL_MS });
  readonly store = new MemoryStore();
  readonly sagas = new MemorySagaBackend();

  /** A platform for one service instance: its own Registry over the shared backend. */
  platform(): Platform {
    const registry = new Registry({ backend: this.backend, ...registryOptions });
    return {
      mode: 'memory',
      locks: this.locks,
      registry,
      store: this.store,
      sagaRedis: this.sagas,
      sagaPrefix: 'trading:',
      close: () => registry.close(),
    };
  }
}

/** Redis clients that give up on a command quickly instead of queueing forever. */
export function redisClient(url: string): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 2, enableOfflineQueue: true });
  client.on('error', () => undefined); // reconnects by itself; failures surface on commands
  return client;
}

/**
 * Redis mode: Redlock over every server (a majority must agree), registry and store on the
 * first server. `prefix` keeps this run's keys apart from anything else on the servers.
 */
export function redisPlatform(
  urls: readonly string[],
  prefix: string,
): Platform & { readonly redisStore: RedisStore } {
  const clients = urls.map(redisClient);
  const first = clients[0] as Redis;
  const backend = new RedisBackend({ client: first, keyPrefix: `${prefix}disc:` });
  const registry = new Registry({ backend, ...registryOptions });
  const locks = new Redlock({
    clients,
    ttlMs: LOCK_TTL_MS,
    keyPrefix: `${prefix}lock:`,
    // Each acquisition bounds its wait with `waitMs`; between attempts, poll Redis briskly.
    retryDelayMs: 10,
    retryJitterMs: 20,
  });
  const redisStore = new RedisStore(first, prefix);
  return {
    mode: 'redis',
    locks,
    registry,
    store: redisStore,
    sagaRedis: first,
    sagaPrefix: prefix,
    redisStore,
    redis: first,
    prefix,
    events: new OrderEvents(first, prefix),
    close: async () => {
      await registry.close();
      await backend.close();
      await locks.close();
      await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
    },
  };
}
