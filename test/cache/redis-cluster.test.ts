/**
 * The cache on a real 3-master Redis Cluster through one ioredis `Cluster` client per cache:
 * every script touches one entry's keys, which share the `{namespace:key}` hash tag (one slot);
 * fills and invalidations travel on cluster-wide pub/sub.
 */
import { expect, it } from 'vitest';
import { Cache, RedisBloomFilter } from '../../src/cache/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedisCluster } from '../support/vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('Cache on a Redis Cluster (3 masters)', () => {
  const cluster = useRedisCluster();
  const cacheOf = () =>
    new Cache({
      redis: cluster().client({ redisOptions: { maxRetriesPerRequest: 1 } }),
      // A fresh Cluster client's first call waits for the slot map: more than 1 s when loaded.
      redisTimeoutMs: 5_000,
      jitter: 0,
    });

  it('keys on every master: one load for several caches, invalidation, stale write-back refused', async () => {
    const caches = [cacheOf(), cacheOf(), cacheOf()];
    try {
      // Subscribed: nothing loaded below is dropped by a subscription going live late.
      await until(() => expect(caches.every((c) => c.listening)).toBe(true), 10_000);
      for (let i = 0; i < 12; i++) {
        let calls = 0;
        const loader = async () => {
          calls++;
          await sleep(20);
          return `v${i}`;
        };
        const values = await Promise.all(
          caches.flatMap((c) => Array.from({ length: 10 }, () => c.getOrLoad(`key-${i}`, loader))),
        );
        expect(calls).toBe(1);
        expect(new Set(values)).toEqual(new Set([`v${i}`]));
      }
      const [a, b] = caches as [Cache, Cache, Cache];
      expect(b.peek('key-3')).toBe('v3');
      await a.set('key-3', 'changed');
      // Only pub/sub drops b's L1 copy (its ttl is a minute away).
      await until(() => expect(b.peek('key-3')).toBe(undefined), 10_000);
      await expect(b.get('key-3')).resolves.toBe('changed');
      let release: (() => void) | undefined;
      const refused: string[] = [];
      a.onStaleWriteRefused((e) => refused.push(e.key));
      const loading = a.getOrLoad('late', async () => {
        await new Promise<void>((resolve) => (release = resolve));
        return 'old';
      });
      await until(() => expect(release).toBeDefined(), 10_000);
      await b.delete('late');
      release?.();
      await expect(loading).resolves.toBe('old');
      expect(refused).toEqual(['default:late']);
    } finally {
      for (const c of caches) await c.close();
    }
  });

  it('RedisBloomFilter works on the Cluster, rebuild included', async () => {
    const bloom = new RedisBloomFilter({
      redis: cluster().client({ redisOptions: { maxRetriesPerRequest: 1 } }),
      name: 'skus',
      expectedItems: 100,
      timeoutMs: 5_000,
    });
    await bloom.addAll(['a', 'b']);
    expect(await bloom.mightContainAll(['a', 'b'])).toEqual([true, true]);
    await bloom.rebuild(['c']);
    await expect(bloom.mightContain('c')).resolves.toBe(true);
  });
});
