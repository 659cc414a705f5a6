import type { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cache,
  RedisBloomFilter,
  type CacheOptions,
  type CacheQuarantineEvent,
} from '../../src/cache/index.js';
import {
  DELETE,
  FILL,
  QUARANTINE,
  READ,
  RELEASE,
  TAKE_LEASE,
  WRITE,
} from '../../src/cache/scripts.js';
import { SWAP } from '../../src/cache/redis-bloom.js';
import { until } from '../support/helpers.js';
import { dropAfterWrite, losingOneReply, type LosingClient } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// ioredis sends again every command that was written but not answered when its connection
// drops (`autoResendUnfulfilledCommands`, on by default), so one of the cache's script calls
// may run twice: the first copy ran, its reply was lost, and the second runs after its effects
// and gives the answer the cache sees. Here the connection drops right after the script was
// sent (see test/support/resend.ts). The per-call timeout is long enough for the reconnect and
// the second copy's answer; the lease is long, so that waiting for one's own lease shows.

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The Redis key of `key`'s value in the default namespace and prefix. */
const valueKey = (key: string): string => `keel:cache:{default:${key}}`;

describeRedis('cache scripts sent twice (a connection dropped with the reply unread)', () => {
  const redis = useRedis();
  let caches: Cache[] = [];
  let clients: Redis[] = [];

  afterEach(async () => {
    for (const c of caches) await c.close();
    for (const c of clients) c.disconnect();
    caches = [];
    clients = [];
    await redis().flushAll();
  });

  const client = (): Redis => {
    const c = redis().client(0);
    clients.push(c);
    return c;
  };

  const options: CacheOptions = {
    jitter: 0,
    beta: 0,
    leaseTtlMs: 60_000,
    redisTimeoutMs: 5_000,
  };

  /** A cache on its own client, which drops its connection after the next call of `sha`. */
  const lossyCache = (
    sha: string,
    more: CacheOptions = {},
  ): { cache: Cache; losing: LosingClient } => {
    const losing = losingOneReply(client(), sha);
    const cache = new Cache({ redis: losing.client, ...options, ...more });
    caches.push(cache);
    return { cache, losing };
  };

  /** A cache of another process (no fault). */
  const plainCache = (more: CacheOptions = {}): Cache => {
    const cache = new Cache({ redis: client(), ...options, ...more });
    caches.push(cache);
    return cache;
  };

  it('a miss whose lease read ran twice loads at once and fills Redis, not after its own lease', async () => {
    const { cache, losing } = lossyCache(READ.sha);
    await cache.getOrLoad('warm-up', () => 0); // the scripts are cached: calls go by hash
    losing.arm();
    let loads = 0;
    const outcome = await Promise.race([
      cache.getOrLoad('cold', () => {
        loads++;
        return 'v';
      }),
      later(10_000),
    ]);
    expect(losing.dropped).toBe(1);
    expect(outcome).toBe('v');
    expect(loads).toBe(1);
    const plain = client();
    // Written back through the lease, and the lease given up.
    expect(await plain.get(valueKey('cold'))).toMatch(/\n"v"$/);
    expect(await plain.exists(`${valueKey('cold')}:lease`)).toBe(0);
  });

  it('a lease read sent with the first GET (two callers at once) that ran twice loads at once', async () => {
    const { cache, losing } = lossyCache(READ.sha);
    await cache.getOrLoad('warm-up', () => 0);
    losing.arm();
    let loads = 0;
    const loader = (): string => {
      loads++;
      return 'v';
    };
    // The second caller comes while the first one's GET is on its way: the lease read leaves at
    // once, beside the GET (see Probe in cache.ts), and is the call that runs twice.
    const first = cache.getOrLoad('cold-pair', loader);
    const second = cache.getOrLoad('cold-pair', loader);
    const outcome = await Promise.race([Promise.all([first, second]), later(10_000)]);
    expect(losing.dropped).toBe(1);
    expect(outcome).toEqual(['v', 'v']);
    expect(loads).toBe(1);
    const plain = client();
    expect(await plain.get(valueKey('cold-pair'))).toMatch(/\n"v"$/);
    expect(await plain.exists(`${valueKey('cold-pair')}:lease`)).toBe(0);
  });

  it('a reload past the stale window whose lease take ran twice loads at once, not after its own lease', async () => {
    const writer = plainCache();
    await writer.set('old', 'v1', { ttlMs: 1, staleMs: 0, graceMs: 600_000 });
    await sleep(20); // past fresh and stale: within grace only
    const { cache, losing } = lossyCache(TAKE_LEASE.sha);
    await cache.getOrLoad('warm-up', () => 0);
    losing.arm();
    const outcome = await Promise.race([cache.getOrLoad('old', () => 'v2'), later(10_000)]);
    expect(losing.dropped).toBe(1);
    expect(outcome).toBe('v2');
    const plain = client();
    expect(await plain.get(valueKey('old'))).toMatch(/\n"v2"$/);
    expect(await plain.exists(`${valueKey('old')}:lease`)).toBe(0);
  });

  it('a background refresh whose lease take ran twice refreshes the value, and leaves no lease held', async () => {
    const writer = plainCache();
    await writer.set('hot', 'v1', { ttlMs: 1, staleMs: 600_000 });
    await sleep(20); // stale: served while one caller refreshes
    const { cache, losing } = lossyCache(TAKE_LEASE.sha);
    await cache.getOrLoad('warm-up', () => 0);
    losing.arm();
    let loads = 0;
    await expect(
      cache.getOrLoad('hot', () => {
        loads++;
        return 'v2';
      }),
    ).resolves.toBe('v1');
    const plain = client();
    await until(async () => {
      expect(await plain.get(valueKey('hot'))).toMatch(/\n"v2"$/);
    }, 5_000);
    expect(losing.dropped).toBe(1);
    expect(loads).toBe(1);
    expect(await plain.exists(`${valueKey('hot')}:lease`)).toBe(0);
  });

  it('a write-back that ran twice counts as written: no stale-write report, and L1 keeps the value', async () => {
    const { cache, losing } = lossyCache(FILL.sha);
    let refused = 0;
    cache.onStaleWriteRefused(() => refused++);
    await cache.getOrLoad('warm-up', () => 0);
    losing.arm();
    await expect(cache.getOrLoad('filled', () => 'v')).resolves.toBe('v');
    expect(losing.dropped).toBe(1);
    expect(refused).toBe(0);
    expect(cache.peek('filled')).toBe('v');
    const plain = client();
    expect(await plain.get(valueKey('filled'))).toMatch(/\n"v"$/);
    expect(await plain.exists(`${valueKey('filled')}:lease`)).toBe(0);
  });

  it('a load whose value another process set meanwhile is still refused when its write-back runs twice', async () => {
    const { cache, losing } = lossyCache(FILL.sha);
    let refused = 0;
    cache.onStaleWriteRefused(() => refused++);
    await cache.getOrLoad('warm-up', () => 0);
    const writer = plainCache();
    losing.arm();
    const loading = cache.getOrLoad('raced', async () => {
      await writer.set('raced', 'newer'); // voids this load's lease
      return 'older';
    });
    await expect(loading).resolves.toBe('older');
    expect(losing.dropped).toBe(1);
    expect(refused).toBe(1);
    expect(await client().get(valueKey('raced'))).toMatch(/\n"newer"$/);
  });

  it('a delete that ran twice answers that a value was there; one of an absent key still answers not', async () => {
    const { cache, losing } = lossyCache(DELETE.sha);
    await cache.set('gone', 1);
    await cache.delete('warm-up');
    losing.arm();
    await expect(cache.delete('gone')).resolves.toBe(true);
    expect(losing.dropped).toBe(1);
    expect(await client().exists(valueKey('gone'))).toBe(0);
    losing.arm();
    await expect(cache.delete('never-there')).resolves.toBe(false);
    expect(losing.dropped).toBe(2);
  });

  it("foreign data at a delete's mark key is ignored: deleting an absent key answers false", async () => {
    const cache = plainCache();
    await client().sadd(`${valueKey('never-there')}:deleted`, 'foreign');
    await expect(cache.delete('never-there')).resolves.toBe(false);
  });

  it('a quarantine that ran twice reports where the value was moved', async () => {
    const { cache, losing } = lossyCache(QUARANTINE.sha);
    const plain = client();
    await plain.set(valueKey('warm-up'), 'garbage');
    await cache.getOrLoad('warm-up', () => 0);
    const events: CacheQuarantineEvent[] = [];
    cache.onQuarantine((event) => events.push(event));
    await plain.set(valueKey('bad'), 'not an envelope');
    losing.arm();
    await expect(cache.getOrLoad('bad', () => 'good')).resolves.toBe('good');
    expect(losing.dropped).toBe(1);
    expect(events.map((e) => e.quarantineKey)).toEqual([`${valueKey('bad')}:quarantine`]);
    expect(await plain.get(`${valueKey('bad')}:quarantine`)).toBe('not an envelope');
  });

  it('safe as it was: a set that ran twice stores the value', async () => {
    const { cache, losing } = lossyCache(WRITE.sha);
    await cache.set('warm-up', 0);
    losing.arm();
    await cache.set('k', 'v');
    expect(losing.dropped).toBe(1);
    const reader = plainCache();
    await expect(reader.get('k')).resolves.toBe('v');
  });

  it('safe as it was: a release after a failed load that ran twice frees the lease for the next load', async () => {
    const { cache, losing } = lossyCache(RELEASE.sha);
    await cache.getOrLoad('warm-up', () => 0);
    losing.arm();
    await expect(
      cache.getOrLoad('failing', () => Promise.reject(new Error('boom'))),
    ).rejects.toThrow('boom');
    expect(losing.dropped).toBe(1);
    expect(await client().exists(`${valueKey('failing')}:lease`)).toBe(0);
    const other = plainCache();
    const outcome = await Promise.race([other.getOrLoad('failing', () => 'ok'), later(10_000)]);
    expect(outcome).toBe('ok');
  });

  it("a tracking set-up whose CLIENT ID was sent twice (its connection dropped) reports tracking, and Redis's reports arrive", async () => {
    const real = client();
    let dropped = 0;
    // The cache's invalidation connection drops right after its first `CLIENT ID` is written.
    const wrapped = new Proxy(real, {
      get(target, property, receiver) {
        if (property !== 'duplicate') return Reflect.get(target, property, receiver) as unknown;
        return (...args: Parameters<Redis['duplicate']>) => {
          const subscriber = target.duplicate(...args);
          return new Proxy(subscriber, {
            get(sub, name, self) {
              if (name !== 'call') return Reflect.get(sub, name, self) as unknown;
              return (...command: string[]) => {
                const reply = (sub.call as (...a: string[]) => Promise<unknown>)(...command);
                if (dropped === 0 && command[0] === 'CLIENT' && command[1] === 'ID') {
                  dropped++;
                  dropAfterWrite(sub);
                }
                return reply;
              };
            },
          });
        };
      },
    });
    const cache = new Cache({ redis: wrapped, ...options, tracking: true });
    caches.push(cache);
    await until(() => expect(cache.listening).toBe(true), 10_000);
    expect(dropped).toBe(1);
    expect(cache.tracking).toBe(true);
    // A write by a plain client is reported: the L1 copy goes.
    const plain = client();
    // The cache's own writes are reported too (broadcasting mode reports every writer), and
    // the report may come after set() resolved, dropping the L1 copy then (a full suite on a
    // loaded machine saw `peek` answer undefined right after set). Redis sends the reports in
    // the order of the writes on the one tracking connection: once the second write's report
    // is in, the first one's is too, and a read then fills L1 with nothing left to drop it.
    await cache.set('tracked', 1);
    await cache.set('marker', 1);
    await until(() => expect(cache.peek('marker')).toBe(undefined), 5_000);
    await expect(cache.get('tracked')).resolves.toBe(1);
    expect(cache.peek('tracked')).toBe(1);
    await plain.set(valueKey('tracked'), 'changed elsewhere');
    await until(() => expect(cache.peek('tracked')).toBe(undefined), 5_000);
  });

  describe('RedisBloomFilter', () => {
    it('a rebuild whose swap ran twice keeps the rebuilt filter', async () => {
      const losing = losingOneReply(client(), SWAP.sha);
      const bloom = new RedisBloomFilter({
        redis: losing.client,
        name: 'skus',
        expectedItems: 100,
      });
      await bloom.rebuild(['warm-up']);
      losing.arm();
      await bloom.rebuild(['sku-1', 'sku-2']);
      expect(losing.dropped).toBe(1);
      await expect(bloom.mightContainAll(['sku-1', 'sku-2'])).resolves.toEqual([true, true]);
      await expect(bloom.mightContain('warm-up')).resolves.toBe(false);
    });

    it('a rebuild from no keys empties the filter', async () => {
      const bloom = new RedisBloomFilter({ redis: client(), name: 'empty', expectedItems: 100 });
      await bloom.addAll(['a', 'b']);
      await bloom.rebuild([]);
      await expect(bloom.mightContainAll(['a', 'b'])).resolves.toEqual([false, false]);
    });
  });
});
