/**
 * Foreign and malformed data under the cache's keys (real redis-server): a value or lease key of
 * another type (a hash, a set), a malformed value that cannot be moved aside (Redis out of
 * memory). Each is reported, treated as a miss, and never stops the cache from loading at once
 * or from sharing one load across processes.
 */
import { afterEach, expect, it } from 'vitest';
import type { CacheQuarantineEvent } from '../../src/cache/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { useCaches } from '../support/cache.js';

const valueKey = (key: string): string => `keel:cache:{default:${key}}`;
const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('Cache: foreign and malformed data in its keys (real redis-server)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis);

  afterEach(async () => {
    const admin = client();
    await admin.config('SET', 'maxmemory', '0');
  });

  it('a value key of another type (a hash) is quarantined, reported, and one load is shared across processes', async () => {
    const admin = client();
    await admin.hset(valueKey('k'), 'field', 'foreign');
    const caches = [cacheOf(), cacheOf()];
    const events: CacheQuarantineEvent[] = [];
    for (const cache of caches) cache.onQuarantine((event) => events.push(event));
    let loads = 0;
    const loader = async (): Promise<string> => {
      loads++;
      await sleep(50);
      return 'loaded';
    };
    const answers = await Promise.all(
      caches.flatMap((cache) => Array.from({ length: 10 }, () => cache.getOrLoad('k', loader))),
    );
    expect(new Set(answers)).toEqual(new Set(['loaded']));
    expect(loads).toBe(1);
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events[0]).toMatchObject({
      key: 'default:k',
      quarantineKey: `${valueKey('k')}:quarantine`,
    });
    expect(events[0]?.reason).toContain('hash');
    await expect(admin.type(`${valueKey('k')}:quarantine`)).resolves.toBe('hash');
    await expect(admin.pttl(`${valueKey('k')}:quarantine`)).resolves.toBeGreaterThan(0);
    // The loaded value is in Redis: another process reads it without loading.
    await expect(cacheOf().get('k')).resolves.toBe('loaded');
  });

  it('a lease key of another type (a set) is quarantined, reported, and one load is shared across processes', async () => {
    const admin = client();
    await admin.sadd(`${valueKey('k')}:lease`, 'foreign');
    const caches = [cacheOf(), cacheOf()];
    const events: CacheQuarantineEvent[] = [];
    for (const cache of caches) cache.onQuarantine((event) => events.push(event));
    let loads = 0;
    const loader = async (): Promise<string> => {
      loads++;
      await sleep(50);
      return 'loaded';
    };
    const answers = await Promise.all(
      caches.flatMap((cache) => Array.from({ length: 10 }, () => cache.getOrLoad('k', loader))),
    );
    expect(new Set(answers)).toEqual(new Set(['loaded']));
    expect(loads).toBe(1);
    expect(events[0]).toMatchObject({
      key: 'default:k',
      quarantineKey: `${valueKey('k')}:lease:quarantine`,
    });
    await expect(admin.type(`${valueKey('k')}:lease:quarantine`)).resolves.toBe('set');
    await expect(cacheOf().get('k')).resolves.toBe('loaded');
  });

  it('get() of a value key of another type answers undefined and quarantines it', async () => {
    const admin = client();
    await admin.rpush(valueKey('k'), 'foreign');
    const cache = cacheOf();
    const events: CacheQuarantineEvent[] = [];
    cache.onQuarantine((event) => events.push(event));
    await expect(cache.get('k')).resolves.toBe(undefined);
    expect(events.map((event) => event.quarantineKey)).toEqual([`${valueKey('k')}:quarantine`]);
    await expect(admin.type(valueKey('k'))).resolves.toBe('none');
  });

  it('foreign messages on the cache channel (empty key, bad lengths, garbage) change nothing and crash nothing', async () => {
    const admin = client();
    const cache = cacheOf();
    await until(() => expect(cache.listening).toBe(true), 10_000);
    await cache.set('k', 'kept');
    for (const message of [
      'i|foreign|',
      'i||',
      'v|foreign|0|',
      'v|foreign|99|x',
      'r|x|',
      '|',
      '',
    ]) {
      await admin.publish('keel:cache:events', message);
    }
    // Heard once a later message is: another process's invalidation of a key held in L1.
    await cache.set('marker', 1);
    await admin.publish('keel:cache:events', 'i|foreign|default:marker');
    await until(() => expect(cache.peek('marker')).toBe(undefined), 10_000);
    expect(cache.peek('k')).toBe('kept');
    await expect(cache.getOrLoad('cold', () => 'loaded')).resolves.toBe('loaded');
  });

  it('a malformed value that cannot be moved aside (Redis out of memory) is reported and the loader answers at once, not after maxWaitMs', async () => {
    const admin = client();
    await admin.set(valueKey('bad'), 'not an envelope');
    // A waiter would give up only after two minutes.
    const cache = cacheOf({ leaseTtlMs: 60_000 });
    const events: CacheQuarantineEvent[] = [];
    cache.onQuarantine((event) => events.push(event));
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    await expect(admin.set('probe', 'x')).rejects.toThrow('OOM');
    await expect(
      Promise.race([cache.getOrLoad('bad', () => 'loaded'), later(10_000)]),
    ).resolves.toBe('loaded');
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events[0]).toMatchObject({ key: 'default:bad', quarantineKey: undefined });
    // Never served: still there, still refused.
    await expect(admin.get(valueKey('bad'))).resolves.toBe('not an envelope');
  });
});

describeRedis('Cache: a loaded value the serializer refuses (real redis-server)', () => {
  const redis = useRedis();
  const { cacheOf } = useCaches(redis);

  it('the lease holder gives its lease up: a waiter in another process loads at once, not when the lease runs out', async () => {
    // A waiter would wait for the lease for a minute (and two before giving up).
    const a = cacheOf({ leaseTtlMs: 60_000 });
    const b = cacheOf({ leaseTtlMs: 60_000, pollIntervalMs: 20 });
    let release: () => void = () => undefined;
    let started = false;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const loadingA = a
      .getOrLoad('k', async () => {
        started = true;
        await gate;
        return 10n; // JSON cannot write a bigint
      })
      .catch((error: unknown) => error);
    await until(() => expect(started).toBe(true), 10_000);
    // b finds a's lease held, whether it reads before or after a's loader returns.
    const loadingB = b.getOrLoad('k', () => 'from-b');
    release();
    await expect(loadingA).resolves.toMatchObject({ code: 'KEEL_CACHE_SERIALIZATION' });
    await expect(Promise.race([loadingB, later(10_000)])).resolves.toBe('from-b');
  });
});
