import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockReleasedError, type Lock } from '../../src/lock/index.js';
import {
  ACQUIRE,
  EXTEND,
  RELEASE,
  SEM_ACQUIRE,
  SEM_EXTEND,
  SEM_RELEASE,
} from '../../src/lock/scripts.js';
import { until } from '../support/helpers.js';
import { losingOneReply, type LosingClient } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// ioredis sends again every command that was written but not answered when its connection
// drops (`autoResendUnfulfilledCommands`, on by default), so a script call may run twice on a
// node: the first copy ran, its reply was lost, and the second runs after its effects. Here the
// connection of some nodes drops right after the call was sent (see test/support/resend.ts),
// on one node and on three of five at once (a quorum: the outcome then rests on the copies
// that ran twice). The per-node timeout is long enough for the reconnect and the second
// copy's answer to count in the round.

/** The stragglers of a round decided without them have answered by then (local nodes). */
const settled = (): Promise<unknown> => new Promise((resolve) => setTimeout(resolve, 100));

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

describeRedis('lock scripts sent twice (a connection dropped with the reply unread)', () => {
  const redis = useRedis({ count: 5 });
  let opened: Redlock[] = [];
  let clients: Redis[] = [];

  afterEach(async () => {
    await Promise.all(opened.map((r) => r.close()));
    for (const c of clients) c.disconnect();
    opened = [];
    clients = [];
  });

  /** A Redlock whose first `lossy` nodes drop their connection after the script `sha`. */
  const setUp = (
    sha: string,
    lossy: number,
    ttlMs = 60_000,
  ): { redlock: Redlock; losing: LosingClient[]; arm: () => void } => {
    const own = redis().clients();
    clients.push(...own);
    const losing = own.map((c) => losingOneReply(c, sha));
    const redlock = new Redlock({
      clients: losing.map((l) => l.client),
      ttlMs,
      nodeTimeoutMs: 3_000,
      retryCount: 3,
      retryDelayMs: 50,
    });
    opened.push(redlock);
    const arm = (): void => {
      for (const l of losing.slice(0, lossy)) l.arm();
    };
    return { redlock, losing, arm };
  };

  /** The lock's key on every node (null where it is gone). */
  const keysOn = async (redlock: Redlock, resource: string): Promise<(string | null)[]> =>
    Promise.all(clients.slice(-5).map((c) => c.get(redlock.keyOf(resource))));

  /**
   * The lock's key is gone from every node. Waited for: `release()` resolves at a quorum, and a
   * node that had not answered yet (a straggler) deletes its key a moment later — read here on
   * another connection, which can overtake it.
   */
  const gone = (redlock: Redlock, resource: string): Promise<void> =>
    until(async () => {
      expect(await keysOn(redlock, resource)).toEqual([null, null, null, null, null]);
    }, 5_000);

  const dropped = (losing: LosingClient[]): number => losing.filter((l) => l.dropped > 0).length;

  it.each([1, 3])(
    'an acquisition whose grant ran twice on %i of 5 nodes holds the lock at once, and releases it everywhere',
    async (lossy) => {
      const { redlock, losing, arm } = setUp(ACQUIRE.sha, lossy);
      await (await redlock.acquire('warm-up')).release(); // the scripts are cached
      arm();
      const acquired = redlock.acquire(`res-a${lossy}`);
      const outcome = await Promise.race([acquired, later(10_000)]);
      expect(dropped(losing)).toBe(lossy);
      expect(outcome).not.toBe('still waiting');
      const lock = outcome as Lock;
      expect(await lock.release()).toEqual({ released: true, expired: false });
      await gone(redlock, `res-a${lossy}`);
      // The resource is free: a new acquisition gets it at once.
      const again = await Promise.race([
        redlock.acquire(`res-a${lossy}`, { retryCount: 0 }),
        later(5_000),
      ]);
      expect(again).not.toBe('still waiting');
      await (again as Lock).release();
    },
  );

  it('a multi-resource acquisition whose grant ran twice on 3 of 5 nodes holds every resource at once', async () => {
    const { redlock, losing, arm } = setUp(ACQUIRE.sha, 3);
    await (await redlock.acquire(['warm-1', 'warm-2'])).release();
    arm();
    const outcome = await Promise.race([redlock.acquire(['multi-1', 'multi-2']), later(10_000)]);
    expect(dropped(losing)).toBe(3);
    expect(outcome).not.toBe('still waiting');
    const lock = outcome as Lock;
    expect(Object.keys(lock.fencingTokens)).toEqual(['multi-1', 'multi-2']);
    expect(await lock.release()).toEqual({ released: true, expired: false });
    await gone(redlock, 'multi-1');
    await gone(redlock, 'multi-2');
  });

  it('fencing tokens still increase across an acquisition whose grant ran twice on 3 of 5 nodes', async () => {
    const { redlock, arm } = setUp(ACQUIRE.sha, 3);
    const first = await redlock.acquire('fenced');
    await first.release();
    arm();
    const second = await redlock.acquire('fenced');
    await second.release();
    const third = await redlock.acquire('fenced');
    await third.release();
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(third.fencingToken).toBeGreaterThan(second.fencingToken);
  });

  it.each([1, 3])(
    'a release that ran twice on %i of 5 nodes reports released, not expired, and the signal says released',
    async (lossy) => {
      const { redlock, losing, arm } = setUp(RELEASE.sha, lossy);
      await (await redlock.acquire('warm-up')).release();
      const lock = await redlock.acquire(`res-r${lossy}`);
      await settled(); // no node still owes its answer to the acquisition (it would be sent again too)
      const signal = lock.signal;
      arm();
      expect(await lock.release()).toEqual({ released: true, expired: false });
      expect(dropped(losing)).toBe(lossy);
      expect(isLockReleasedError(signal.reason)).toBe(true);
      await gone(redlock, `res-r${lossy}`);
    },
  );

  it('an extension that ran twice on 3 of 5 nodes extends the lock (the signal stays quiet)', async () => {
    const { redlock, losing, arm } = setUp(EXTEND.sha, 3, 2_000);
    const lock = await redlock.acquire('res-e');
    const signal = lock.signal;
    const before = lock.validUntil;
    arm();
    await lock.extend(60_000);
    expect(dropped(losing)).toBe(3);
    expect(lock.validUntil).toBeGreaterThan(before + 50_000);
    expect(signal.aborted).toBe(false);
    expect(await lock.release()).toEqual({ released: true, expired: false });
  });

  it.each([1, 3])(
    'a semaphore permit whose grant ran twice on %i of 5 nodes is held at once, once, and released',
    async (lossy) => {
      const { redlock, losing, arm } = setUp(SEM_ACQUIRE.sha, lossy);
      const semaphore = redlock.semaphore(`pool-a${lossy}`, { permits: 1 });
      await (await semaphore.acquire()).release(); // the scripts are cached
      arm();
      const outcome = await Promise.race([semaphore.acquire(), later(10_000)]);
      expect(dropped(losing)).toBe(lossy);
      expect(outcome).not.toBe('still waiting');
      const permit = outcome as Lock;
      expect(await permit.release()).toEqual({ released: true, expired: false });
      // Nothing of it is left: the one permit is freed on every node (stragglers included).
      await until(async () => {
        const sets = await Promise.all(
          clients.slice(-5).map((c) => c.zcard(`${redlock.keyOf(`pool-a${lossy}`)}:semaphore`)),
        );
        expect(sets).toEqual([0, 0, 0, 0, 0]);
      }, 5_000);
      const again = await Promise.race([semaphore.acquire({ retryCount: 0 }), later(5_000)]);
      expect(again).not.toBe('still waiting');
      await (again as Lock).release();
    },
  );

  it.each([1, 3])(
    'a semaphore release that ran twice on %i of 5 nodes reports released, not expired',
    async (lossy) => {
      const { redlock, losing, arm } = setUp(SEM_RELEASE.sha, lossy);
      const semaphore = redlock.semaphore(`pool-r${lossy}`, { permits: 2 });
      await (await semaphore.acquire()).release();
      const permit = await semaphore.acquire();
      await settled();
      const signal = permit.signal;
      arm();
      expect(await permit.release()).toEqual({ released: true, expired: false });
      expect(dropped(losing)).toBe(lossy);
      expect(isLockReleasedError(signal.reason)).toBe(true);
    },
  );

  it('a semaphore extension that ran twice on 3 of 5 nodes extends the permit', async () => {
    const { redlock, losing, arm } = setUp(SEM_EXTEND.sha, 3, 2_000);
    const semaphore = redlock.semaphore('pool-e', { permits: 2 });
    const permit = await semaphore.acquire();
    const signal = permit.signal;
    const before = permit.validUntil;
    arm();
    await permit.extend(60_000);
    expect(dropped(losing)).toBe(3);
    expect(permit.validUntil).toBeGreaterThan(before + 50_000);
    expect(signal.aborted).toBe(false);
    expect(await permit.release()).toEqual({ released: true, expired: false });
  });
});
