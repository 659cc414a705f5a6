import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  BloomFilter,
  Cache,
  RedisBloomFilter,
  isCacheClosedError,
  type CacheGraceEvent,
  type CacheRedisClient,
} from '../../src/cache/index.js';
import { invalidOption } from '../support/helpers.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A loader that counts its calls and returns `value(call)`; optionally held until released. */
function counting<V>(value: (call: number) => V | undefined) {
  let calls = 0;
  const loader = () => Promise.resolve(value(++calls));
  return {
    loader,
    get calls() {
      return calls;
    },
  };
}

describe('Cache (L1 only)', () => {
  it('loads once for many concurrent callers and then serves from L1', async () => {
    await using cache = new Cache({ jitter: 0 });
    const load = counting((n) => ({ n }));
    const results = await Promise.all(
      Array.from({ length: 100 }, () => cache.getOrLoad('k', load.loader)),
    );
    expect(load.calls).toBe(1);
    expect(new Set(results.map((r) => JSON.stringify(r)))).toEqual(new Set(['{"n":1}']));
    await expect(cache.getOrLoad('k', load.loader)).resolves.toEqual({ n: 1 });
    expect(cache.peek('k')).toEqual({ n: 1 });
    await expect(cache.get('k')).resolves.toEqual({ n: 1 });
    expect(load.calls).toBe(1);
  });

  it('reloads after the ttl; jitter only shortens it', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, ttlMs: 1000, jitter: 0.5, random: () => 0.999 });
    const load = counting((n) => n);
    await cache.getOrLoad('k', load.loader);
    clock.advance(499);
    await cache.getOrLoad('k', load.loader);
    expect(load.calls).toBe(1);
    clock.advance(2); // 501 ms: past ttl × (1 − 0.5 × 0.999)
    await expect(cache.getOrLoad('k', load.loader)).resolves.toBe(2);
  });

  it('caches an absence for negativeTtlMs', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, negativeTtlMs: 100 });
    const load = counting(() => undefined);
    for (let i = 0; i < 5; i++)
      await expect(cache.getOrLoad('nope', load.loader)).resolves.toBe(undefined);
    expect(load.calls).toBe(1);
    clock.advance(100);
    await cache.getOrLoad('nope', load.loader);
    expect(load.calls).toBe(2);
  });

  it('serves stale within staleMs while one caller refreshes', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, ttlMs: 100, staleMs: 50, jitter: 0, beta: 0 });
    let release: (() => void) | undefined;
    let calls = 0;
    const loader = async () => {
      calls++;
      if (calls > 1) await new Promise<void>((resolve) => (release = resolve));
      return calls;
    };
    await cache.getOrLoad('k', loader);
    clock.advance(120);
    const stale = await Promise.all([1, 2, 3].map(() => cache.getOrLoad('k', loader)));
    expect(stale).toEqual([1, 1, 1]);
    expect(calls).toBe(2);
    release?.();
    await tick();
    await expect(cache.getOrLoad('k', loader)).resolves.toBe(2);
    expect(calls).toBe(2);
  });

  it('a caller arriving past staleMs while a background refresh runs gets its value, not undefined', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, ttlMs: 100, staleMs: 50, jitter: 0, beta: 0 });
    let release: (() => void) | undefined;
    let calls = 0;
    const loader = async () => {
      calls++;
      if (calls > 1) await new Promise<void>((resolve) => (release = resolve));
      return calls;
    };
    await cache.getOrLoad('k', loader);
    clock.advance(120);
    await expect(cache.getOrLoad('k', loader)).resolves.toBe(1); // stale: refresh starts
    clock.advance(40); // past staleMs, the refresh still running
    const late = cache.getOrLoad('k', loader);
    await tick();
    release?.();
    await expect(late).resolves.toBe(2);
    expect(calls).toBe(2);
  });

  it('on the system clock, a hit after the event loop was blocked past the ttl is not served', async () => {
    // A clock reading reused across hits (lru-cache's ttlResolution) would still be the one
    // taken before the block, and the expired value would come back.
    await using cache = new Cache({ ttlMs: 20, staleMs: 0, jitter: 0, beta: 0 });
    await cache.getOrLoad('k', () => 1);
    expect(cache.peek('k')).toBe(1);
    const until = performance.now() + 60;
    while (performance.now() < until) {
      // blocked: no timer can run
    }
    expect(cache.peek('k')).toBeUndefined();
  });

  it('on the system clock, an expired value is not served', async () => {
    await using cache = new Cache({ ttlMs: 20, jitter: 0, beta: 0 });
    await cache.getOrLoad('k', () => 1);
    for (let i = 0; i < 100; i++) cache.peek('k');
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(cache.peek('k')).toBeUndefined();
    await expect(cache.getOrLoad('k', () => 2)).resolves.toBe(2);
    expect(cache.peek('k')).toBe(2);
  });

  it('after a hit, a bad key is still a typed error (the last-key memo checks nothing less)', async () => {
    await using cache = new Cache();
    await cache.getOrLoad('k', () => 1);
    for (const bad of [undefined, '', 7, {}]) {
      await expect(cache.getOrLoad(bad as string, () => 1)).rejects.toMatchObject({
        name: 'InvalidOptionError',
        option: 'key',
      });
      expect(invalidOption(() => cache.peek(bad as string)).option).toBe('key');
    }
  });

  it('past staleMs everyone waits for the one load', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, ttlMs: 100, staleMs: 50, jitter: 0, beta: 0 });
    const load = counting((n) => n);
    await cache.getOrLoad('k', load.loader);
    clock.advance(150);
    await expect(cache.getOrLoad('k', load.loader)).resolves.toBe(2);
  });

  it('grace: serves the last value when the loader fails, and says so', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, ttlMs: 100, graceMs: 1000, jitter: 0, beta: 0 });
    const events: CacheGraceEvent[] = [];
    cache.onGrace((e) => events.push(e));
    await cache.getOrLoad('k', () => 'old');
    clock.advance(500);
    const boom = new Error('db down');
    await expect(
      cache.getOrLoad('k', () => {
        throw boom;
      }),
    ).resolves.toBe('old');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ key: 'default:k', error: boom, staleByMs: 400 });
    clock.advance(700); // past ttl + grace
    await expect(
      cache.getOrLoad('k', () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
  });

  it('XFetch refreshes a fresh value early, in the background', async () => {
    const clock = new ManualClock();
    await using cache = new Cache({ clock, ttlMs: 1000, jitter: 0, beta: 1, random: () => 0.9999 });
    let calls = 0;
    const loader = async () => {
      calls++;
      clock.advance(50); // the load takes 50 ms: δ = 50
      await tick();
      return calls;
    };
    await cache.getOrLoad('k', loader);
    clock.advance(100); // far from expiry: −50·ln(1e-4) ≈ 460 < 850 left
    await cache.getOrLoad('k', loader);
    expect(calls).toBe(1);
    clock.advance(600); // 250 ms left < 460: refresh now, still serving the current value
    await expect(cache.getOrLoad('k', loader)).resolves.toBe(1);
    await tick();
    expect(calls).toBe(2);
  });

  it('XFetch draws once per entry, not per hit: a much-read key is not refreshed far ahead of expiry', async () => {
    const clock = new ManualClock();
    // A seeded source: per-hit draws would, over 2000 hits 300 ms (6 δ) before expiry, almost
    // surely draw one above 6 (each does with probability e^-6); one draw per entry rarely does.
    let state = 42;
    const random = (): number => {
      state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
      return state / 2 ** 31;
    };
    await using cache = new Cache({ clock, ttlMs: 1000, jitter: 0, beta: 1, random });
    let calls = 0;
    const loader = async () => {
      calls++;
      clock.advance(50); // δ = 50
      await tick();
      return calls;
    };
    await cache.getOrLoad('k', loader);
    clock.advance(700); // 300 ms (6 δ) before expiry (fresh until 50 + 1000)
    for (let i = 0; i < 2000; i++) await cache.getOrLoad('k', loader);
    await tick();
    expect(calls).toBe(1);
  });

  it('a delete during a load keeps the load from storing its (older) value', async () => {
    await using cache = new Cache();
    let release: (() => void) | undefined;
    const pending = cache.getOrLoad('k', async () => {
      await new Promise<void>((resolve) => (release = resolve));
      return 'before delete';
    });
    await tick();
    await cache.delete('k');
    release?.();
    await expect(pending).resolves.toBe('before delete');
    await expect(cache.getOrLoad('k', () => 'after')).resolves.toBe('after');
  });

  it('set replaces, delete removes', async () => {
    await using cache = new Cache();
    await cache.set('k', { a: 1 });
    await expect(cache.get('k')).resolves.toEqual({ a: 1 });
    await expect(cache.delete('k')).resolves.toBe(true);
    await expect(cache.get('k')).resolves.toBe(undefined);
    await expect(cache.delete('k')).resolves.toBe(false);
  });

  it('an aborted caller rejects with the reason; the shared load goes on for the others', async () => {
    await using cache = new Cache();
    let release: (() => void) | undefined;
    const loader = async () => {
      await new Promise<void>((resolve) => (release = resolve));
      return 1;
    };
    const controller = new AbortController();
    const a = cache.getOrLoad('k', loader, { signal: controller.signal });
    const b = cache.getOrLoad('k', loader);
    await tick();
    const reason = new Error('gave up');
    controller.abort(reason);
    await expect(a).rejects.toBe(reason);
    release?.();
    await expect(b).resolves.toBe(1);
    const aborted = AbortSignal.abort(reason);
    await expect(cache.getOrLoad('k', loader, { signal: aborted })).rejects.toBe(reason);
  });

  it('namespaces keep keys apart and share the tiers', async () => {
    await using cache = new Cache();
    const users = cache.namespace('users');
    const orders = cache.namespace('orders');
    await users.set('1', 'alice');
    await expect(orders.get('1')).resolves.toBe(undefined);
    await expect(users.get('1')).resolves.toBe('alice');
    expect(users.name).toBe('users');
  });

  it('a guard that rules a key out stops the loader', async () => {
    const bloom = new BloomFilter({ expectedItems: 100 });
    bloom.add('sku-1');
    await using cache = new Cache({ guard: bloom });
    const load = counting(() => 'x');
    await expect(cache.getOrLoad('sku-404', load.loader)).resolves.toBe(undefined);
    expect(load.calls).toBe(0);
    await expect(cache.getOrLoad('sku-1', load.loader)).resolves.toBe('x');
    cache.setGuard(undefined);
    await expect(cache.getOrLoad('sku-404', load.loader)).resolves.toBe('x');
  });

  it('a guard that fails (its Redis is down) lets the key through to the loader', async () => {
    await using cache = new Cache({
      guard: { mightContain: () => Promise.reject(new Error('bloom unreachable')) },
    });
    await expect(cache.getOrLoad('sku-1', () => 'loaded')).resolves.toBe('loaded');
  });

  it('L1 is bounded by count and by size', async () => {
    await using byCount = new Cache({ l1: { max: 2 } });
    for (const k of ['a', 'b', 'c']) await byCount.set(k, k);
    expect(byCount.peek('a')).toBe(undefined);
    expect(byCount.peek('c')).toBe('c');
    await using bySize = new Cache({ l1: { max: 100, maxSize: 10, sizeOf: () => 4 } });
    for (const k of ['a', 'b', 'c']) await bySize.set(k, k);
    expect(bySize.peek('a')).toBe(undefined);
    expect(bySize.peek('b')).toBe('b');
  });

  it('warm loads keys with bounded concurrency', async () => {
    await using cache = new Cache();
    let running = 0;
    let most = 0;
    const loaded = await cache.warm(
      Array.from({ length: 20 }, (_, i) => `k${i}`),
      async ({ key }) => {
        most = Math.max(most, ++running);
        await tick();
        running--;
        return key === 'k3' ? undefined : key;
      },
      { concurrency: 3 },
    );
    expect(loaded).toBe(19);
    expect(most).toBe(3);
    expect(cache.peek('k7')).toBe('k7');
  });

  it('close is idempotent, aborts loaders, and refuses later calls', async () => {
    const cache = new Cache();
    let seen: AbortSignal | undefined;
    const pending = cache.getOrLoad('k', ({ signal }) => {
      seen = signal;
      return new Promise<never>((_, reject) => {
        signal.addEventListener('abort', () => {
          reject(signal.reason as Error);
        });
      });
    });
    await tick();
    await cache.close();
    await cache.close();
    expect(seen?.aborted).toBe(true);
    expect(isCacheClosedError(await pending.catch((e: unknown) => e))).toBe(true);
    expect(isCacheClosedError(await cache.get('k').catch((e: unknown) => e))).toBe(true);
  });

  it('bad options and keys are typed errors naming them', async () => {
    expect(invalidOption(() => new Cache({ ttlMs: -1 })).option).toBe('ttlMs');
    expect(invalidOption(() => new Cache({ jitter: 2 })).option).toBe('jitter');
    expect(invalidOption(() => new Cache({ prefix: 'a{b' })).option).toBe('prefix');
    expect(invalidOption(() => new Cache({ l1: false })).option).toBe('l1');
    expect(invalidOption(() => new Cache({ tttlMs: 1 } as never)).message).toContain('ttlMs');
    await using cache = new Cache();
    await expect(cache.get('')).rejects.toMatchObject({
      code: 'KEEL_INVALID_OPTION',
      option: 'key',
    });
    await expect(cache.getOrLoad('k', 'x' as never)).rejects.toMatchObject({ option: 'loader' });
    await expect(cache.set('k', undefined)).rejects.toMatchObject({ option: 'value' });
    await expect(cache.getOrLoad('k', () => 1, { ttlMs: 0 })).rejects.toMatchObject({
      option: 'ttlMs',
    });
  });

  it('durations the timers cannot hold (setTimeout fires at once past 2^31 − 1 ms) are typed errors naming them', () => {
    // Each would make a timer fire after 1 ms: every Redis call "timed out", a heartbeat or a
    // waiter's poll spinning.
    for (const option of ['redisTimeoutMs', 'pollIntervalMs', 'leaseTtlMs'] as const) {
      expect(invalidOption(() => new Cache({ [option]: 2 ** 31 })).option).toBe(option);
    }
    const redis: CacheRedisClient = {
      evalsha: () => Promise.reject(new Error('unused')),
      eval: () => Promise.reject(new Error('unused')),
    };
    expect(
      invalidOption(
        () => new RedisBloomFilter({ redis, name: 'b', expectedItems: 10, timeoutMs: 2 ** 31 }),
      ).option,
    ).toBe('timeoutMs');
  });

  it('bad options and key lists of get, delete, warm and the Bloom filters are typed errors naming them', async () => {
    await using cache = new Cache();
    await expect(cache.get('k', { signal: 'x' as never })).rejects.toMatchObject({
      code: 'KEEL_INVALID_OPTION',
      option: 'signal',
    });
    await expect(cache.get('k', 5 as never)).rejects.toMatchObject({ option: 'options' });
    await expect(cache.delete('k', { signal: {} as never })).rejects.toMatchObject({
      option: 'signal',
    });
    await expect(cache.delete('k', null as never)).rejects.toMatchObject({ option: 'options' });
    await expect(cache.warm(5 as never, () => 1)).rejects.toMatchObject({ option: 'keys' });
    await expect(cache.warm('abc' as never, () => 1)).rejects.toMatchObject({ option: 'keys' });
    await expect(cache.warm(['a'], () => 1, null as never)).rejects.toMatchObject({
      option: 'options',
    });
    await expect(cache.warm(['a'], () => 1, { signal: 'x' as never })).rejects.toMatchObject({
      owner: 'Cache.warm',
      option: 'signal',
    });
    const bloom = new BloomFilter({ expectedItems: 10 });
    expect(invalidOption(() => bloom.addAll(5 as never)).option).toBe('keys');
    expect(invalidOption(() => bloom.mightContainAll(null as never)).option).toBe('keys');
    let sent = 0;
    const redis: CacheRedisClient = {
      evalsha: () => {
        sent++;
        return Promise.reject(new Error('unused'));
      },
      eval: () => {
        sent++;
        return Promise.reject(new Error('unused'));
      },
    };
    const remote = new RedisBloomFilter({ redis, name: 'b', expectedItems: 10 });
    await expect(remote.rebuild(5 as never)).rejects.toMatchObject({ option: 'keys' });
    await expect(remote.addAll(5 as never)).rejects.toMatchObject({ option: 'keys' });
    await expect(remote.mightContainAll({} as never)).rejects.toMatchObject({ option: 'keys' });
    // Refused before anything reached Redis.
    expect(sent).toBe(0);
  });
});
