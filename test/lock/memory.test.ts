import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { MemoryLock, isLockLostError, isLockTakenError } from '../../src/lock/index.js';
import { invalidOption } from '../support/helpers.js';

describe('MemoryLock', () => {
  it('excludes, releases, and hands out strictly increasing fencing tokens', async () => {
    const locks = new MemoryLock({ retryCount: 0 });
    const a = await locks.acquire('sku:1');
    expect(isLockTakenError(await locks.acquire('sku:1').catch((e: unknown) => e))).toBe(true);
    await expect(a.release()).resolves.toEqual({ released: true, expired: false });
    const b = await locks.acquire('sku:1');
    expect(b.fencingToken).toBeGreaterThan(a.fencingToken);
    await b.release();
  });

  it('expires at the ttl: the signal aborts, another holder may take it, release reports expiry', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 100, retryCount: 0 });
    const lock = await locks.acquire(['sku:2', 'sku:3']);
    expect(Object.keys(lock.fencingTokens)).toEqual(['sku:2', 'sku:3']);
    clock.advance(100);
    expect(lock.signal.aborted).toBe(true);
    expect(isLockLostError(lock.signal.reason)).toBe(true);
    const next = await locks.acquire('sku:2');
    await expect(lock.release()).resolves.toMatchObject({ expired: true });
    await expect(next.release()).resolves.toMatchObject({ released: true }); // the stale release did not touch it
  });

  it('extend moves the deadline; extending a lost lock fails', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 100 });
    const lock = await locks.acquire('sku:4');
    clock.advance(60);
    await lock.extend(100);
    expect(lock.validUntil).toBe(160);
    clock.advance(99);
    expect(lock.signal.aborted).toBe(false);
    clock.advance(1);
    await expect(lock.extend()).rejects.toSatisfy(isLockLostError);
  });

  it('using() serialises concurrent routines and waits for the holder', async () => {
    const locks = new MemoryLock({ retryCount: 1000, retryDelayMs: 1, retryJitterMs: 1 });
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        locks.using('sku:5', {}, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await new Promise((resolve) => setTimeout(resolve, 2));
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(1);
  });

  it('rejects bad input', async () => {
    expect(invalidOption(() => new MemoryLock({ ttlMs: 0 })).option).toBe('ttlMs');
    await expect(new MemoryLock().acquire('')).rejects.toThrow(/invalid option "resources"/);
  });
});
