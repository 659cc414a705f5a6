import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  MemoryLock,
  isLockLostError,
  isLockTakenError,
  type Lock,
  type LockService,
} from '../../src/lock/index.js';
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
    // Lost LOSS_MARGIN_MS (5 ms) before the deadline: the signal aborts at 155.
    clock.advance(94);
    expect(lock.signal.aborted).toBe(false);
    clock.advance(1);
    expect(lock.signal.aborted).toBe(true);
    await expect(lock.extend()).rejects.toSatisfy(isLockLostError);
  });

  it('using(resources, routine) works without an options object, also through LockService', async () => {
    // Issue 16 papercut: `using(resource, routine)` did not compile without `{}`.
    const locks = new MemoryLock({ retryCount: 0 });
    const service: LockService = locks;
    const seen = await service.using('sku:9', async (signal, lock) => {
      expect(signal.aborted).toBe(false);
      expect(lock.resources).toEqual(['sku:9']);
      expect(isLockTakenError(await locks.acquire('sku:9').catch((e: unknown) => e))).toBe(true);
      return lock.fencingToken;
    });
    expect(typeof seen).toBe('number');
    const many = await locks.using(['sku:9', 'sku:10'], (_signal, lock) =>
      Promise.resolve(lock.resources.length),
    );
    expect(many).toBe(2);
    const again = await locks.acquire(['sku:9', 'sku:10']); // both released
    await again.release();
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

  it('wakes a waiter on release, and on the holder’s expiry, without waiting out the retry delay', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 100, retryDelayMs: 60_000, retryJitterMs: 0 });
    const first = await locks.acquire('sku:6');
    let second: Lock | undefined;
    const waiting = locks.acquire('sku:6').then((l) => (second = l));
    await clock.advanceAsync(10);
    expect(second).toBeUndefined();
    await first.release(); // no clock advance: the release itself wakes the waiter
    await waiting;
    expect(second?.fencingToken).toBe(first.fencingToken + 1);
    // Expiry: the holder never releases; the waiter gets it at the holder's deadline.
    let third: Lock | undefined;
    const expiring = locks.acquire('sku:6').then((l) => (third = l));
    await clock.advanceAsync(99);
    expect(third).toBeUndefined();
    await clock.advanceAsync(1);
    await expiring;
    expect(third?.fencingToken).toBe((second as Lock).fencingToken + 1);
    await third?.release();
    expect(clock.pendingTimers).toBe(0);
  });

  it('an aborted waiter leaves no timer and no wake-up behind', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, retryDelayMs: 60_000 });
    const held = await locks.acquire('sku:7');
    const controller = new AbortController();
    const waiting = locks.acquire('sku:7', { signal: controller.signal }).catch((e: unknown) => e);
    await clock.advanceAsync(1);
    controller.abort(new Error('gave up'));
    expect(await waiting).toMatchObject({ message: 'gave up' });
    await held.release();
    expect(clock.pendingTimers).toBe(0);
  });

  it('waitMs bounds the wait (not a count of attempts) and then gives up with LockTakenError', async () => {
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 10_000, retryDelayMs: 10, retryJitterMs: 0 });
    const holder = await locks.acquire('sku:8');
    // Default retryCount (10) would give up after 100 ms of 10 ms retries; waitMs 300 waits on.
    let got: Lock | undefined;
    const waiting = locks.acquire('sku:8', { waitMs: 300 }).then((l) => (got = l));
    await clock.advanceAsync(250);
    expect(got).toBeUndefined();
    await holder.release();
    await waiting;
    expect(got?.fencingToken).toBe(holder.fencingToken + 1);
    // Nobody releases: LockTakenError once waitMs has passed, not the signal's reason.
    const refused = locks.acquire('sku:8', { waitMs: 100 }).catch((e: unknown) => e);
    await clock.advanceAsync(101);
    expect(isLockTakenError(await refused)).toBe(true);
    // In using(), waitMs bounds only the wait: the routine runs past it.
    await got?.release();
    const ran = await locks.using('sku:8', { waitMs: 50 }, async (signal) => {
      await clock.advanceAsync(500);
      return !signal.aborted;
    });
    expect(ran).toBe(true);
    expect(clock.pendingTimers).toBe(0);
  });

  it('a release settles before release() returns: the signal has aborted, the result is frozen', async () => {
    // Session 12: an untraced MemoryLock release runs without an async function or an awaited
    // round (its hot path); what a caller can see of that is tested here.
    const locks = new MemoryLock({ retryCount: 0 });
    const lock = await locks.acquire('sku:10');
    const signal = lock.signal;
    const pending = lock.release();
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toMatchObject({ code: 'KEEL_LOCK_RELEASED' });
    const result = await pending;
    expect(result).toEqual({ released: true, expired: false });
    expect(Object.isFrozen(result)).toBe(true);
    // Released already: at once again, the same frozen answer as before.
    const again = await lock.release();
    expect(again).toEqual({ released: false, expired: false });
    expect(Object.isFrozen(again)).toBe(true);
  });

  it('reuses a resource after release and after expiry, its fencing token rising every time', async () => {
    // Each resource keeps one slot (fencing token, holder) from its first acquisition on; a
    // release or an expiry leaves the slot, so the next holder must still see it as free.
    const clock = new ManualClock();
    const locks = new MemoryLock({ clock, ttlMs: 100, retryCount: 0 });
    const fences: number[] = [];
    const first = await locks.acquire('sku:11');
    fences.push(first.fencingToken);
    await first.release();
    const second = await locks.acquire('sku:11', undefined);
    fences.push(second.fencingToken);
    clock.advance(100); // expired, never released
    const third = await locks.acquire('sku:11', {});
    fences.push(third.fencingToken);
    // The expired holder's release neither frees nor disturbs the new holder.
    await expect(second.release()).resolves.toEqual({ released: false, expired: true });
    expect(isLockTakenError(await locks.acquire('sku:11').catch((e: unknown) => e))).toBe(true);
    await expect(third.release()).resolves.toEqual({ released: true, expired: false });
    // A multi-resource lock over a released and a new resource.
    const both = await locks.acquire(['sku:11', 'sku:12']);
    expect(both.fencingTokens).toEqual({ 'sku:11': 4, 'sku:12': 1 });
    expect(fences).toEqual([1, 2, 3]);
    await locks.close();
    await expect(locks.acquire('sku:13')).rejects.toMatchObject({ code: 'KEEL_CLOSED' });
  });

  it('rejects bad input', async () => {
    expect(invalidOption(() => new MemoryLock({ ttlMs: 0 })).option).toBe('ttlMs');
    await expect(new MemoryLock().acquire('x', { waitMs: -1 })).rejects.toThrow(
      /invalid option "waitMs"/,
    );
    await expect(new MemoryLock().acquire('')).rejects.toThrow(/invalid option "resources"/);
    // using(resources) with neither options nor routine names the missing routine.
    await expect(new MemoryLock().using('a', undefined as never)).rejects.toMatchObject({
      code: 'KEEL_INVALID_OPTION',
      option: 'routine',
    });
    // using() options that are not an object (found by the fuzz suite: a plain TypeError).
    for (const options of [null, 5, 'x', []]) {
      await expect(
        new MemoryLock().using('a', options as never, () => Promise.resolve(1)),
      ).rejects.toMatchObject({ code: 'KEEL_INVALID_OPTION', option: 'options' });
    }
  });
});
