/**
 * The peers of lock.bench.ts row (a) as its measuring tools build them (`lock-tail.ts`,
 * `lock-solo.ts`): the suite's settings — ttl 10 s, drift factor 0.01, node-redlock with its
 * retries and extension threshold, RedlockMutex with no background refresh — in one place, so
 * the tools measure what the suite measures.
 */
import type { Redis } from 'ioredis';
import NodeRedlock from 'redlock';
import { RedlockMutex } from 'redis-semaphore';

/** Row (a)'s lock ttl and drift factor (redis-semaphore has no drift factor). */
export const ROW_A = { ttlMs: 10_000, driftFactor: 0.01 } as const;

/** node-redlock as row (a) runs it; its per-node `error` events are ignored. */
export function rowARedlock(clients: Redis[]): NodeRedlock {
  const redlock = new NodeRedlock(clients, {
    driftFactor: ROW_A.driftFactor,
    retryCount: 10,
    retryDelay: 200,
    retryJitter: 100,
    automaticExtensionThreshold: 500,
  });
  redlock.on('error', () => undefined);
  return redlock;
}

/** A RedlockMutex on `resource` as row (a) makes one per cycle: no background refresh. */
export function rowAMutex(clients: Redis[], resource: string): RedlockMutex {
  return new RedlockMutex(clients, resource, {
    lockTimeout: ROW_A.ttlMs,
    acquireTimeout: 10_000,
    retryInterval: 10,
    refreshInterval: 0,
  });
}
