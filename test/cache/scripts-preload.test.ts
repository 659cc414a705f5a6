/**
 * A cache loads its Lua scripts into Redis when it is built, so that the first call of each is an
 * `EVALSHA` that finds it: without that, the first cold stampede a fresh process serves (after a
 * deploy, or a Redis restart — the one that matters) paid a `NOSCRIPT` reply and a second round
 * trip (`EVAL` of the whole source) for the lease, and again for the fill, on its critical path.
 * Counted with `INFO commandstats` (deterministic, unlike timings).
 */
import { afterEach, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { Cache } from '../../src/cache/index.js';
import { redisCost, redisCounters } from '../support/redis-cost.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('Cache: scripts are loaded up front (real redis-server, INFO commandstats)', () => {
  const redis = useRedis();
  const clients: Redis[] = [];
  const opened: Cache[] = [];
  const client = (): Redis => {
    const c = redis().client(0, { maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };

  afterEach(async () => {
    for (const c of opened.splice(0)) await c.close();
    for (const c of clients.splice(0)) c.disconnect();
    await redis().flushAll();
  });

  it('the first lease, fill, release, set and delete of a new cache send no EVAL', async () => {
    const probe = client();
    // A Redis that knows no script (a fresh or restarted server).
    await probe.script('FLUSH');
    const before = await redisCounters(probe);
    const cache = new Cache({ redis: client(), invalidation: false, jitter: 0, beta: 0 });
    opened.push(cache);
    await expect(cache.getOrLoad('cold', () => 'loaded')).resolves.toBe('loaded');
    await expect(
      cache.getOrLoad('failing', () => {
        throw new Error('the database is down');
      }),
    ).rejects.toThrow('the database is down');
    await cache.set('sku-1', 1);
    await expect(cache.delete('sku-1')).resolves.toBe(true);
    const cost = redisCost(before, await redisCounters(probe));
    // READ (lease), FILL, READ + RELEASE, WRITE, DELETE: each an EVALSHA that found its script.
    expect(cost.byCommand.get('evalsha')).toBe(6);
    expect(cost.byCommand.get('eval')).toBeUndefined();
  });
});
