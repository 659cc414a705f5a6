/**
 * The behavioural suite of the Redis lock and semaphore, written once and run against five
 * independent redis-server processes (a five-node Redlock) and against a real 3-master Redis
 * Cluster (a Redlock whose one "node" is an ioredis `Cluster` client). Tests that inject faults
 * into single nodes stay in the files of the standalone setup.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  Redlock,
  isLockCrossSlotError,
  isLockLostError,
  isLockTakenError,
  type Lock,
  type LockClient,
  type Permit,
  type RedlockOptions,
} from '../../src/lock/index.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Where the suite runs. */
export interface LockTarget {
  /** New clients for one Redlock: one per independent master, or one Cluster client. */
  clients(): LockClient[];
  /** Every key on every node is lost. */
  flushAll(): Promise<void>;
  /** A Redis Cluster: the keys of one lock must share a slot. */
  readonly cluster: boolean;
  /** Options every Redlock of the suite gets (before the test's own). */
  readonly options?: Partial<RedlockOptions>;
}

/** The lock and semaphore behaviour on `target` (an accessor: the target starts in beforeAll). */
export function lockSuite(target: () => LockTarget): void {
  const opened: Redlock[] = [];
  const redlockOf = (options: Partial<RedlockOptions> = {}): Redlock => {
    const redlock = new Redlock({
      clients: target().clients(),
      retryDelayMs: 5,
      retryJitterMs: 5,
      ...target().options,
      ...options,
    });
    opened.push(redlock);
    return redlock;
  };

  afterEach(async () => {
    for (const r of opened.splice(0)) await r.close();
    await target().flushAll();
  });

  describe('lock', () => {
    it('acquires, blocks a second holder with LockTakenError, and releases in one round', async () => {
      const a = redlockOf();
      const b = redlockOf({ retryCount: 2 });
      const nodes = target().clients().length;
      const lock = await a.acquire('sku:1', { ttlMs: 5000 });
      expect(lock.resources).toEqual(['sku:1']);
      expect(lock.fencingToken).toBeGreaterThan(0);
      expect(lock.signal.aborted).toBe(false);
      const taken = await b.acquire('sku:1').catch((e: unknown) => e);
      expect(isLockTakenError(taken)).toBe(true);
      expect(
        (taken as { votes: { vote: string }[] }).votes.filter((v) => v.vote === 'taken').length,
      ).toBeGreaterThanOrEqual(Math.floor(nodes / 2) + 1);
      await expect(lock.release()).resolves.toEqual({ released: true, expired: false });
      await expect(lock.release()).resolves.toMatchObject({ released: false }); // twice is harmless
      const again = await b.acquire('sku:1');
      expect(again.fencingToken).toBeGreaterThan(lock.fencingToken);
      await again.release();
    });

    it('multi-resource locks (one hash tag) are all or nothing', async () => {
      const redlock = redlockOf({ retryCount: 0 });
      const one = await redlock.acquire('{sku}:2');
      const both = await redlock.acquire(['{sku}:3', '{sku}:2']).catch((e: unknown) => e);
      expect(isLockTakenError(both)).toBe(true);
      // {sku}:3 must not have been left locked by the failed attempt.
      const three = await redlock.acquire('{sku}:3');
      await three.release();
      await one.release();
      const pair = await redlock.acquire(['{sku}:2', '{sku}:3']);
      expect(Object.keys(pair.fencingTokens)).toEqual(['{sku}:2', '{sku}:3']);
      await pair.release();
    });

    it('resources in different slots: LockCrossSlotError on a Cluster, a plain lock elsewhere', async () => {
      const redlock = redlockOf({ retryCount: 0 });
      const resources = ['sku:a', 'sku:b']; // no common hash tag: each key has its own slot
      if (target().cluster) {
        const error = await redlock.acquire(resources).catch((e: unknown) => e);
        expect(isLockCrossSlotError(error), String(error)).toBe(true);
        expect(error).toMatchObject({ code: 'KEEL_LOCK_CROSS_SLOT', resources });
        const { slots } = error as { slots: number[] };
        expect(slots).toHaveLength(2);
        expect(slots[0]).not.toBe(slots[1]);
        // Nothing was locked: each resource alone is free.
        for (const resource of resources) await (await redlock.acquire(resource)).release();
      } else {
        const lock = await redlock.acquire(resources);
        expect(lock.resources).toEqual(resources);
        await lock.release();
      }
    });

    it('mutual exclusion under contention: read-sleep-write stays exact, no overlapping holders', async () => {
      const clients = Array.from({ length: 8 }, () =>
        redlockOf({ retryCount: 1000, retryDelayMs: 2, retryJitterMs: 3 }),
      );
      let value = 0;
      const intervals: [number, number][] = [];
      const tokens: number[] = [];
      await Promise.all(
        clients.map(async (redlock) => {
          for (let i = 0; i < 5; i++) {
            const lock = await redlock.acquire('counter', { ttlMs: 2000 });
            const start = performance.now();
            tokens.push(lock.fencingToken);
            const read = value;
            await sleep(1);
            value = read + 1;
            intervals.push([start, performance.now()]);
            await lock.release();
          }
        }),
      );
      expect(value).toBe(40);
      intervals.sort((x, y) => x[0] - y[0]);
      for (let i = 1; i < intervals.length; i++) {
        expect((intervals[i] as [number, number])[0]).toBeGreaterThanOrEqual(
          (intervals[i - 1] as [number, number])[1],
        );
      }
      // Fencing tokens strictly increase in acquisition order.
      for (let i = 1; i < tokens.length; i++)
        expect(tokens[i]).toBeGreaterThan(tokens[i - 1] as number);
    });

    it('lock.signal aborts with LockLostError at the validity deadline when not extended', async () => {
      const redlock = redlockOf();
      const lock = await redlock.acquire('sku:6', { ttlMs: 150 });
      const lost = new Promise<unknown>((resolve) =>
        lock.signal.addEventListener('abort', () => resolve(lock.signal.reason)),
      );
      const reason = await lost;
      expect(isLockLostError(reason)).toBe(true);
      await expect(lock.release()).resolves.toMatchObject({ expired: true }); // never throws for an expired lock
    });

    it('extend keeps the lock; keys deleted behind its back make the next extension fail and abort the signal', async () => {
      const redlock = redlockOf();
      const lock = await redlock.acquire('sku:7', { ttlMs: 1000 });
      const before = lock.validUntil;
      await sleep(20);
      await lock.extend(1000);
      expect(lock.validUntil).toBeGreaterThan(before);
      await target().flushAll();
      const error = await lock.extend(1000).catch((e: unknown) => e);
      expect(isLockLostError(error)).toBe(true);
      expect(lock.signal.aborted).toBe(true);
      await lock.release();
    });

    it('await using releases at the end of the block', async () => {
      const redlock = redlockOf({ retryCount: 0 });
      let held: Lock | undefined;
      {
        await using lock = await redlock.acquire('sku:8');
        held = lock;
      }
      expect(held.signal.aborted).toBe(true);
      const again = await redlock.acquire('sku:8');
      await again.release();
    });

    it('a release wakes a waiter at once, long before its next retry', async () => {
      const holder = redlockOf();
      // A retry delay of 20 s: only the notification can explain a prompt handoff.
      const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 5 });
      const lock = await holder.acquire('sku:n1', { ttlMs: 30_000 });
      const waiting = waiter.acquire('sku:n1', { ttlMs: 30_000 });
      await sleep(100); // the waiter has tried, subscribed and is waiting
      const released = performance.now();
      await lock.release();
      const next = await waiting;
      expect(performance.now() - released).toBeLessThan(5_000);
      expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next.release();
    });

    it('a lock that expires without a release frees its waiter by its reported ttl, not the retry delay', async () => {
      const holder = redlockOf();
      const waiter = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 5 });
      const lock = await holder.acquire('sku:n2', { ttlMs: 300 });
      const started = performance.now();
      const next = await waiter.acquire('sku:n2');
      expect(performance.now() - started).toBeLessThan(10_000);
      expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
      await next.release();
      await expect(lock.release()).resolves.toMatchObject({ expired: true, released: false });
    });

    it('an aborted signal stops retrying with its reason', async () => {
      const redlock = redlockOf({ retryCount: 1000, retryDelayMs: 20 });
      const holder = await redlock.acquire('sku:9');
      const controller = new AbortController();
      const waiting = redlock.acquire('sku:9', { signal: controller.signal });
      setTimeout(() => controller.abort(new Error('gave up')), 50);
      await expect(waiting).rejects.toThrow('gave up');
      await holder.release();
    });

    it('using() extends the lock while a long routine runs and releases it afterwards', async () => {
      const redlock = redlockOf();
      const other = redlockOf({ retryCount: 0 });
      const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      const result = await redlock.using('sku:10', { ttlMs: 300 }, async (signal, lock) => {
        await sleep(700); // more than two ttls: only extensions keep it
        expect(signal.aborted).toBe(false);
        expect(isLockTakenError(await other.acquire('sku:10').catch((e: unknown) => e))).toBe(true);
        return lock.fencingToken;
      });
      expect(result).toBeGreaterThan(0);
      const after = await other.acquire('sku:10'); // released
      await after.release();
      await sleep(150); // let the failed acquisition's straggling node calls (≤ nodeTimeoutMs) settle
      expect(
        process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length,
      ).toBeLessThanOrEqual(before);
    });

    it("using() keeps the routine's error and still releases", async () => {
      const redlock = redlockOf({ retryCount: 0 });
      await expect(
        redlock.using('sku:11', {}, () => Promise.reject(new Error('routine failed'))),
      ).rejects.toThrow('routine failed');
      const again = await redlock.acquire('sku:11');
      await again.release();
    });

    it('using(resources, routine) without options holds the lock with the defaults', async () => {
      // Issue 16 papercut: `using(resource, routine)` did not compile without `{}`.
      const redlock = redlockOf({ retryCount: 0 });
      const seen = await redlock.using('sku:13', async (signal, lock) => {
        expect(signal.aborted).toBe(false);
        expect(lock.resources).toEqual(['sku:13']);
        expect(isLockTakenError(await redlock.acquire('sku:13').catch((e: unknown) => e))).toBe(
          true,
        );
        return 'held';
      });
      expect(seen).toBe('held');
      const again = await redlock.acquire('sku:13'); // released after the routine
      await again.release();
    });

    it('using() stops extending at maxHoldMs, so the routine sees the lock lost', async () => {
      const redlock = redlockOf();
      const reason = await redlock.using(
        'sku:12',
        { ttlMs: 200, maxHoldMs: 300 },
        async (signal) => {
          await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
          return signal.reason as unknown;
        },
      );
      expect(isLockLostError(reason)).toBe(true);
    });

    it('rejects bad resources before touching Redis', async () => {
      const redlock = redlockOf();
      for (const resources of ['', [], ['a', ''], ['a', 'a'], 5]) {
        await expect(redlock.acquire(resources as string)).rejects.toThrow(
          /invalid option "resources"/,
        );
      }
    });
  });

  describe('semaphore', () => {
    it('hands out exactly `permits` permits; a holder may take several; release frees them', async () => {
      const redlock = redlockOf({ retryCount: 0 });
      const pool = redlock.semaphore('pool', { permits: 5 });
      expect(pool.limit).toBe(5);
      const three = await pool.acquire({ permits: 3 });
      expect(three.permits).toBe(3);
      expect(three.resources).toEqual(['pool']);
      expect(three.fencingToken).toBe(0);
      const one = await pool.acquire();
      const two = await pool.acquire().catch((e: unknown) => e); // 4 taken, 1 left: fine
      expect(two).toHaveProperty('permits', 1);
      const none = await pool.acquire().catch((e: unknown) => e);
      expect(isLockTakenError(none)).toBe(true);
      expect((none as Error).message).toContain('fewer than 1 of 5 permits free');
      await expect(three.release()).resolves.toEqual({ released: true, expired: false });
      // A few retries: what this handle learnt of taken slots before the release is stale now.
      const again = await pool.acquire({ permits: 3, retryCount: 5 });
      for (const p of [again, one, two as Permit]) await p.release();
    });

    it('a release wakes a waiter at once', async () => {
      const pool = redlockOf().semaphore('wake', { permits: 1 });
      const waiterPool = redlockOf({
        retryDelayMs: 20_000,
        retryJitterMs: 0,
        retryCount: 5,
      }).semaphore('wake', { permits: 1 });
      const held = await pool.acquire({ ttlMs: 30_000 });
      const waiting = waiterPool.acquire({ ttlMs: 30_000 });
      await sleep(100);
      await held.release();
      const next = await waiting;
      await next.release();
    });

    it('never has more than `permits` concurrent holders under contention', async () => {
      const limit = 3;
      let inside = 0;
      let most = 0;
      let done = 0;
      await Promise.all(
        Array.from({ length: 12 }, async () => {
          const pool = redlockOf({
            retryCount: 10_000,
            retryDelayMs: 2,
            retryJitterMs: 3,
          }).semaphore('busy', { permits: limit });
          for (let i = 0; i < 5; i++) {
            await pool.using({ ttlMs: 2_000 }, async () => {
              inside++;
              most = Math.max(most, inside);
              await sleep(2);
              inside--;
              done++;
            });
          }
        }),
      );
      expect(done).toBe(60);
      expect(most).toBeLessThanOrEqual(limit);
      expect(most).toBeGreaterThan(1); // it is a semaphore, not a mutex
    });

    it('expiry follows Redis server time, not the client clock', async () => {
      // A client clock that never moves: only the servers can tell the permit expired.
      const clock = new ManualClock();
      const a = redlockOf({ clock, retryCount: 0 }).semaphore('server-time', { permits: 1 });
      const b = redlockOf({ clock, retryCount: 0 }).semaphore('server-time', { permits: 1 });
      const first = await a.acquire({ ttlMs: 150 });
      expect(isLockTakenError(await b.acquire().catch((e: unknown) => e))).toBe(true);
      await sleep(300);
      const second = await b.acquire({ ttlMs: 5_000 });
      await second.release();
      // The first holder's permit was gone by server time: releasing it reports that.
      await expect(first.release()).resolves.toMatchObject({ released: false, expired: true });
    });

    it('extend keeps permits past their ttl; an expired permit cannot be extended', async () => {
      const pool = redlockOf({ retryCount: 0 }).semaphore('extend', { permits: 1 });
      // Connect first: a cold Cluster client's first call alone can eat most of a 300 ms ttl.
      await (await pool.acquire()).release();
      const permit = await pool.acquire({ ttlMs: 300 });
      await sleep(150);
      await permit.extend(600);
      await sleep(250); // past the first ttl
      expect(isLockTakenError(await pool.acquire().catch((e: unknown) => e))).toBe(true);
      await permit.release();
      const short = await pool.acquire({ ttlMs: 100 });
      await sleep(250);
      await expect(short.extend(1000)).rejects.toMatchObject({ code: 'KEEL_LOCK_LOST' });
    });
  });
}
