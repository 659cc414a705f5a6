/**
 * The Redis tier's one deadline timer (src/cache/redis-tier.ts, `Deadlines`) when a timed-out
 * call's continuation makes another call while the expiry runs — what a caller that retries a
 * read on a timeout does. The tier must keep one timer, not arm a second and lose track of the
 * first: a lost timer fires after `close()` and times out calls the closed tier no longer
 * watches. Replies come from a real redis-server; the test holds them back (a slow server).
 */
import { expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { isCacheRedisError } from '../../src/cache/errors.js';
import { heldTier } from '../support/cache.js';
import { describeRedis, useRedis } from '../support/vitest.js';

const TIMEOUT_MS = 100;
const flush = (): Promise<void> => new Promise((done) => setImmediate(done));

describeRedis('RedisTier: a call made by an expiry (real redis-server)', () => {
  const redis = useRedis();

  it('arms one timer, and nothing expires after close()', async () => {
    const real = redis().client(0);
    const clock = new ManualClock(1_000);
    const { tier, held } = heldTier(real, clock, TIMEOUT_MS);
    let retried: Promise<unknown> | undefined;
    const settled: unknown[] = [];
    try {
      // The first read times out; its continuation reads again, from inside the expiry.
      const first = tier.getThen(
        'read',
        'k',
        (reply, error) => {
          if (error !== undefined) {
            retried = tier.get('read', 'k').then(
              (value) => settled.push(value),
              (failure: unknown) => settled.push(failure),
            );
          }
          return reply;
        },
        undefined,
      );
      while (held.length < 1) await flush();
      clock.advance(TIMEOUT_MS);
      await flush(); // the expiry waits one setImmediate after its timer
      await first;
      expect(retried).toBeDefined();
      expect.soft(clock.pendingTimers, 'deadline timers armed for the one call in flight').toBe(1);
      tier.close();
      expect.soft(clock.pendingTimers, 'timers left after close()').toBe(0);
      // Time passes after close: the retried call is no longer watched, so nothing times it out.
      clock.advance(TIMEOUT_MS);
      await flush();
      await flush();
      expect(settled).toEqual([]);
      // Both replies (the first call's, the retried call's) wait in the hold.
      while (held.length < 2) await flush();
    } finally {
      tier.close();
      for (const release of held.splice(0)) release();
      await flush();
      real.disconnect();
    }
    // Its reply, let through at last, still settles it (once).
    await retried;
    expect(settled.length).toBe(1);
    expect(isCacheRedisError(settled[0])).toBe(false);
  });
});
