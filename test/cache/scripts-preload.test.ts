/**
 * A cache loads its Lua scripts into Redis when it is built, so that the first call of each is an
 * `EVALSHA` that finds it: without that, the first cold stampede a fresh process serves (after a
 * deploy, or a Redis restart — the one that matters) paid a `NOSCRIPT` reply and a second round
 * trip (`EVAL` of the whole source) for the lease, and again for the fill, on its critical path.
 * Counted with `INFO commandstats` (deterministic, unlike timings).
 */
import { expect, it } from 'vitest';
import { useCaches } from '../support/cache.js';
import { redisCost, redisCounters } from '../support/redis-cost.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('Cache: scripts are loaded up front (real redis-server, INFO commandstats)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis, { invalidation: false });

  it('the first lease, fill, release, set and delete of a new cache send no EVAL', async () => {
    const probe = client();
    // A Redis that knows no script (a fresh or restarted server).
    await probe.script('FLUSH');
    const before = await redisCounters(probe);
    const cache = cacheOf();
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
