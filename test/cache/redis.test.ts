import { expect, it } from 'vitest';
import type { Redis, RedisOptions } from 'ioredis';
import {
  RedisBloomFilter,
  isCacheRedisError,
  type CacheDegradedEvent,
  type CacheQuarantineEvent,
} from '../../src/cache/index.js';
import { until } from '../support/helpers.js';
import { withOverrides } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { heldLoad, useCaches } from '../support/cache.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('Cache with Redis L2 (real redis-server)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis);

  it('a value loaded by one process is served to another from Redis without loading', async () => {
    const a = cacheOf();
    const b = cacheOf();
    await expect(a.getOrLoad('sku-1', () => ({ cents: 1999 }))).resolves.toEqual({ cents: 1999 });
    await expect(
      b.getOrLoad('sku-1', () => {
        throw new Error('must not load');
      }),
    ).resolves.toEqual({ cents: 1999 });
    await expect(b.get('sku-1')).resolves.toEqual({ cents: 1999 });
    const raw = await client().get('keel:cache:{default:sku-1}');
    expect(raw).toMatch(/^k1\|\d+\|\d+\|\d+\|\d+\|v\n\{"cents":1999\}$/);
  });

  it('many caches × many concurrent callers of one cold key: the loader runs once', async () => {
    const caches = Array.from({ length: 5 }, () => cacheOf());
    let calls = 0;
    const loader = async () => {
      calls++;
      await sleep(50);
      return 'v';
    };
    const results = await Promise.all(
      caches.flatMap((c) => Array.from({ length: 50 }, () => c.getOrLoad('cold', loader))),
    );
    expect(calls).toBe(1);
    expect(new Set(results)).toEqual(new Set(['v']));
  });

  it('set and delete in one process drop the L1 copy in the others (pub/sub)', async () => {
    const a = cacheOf();
    const b = cacheOf();
    // Messages reach b once its subscription is live (it then drops what it held before, and a
    // read on its way is not kept; see the two tests below): from then on, only a's messages
    // can drop b's copies.
    await until(() => expect(b.listening).toBe(true), 10_000);
    await a.set('k', 1);
    await expect(b.get('k')).resolves.toBe(1);
    expect(b.peek('k')).toBe(1);
    await a.set('k', 2);
    await until(() => expect(b.peek('k')).toBe(undefined), 5_000);
    await expect(b.get('k')).resolves.toBe(2);
    await a.delete('k');
    await until(() => expect(b.peek('k')).toBe(undefined), 5_000);
    await expect(b.getOrLoad('k', () => 3)).resolves.toBe(3);
  });

  /**
   * `c` whose cache subscriber's SUBSCRIBE is held back until `open()` (the connection itself
   * is real and ready): the window between a cache's start and its subscription going live,
   * made as long as a test needs. `live` resolves when Redis answered the SUBSCRIBE.
   */
  const heldSubscription = (
    c: Redis,
    overrides: { readonly [K in keyof Redis]?: unknown } = {},
  ): { client: Redis; open: () => void; live: Promise<void> } => {
    let open = (): void => undefined;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let markLive = (): void => undefined;
    const live = new Promise<void>((resolve) => (markLive = resolve));
    const wrapped = withOverrides(c, {
      ...overrides,
      duplicate: (options?: Partial<RedisOptions>) => {
        const subscriber = c.duplicate(options);
        return withOverrides(subscriber, {
          subscribe: async (...channels: string[]) => {
            await gate;
            const reply = await subscriber.subscribe(...channels);
            markLive();
            return reply;
          },
        });
      },
    });
    return { client: wrapped, open, live };
  };

  it('an L1 copy made before the subscription is live is dropped when it goes live (writes in between went unheard)', async () => {
    const a = cacheOf();
    const held = heldSubscription(client());
    const b = cacheOf({ redis: held.client });
    await a.set('k', 1);
    await expect(b.get('k')).resolves.toBe(1);
    expect(b.peek('k')).toBe(1);
    // Published while b is not subscribed: b never hears of it.
    await a.set('k', 2);
    held.open();
    await held.live;
    await sleep(0); // the cache's own continuation of the SUBSCRIBE reply has run
    expect(b.peek('k')).toBe(undefined);
    await expect(b.get('k')).resolves.toBe(2);
    expect(b.peek('k')).toBe(2);
  });

  it('a read on its way when the subscription goes live is served, not kept (it may predate an unheard write)', async () => {
    const a = cacheOf();
    const raw = client();
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    let answered = (): void => undefined;
    const atRedis = new Promise<void>((resolve) => (answered = resolve));
    const held = heldSubscription(raw, {
      get: async (key: string) => {
        const value = await raw.get(key);
        answered();
        await released;
        return value;
      },
    });
    const b = cacheOf({ redis: held.client });
    await a.set('k', 1);
    const reading = b.get('k');
    await atRedis; // Redis answered 1; the reply is held on its way to b
    await a.set('k', 2); // unheard by b
    held.open();
    await held.live;
    await sleep(0);
    release();
    await expect(reading).resolves.toBe(1);
    expect(b.peek('k')).toBe(undefined);
    await expect(b.get('k')).resolves.toBe(2);
  });

  it('without invalidation messages, an L1 copy is still not served past its l1 ttl', async () => {
    const a = cacheOf();
    const b = cacheOf({ invalidation: false, l1: { ttlMs: 100 } });
    await a.set('k', 1);
    await expect(b.get('k')).resolves.toBe(1);
    await a.set('k', 2);
    expect(b.peek('k')).toBe(1); // nobody told b
    await sleep(150);
    expect(b.peek('k')).toBe(undefined);
    await expect(b.get('k')).resolves.toBe(2);
  });

  it('a load that started before a delete cannot write its value back (lease token voided)', async () => {
    const a = cacheOf();
    const b = cacheOf();
    const refused: string[] = [];
    a.onStaleWriteRefused((e) => refused.push(e.key));
    let release: (() => void) | undefined;
    const loading = a.getOrLoad('k', async () => {
      await new Promise<void>((resolve) => (release = resolve));
      return 'read before the delete';
    });
    await until(() => expect(release).toBeDefined(), 5_000);
    await b.delete('k');
    release?.();
    await expect(loading).resolves.toBe('read before the delete');
    expect(refused).toEqual(['default:k']);
    expect(await client().exists('keel:cache:{default:k}')).toBe(0);
    await expect(a.getOrLoad('k', () => 'fresh')).resolves.toBe('fresh');
  });

  it('malformed data in Redis is quarantined and reported, never served', async () => {
    const raw = client();
    const a = cacheOf();
    const events: CacheQuarantineEvent[] = [];
    a.onQuarantine((e) => events.push(e));
    for (const [key, text] of [
      ['bad1', 'not an envelope'],
      ['bad2', 'k1|5|4|9|0|v\n1'],
      [
        'bad3',
        `k1|${Date.now() + 60_000}|${Date.now() + 60_000}|${Date.now() + 60_000}|0|v\n{oops`,
      ],
    ] as const) {
      await raw.set(`keel:cache:{default:${key}}`, text);
      await expect(a.getOrLoad(key, () => 'loaded')).resolves.toBe('loaded');
      expect(await raw.get(`keel:cache:{default:${key}}:quarantine`)).toBe(text);
    }
    expect(events.map((e) => e.reason)).toEqual([
      'no envelope header',
      'envelope deadlines out of order',
      'the serializer refused the payload',
    ]);
    expect(events[2]?.cause).toBeInstanceOf(SyntaxError);
    await expect(a.get('bad3')).resolves.toBe('loaded');
  });

  it('L2 only (l1: false) reads Redis every time', async () => {
    const a = cacheOf({ l1: false });
    const b = cacheOf();
    await a.set('k', 1);
    await b.set('k', 2);
    await expect(a.get('k')).resolves.toBe(2);
    expect(a.peek('k')).toBe(undefined);
  });

  it('a stale value read from Redis is served and refreshed in the background (L1 off too)', async () => {
    for (const l1 of [false, undefined] as const) {
      await client().flushall();
      const a = cacheOf({ l1, ttlMs: 100, staleMs: 60_000 });
      let calls = 0;
      const loader = () => ++calls;
      await expect(a.getOrLoad('k', loader)).resolves.toBe(1);
      await sleep(150);
      // A fresh cache: its L1 is empty, so the stale value comes from Redis.
      const b = cacheOf({ l1, ttlMs: 100, staleMs: 60_000 });
      await expect(b.getOrLoad('k', loader)).resolves.toBe(1);
      await until(() => expect(calls).toBe(2), 5_000);
      await until(async () => expect(await b.getOrLoad('k', loader)).toBe(2), 5_000);
    }
  });

  it('a waiter woken by the fill message gets the value from it: no read of Redis after the wake', async () => {
    const a = cacheOf();
    const raw = client();
    let gets = 0;
    let scriptReplies = 0;
    const counted = withOverrides(raw, {
      get: (key: string) => {
        gets++;
        return raw.get(key);
      },
      evalsha: async (...args: Parameters<Redis['evalsha']>) => {
        const reply = await raw.evalsha(...args);
        scriptReplies++;
        return reply;
      },
    });
    const b = cacheOf({ redis: counted, pollIntervalMs: 60_000 });
    await until(() => expect(b.listening).toBe(true), 10_000);
    const { loading, release } = await heldLoad(a, 'k', { n: 1 });
    const waiting = b.getOrLoad('k', () => {
      throw new Error('b must not load');
    });
    // b's GET missed and its read script found a's lease: b now waits for a's fill.
    await until(() => expect(scriptReplies).toBe(1), 5_000);
    expect(gets).toBe(1);
    release();
    await expect(loading).resolves.toEqual({ n: 1 });
    await expect(waiting).resolves.toEqual({ n: 1 });
    expect(gets).toBe(1);
    expect(b.peek('k')).toEqual({ n: 1 });
  });

  it('a value too large for the fill message is read from Redis by the woken waiter', async () => {
    // Without the wake, b would sleep until a's lease ran out (30 s) or its poll (60 s).
    const a = cacheOf({ leaseTtlMs: 30_000 });
    const b = cacheOf({ leaseTtlMs: 30_000, pollIntervalMs: 60_000 });
    await until(() => expect(b.listening).toBe(true), 10_000);
    const big = 'x'.repeat(20_000);
    const { loading, release } = await heldLoad(a, 'big', big);
    const started = performance.now();
    const waiting = b.getOrLoad('big', () => 'b must not load');
    await sleep(100);
    release();
    await expect(loading).resolves.toBe(big);
    await expect(waiting).resolves.toBe(big);
    // Woken by the message; generous margin.
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it('a lease whose holder died runs out and another process loads', async () => {
    const raw = client();
    await raw.set('keel:cache:{default:k}:lease', 'dead-holder', 'PX', 300);
    const a = cacheOf({ leaseTtlMs: 300, pollIntervalMs: 50 });
    let calls = 0;
    await expect(a.getOrLoad('k', () => ++calls)).resolves.toBe(1);
    expect(calls).toBe(1);
  });

  it('stale-while-revalidate across processes: one refresh, others keep the stale value', async () => {
    const caches = Array.from({ length: 3 }, () => cacheOf({ ttlMs: 100, staleMs: 10_000 }));
    let calls = 0;
    const loader = async () => {
      calls++;
      await sleep(30);
      return calls;
    };
    await caches[0]?.getOrLoad('k', loader);
    await sleep(120);
    const stale = await Promise.all(
      caches.flatMap((c) => Array.from({ length: 10 }, () => c.getOrLoad('k', loader))),
    );
    expect(new Set(stale)).toEqual(new Set([1]));
    await until(() => expect(calls).toBe(2), 5_000);
    await until(async () => expect(await caches[2]?.get('k')).toBe(2), 5_000);
    expect(calls).toBe(2);
  });

  it('Redis paused: reads degrade to L1 and the loader within the timeout, writes throw typed errors', async () => {
    const a = cacheOf({ redisTimeoutMs: 200, degradedRetryMs: 200 });
    const degraded: CacheDegradedEvent[] = [];
    const recovered: number[] = [];
    a.onDegraded((e) => degraded.push(e));
    a.onRecovered((e) => recovered.push(e.degradedMs));
    // An L1 copy made before the invalidation subscription is live is dropped when it goes live.
    await until(() => expect(a.listening).toBe(true), 10_000);
    await a.getOrLoad('warm', () => 'w');
    redis().pause(0);
    const started = performance.now();
    await expect(a.getOrLoad('cold', () => 'from loader')).resolves.toBe('from loader');
    expect(performance.now() - started).toBeLessThan(5_000); // bounded by redisTimeoutMs, generous margin
    await expect(a.getOrLoad('warm', () => 'x')).resolves.toBe('w');
    expect(degraded).toHaveLength(1);
    expect(degraded[0]?.error.kind).toBe('timed-out');
    expect(degraded[0]?.error.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const error = await a.set('k', 1).catch((e: unknown) => e);
    expect(isCacheRedisError(error)).toBe(true);
    redis().resume(0);
    await sleep(250);
    await until(async () => {
      await a.getOrLoad(`probe-${Math.random()}`, () => 1);
      expect(recovered).toHaveLength(1);
    }, 10_000);
  });

  it('Redis killed: L1 and the loader keep serving, a typed degraded event, recovery after a restart', async () => {
    const a = cacheOf({ redisTimeoutMs: 300, degradedRetryMs: 100 });
    const degraded: CacheDegradedEvent[] = [];
    a.onDegraded((e) => degraded.push(e));
    let recovered = 0;
    a.onRecovered(() => recovered++);
    // An L1 copy made before the invalidation subscription is live is dropped when it goes live.
    await until(() => expect(a.listening).toBe(true), 10_000);
    await a.getOrLoad('warm', () => 'w');
    await redis().kill(0);
    await expect(a.getOrLoad('warm', () => 'x')).resolves.toBe('w');
    await expect(a.getOrLoad('cold', () => 'loaded')).resolves.toBe('loaded');
    expect(degraded).toHaveLength(1);
    expect(['connection-refused', 'not-connected', 'timed-out']).toContain(degraded[0]?.error.kind);
    await redis().restart(0);
    await until(async () => {
      await a.getOrLoad(`probe-${Math.random()}`, () => 1);
      expect(recovered).toBe(1);
    }, 20_000);
  });

  it('RedisBloomFilter: no false negatives, batch calls, rebuild by atomic swap', async () => {
    const bloom = new RedisBloomFilter({ redis: client(), name: 'skus', expectedItems: 1000 });
    const keys = Array.from({ length: 1000 }, (_, i) => `sku-${i}`);
    // Not built yet: adds are kept, but nothing is ruled out (it may have lost keys).
    await bloom.add('early');
    await expect(bloom.mightContainAll(['early', 'x-0'])).resolves.toEqual([true, true]);
    await bloom.rebuild([]); // built, empty
    await expect(bloom.mightContainAll(['early', 'x-0'])).resolves.toEqual([false, false]);
    const fresh = await bloom.addAll(keys);
    expect(fresh.filter(Boolean).length).toBeGreaterThan(990);
    expect((await bloom.mightContainAll(keys)).every(Boolean)).toBe(true);
    await expect(bloom.add('sku-1')).resolves.toBe(false);
    await expect(bloom.mightContain('sku-0')).resolves.toBe(true);
    const absent = await bloom.mightContainAll(Array.from({ length: 2000 }, (_, i) => `x-${i}`));
    expect(absent.filter(Boolean).length).toBeLessThan(60); // ~20 expected at 1 %
    await bloom.rebuild(['only-this']);
    await expect(bloom.mightContain('only-this')).resolves.toBe(true);
    expect((await bloom.mightContainAll(keys)).filter(Boolean).length).toBeLessThan(30);
    const cache = cacheOf({ guard: bloom });
    let calls = 0;
    await expect(cache.getOrLoad('sku-404', () => ++calls)).resolves.toBe(undefined);
    expect(calls).toBe(0);
    await bloom.close();
  });
});
