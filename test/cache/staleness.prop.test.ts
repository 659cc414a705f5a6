import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import { Cache } from '../../src/cache/index.js';

/**
 * The cache's freshness promise, as a property over random schedules of reads, writes,
 * deletes, loader failures and time steps (fake time, L1 only): a value returned is never
 * older than ttl + staleMs — older (up to + graceMs) only from a call whose loader failed.
 * "Age" is how long before the read the value was produced (loaded or set).
 */
type Step =
  | { readonly t: 'advance'; readonly ms: number }
  | { readonly t: 'read'; readonly key: number; readonly fails: boolean }
  | { readonly t: 'set'; readonly key: number }
  | { readonly t: 'delete'; readonly key: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ t: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 400 }) }),
  fc.record({
    t: fc.constant('read' as const),
    key: fc.integer({ min: 0, max: 2 }),
    fails: fc.boolean(),
  }),
  fc.record({ t: fc.constant('set' as const), key: fc.integer({ min: 0, max: 2 }) }),
  fc.record({ t: fc.constant('delete' as const), key: fc.integer({ min: 0, max: 2 }) }),
);

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('Cache staleness bound (property, fake time)', () => {
  it('never returns a value older than ttl + staleMs unless that call’s loader failed (then + graceMs)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 0, max: 300 }),
        fc.integer({ min: 0, max: 300 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 3, noNaN: true }),
        fc.integer(),
        async (steps, ttlMs, staleMs, graceMs, jitter, beta, seed) => {
          const clock = new ManualClock();
          let s = seed >>> 0 || 1;
          const random = (): number => {
            s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
            return s / 2 ** 32;
          };
          await using cache = new Cache({ clock, ttlMs, staleMs, graceMs, jitter, beta, random });
          for (const st of steps) {
            if (st.t === 'advance') {
              clock.advance(st.ms);
            } else if (st.t === 'set') {
              await cache.set(`k${st.key}`, { at: clock.now() });
            } else if (st.t === 'delete') {
              await cache.delete(`k${st.key}`);
            } else {
              const attempt = { failed: false };
              const value = await cache
                .getOrLoad(`k${st.key}`, () => {
                  if (st.fails) {
                    attempt.failed = true;
                    throw new Error('db down');
                  }
                  return { at: clock.now() };
                })
                .catch(() => undefined);
              if (value !== undefined) {
                const age = clock.now() - value.at;
                expect(age).toBeLessThanOrEqual(ttlMs + staleMs + (attempt.failed ? graceMs : 0));
              }
            }
            // Let background refreshes (stale-while-revalidate, XFetch) finish within the step.
            await settle();
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
