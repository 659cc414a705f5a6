import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  MemoryLock,
  Redlock,
  isLockLostError,
  isLockReleasedError,
  LOCK_RELEASED,
  type Lock,
  type LockLostError,
} from '../../src/lock/index.js';
import { throughNet, type Net } from '../support/latency.js';
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
    // Generous timeouts and retries: this test is about reasons, not about a loaded machine.
    const redlock = new Redlock({
      clients: redis().clients(),
      nodeTimeoutMs: 1000,
      retryCount: 10,
      retryDelayMs: 5,
    });
    try {
      const lock = await redlock.acquire(['order:77', 'payment:77'], { ttlMs: 5000 });
      const reason = aborted(lock);
      await expect(lock.release()).resolves.toEqual({ released: true, expired: false });
      expect(isLockReleasedError(await reason)).toBe(true);

      const short = await redlock.acquire('order:78', { ttlMs: 300 });
      expect(isLockLostError(await aborted(short))).toBe(true);
      await short.release();
      expect(isLockLostError(short.signal.reason)).toBe(true);
    } finally {
      await redlock.close();
    }
  });
});

describe('extend() that grants too little validity (MemoryLock)', () => {
  it('an extension to a ttl within the loss margin fails with LockLostError (extension-too-short)', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 1000, retryCount: 0 });
    const lock = await locks.acquire('f');
    const outcome = await lock.extend(3).catch((e: unknown) => e);
    expect(isLockLostError(outcome), String(outcome)).toBe(true);
    expect((outcome as LockLostError).kind).toBe('extension-too-short');
    expect(lock.signal.reason).toBe(outcome);
    // The store now holds it 3 ms: the handle does not keep believing the old 1000 ms deadline.
    expect(lock.validUntil).toBe(3);
    await expect(lock.release()).resolves.toEqual({ released: true, expired: true });
  });
});

describeRedis(
  'extend() that grants too little validity (Redlock, latency in front of five real nodes)',
  () => {
    const redis = useRedis({ count: 5 });

    it('an extension round that leaves no more than minValidityMs rejects with LockLostError (extension-too-short), and the handle does not believe in it', async () => {
      const net: Net = { latency: [0, 0, 0, 0, 0], inflight: [0, 0, 0, 0, 0] };
      const redlock = new Redlock({
        clients: redis()
          .clients()
          .map((client, node) => throughNet(client, node, net)),
        retryCount: 3,
        retryDelayMs: 5,
        nodeTimeoutMs: 2000, // the injected latency must not time the round out
      });
      try {
        const lock = await redlock.acquire('ext:1', { ttlMs: 5000 });
        await lock.extend(5000); // the extend script is cached on every node from here on
        // Extend to 200 ms through 190 ms of latency: at most 200 − 190 − drift (4 ms) = 6 ms of
        // validity can be left when the round ends, not more than minValidityMs (10).
        net.latency.fill(190);
        const outcome = await lock.extend(200).then(
          () => 'extended',
          (e: unknown) => e,
        );
        net.latency.fill(0);
        expect(isLockLostError(outcome), String(outcome)).toBe(true);
        expect((outcome as LockLostError).kind).toBe('extension-too-short');
        expect(lock.signal.aborted).toBe(true);
        expect(lock.signal.reason).toBe(outcome);
        // The nodes now expire the keys within 200 ms of the round's start: the handle's deadline
        // says so, instead of the 5 s one it had.
        expect(lock.validUntil).toBeLessThanOrEqual(performance.now() + 10);
        await expect(lock.extend(5000)).rejects.toSatisfy(isLockLostError);
        await expect(lock.release()).resolves.toMatchObject({ expired: true });

        // The same rule for semaphore permits (the same handle, on server time).
        const pool = redlock.semaphore('ext:pool', { permits: 2 });
        const permit = await pool.acquire({ ttlMs: 5000 });
        await permit.extend(5000); // the semaphore's extend script is cached from here on
        net.latency.fill(190);
        const short = await permit.extend(200).catch((e: unknown) => e);
        net.latency.fill(0);
        expect(isLockLostError(short), String(short)).toBe(true);
        expect((short as LockLostError).kind).toBe('extension-too-short');
        expect(permit.signal.reason).toBe(short);
        await permit.release();
      } finally {
        await redlock.close();
      }
    });
  },
);
