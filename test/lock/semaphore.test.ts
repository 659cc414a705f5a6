import { afterEach, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  Redlock,
  isLockTakenError,
  isQuorumUnavailableError,
  type Permit,
  type QuarantineEvent,
} from '../../src/lock/index.js';
import { invalidOption } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('Semaphore against five real redis-server processes', () => {
  const redis = useRedis({ count: 5 });
  const opened: Redlock[] = [];
  const redlockOf = (options: Partial<ConstructorParameters<typeof Redlock>[0]> = {}): Redlock => {
    const redlock = new Redlock({
      clients: redis().clients({ maxRetriesPerRequest: 1 }),
      retryDelayMs: 5,
      retryJitterMs: 5,
      ...options,
    });
    opened.push(redlock);
    return redlock;
  };

  afterEach(async () => {
    for (const r of opened.splice(0)) await r.close();
    for (let i = 0; i < 5; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

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
        const pool = redlockOf({ retryCount: 10_000, retryDelayMs: 2, retryJitterMs: 3 }).semaphore(
          'busy',
          { permits: limit },
        );
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

  it('quarantines malformed entries planted in Redis and reports them', async () => {
    const redlock = redlockOf({ retryCount: 0 });
    const pool = redlock.semaphore('planted', { permits: 2 });
    const key = `${redlock.keyOf('planted')}:semaphore`;
    const far = Date.now() + 60_000;
    for (let i = 0; i < 5; i++) {
      await redis().client(i).zadd(key, far, 'not-a-permit');
      await redis().client(i).zadd(key, far, '1:real-holder');
    }
    const seen: QuarantineEvent[] = [];
    using quarantine = pool.onQuarantine((event) => seen.push(event));
    const permit = await pool.acquire(); // the planted real holder takes 1 of 2; garbage counts for nothing
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen[0]).toMatchObject({ semaphore: 'planted', entries: 1, key: `${key}:quarantine` });
    expect(await redis().client(0).smembers(`${key}:quarantine`)).toEqual(['not-a-permit']);
    expect(isLockTakenError(await pool.acquire().catch((e: unknown) => e))).toBe(true);
    await permit.release();
    quarantine.dispose();
  });

  it('holders granted by different quorums never exceed the limit (each permit is a slot with one holder)', async () => {
    // Three holders of a 3-permit semaphore, each granted by a different quorum of the five
    // nodes (planted as the scripts write them). No node holds more than two of them, so a
    // per-node count would admit a fourth holder on every node; slot by slot, each of the
    // three slots is held on three nodes, free on two — never on a quorum.
    const redlock = redlockOf({ retryCount: 3 });
    const pool = redlock.semaphore('quorums', { permits: 3 });
    const key = `${redlock.keyOf('quorums')}:semaphore`;
    const far = Date.now() + 60_000;
    const holders = [
      { slot: 0, nodes: [0, 1, 2] },
      { slot: 1, nodes: [2, 3, 4] },
      { slot: 2, nodes: [0, 3, 4] },
    ];
    for (const [i, h] of holders.entries()) {
      for (const node of h.nodes)
        await redis().client(node).zadd(key, far, `${h.slot}:holder-${i}`);
    }
    const fourth = await pool.acquire().catch((e: unknown) => e);
    expect(isLockTakenError(fourth), String(fourth)).toBe(true);
    // Free one slot on a quorum (holder 1 expired there): now a permit is there to take.
    for (const node of [2, 3, 4]) await redis().client(node).zrem(key, '1:holder-1');
    const permit = await pool.acquire();
    await permit.release();
  });

  it('with 3 of 5 nodes paused: QuorumUnavailableError, promptly', async () => {
    const pool = redlockOf({ nodeTimeoutMs: 100, retryCount: 3 }).semaphore('down', { permits: 4 });
    for (const i of [0, 1, 2]) redis().pause(i);
    const error = await pool.acquire().catch((e: unknown) => e);
    expect(isQuorumUnavailableError(error)).toBe(true);
  });

  it('rejects bad names and options, naming them', async () => {
    const redlock = redlockOf();
    expect(invalidOption(() => redlock.semaphore('', { permits: 1 })).option).toBe('name');
    expect(invalidOption(() => redlock.semaphore('x', { permits: 0 })).option).toBe('permits');
    expect(invalidOption(() => redlock.semaphore('x', {} as { permits: number })).option).toBe(
      'permits',
    );
    const pool = redlock.semaphore('x', { permits: 2 });
    await expect(pool.acquire({ permits: 3 })).rejects.toThrow(/invalid option "permits"/);
    await expect(pool.acquire({ ttlMs: 0 })).rejects.toThrow(/invalid option "ttlMs"/);
  });
});
