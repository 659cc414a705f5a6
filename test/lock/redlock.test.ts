import { afterEach, describe, expect, it } from 'vitest';
import { Redlock, isLockTakenError, isQuorumUnavailableError } from '../../src/lock/index.js';
import { invalidOption } from '../support/helpers.js';
import { throughNet } from '../support/latency.js';
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
    // Quick split-vote retries would burn its three attempts in a few dozen milliseconds.
    const waiter = withSlowNodes([0, 1, 2], {
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 2,
    });
    const key = waiter.keyOf('sku:held');
    const clients = redis().clients();
    for (const i of [0, 1, 2]) await clients[i]?.set(key, 'the-holders-token', 'PX', 400);
    const lock = await waiter.acquire('sku:held', { ttlMs: 5000 });
    expect(lock.resources).toEqual(['sku:held']); // taken when the holder's keys expired
    await lock.release();
    await waiter.close();
    for (const c of clients) c.disconnect();
  });

  it('a vote split between other contenders is retried soon, not waited out', async () => {
    // Node 4 answers first and grants; nodes 0-3 are held by two contenders, two nodes each:
    // nobody holds a quorum, so no release will come — the waiter retries after a short backoff.
    const waiter = withSlowNodes([0, 1, 2, 3], {
      retryDelayMs: 20_000,
      retryJitterMs: 0,
      retryCount: 3,
    });
    const key = waiter.keyOf('sku:split');
    const clients = redis().clients();
    for (const i of [0, 1]) await clients[i]?.set(key, 'token-a', 'PX', 30_000);
    for (const i of [2, 3]) await clients[i]?.set(key, 'token-b', 'PX', 30_000);
    // Waiting for a release (20 s here) would end in the signal's TimeoutError instead.
    const error = await waiter
      .acquire('sku:split', { signal: AbortSignal.timeout(10_000) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'KEEL_LOCK_TAKEN', attempts: 4 });
    await waiter.close();
    for (const c of clients) c.disconnect();
  });

  it('a lock key holding a non-string value is refused as taken, not a script error', async () => {
    const redlock = redlockOf({ retryCount: 0 });
    const key = redlock.keyOf('sku:list');
    const clients = redis().clients();
    for (const c of clients) await c.rpush(key, 'not a lock');
    const error = await redlock.acquire('sku:list').catch((e: unknown) => e);
    expect(isLockTakenError(error)).toBe(true);
    const votes = (error as { votes: { vote: string; error?: string }[] }).votes;
    expect(votes.filter((v) => v.vote === 'taken').length).toBeGreaterThanOrEqual(3);
    // The others were not waited for once a quorum refused; none failed with a script error.
    for (const v of votes.filter((v) => v.vote !== 'taken')) expect(v.error).toMatch(/^pending/);
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
