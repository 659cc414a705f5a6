import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { Redlock, isLockTakenError, type Lock } from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('local turns: one Redlock’s acquisitions of one resource line up', () => {
  const redis = useRedis({ count: 3 });
  const opened: Redlock[] = [];
  /** Script calls the Redlock sent, over all nodes. */
  let calls = 0;
  const counted = (client: Redis): Redis =>
    new Proxy(client, {
      get(target, property) {
        const value: unknown = Reflect.get(target, property, target);
        if (typeof value !== 'function') return value;
        const fn = (value as (...args: unknown[]) => unknown).bind(target);
        return property === 'evalsha' || property === 'eval'
          ? (...args: unknown[]) => {
              calls++;
              return fn(...args);
            }
          : fn;
      },
    });
  const redlockOf = (options: Partial<ConstructorParameters<typeof Redlock>[0]> = {}): Redlock => {
    const redlock = new Redlock({
      clients: redis().clients({ maxRetriesPerRequest: 1 }).map(counted),
      ...options,
    });
    opened.push(redlock);
    return redlock;
  };

  /** Loads the scripts on every node (a first EVALSHA falls back to EVAL: two calls). */
  const warm = async (redlock: Redlock): Promise<void> => {
    await (await redlock.acquire('warm-up')).release();
    await sleep(20);
  };

  /**
   * A warmed-up Redlock (no jitter, three retries, `options` over that) holding `resource`,
   * and the script calls counted once the holder's stragglers went out.
   */
  const held = async (
    resource: string,
    options: Partial<ConstructorParameters<typeof Redlock>[0]>,
  ): Promise<{ redlock: Redlock; holder: Lock; before: number }> => {
    const redlock = redlockOf({ retryJitterMs: 0, retryCount: 3, ...options });
    await warm(redlock);
    const holder = await redlock.acquire(resource, { ttlMs: 30_000 });
    await sleep(20);
    return { redlock, holder, before: calls };
  };

  afterEach(async () => {
    for (const r of opened.splice(0)) await r.close();
    await redis().flushAll();
    calls = 0;
  });

  it('waiters do not call Redis, and get the lock in the order they asked for it', async () => {
    // A retry delay of 20 s: only the handoff on release can explain prompt acquisitions.
    const { redlock, holder, before } = await held('hot', { retryDelayMs: 20_000 });
    const order: number[] = [];
    const tokens: number[] = [];
    const waiters = Array.from({ length: 5 }, (_, i) =>
      redlock.acquire('hot', { ttlMs: 30_000 }).then(async (lock) => {
        order.push(i);
        tokens.push(lock.fencingToken);
        await lock.release();
      }),
    );
    await sleep(100);
    expect(calls, 'nobody in line talked to Redis').toBe(before);
    await holder.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(tokens).toEqual([...tokens].sort((a, b) => a - b));
    expect(tokens[0]).toBeGreaterThan(holder.fencingToken);
  });

  it('a waiter in line spends its retries as polling would, then gives up without calling Redis', async () => {
    const { redlock, holder, before } = await held('busy', { retryDelayMs: 20 });
    const refused = await redlock.acquire('busy').catch((e: unknown) => e);
    expect(isLockTakenError(refused), String(refused)).toBe(true);
    expect(refused).toMatchObject({ attempts: 4 });
    expect(refused).toMatchObject({ takenBy: 'this-process' });
    expect((refused as Error).message).toContain('held by another acquisition of this Redlock');
    expect(calls).toBe(before);
    await holder.release();
    // The line is empty again: the next acquisition goes straight to Redis.
    const next = await redlock.acquire('busy');
    await next.release();
  });

  it('a turn whose lock expired without a release is taken over', async () => {
    const redlock = redlockOf({ retryDelayMs: 30, retryJitterMs: 0, retryCount: 100 });
    const forgotten = await redlock.acquire('leak', { ttlMs: 200 });
    const next = await redlock.acquire('leak');
    expect(next.fencingToken).toBeGreaterThan(forgotten.fencingToken);
    // The forgotten holder's late release neither frees the lock nor moves the line.
    await expect(forgotten.release()).resolves.toMatchObject({ released: false, expired: true });
    const third = redlock.acquire('leak', { retryCount: 2 }).catch((e: unknown) => e);
    expect(isLockTakenError(await third)).toBe(true);
    await next.release();
  });

  it('an aborted waiter leaves the line; the one behind it still gets the lock', async () => {
    const redlock = redlockOf({ retryDelayMs: 20_000, retryJitterMs: 0, retryCount: 3 });
    const holder = await redlock.acquire('abort', { ttlMs: 30_000 });
    const controller = new AbortController();
    const first = redlock.acquire('abort', { signal: controller.signal }).catch((e: unknown) => e);
    let second: Lock | undefined;
    const behind = redlock.acquire('abort').then((lock) => (second = lock));
    await sleep(20);
    controller.abort(new Error('gave up'));
    expect(await first).toMatchObject({ message: 'gave up' });
    expect(second).toBeUndefined();
    await holder.release();
    await behind;
    expect(second?.fencingToken).toBeGreaterThan(holder.fencingToken);
    await second?.release();
  });

  it('waitMs bounds the wait in line and in Redis, and then gives up with LockTakenError', async () => {
    // 10 ms retries: the default retryCount (10) would give up after ~100 ms; waitMs waits on.
    const redlock = redlockOf({ retryDelayMs: 10, retryJitterMs: 0, notifications: false });
    const other = redlockOf({ retryDelayMs: 10, retryJitterMs: 0, notifications: false });
    for (const r of [redlock, other]) await warm(r);
    const holder = await other.acquire('wait', { ttlMs: 30_000 });
    let got: Lock | undefined;
    const inRedis = redlock.acquire('wait', { waitMs: 5_000 }).then((l) => (got = l));
    const inLine = redlock.acquire('wait', { waitMs: 100 }).catch((e: unknown) => e);
    expect(isLockTakenError(await inLine), 'gave up in line').toBe(true);
    await sleep(200);
    expect(got).toBeUndefined();
    await holder.release();
    await inRedis;
    expect(got?.fencingToken).toBeGreaterThan(holder.fencingToken);
    await got?.release();
    const held = await other.acquire('wait', { ttlMs: 30_000 });
    const refused = await redlock.acquire('wait', { waitMs: 100 }).catch((e: unknown) => e);
    expect(isLockTakenError(refused), String(refused)).toBe(true);
    await held.release();
  });

  it('with localTurns: false every acquisition contends in Redis', async () => {
    const redlock = redlockOf({
      localTurns: false,
      notifications: false,
      retryDelayMs: 20,
      retryJitterMs: 0,
      retryCount: 3,
    });
    const holder = await redlock.acquire('plain', { ttlMs: 30_000 });
    const before = calls;
    const refused = await redlock.acquire('plain').catch((e: unknown) => e);
    expect(isLockTakenError(refused)).toBe(true);
    expect(calls - before).toBeGreaterThanOrEqual(4 * 2); // four attempts, a quorum each at least
    await holder.release();
  });
});
