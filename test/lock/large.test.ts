import { afterEach, describe, expect, it } from 'vitest';
import { MemoryLock, Redlock, isLockReleasedError } from '../../src/lock/index.js';
import { isInvalidOptionError, type InvalidOptionError } from '../../src/core/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// Locks over many resources, against five real redis-server processes: the scripts then touch
// tens of thousands of keys per node, and every round must still be judged on what the nodes
// did, not on a per-node timeout sized for one key.

const RESOURCES = 10_000;

describeRedis('a lock over 10 000 resources', () => {
  const redis = useRedis({ count: 5 });

  afterEach(async () => {
    await redis().flushAll();
  });

  const names = (prefix: string, n = RESOURCES): string[] =>
    Array.from({ length: n }, (_, i) => `${prefix}:${i}`);

  /** How many of `keys` exist on each node. */
  const present = async (keys: readonly string[]): Promise<number[]> =>
    Promise.all(
      redis()
        .nodes.map((n) => redis().client(n.index))
        .map(async (client) => {
          const found = await client.exists(...keys);
          await client.quit();
          return found;
        }),
    );

  /** Polls `check` until it holds (a node's late answer lands after the quorum decided). */
  const eventually = async (check: () => Promise<boolean>, what: string): Promise<void> => {
    const deadline = performance.now() + 15_000;
    while (!(await check())) {
      if (performance.now() > deadline) throw new Error(`never happened: ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };

  it('acquires, extends, releases truthfully ({ released: true, expired: false }) and deletes every key', async () => {
    const redlock = new Redlock({ clients: redis().clients(), ttlMs: 30_000, retryCount: 2 });
    const resources = names('bulk');
    const lock = await redlock.acquire(resources);
    expect(lock.resources).toHaveLength(RESOURCES);
    expect(Object.keys(lock.fencingTokens)).toHaveLength(RESOURCES);
    const keys = resources.map((r) => redlock.keyOf(r));
    // Granted by a quorum: at least three nodes hold every key (a slow fifth may follow).
    expect((await present(keys)).filter((n) => n === RESOURCES).length).toBeGreaterThanOrEqual(3);
    await lock.extend(30_000);
    expect(lock.signal.aborted).toBe(false);
    const result = await lock.release();
    expect(result).toEqual({ released: true, expired: false });
    expect(isLockReleasedError(lock.signal.reason)).toBe(true);
    // Every key goes: the quorum's at once, a straggler's as its queued release lands.
    expect((await present(keys)).filter((n) => n === 0).length).toBeGreaterThanOrEqual(3);
    await eventually(
      async () => (await present(keys)).every((n) => n === 0),
      'every key deleted on every node',
    );
    // All or none: with one of them held elsewhere, none is taken.
    const one = await redlock.acquire('bulk:5000');
    const taken = await redlock.acquire(resources, { retryCount: 0 }).catch((e: unknown) => e);
    expect(taken).toMatchObject({ code: 'KEEL_LOCK_TAKEN' });
    // The message names a few resources and how many more, not all 10 000 (the list is on
    // the error's `resources`).
    expect((taken as Error).message.length).toBeLessThan(1_000);
    expect((taken as Error).message).toContain('and 9997 more');
    expect((taken as { resources: string[] }).resources).toHaveLength(RESOURCES);
    for (const n of await present(keys)) expect(n).toBeLessThanOrEqual(1);
    await one.release();
    await redlock.close();
  }, 60_000);

  it('several 10 000-resource locks taken at once through one Redlock (batched per node) are all granted and released', async () => {
    const redlock = new Redlock({
      clients: redis().clients(),
      ttlMs: 60_000,
      // One connection per node runs the eight scripts one after the other: the last waits for
      // the seven before it, which on a loaded machine takes seconds (10.7 s at load 7, and past
      // the old 10 s + allowance at load 12). A bound for a hung node, not a timing assertion.
      nodeTimeoutMs: 30_000,
      retryCount: 0,
    });
    // Issued in one tick: calls to a busy node are batched into one command, whose arguments
    // must stay within what the engine can pass to a call (~125 000).
    const locks = await Promise.all(
      Array.from({ length: 8 }, (_, i) => redlock.acquire(names(`many${i}`))),
    );
    expect(locks).toHaveLength(8);
    const results = await Promise.all(locks.map((lock) => lock.release()));
    for (const result of results) expect(result).toEqual({ released: true, expired: false });
    await redlock.close();
  }, 120_000);

  it('a release that reaches no quorum says so: neither released nor expired, while validity is left', async () => {
    const redlock = new Redlock({
      clients: redis().clients(),
      ttlMs: 30_000,
      retryCount: 10,
      retryDelayMs: 5,
    });
    const lock = await redlock.acquire(['gone:1', 'gone:2']);
    for (const i of [0, 1, 2]) redis().pause(i);
    try {
      // Three of five nodes cannot answer: nothing says the lock expired — it did not.
      await expect(lock.release()).resolves.toEqual({ released: false, expired: false });
    } finally {
      for (const i of [0, 1, 2]) redis().resume(i);
    }
    await redlock.close();
  });

  it('more resources than the limit are refused with a typed error naming it', async () => {
    const redlock = new Redlock({ clients: redis().clients(), retryCount: 0 });
    const error = await redlock.acquire(names('over', RESOURCES + 1)).catch((e: unknown) => e);
    expect(isInvalidOptionError(error), String(error)).toBe(true);
    expect((error as InvalidOptionError).option).toBe('resources');
    expect((error as InvalidOptionError).message).toContain('at most 10000');
    await redlock.close();
  });
});

describe('resources per lock (MemoryLock)', () => {
  it('accepts 10 000 resources and refuses 10 001, naming the limit', async () => {
    const locks = new MemoryLock({ retryCount: 0 });
    const many = Array.from({ length: RESOURCES }, (_, i) => `m:${i}`);
    const lock = await locks.acquire(many);
    await expect(lock.release()).resolves.toEqual({ released: true, expired: false });
    const error = await locks.acquire([...many, 'one more']).catch((e: unknown) => e);
    expect(isInvalidOptionError(error), String(error)).toBe(true);
    expect((error as InvalidOptionError).option).toBe('resources');
    expect((error as InvalidOptionError).message).toContain('at most 10000');
  });
});
