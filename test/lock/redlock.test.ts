import { afterEach, expect, it } from 'vitest';
import {
  Redlock,
  isLockLostError,
  isLockTakenError,
  isQuorumUnavailableError,
  type Lock,
} from '../../src/lock/index.js';
import { invalidOption } from '../support/helpers.js';
import { throughNet } from '../support/latency.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

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

  it('acquires, blocks a second holder with LockTakenError, and releases in one round', async () => {
    const a = redlockOf();
    const b = redlockOf({ retryCount: 2 });
    const lock = await a.acquire('sku:1', { ttlMs: 5000 });
    expect(lock.resources).toEqual(['sku:1']);
    expect(lock.fencingToken).toBeGreaterThan(0);
    expect(lock.signal.aborted).toBe(false);
    const taken = await b.acquire('sku:1').catch((e: unknown) => e);
    expect(isLockTakenError(taken)).toBe(true);
    expect(
      (taken as { votes: { vote: string }[] }).votes.filter((v) => v.vote === 'taken').length,
    ).toBeGreaterThanOrEqual(3);
    await expect(lock.release()).resolves.toEqual({ released: true, expired: false });
    await expect(lock.release()).resolves.toMatchObject({ released: false }); // twice is harmless
    const again = await b.acquire('sku:1');
    expect(again.fencingToken).toBeGreaterThan(lock.fencingToken);
    await again.release();
  });

  it('multi-resource locks are all or nothing', async () => {
    const redlock = redlockOf({ retryCount: 0 });
    const one = await redlock.acquire('sku:2');
    const both = await redlock.acquire(['sku:3', 'sku:2']).catch((e: unknown) => e);
    expect(isLockTakenError(both)).toBe(true);
    // sku:3 must not have been left locked by the failed attempt.
    const three = await redlock.acquire('sku:3');
    await three.release();
    await one.release();
    const pair = await redlock.acquire(['sku:2', 'sku:3']);
    expect(Object.keys(pair.fencingTokens)).toEqual(['sku:2', 'sku:3']);
    await pair.release();
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

  it('lock.signal aborts with LockLostError at the validity deadline when not extended', async () => {
    const redlock = redlockOf();
    const lock = await redlock.acquire('sku:6', { ttlMs: 150 });
    const lost = new Promise<unknown>((resolve) =>
      lock.signal.addEventListener('abort', () => resolve(lock.signal.reason)),
    );
    const reason = await lost;
    expect(isLockLostError(reason)).toBe(true);
    expect(performance.now()).toBeGreaterThan(0);
    await expect(lock.release()).resolves.toMatchObject({ expired: true }); // never throws for an expired lock
  });

  it('extend keeps the lock; keys deleted behind its back make the next extension fail and abort the signal', async () => {
    const redlock = redlockOf();
    const lock = await redlock.acquire('sku:7', { ttlMs: 1000 });
    const before = lock.validUntil;
    await sleep(20);
    await lock.extend(1000);
    expect(lock.validUntil).toBeGreaterThan(before);
    await redis().flushAll();
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

  it('using() stops extending at maxHoldMs, so the routine sees the lock lost', async () => {
    const redlock = redlockOf();
    const reason = await redlock.using('sku:12', { ttlMs: 200, maxHoldMs: 300 }, async (signal) => {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      return signal.reason as unknown;
    });
    expect(isLockLostError(reason)).toBe(true);
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

  it('rejects bad resources before touching Redis', async () => {
    const redlock = redlockOf();
    for (const resources of ['', [], ['a', ''], ['a', 'a'], 5]) {
      await expect(redlock.acquire(resources as string)).rejects.toThrow(
        /invalid option "resources"/,
      );
    }
  });
});
