import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  MemoryLock,
  Redlock,
  isLockLostError,
  isLockReleasedError,
  LOCK_RELEASED,
  type Lock,
} from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// The lock handle's promises, on both lock services: a voluntary release is not a loss (its own
// typed reason in `signal.reason`), a loss stays a loss once released, and what the handle says
// about itself is what happened.

/** The reason `signal` aborted with, once it does. */
const aborted = (lock: Lock): Promise<unknown> =>
  new Promise((resolve) => {
    if (lock.signal.aborted) resolve(lock.signal.reason);
    else lock.signal.addEventListener('abort', () => resolve(lock.signal.reason), { once: true });
  });

describe('release is not loss (MemoryLock)', () => {
  it('release() aborts the signal with LockReleasedError, not LockLostError', async () => {
    const locks = new MemoryLock({ retryCount: 0 });
    const lock = await locks.acquire(['a', 'b']);
    const reason = aborted(lock);
    await lock.release();
    const seen = await reason;
    expect(isLockReleasedError(seen), String(seen)).toBe(true);
    expect(isLockLostError(seen)).toBe(false);
    expect((seen as { code: string }).code).toBe(LOCK_RELEASED);
    expect((seen as { resources: string[] }).resources).toEqual(['a', 'b']);
  });

  it('a signal first read after the release says released too; extend() after it rejects with LockReleasedError', async () => {
    const locks = new MemoryLock({ retryCount: 0 });
    const lock = await locks.acquire('c');
    await lock.release();
    expect(lock.signal.aborted).toBe(true);
    expect(isLockReleasedError(lock.signal.reason)).toBe(true);
    await expect(lock.extend()).rejects.toSatisfy(isLockReleasedError);
  });

  it('a lock lost before its release keeps LockLostError as its reason', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 100, retryCount: 0 });
    const lock = await locks.acquire('d');
    const reason = aborted(lock);
    clock.advance(100);
    expect(isLockLostError(await reason)).toBe(true);
    await expect(lock.release()).resolves.toEqual({ released: false, expired: true });
    expect(isLockLostError(lock.signal.reason)).toBe(true);
  });

  it('using(): the routine’s signal ends released once it returned, and no abort happens while it runs', async () => {
    const locks = new MemoryLock({ retryCount: 0 });
    let signal: AbortSignal | undefined;
    let abortedInside = false;
    await locks.using('e', {}, (s) => {
      signal = s;
      abortedInside = s.aborted;
      return Promise.resolve();
    });
    expect(abortedInside).toBe(false);
    expect(isLockReleasedError(signal?.reason)).toBe(true);
  });
});

describeRedis('release is not loss (Redlock, five real nodes)', () => {
  const redis = useRedis({ count: 5 });

  it('a happy-path release aborts with LockReleasedError; a lock whose deadline passed says LockLostError', async () => {
    const redlock = new Redlock({ clients: redis().clients(), retryCount: 3, retryDelayMs: 5 });
    try {
      const lock = await redlock.acquire(['order:77', 'payment:77'], { ttlMs: 5000 });
      const reason = aborted(lock);
      await expect(lock.release()).resolves.toEqual({ released: true, expired: false });
      expect(isLockReleasedError(await reason)).toBe(true);

      const short = await redlock.acquire('order:78', { ttlMs: 60 });
      expect(isLockLostError(await aborted(short))).toBe(true);
      await short.release();
      expect(isLockLostError(short.signal.reason)).toBe(true);
    } finally {
      await redlock.close();
    }
  });
});
