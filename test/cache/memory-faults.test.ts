/**
 * The cache and `RedisBloomFilter` on a Redis that runs out of memory (real redis-server):
 * `maxmemory` a little above what is used, under `noeviction` (writes refused with `OOM …`)
 * and under `allkeys-lru` (any key evicted — a lease, the filter's bitmap, a rebuild's side
 * key). Redis 7.0 refuses a script without flags (OOM) at its first write command when that
 * one could grow memory: `SET … NX` on a held lease fails like any write.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  MAX_BLOOM_BITS,
  RedisBloomFilter,
  bloomShape,
  isCacheRedisError,
  type CacheDegradedEvent,
} from '../../src/cache/index.js';
import { isInvalidOptionError } from '../../src/index.js';
import { READ } from '../../src/cache/scripts.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { heldLoad, useCaches } from '../support/cache.js';

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

const valueKey = (key: string): string => `keel:cache:{default:${key}}`;

async function usedMemory(admin: Redis): Promise<number> {
  const info = await admin.info('memory');
  const used = /used_memory:(\d+)/.exec(info)?.[1];
  if (used === undefined) throw new Error(`no used_memory in ${info}`);
  return Number(used);
}

/** `maxmemory` a little above what is used now, under `policy`. */
async function tightMemory(admin: Redis, policy: string, headroom = 64 * 1024): Promise<void> {
  await admin.config('SET', 'maxmemory-policy', policy);
  await admin.config('SET', 'maxmemory', String((await usedMemory(admin)) + headroom));
}

/**
 * `maxmemory` of one byte under `noeviction`: far below what the server uses, so every write
 * that could grow memory is refused for as long as it lasts, whatever memory the server frees
 * by itself meanwhile. (A `maxmemory` set just below what was used let writes through as soon as
 * a client that had left freed its buffers: used memory then fell below it again.)
 */
async function refuseWrites(admin: Redis): Promise<void> {
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
  // What the suites assert rests on it: a write is refused from here on.
  await expect(admin.set('refuse-writes:probe', 'x')).rejects.toThrow('OOM');
}

/**
 * Writes filler on `client` (not awaited: queued behind what the client already sent, ahead of
 * what it sends next) — about twenty times the headroom, so that under `allkeys-lru` nearly
 * every key older than the filler is evicted.
 */
function evictOlderKeys(client: Redis, count = 2_000): void {
  const filler = 'y'.repeat(1024);
  for (let i = 0; i < count; i++) client.set(`evictor:${Math.random()}`, filler).catch(noop);
}

const noop = (): void => undefined;

/** A client whose replies to the read script (`READ`) are counted. */
function countingReads(client: Redis): { readonly client: Redis; readonly answered: () => number } {
  let answered = 0;
  const wrapped = new Proxy(client, {
    get(target, property, receiver) {
      if (property !== 'evalsha' && property !== 'eval')
        return Reflect.get(target, property, receiver) as unknown;
      return (...args: Parameters<Redis['evalsha']>) => {
        const reply = property === 'evalsha' ? target.evalsha(...args) : target.eval(...args);
        if (args[0] === READ.sha || args[0] === READ.source) {
          const count = (): void => {
            answered++;
          };
          reply.then(count, count);
        }
        return reply;
      };
    },
  });
  return { client: wrapped, answered: () => answered };
}

describeRedis('Cache on a Redis out of memory (real redis-server)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis);

  afterEach(async () => {
    const admin = client();
    await admin.config('SET', 'maxmemory', '0');
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
  });

  it('Redis 7.0 refuses OOM in a script only at its first write command, if that one could grow memory', async () => {
    const admin = client();
    await admin.set('small', '1');
    await refuseWrites(admin);
    // A first write that could grow memory is refused, whether or not it would write (NX on a
    // key that exists) …
    await expect(
      admin.eval("return redis.call('SET', KEYS[1], 'x', 'NX')", 1, 'small'),
    ).rejects.toThrow('OOM');
    // … but after any write command (a DEL, even of nothing), the writes after it go through.
    await expect(
      admin.eval("redis.call('DEL', 'nothing') return redis.call('SET', KEYS[1], 'y')", 1, 'small'),
    ).resolves.toBe('OK');
  });

  it('noeviction: a waiter honours a lease taken before Redis ran out of memory (no second load)', async () => {
    const admin = client();
    const a = cacheOf({ leaseTtlMs: 60_000 });
    const reads = countingReads(client());
    const b = cacheOf({ redis: reads.client, leaseTtlMs: 60_000, pollIntervalMs: 20 });
    const held = await heldLoad(a, 'k', 'from-a');
    await refuseWrites(admin);
    let loadsOfB = 0;
    const loadingB = b.getOrLoad('k', () => {
      loadsOfB++;
      return 'from-b';
    });
    // b has read the lease several times (or given up on it and loaded).
    await until(() => expect(reads.answered() >= 3 || loadsOfB > 0).toBe(true), 10_000);
    expect(loadsOfB).toBe(0);
    await admin.config('SET', 'maxmemory', '0');
    held.release();
    await expect(held.loading).resolves.toBe('from-a');
    await expect(loadingB).resolves.toBe('from-a');
    expect(loadsOfB).toBe(0);
  });

  it('noeviction: a holder whose write-back is refused gives the lease up (waiters load now)', async () => {
    const admin = client();
    const a = cacheOf({ leaseTtlMs: 60_000 });
    const b = cacheOf({ leaseTtlMs: 60_000 });
    const held = await heldLoad(a, 'k', 'from-a');
    await refuseWrites(admin);
    const loadingB = b.getOrLoad('k', () => 'from-b');
    held.release();
    // Served from the loader, kept in L1 (Redis refused it).
    await expect(held.loading).resolves.toBe('from-a');
    expect(a.peek('k')).toBe('from-a');
    await expect(admin.get(valueKey('k'))).resolves.toBe(null);
    // Not held by anyone for the rest of its 60 s: b loads itself (it cannot take a lease).
    await expect(admin.exists(`${valueKey('k')}:lease`)).resolves.toBe(0);
    await expect(Promise.race([loadingB, later(10_000)])).resolves.toBe('from-b');
  });

  it('noeviction: the cache serves from the loader, set() fails typed, and all recovers when memory frees', async () => {
    const admin = client();
    const a = cacheOf();
    const b = cacheOf();
    await a.set('warm', 'before');
    await refuseWrites(admin);
    // A value written before is still read (GET is allowed).
    await expect(b.getOrLoad('warm', () => 'loaded')).resolves.toBe('before');
    let loads = 0;
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        a.getOrLoad('cold', () => {
          loads++;
          return 'cold-value';
        }),
      ),
    );
    expect(new Set(answers)).toEqual(new Set(['cold-value']));
    expect(loads).toBe(1); // single-flight in the process holds without Redis
    const refused = await a.set('x', 1).catch((error: unknown) => error);
    expect(isCacheRedisError(refused)).toBe(true);
    expect(String(refused)).toContain('OOM');
    // A delete frees memory: Redis lets it through (and its marker write after it).
    await expect(a.delete('warm')).resolves.toBe(true);
    await admin.config('SET', 'maxmemory', '0');
    await expect(a.getOrLoad('after', () => 'landed')).resolves.toBe('landed');
    await expect(
      b.getOrLoad('after', () => {
        throw new Error('must not load: the value is in Redis');
      }),
    ).resolves.toBe('landed');
  });

  it('noeviction: a refused write is kind out-of-memory, reported once by onDegraded; reads and deletes still reach Redis; onRecovered once a write lands', async () => {
    const admin = client();
    const a = cacheOf();
    const b = cacheOf();
    const degraded: CacheDegradedEvent[] = [];
    let recovered = 0;
    a.onDegraded((event) => degraded.push(event));
    a.onRecovered(() => recovered++);
    await b.set('written-by-b', 'in-redis');
    await a.set('warm', 'before');
    await refuseWrites(admin);
    // The lease of a cold key cannot be taken: the loader serves, and the failure is reported.
    await expect(a.getOrLoad('cold', () => 'cold-value')).resolves.toBe('cold-value');
    expect(degraded.map((event) => [event.operation, event.error.kind])).toEqual([
      ['read', 'out-of-memory'],
    ]);
    expect(degraded[0]?.error.message).toContain('OOM');
    const refused = await a.set('x', 1).catch((error: unknown) => error);
    expect(isCacheRedisError(refused) && refused.kind).toBe('out-of-memory');
    // Not taken for Redis being down: values in Redis are still read (not loaded) …
    await expect(
      a.getOrLoad('written-by-b', () => {
        throw new Error('must not load: the value is in Redis');
      }),
    ).resolves.toBe('in-redis');
    // … and a delete still goes through (it frees memory).
    await expect(a.delete('warm')).resolves.toBe(true);
    await expect(admin.exists(valueKey('warm'))).resolves.toBe(0);
    // Reads that succeed while writes are refused do not end the degraded period.
    expect(degraded).toHaveLength(1);
    expect(recovered).toBe(0);
    await admin.config('SET', 'maxmemory', '0');
    await a.set('after', 'landed');
    expect(recovered).toBe(1);
    expect(degraded).toHaveLength(1);
  });

  it('noeviction: each process loads a cold key once (no lease), and only once: concurrent and later gets share it', async () => {
    const admin = client();
    const caches = [cacheOf(), cacheOf()];
    await refuseWrites(admin);
    let loads = 0;
    const loader = async (): Promise<string> => {
      loads++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return 'cold-value';
    };
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(
        caches.flatMap((cache) =>
          Array.from({ length: 10 }, () => cache.getOrLoad('cold', loader)),
        ),
      );
      expect(new Set(answers)).toEqual(new Set(['cold-value']));
      // One load per process, in the first round; later rounds are served from L1.
      expect(loads).toBe(caches.length);
    }
    await expect(admin.get(valueKey('cold'))).resolves.toBe(null);
    await expect(admin.exists(`${valueKey('cold')}:lease`)).resolves.toBe(0);
  });

  it('noeviction: with l1: false, concurrent gets of a cold key still share one load (later ones load again: nothing keeps the value)', async () => {
    const admin = client();
    const cache = cacheOf({ l1: false });
    await refuseWrites(admin);
    let loads = 0;
    const loader = async (): Promise<string> => {
      loads++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return 'cold-value';
    };
    for (let round = 1; round <= 2; round++) {
      const answers = await Promise.all(
        Array.from({ length: 10 }, () => cache.getOrLoad('cold', loader)),
      );
      expect(new Set(answers)).toEqual(new Set(['cold-value']));
      expect(loads).toBe(round);
    }
  });

  it('noeviction: a value past its stale window (kept for grace) is reloaded at once, not after maxWaitMs of lease retries', async () => {
    const admin = client();
    const a = cacheOf();
    // A waiter would give up only after a minute: the lease that cannot be taken must not
    // make it wait at all.
    const b = cacheOf({ leaseTtlMs: 60_000, pollIntervalMs: 20 });
    await a.set('k', 'old', { ttlMs: 50, staleMs: 0, graceMs: 600_000 });
    await until(async () => {
      await expect(b.get('k')).resolves.toBe(undefined); // past its fresh and stale windows
    }, 5_000);
    await expect(admin.exists(valueKey('k'))).resolves.toBe(1); // kept in Redis for grace
    await refuseWrites(admin);
    await expect(Promise.race([b.getOrLoad('k', () => 'new'), later(10_000)])).resolves.toBe('new');
  });

  it('noeviction: a stale value is refreshed in the background, once per process, not served stale for its whole stale window', async () => {
    const admin = client();
    const a = cacheOf();
    const b = cacheOf();
    // Stale for ten minutes once its 50 ms are up: a refresh the lease refusal stopped would
    // leave it served that long.
    await a.set('k', 'old', { ttlMs: 50, staleMs: 600_000 });
    await refuseWrites(admin);
    let loads = 0;
    const loader = (): string => {
      loads++;
      return 'new';
    };
    // a serves its L1 copy, b the copy it reads from Redis, each stale until refreshed.
    for (const cache of [a, b]) {
      await until(async () => {
        await expect(cache.getOrLoad('k', loader)).resolves.toBe('new');
      }, 10_000);
    }
    expect(loads).toBe(2);
    // Kept in L1 (Redis refused it): later reads load nothing.
    await expect(a.getOrLoad('k', loader)).resolves.toBe('new');
    await expect(b.getOrLoad('k', loader)).resolves.toBe('new');
    expect(loads).toBe(2);
    await expect(admin.get(valueKey('k'))).resolves.toContain('"old"');
  });

  it('noeviction: a delete in another process during a load (no lease: Redis refused it) keeps its value out of L1', async () => {
    const admin = client();
    const a = cacheOf();
    const b = cacheOf();
    await until(() => expect(a.listening).toBe(true), 10_000);
    await b.set('marker', 1);
    await expect(a.get('marker')).resolves.toBe(1);
    await refuseWrites(admin);
    let release: () => void = noop;
    let started = false;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const loading = a.getOrLoad('k', async () => {
      started = true;
      await gate;
      return 'read before the delete';
    });
    await until(() => expect(started).toBe(true), 10_000);
    await b.delete('k');
    // Deletes go through: once a has dropped the marker, it has heard the delete of k too.
    await b.delete('marker');
    await until(() => expect(a.peek('marker')).toBe(undefined), 10_000);
    release();
    await expect(loading).resolves.toBe('read before the delete');
    expect(a.peek('k')).toBe(undefined);
    await expect(a.getOrLoad('k', () => 'read after the delete')).resolves.toBe(
      'read after the delete',
    );
  });
});

describeRedis('RedisBloomFilter on a Redis that evicts (real redis-server)', () => {
  const redis = useRedis();
  const { client, cacheOf } = useCaches(redis);

  afterEach(async () => {
    const admin = client();
    await admin.config('SET', 'maxmemory', '0');
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
  });

  const keys = Array.from({ length: 3_000 }, (_, i) => `sku-${i}`);

  it('a filter of exactly 2^32 bits is refused when made: its rebuild marker (bit 2^32) is past what Redis can set', () => {
    // Sizing that comes out at exactly MAX_BLOOM_BITS (allowed for an in-process BloomFilter).
    const expectedItems = 448_089_843;
    const falsePositiveRate = Math.exp((-(2 ** 32 - 0.5) * Math.LN2 * Math.LN2) / expectedItems);
    expect(bloomShape({ expectedItems, falsePositiveRate }).bits).toBe(MAX_BLOOM_BITS);
    let error: unknown;
    try {
      new RedisBloomFilter({ redis: client(), name: 'huge', expectedItems, falsePositiveRate });
    } catch (e) {
      error = e;
    }
    expect(isInvalidOptionError(error)).toBe(true);
    expect((error as Error).message).toContain('expectedItems');
  });

  it('allkeys-lru: a filter whose bitmap was evicted reports no key absent (no false negatives)', async () => {
    const admin = client();
    const bloom = new RedisBloomFilter({ redis: client(), name: 'skus', expectedItems: 3_000 });
    await bloom.addAll(keys);
    await tightMemory(admin, 'allkeys-lru');
    const evictor = client();
    await until(async () => {
      evictOlderKeys(evictor, 200);
      await expect(admin.exists(bloom.key)).resolves.toBe(0);
    }, 20_000);
    expect((await bloom.mightContainAll(keys)).every(Boolean)).toBe(true);
    // As a guard: an existing key reaches the loader rather than reading as absent.
    const cache = cacheOf({ guard: bloom });
    await expect(cache.getOrLoad('sku-7', () => 'exists')).resolves.toBe('exists');
  });

  it('allkeys-lru: an add after the bitmap was evicted leaves no key absent that was added before, until a rebuild', async () => {
    const admin = client();
    const bloom = new RedisBloomFilter({ redis: client(), name: 'skus', expectedItems: 3_000 });
    await bloom.rebuild(keys);
    await expect(bloom.mightContain('never-added')).resolves.toBe(false);
    await tightMemory(admin, 'allkeys-lru');
    const evictor = client();
    await until(async () => {
      evictOlderKeys(evictor, 200);
      await expect(admin.exists(bloom.key)).resolves.toBe(0);
    }, 20_000);
    await admin.config('SET', 'maxmemory', '0');
    // A new item is added: the bitmap is made again, holding only it.
    await bloom.add('sku-new');
    await expect(admin.exists(bloom.key)).resolves.toBe(1);
    const answers = await bloom.mightContainAll([...keys, 'sku-new']);
    expect(answers.filter((maybe) => !maybe)).toEqual([]);
    // As a guard: an item that exists reaches the loader rather than reading as absent.
    const cache = cacheOf({ guard: bloom });
    await expect(cache.getOrLoad('sku-7', () => 'exists')).resolves.toBe('exists');
    // A rebuild makes it whole again: it rules keys out once more.
    await bloom.rebuild([...keys, 'sku-new']);
    expect((await bloom.mightContainAll([...keys, 'sku-new'])).every(Boolean)).toBe(true);
    await expect(bloom.mightContain('never-added')).resolves.toBe(false);
  });

  it('allkeys-lru: a rebuild whose side key is evicted midway never swaps in a partial filter', async () => {
    const admin = client();
    const bloomClient = client();
    const bloom = new RedisBloomFilter({ redis: bloomClient, name: 'skus', expectedItems: 3_000 });
    await bloom.rebuild(keys); // built: it rules keys out
    // Room for the rebuild's own chunks: only the filler below evicts.
    await tightMemory(admin, 'allkeys-lru', 2 * 1024 * 1024);
    let evicted = false;
    function* source(): Generator<string> {
      for (const [i, key] of keys.entries()) {
        // The first chunk of the rebuild is in Redis: evict, ahead of the next chunk.
        if (i === 1_500 && !evicted) {
          evicted = true;
          evictOlderKeys(bloomClient, 20_000);
        }
        yield key;
      }
    }
    const outcome = await bloom.rebuild(source()).catch((error: unknown) => error);
    expect(evicted, String(outcome)).toBe(true);
    if (outcome !== undefined) expect(isCacheRedisError(outcome)).toBe(true);
    await admin.config('SET', 'maxmemory', '0');
    // Whether the rebuild was refused or not, and whatever was evicted: no false negatives.
    expect((await bloom.mightContainAll(keys)).every(Boolean)).toBe(true);
  });

  it('two rebuilds at once (one fails midway) never leave a partial filter', async () => {
    const shared = client();
    const mine = new RedisBloomFilter({ redis: shared, name: 'skus', expectedItems: 3_000 });
    const other = new RedisBloomFilter({ redis: shared, name: 'skus', expectedItems: 3_000 });
    await mine.rebuild(keys); // built: it rules keys out
    let second: Promise<unknown> | undefined;
    function* failing(): Generator<string> {
      yield* [];
      throw new Error('the database read failed');
    }
    function* source(): Generator<string> {
      for (const [i, key] of keys.entries()) {
        // Two chunks are in: another process starts its rebuild (and its source fails).
        if (i === 2_500 && second === undefined) {
          second = other.rebuild(failing()).catch((error: unknown) => error);
        }
        yield key;
      }
    }
    await mine.rebuild(source());
    await expect(second).resolves.toMatchObject({ message: 'the database read failed' });
    expect((await mine.mightContainAll(keys)).every(Boolean)).toBe(true);
    // A failed rebuild leaves no side key behind.
    await expect(shared.keys(`${mine.key}:*`)).resolves.toEqual([]);
  });

  it('noeviction: a rebuild Redis refuses leaves the live filter and no side key', async () => {
    const admin = client();
    const bloom = new RedisBloomFilter({ redis: client(), name: 'skus', expectedItems: 100_000 });
    await bloom.rebuild(keys); // built: it rules keys out
    await refuseWrites(admin);
    const outcome = await bloom.rebuild(keys).catch((error: unknown) => error);
    expect(isCacheRedisError(outcome) && outcome.kind).toBe('out-of-memory');
    expect((await bloom.mightContainAll(keys)).every(Boolean)).toBe(true);
    await expect(admin.keys(`${bloom.key}:*`)).resolves.toEqual([]);
  });
});
