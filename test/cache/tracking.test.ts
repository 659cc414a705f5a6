/**
 * Server-assisted invalidation (`tracking: true`): Redis reports every change to a key under the
 * cache's prefix — `CLIENT TRACKING on REDIRECT <id> BCAST PREFIX`, RESP2 messages on
 * `__redis__:invalidate` — and the cache drops its L1 copy, whoever wrote. Real redis-server:
 * writes by a plain ioredis client, FLUSHALL (a `null` report), the server killed and restarted
 * under tracking, and a server that refuses `CLIENT`.
 */
import { expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { Cache, type CacheOptions } from '../../src/cache/index.js';
import { invalidOption, until } from '../support/helpers.js';
import type { RedisHarness } from '../support/redis.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { useCaches } from '../support/cache.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** An envelope as Keel writes it, fresh for `ttlMs`: what a non-Keel writer could store. */
function envelope(value: unknown, ttlMs = 600_000): string {
  const until = Date.now() + ttlMs;
  return `k1|${until}|${until}|${until}|0|v\n${JSON.stringify(value)}`;
}

const KEY = 'keel:cache:{default:sku-1}';

function suite(name: string, args: readonly string[], body: (ctx: Context) => void): void {
  describeRedis(name, () => {
    const redis = useRedis({ args });
    const { client, cacheOf } = useCaches(redis);
    body({ redis, client, cacheOf });
  });
}

interface Context {
  readonly redis: () => RedisHarness;
  readonly client: () => Redis;
  readonly cacheOf: (options?: CacheOptions) => Cache;
}

/**
 * Writes `value` with a plain client and waits until `cache` holds it in L1 (a report of that
 * write may come after the read that filled L1, so it is re-read until the copy stays).
 */
async function holdInL1(cache: Cache, raw: Redis, value: unknown): Promise<void> {
  await raw.set(KEY, envelope(value));
  await until(async () => {
    await cache.get('sku-1');
    expect(cache.peek('sku-1')).toEqual(value);
    await sleep(50);
    expect(cache.peek('sku-1')).toEqual(value);
  }, 10_000);
}

suite('Cache tracking: Redis reports changed keys (real redis-server)', [], (t) => {
  it('a plain SET from another, non-Keel client drops the L1 copy; without tracking it stays', async () => {
    const raw = t.client();
    const tracked = t.cacheOf({ tracking: true });
    const plain = t.cacheOf();
    await until(() => expect(tracked.tracking && plain.listening).toBe(true), 10_000);
    expect(plain.tracking).toBe(false);
    await holdInL1(plain, raw, 1);
    await holdInL1(tracked, raw, 1);
    await raw.set(KEY, envelope(2));
    await until(() => expect(tracked.peek('sku-1')).toBe(undefined), 5_000);
    await expect(tracked.get('sku-1')).resolves.toBe(2);
    // Nothing told the cache without tracking: it serves its copy until the ttl (the bound).
    await sleep(200);
    expect(plain.peek('sku-1')).toBe(1);
    // A DEL by a foreign client is a change too.
    await holdInL1(tracked, raw, 3);
    await raw.del(KEY);
    await until(() => expect(tracked.peek('sku-1')).toBe(undefined), 5_000);
  });

  it('Keel writes in another process still drop the copy (reports and pub/sub together)', async () => {
    const a = t.cacheOf({ tracking: true });
    const b = t.cacheOf({ tracking: true });
    await until(() => expect(a.tracking && b.tracking).toBe(true), 10_000);
    await b.set('k', 1);
    await until(async () => {
      await a.get('k');
      expect(a.peek('k')).toBe(1);
    }, 10_000);
    await b.set('k', 2);
    await until(() => expect(a.peek('k')).toBe(undefined), 5_000);
    await expect(a.getOrLoad('k', () => 'loaded')).resolves.toBe(2);
  });

  it('FLUSHALL (a null report) drops every L1 copy, in every namespace', async () => {
    const raw = t.client();
    const cache = t.cacheOf({ tracking: true });
    const other = cache.namespace('other');
    await until(() => expect(cache.tracking).toBe(true), 10_000);
    await holdInL1(cache, raw, 1);
    await raw.set('keel:cache:{other:x}', envelope('x'));
    await until(async () => {
      await other.get('x');
      expect(other.peek('x')).toBe('x');
    }, 10_000);
    await raw.flushall();
    await until(() => {
      expect(cache.peek('sku-1')).toBe(undefined);
      expect(other.peek('x')).toBe(undefined);
    }, 5_000);
  });

  it('keys outside the prefix, and lease keys, leave L1 alone', async () => {
    const raw = t.client();
    const cache = t.cacheOf({ tracking: true });
    await until(() => expect(cache.tracking).toBe(true), 10_000);
    await holdInL1(cache, raw, 1);
    await raw.set('unrelated', 'x');
    await raw.set(`${KEY}:lease`, 'someone', 'PX', 1_000);
    await sleep(200);
    expect(cache.peek('sku-1')).toBe(1);
  });

  it('Redis killed under tracking: L1 serves within its ttl; restarted: L1 dropped, tracking back', async () => {
    const raw = t.client();
    const cache = t.cacheOf({ tracking: true, redisTimeoutMs: 300, degradedRetryMs: 100 });
    await until(() => expect(cache.tracking).toBe(true), 10_000);
    await holdInL1(cache, raw, 1);
    await t.redis().kill(0);
    await until(() => expect(cache.tracking).toBe(false), 10_000);
    // The stated bound: a copy is never served past its own ttl, and the loader is not needed.
    expect(cache.peek('sku-1')).toBe(1);
    await expect(cache.getOrLoad('sku-1', () => 'loader')).resolves.toBe(1);
    await t.redis().restart(0);
    await until(() => expect(cache.tracking).toBe(true), 20_000);
    // Changes while the connection was down went unreported: nothing from before is kept.
    expect(cache.peek('sku-1')).toBe(undefined);
    // And reports flow again.
    await until(async () => {
      await holdInL1(cache, raw, 4);
    }, 20_000);
    await raw.set(KEY, envelope(5));
    await until(() => expect(cache.peek('sku-1')).toBe(undefined), 5_000);
    await expect(cache.get('sku-1')).resolves.toBe(5);
  }, 60_000);

  it('tracking needs the invalidation connection: a typed error at construction', () => {
    const error = invalidOption(() => new Cache({ tracking: true, invalidation: false }));
    expect(error.message).toMatch(/tracking/);
  });
});

// A server whose CLIENT command is renamed away stands for one that refuses tracking (Redis < 6,
// an ACL without @connection): the cache keeps to its pub/sub invalidation.
suite(
  'Cache tracking refused by the server (real redis-server)',
  ['--rename-command', 'CLIENT', ''],
  (t) => {
    it('falls back to pub/sub invalidation: Keel writes still drop L1 copies elsewhere', async () => {
      const a = t.cacheOf({ tracking: true });
      const b = t.cacheOf({ tracking: true });
      // Once a's subscription is live, it has dropped whatever it held before (writes published
      // earlier went to nobody), so the copy below can only be dropped by b's message.
      await until(() => expect(a.listening).toBe(true), 10_000);
      expect(a.tracking).toBe(false);
      await b.set('k', 1);
      await until(async () => {
        await a.get('k');
        expect(a.peek('k')).toBe(1);
      }, 10_000);
      await b.set('k', 2);
      await until(() => expect(a.peek('k')).toBe(undefined), 5_000);
      expect(a.tracking).toBe(false);
      await expect(a.get('k')).resolves.toBe(2);
    });
  },
);
