import { afterEach, describe, expect, it } from 'vitest';
import {
  Redlock,
  isLockTakenError,
  isQuorumUnavailableError,
  type Lock,
} from '../../src/lock/index.js';
import { ACQUIRE } from '../../src/lock/scripts.js';
import { invalidOption } from '../support/helpers.js';
import { throughNet, withOverrides } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { lockSuite } from './shared-suite.js';

describeRedis('Redlock against five real redis-server processes', () => {
  const redis = useRedis({ count: 5 });
  const redlockOf = (options: Partial<ConstructorParameters<typeof Redlock>[0]> = {}): Redlock =>
    new Redlock({
      clients: redis().clients({ maxRetriesPerRequest: 1 }),
      retryDelayMs: 5,
      retryJitterMs: 5,
      ...options,
    });

  afterEach(async () => {
    for (let i = 0; i < 5; i++) if (redis().node(i).state === 'paused') redis().resume(i);
    await redis().flushAll();
  });

  describe('shared behaviour (lock and semaphore)', () => {
    lockSuite(() => ({
      clients: () => redis().clients({ maxRetriesPerRequest: 1 }),
      flushAll: () => redis().flushAll(),
      cluster: false,
    }));
  });

  it('still locks with 2 of 5 nodes paused; fails fast with QuorumUnavailableError with 3 paused', async () => {
    const redlock = redlockOf({ nodeTimeoutMs: 100, retryCount: 3 });
    redis().pause(0);
    redis().pause(1);
    const started = performance.now();
    const lock = await redlock.acquire('sku:4');
    expect(performance.now() - started).toBeLessThan(2000);
    await lock.release();
    redis().pause(2);
    const t0 = performance.now();
    const error = await redlock.acquire('sku:5').catch((e: unknown) => e);
    expect(isQuorumUnavailableError(error)).toBe(true);
    expect(
      (error as { votes: { vote: string }[] }).votes.filter((v) => v.vote === 'error'),
    ).toHaveLength(3);
    expect(performance.now() - t0).toBeLessThan(3000); // prompt: bounded by the node timeout, not a hang
  });

  /** A Redlock whose calls to the nodes in `slow` arrive 30 ms late (their answers come last). */
  const withSlowNodes = (slow: readonly number[], options: Parameters<typeof redlockOf>[0]) => {
    const net = {
      latency: [0, 1, 2, 3, 4].map((i) => (slow.includes(i) ? 30 : 0)),
      inflight: [0, 0, 0, 0, 0],
    };
    const clients = redis()
      .clients({ maxRetriesPerRequest: 1 })
      .map((c, i) => throughNet(c, i, net));
    return redlockOf({ clients, nodeTimeoutMs: 1000, ...options });
  };

  it('a lock held on a quorum is waited for, not retried at once, when nodes it had not reached yet granted', async () => {
    // The holder's own attempt reached nodes 0-2 only so far (nodes 3 and 4 were slow): some
    // nodes grant the waiter, but this is no split vote between contenders — the lock is held.
    // Nodes 0-2 answer last, so the waiter sees the grants and three refusals naming one holder.
    // It waits for the release or the holder's expiry: its first attempt, one right after
    // subscribing, one at the expiry (and at most one more, should a subscription be confirmed
    // late on a loaded machine). Taken for a split vote, it would retry soon instead — after
    // 50, 100, 200, 400, 800 ms (and, before quick retries were counted by time, give up).
    let rounds = 0;
    const net = { latency: [30, 30, 30, 0, 0], inflight: [0, 0, 0, 0, 0] };
    const clients = redis()
      .clients({ maxRetriesPerRequest: 1 })
      .map((c, i) => {
        const slow = throughNet(c, i, net);
        if (i !== 4) return slow;
        // Every attempt reaches node 4 (one EVALSHA each, with batching off): count them.
        return withOverrides(slow, {
          evalsha: (sha: string, numKeys: number, ...args: (string | number)[]) => {
            if (sha === ACQUIRE.sha) rounds++;
            return slow.evalsha(sha, numKeys, ...args);
          },
        });
      });
    const waiter = redlockOf({
      clients,
      nodeTimeoutMs: 1000,
      batching: false,
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 2,
    });
    const key = waiter.keyOf('sku:held');
    const raw = redis().clients();
    for (const i of [0, 1, 2]) await raw[i]?.set(key, 'the-holders-token', 'PX', 2_000);
    const lock = await waiter.acquire('sku:held', { ttlMs: 5000 });
    expect(lock.resources).toEqual(['sku:held']); // taken when the holder's keys expired
    expect(rounds).toBeLessThanOrEqual(4);
    await lock.release();
    await waiter.close();
    for (const c of raw) c.disconnect();
  });

  it('a vote split between other contenders is retried soon, not waited out, and not given up on at once', async () => {
    // Node 4 answers first and grants; nodes 0-3 are held by two contenders, two nodes each:
    // nobody holds a quorum, so no release will come — the waiter retries after a short
    // backoff. Its quick retries spend the budget by time (a counted retry stands for a retry
    // delay, here 20 s), not five in ~35 ms: when one contender goes away without a release
    // (its keys deleted, as by a crash and expiry) 1.5 s later, the waiter gets the
    // lock. Waiting for a release would end in the signal's TimeoutError; counting every quick
    // retry, in LockTakenError after four attempts in ~0.5 s (backoff 50, 100, 200 ms).
    const waiter = withSlowNodes([0, 1, 2, 3], {
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 3,
    });
    const key = waiter.keyOf('sku:split');
    const clients = redis().clients();
    for (const i of [0, 1]) await clients[i]?.set(key, 'token-a', 'PX', 30_000);
    for (const i of [2, 3]) await clients[i]?.set(key, 'token-b', 'PX', 30_000);
    const gone = new Promise((resolve) => setTimeout(resolve, 1_500)).then(async () => {
      for (const i of [0, 1]) await clients[i]?.del(key);
    });
    const lock = await waiter
      .acquire('sku:split', { signal: AbortSignal.timeout(10_000) })
      .catch((e: unknown) => e);
    await gone;
    expect(lock, String(lock)).toHaveProperty('resources', ['sku:split']);
    await (lock as Lock).release();
    await waiter.close();
    // A split that never ends is still given up on, after about retryCount retry delays.
    const impatient = withSlowNodes([0, 1, 2, 3], { retryDelayMs: 100, retryCount: 2 });
    for (const i of [0, 1]) await clients[i]?.set(key, 'token-a', 'PX', 30_000);
    const error = await impatient
      .acquire('sku:split', { signal: AbortSignal.timeout(10_000) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'KEEL_LOCK_TAKEN', attempts: 3 });
    await impatient.close();
    for (const c of clients) c.disconnect();
  });

  it('a release that reaches three nodes late still hands the lock to the waiter it woke', async () => {
    // The holder's release reaches nodes 0-1 at once and nodes 2-4 1.5 s later (a loaded
    // machine, a distant node). The first copy wakes the waiter; until the release lands on a
    // quorum each of its rounds sees nodes 0-1 grant and nodes 2-4 refuse, naming the holder
    // whose release it saw: the release is still landing, so it retries soon. Those quick
    // retries used to count as retries: five in a few hundred ms, then LockTakenError.
    const net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
    const holder = redlockOf({
      clients: redis()
        .clients({ maxRetriesPerRequest: 1 })
        .map((c, i) => throughNet(c, i, net)),
      nodeTimeoutMs: 5_000,
    });
    const waiter = withSlowNodes([2, 3, 4], {
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 5,
    });
    const lock = await holder.acquire('sku:landing', { ttlMs: 30_000 });
    const waiting = waiter
      .acquire('sku:landing', { ttlMs: 30_000, signal: AbortSignal.timeout(15_000) })
      .catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 400)); // refused, subscribed, waiting
    for (const i of [2, 3, 4]) net.latency[i] = 1_500;
    const released = lock.release();
    const next = await waiting;
    expect(next, String(next)).toHaveProperty('resources', ['sku:landing']);
    expect((next as Lock).fencingToken).toBeGreaterThan(lock.fencingToken);
    await released;
    await (next as Lock).release();
    await holder.close();
    await waiter.close();
  });

  it('a lock key holding a non-string value is refused as taken, not a script error', async () => {
    const redlock = redlockOf({ retryCount: 0 });
    const key = redlock.keyOf('sku:list');
    const clients = redis().clients();
    for (const c of clients) await c.rpush(key, 'not a lock');
    const error = await redlock.acquire('sku:list').catch((e: unknown) => e);
    expect(isLockTakenError(error)).toBe(true);
    const votes = (error as { votes: { vote: string; kind?: string; error?: string }[] }).votes;
    expect(votes.filter((v) => v.vote === 'taken').length).toBeGreaterThanOrEqual(3);
    // The others were not waited for once a quorum refused; none failed with a script error.
    for (const v of votes.filter((v) => v.vote !== 'taken')) {
      expect(v).toMatchObject({
        kind: 'pending',
        error: 'the round was decided without its answer',
      });
    }
    for (const c of clients) c.disconnect();
  });

  it('rejects bad options and resources naming them', () => {
    expect(invalidOption(() => new Redlock({ clients: [] })).option).toBe('clients');
    expect(invalidOption(() => new Redlock({ clients: redis().clients(), ttlMs: 0 })).option).toBe(
      'ttlMs',
    );
    expect(
      invalidOption(() => new Redlock({ clients: redis().clients(), retryCount: -1 })).option,
    ).toBe('retryCount');
  });
});
