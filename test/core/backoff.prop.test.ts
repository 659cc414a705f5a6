import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  decorrelatedJitter,
  equalJitter,
  exponentialDelay,
  fullJitter,
  jitter,
  unitRandom,
} from '../../src/core/index.js';

const anyRandom = fc.oneof(
  fc.double({ min: 0, max: 1, noNaN: true }).map((r) => () => r),
  fc.constantFrom(NaN, -1, 7, Infinity).map((r) => () => r),
  fc.constant(() => {
    throw new Error('broken source');
  }),
  fc.constant((() => 'x') as unknown as () => number),
);

describe('core/backoff', () => {
  it('a broken random source reads as 0.5, a good one as itself', () => {
    fc.assert(
      fc.property(anyRandom, (random) => {
        const u = unitRandom(random);
        expect(u >= 0 && u <= 1).toBe(true);
      }),
    );
    expect(unitRandom(() => 0.25)).toBe(0.25);
    expect(unitRandom(() => NaN)).toBe(0.5);
  });

  it('exponential delays grow by the factor and never pass the cap', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.double({ min: 0, max: 1e4, noNaN: true }),
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        (attempt, initial, cap) => {
          const d = exponentialDelay(attempt, initial, cap);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThanOrEqual(cap);
          if (attempt > 1)
            expect(d).toBeGreaterThanOrEqual(exponentialDelay(attempt - 1, initial, cap));
        },
      ),
    );
    expect([1, 2, 3, 4].map((a) => exponentialDelay(a, 10, 50))).toEqual([10, 20, 40, 50]);
  });

  it('jitter stays within ± the fraction; full jitter within [0, delay]', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        anyRandom,
        (delay, fraction, random) => {
          const j = jitter(delay, fraction, random);
          expect(j).toBeGreaterThanOrEqual(delay * (1 - fraction) - 1e-6);
          expect(j).toBeLessThanOrEqual(delay * (1 + fraction) + 1e-6);
          const f = fullJitter(delay, random);
          expect(f >= 0 && f <= delay).toBe(true);
        },
      ),
    );
  });

  it("decorrelated jitter is AWS's min(cap, uniform(base, previous × 3))", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1e5, noNaN: true }),
        fc.double({ min: 0, max: 1e3, noNaN: true }),
        fc.double({ min: 0, max: 1e6, noNaN: true }),
        anyRandom,
        (previous, base, cap, random) => {
          const d = decorrelatedJitter(previous, base, cap, random);
          expect(d).toBeLessThanOrEqual(cap);
          if (base <= cap) {
            expect(d).toBeGreaterThanOrEqual(base - 1e-9);
            expect(d).toBeLessThanOrEqual(Math.max(base, previous * 3) + 1e-6);
          }
        },
      ),
    );
    expect(decorrelatedJitter(100, 10, 1000, () => 0)).toBe(10);
    expect(decorrelatedJitter(100, 10, 1000, () => 1)).toBe(300);
    expect(decorrelatedJitter(400, 10, 1000, () => 1)).toBe(1000);
  });

  it('equal jitter stays within [delay / 2, delay], whatever the random source', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1e6, noNaN: true }), anyRandom, (delay, random) => {
        const e = equalJitter(delay, random);
        expect(e).toBeGreaterThanOrEqual(delay / 2 - 1e-9);
        expect(e).toBeLessThanOrEqual(delay + 1e-9);
      }),
    );
    expect(equalJitter(100, () => 0)).toBe(50);
    expect(equalJitter(100, () => 1)).toBe(100);
  });
});
