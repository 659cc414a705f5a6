/**
 * The cache on a Redis that stalls or forgets (real redis-server): `CLIENT PAUSE … WRITE` (reads
 * answered, scripts held), `DEBUG SLEEP` (nothing answered), `SCRIPT FLUSH` in the middle of a
 * stampede, and the tracking connection killed while another client writes.
 */
import { expect, it } from 'vitest';
import { isCacheRedisError } from '../../src/cache/index.js';
import { RELEASE } from '../../src/cache/scripts.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { useCaches } from '../support/cache.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

const valueKey = (key: string): string => `keel:cache:{default:${key}}`;

/** How many `EVAL`s the server has run (`INFO commandstats`). */
async function evals(admin: { info(section: string): Promise<string> }): Promise<number> {
  const line = /cmdstat_eval:calls=(\d+)/.exec(await admin.info('commandstats'));
  return Number(line?.[1] ?? 0);
}

/** An envelope as Keel writes it, fresh for `ttlMs`: what a non-Keel writer could store. */
function envelope(value: unknown, ttlMs = 600_000): string {
  const until = Date.now() + ttlMs;
  return `k1|${until}|${until}|${until}|0|v\n${JSON.stringify(value)}`;
}

describeRedis('Cache on a stalling Redis (real redis-server)', () => {
  const redis = useRedis({ args: ['--enable-debug-command', 'local'] });
  const { client, cacheOf } = useCaches(redis);

  it('CLIENT PAUSE WRITE: a lease read that timed out and ran late leaves no lease held by nobody', async () => {
    const admin = client();
    const aClient = client();
    const a = cacheOf({ redis: aClient, redisTimeoutMs: 100, leaseTtlMs: 60_000 });
    const b = cacheOf({ leaseTtlMs: 60_000 });
    await aClient.ping(); // a's scripts are loaded (SCRIPT LOAD is held by a WRITE pause too)
    await admin.client('PAUSE', 1_000, 'WRITE');
    // The GET is answered (a miss); the read script that takes the lease is held and times out:
    // a loads without the lease.
    await expect(a.getOrLoad('k', () => 'from-a')).resolves.toBe('from-a');
    // a's connection has run all it sent (the late read script included) once PING answers.
    await aClient.ping();
    await expect(admin.exists(`${valueKey('k')}:lease`)).resolves.toBe(0);
    await expect(Promise.race([b.getOrLoad('k', () => 'from-b'), later(10_000)])).resolves.toBe(
      'from-b',
    );
  });

  it('SCRIPT FLUSH + CLIENT PAUSE WRITE: a lease read that timed out and ran late as EVAL (after its release) leaves no lease held by nobody', async () => {
    const admin = client();
    const aClient = client();
    const a = cacheOf({ redis: aClient, redisTimeoutMs: 100, leaseTtlMs: 60_000 });
    const b = cacheOf({ leaseTtlMs: 60_000 });
    await aClient.ping(); // a's and b's scripts are loaded (their SCRIPT LOADs went before)
    await b.get('warm-up');
    // The scripts are gone, but the release script is back (any process that released a lease
    // since has loaded it with EVAL): the release's EVALSHA runs, the read's answers NOSCRIPT.
    await admin.script('FLUSH');
    await admin.script('LOAD', RELEASE.source);
    const evalsBefore = await evals(admin);
    await admin.client('PAUSE', 1_000, 'WRITE');
    // The GET is answered (a miss); the read script is held and times out: a loads without
    // the lease and gives up the lease the script may still take.
    await expect(a.getOrLoad('k', () => 'from-a')).resolves.toBe('from-a');
    // After the pause: the read's EVALSHA answers NOSCRIPT and it runs again as EVAL — after
    // the release sent when it timed out.
    await until(async () => expect(await evals(admin)).toBeGreaterThan(evalsBefore), 10_000);
    await until(async () => expect(await admin.exists(`${valueKey('k')}:lease`)).toBe(0), 5_000);
    await expect(Promise.race([b.getOrLoad('k', () => 'from-b'), later(10_000)])).resolves.toBe(
      'from-b',
    );
  });

  it('a paused Redis: a read fails on its Redis timeout though nothing else wakes the process', async () => {
    const a = cacheOf({ redisTimeoutMs: 100 });
    await until(() => expect(a.listening).toBe(true), 10_000);
    redis().pause(0);
    // Nothing but the cache's own timer is due: the call must end on it (no poll, no sleep
    // here that would wake the event loop for it).
    const read = a.get('k').then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    await expect(Promise.race([read, later(3_000)])).resolves.toEqual({ value: undefined });
    redis().resume(0);
  });

  it('DEBUG SLEEP: every call settles on its Redis timeout, L1 keeps serving, and the cache recovers', async () => {
    const admin = client();
    const a = cacheOf({ redisTimeoutMs: 100, degradedRetryMs: 50 });
    // Listening first: when the subscription goes live, every L1 copy is dropped.
    await until(() => expect(a.listening).toBe(true), 10_000);
    await a.set('hot', 'v1');
    await admin.ping();
    const asleep = admin.call('DEBUG', 'SLEEP', '3').then(() => 'slept');
    await sleep(20);
    const calls = Promise.all([
      a.getOrLoad('hot', () => 'reloaded'),
      ...Array.from({ length: 10 }, (_, i) =>
        a.getOrLoad(`cold-${i % 3}`, () => `loaded-${i % 3}`),
      ),
      a.set('other', 1).catch((error: unknown) => (isCacheRedisError(error) ? error.kind : error)),
      a.get('absent'),
    ]);
    const first = await Promise.race([calls, asleep]);
    expect(first).toEqual([
      'v1',
      ...Array.from({ length: 10 }, (_, i) => `loaded-${i % 3}`),
      'timed-out',
      undefined,
    ]);
    await asleep;
    // Redis answers again: a new key's value lands there (after the degraded pause).
    let round = 0;
    await until(async () => {
      const key = `after-${round++}`;
      await expect(a.getOrLoad(key, () => 'landed')).resolves.toBe('landed');
      await expect(admin.get(valueKey(key))).resolves.toContain('landed');
    }, 10_000);
  });

  it('SCRIPT FLUSH during a stampede across processes: one load, every caller served', async () => {
    const admin = client();
    const caches = Array.from({ length: 4 }, () => cacheOf({ pollIntervalMs: 20 }));
    for (let round = 0; round < 5; round++) {
      let loads = 0;
      const loader = async (): Promise<string> => {
        loads++;
        await admin.script('FLUSH');
        await sleep(30);
        await admin.script('FLUSH');
        return `v${round}`;
      };
      await admin.script('FLUSH');
      const answers = await Promise.all(
        caches.flatMap((cache) =>
          Array.from({ length: 5 }, () => cache.getOrLoad(`key-${round}`, loader)),
        ),
      );
      expect(new Set(answers)).toEqual(new Set([`v${round}`]));
      expect(loads).toBe(1);
    }
  });

  it('tracking: a write while the tracking connection is killed does not leave the old L1 copy', async () => {
    const admin = client();
    const cache = cacheOf({ tracking: true, ttlMs: 600_000 });
    await until(() => expect(cache.tracking).toBe(true), 10_000);
    await admin.set(valueKey('sku'), envelope('v1'));
    await until(async () => {
      await cache.get('sku');
      expect(cache.peek('sku')).toBe('v1');
    }, 10_000);
    const writer = client();
    await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await writer.set(valueKey('sku'), envelope('v2'));
    await until(() => expect(cache.peek('sku')).not.toBe('v1'), 10_000);
    await until(async () => {
      expect(cache.tracking).toBe(true);
      await expect(cache.get('sku')).resolves.toBe('v2');
    }, 10_000);
  });
});
