/**
 * What an L2 hit costs Redis, counted with `INFO commandstats` (deterministic, unlike timings):
 * a value found in Redis is one plain `GET` — no script, no lease key, no second command — and
 * a malformed value found that way is still quarantined and reported, never served.
 */
import { expect, it } from 'vitest';
import type { CacheQuarantineEvent } from '../../src/cache/index.js';
import { redisCost, redisCounters } from '../support/redis-cost.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { useCaches } from '../support/cache.js';

const fail = (): never => {
  throw new Error('must not load');
};

describeRedis('Cache: an L2 hit is one GET (real redis-server, INFO commandstats)', () => {
  const redis = useRedis();
  // No subscriber connection: its SUBSCRIBE would land in the counts whenever it connects.
  const { client, cacheOf } = useCaches(redis, { invalidation: false });

  it('getOrLoad and get of a value in Redis (L1 off) send one GET each and nothing else', async () => {
    const probe = client();
    const cache = cacheOf({ l1: false });
    await cache.set('sku-1', { cents: 1999 });
    const before = await redisCounters(probe);
    for (let i = 0; i < 20; i++) {
      await expect(cache.getOrLoad('sku-1', fail)).resolves.toEqual({ cents: 1999 });
    }
    for (let i = 0; i < 5; i++) await expect(cache.get('sku-1')).resolves.toEqual({ cents: 1999 });
    const cost = redisCost(before, await redisCounters(probe));
    expect(Object.fromEntries(cost.byCommand)).toEqual({ get: 25 });
    expect(cost.scripts).toBe(0);
  });

  it('an L1 miss that Redis answers sends one GET, then L1 serves without Redis', async () => {
    const probe = client();
    const writer = cacheOf();
    const reader = cacheOf();
    await writer.set('sku-2', 'v');
    // The reader's connection has run what its constructor sent (the scripts' preload) before
    // counting starts: a read of another key comes back after it.
    await reader.get('warm-up');
    const before = await redisCounters(probe);
    for (let i = 0; i < 10; i++) await expect(reader.getOrLoad('sku-2', fail)).resolves.toBe('v');
    const cost = redisCost(before, await redisCounters(probe));
    expect(Object.fromEntries(cost.byCommand)).toEqual({ get: 1 });
  });

  it('L2 hits of different keys landing together each get their own value, in L1 too', async () => {
    // The hit path decodes into one shared scratch entry: replies read from one socket chunk
    // run back to back, and none may see another's value or be kept with another's lifetimes.
    const writer = cacheOf({ l1: false });
    const reader = cacheOf({ l1: false });
    const keys = Array.from({ length: 20 }, (_, i) => `k${i}`);
    await Promise.all(
      keys.map((k, i) => writer.set(k, { n: i }, { ttlMs: 60_000 + i * 1_000, staleMs: 0 })),
    );
    const values = await Promise.all(keys.map((k) => reader.getOrLoad(k, fail)));
    expect(values).toEqual(keys.map((_, i) => ({ n: i })));
    const l1 = cacheOf({ invalidation: false });
    await Promise.all(keys.map((k) => l1.getOrLoad(k, fail)));
    for (let i = 0; i < keys.length; i++) {
      await expect(l1.getOrLoad(`k${i}`, fail)).resolves.toEqual({ n: i });
    }
  });

  it.each(['throws', 'answers with no promise'] as const)(
    'a client whose get %s once fails that read without leaving its load stuck',
    async (mode) => {
      const c = client();
      const realGet = c.get.bind(c);
      let broken = true;
      (c as unknown as { get: (key: string) => unknown }).get = (key: string) => {
        if (!broken) return realGet(key);
        broken = false;
        if (mode === 'throws') throw new Error('client broke');
        return 'not a promise';
      };
      const cache = cacheOf({ redis: c, l1: false });
      // The failed read is Redis being down for this call: the loader answers, and the key's
      // single-flight slot is released (a stuck slot would hand its failure to every later call).
      await expect(cache.getOrLoad(`broken-${mode}`, () => 'loaded')).resolves.toBe('loaded');
      await expect(cache.getOrLoad(`broken-${mode}`, () => 'again')).resolves.toMatch(
        /^(loaded|again)$/,
      );
    },
  );

  it('a malformed value read by GET is quarantined, reported, and the loader answers at once', async () => {
    const raw = client();
    // Waiting for a poll would take a minute: the value must be moved aside and the lease taken
    // in the same call.
    const cache = cacheOf({ l1: false, pollIntervalMs: 60_000, maxWaitMs: 60_000 });
    const events: CacheQuarantineEvent[] = [];
    cache.onQuarantine((e) => events.push(e));
    const later = Date.now() + 60_000;
    await raw.set('keel:cache:{default:bad}', `k1|${later}|${later}|${later}|0|v\n{oops`);
    await expect(cache.getOrLoad('bad', () => 'loaded')).resolves.toBe('loaded');
    expect(events.map((e) => e.reason)).toEqual(['the serializer refused the payload']);
    expect(events[0]?.quarantineKey).toBe('keel:cache:{default:bad}:quarantine');
    expect(await raw.get('keel:cache:{default:bad}:quarantine')).toMatch(/\{oops$/);
    await expect(cache.get('bad')).resolves.toBe('loaded');
  }, 20_000);
});
