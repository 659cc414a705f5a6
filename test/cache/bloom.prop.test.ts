import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BloomFilter, bloomShape } from '../../src/cache/index.js';
import { bloomPositions } from '../../src/cache/bloom.js';
import { invalidOption } from '../support/helpers.js';

describe('BloomFilter (property)', () => {
  it('never gives a false negative', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ unit: 'grapheme', maxLength: 24 }), {
          minLength: 1,
          maxLength: 300,
        }),
        fc.double({ min: 0.001, max: 0.2, noNaN: true }),
        (keys, rate) => {
          const bloom = new BloomFilter({ expectedItems: keys.length, falsePositiveRate: rate });
          bloom.addAll(keys);
          expect(bloom.mightContainAll(keys).every(Boolean)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('every bit position lies in [0, m) and is an integer', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.integer({ min: 1, max: 2 ** 32 }),
        fc.integer({ min: 1, max: 30 }),
        (key, bits, hashes) => {
          const out: number[] = [];
          bloomPositions(key, { bits, hashes }, out);
          expect(out).toHaveLength(hashes);
          for (const p of out) {
            expect(Number.isInteger(p)).toBe(true);
            expect(p).toBeGreaterThanOrEqual(0);
            expect(p).toBeLessThan(bits);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('at the designed count the measured false-positive rate is at most 1.5× the target', () => {
    for (const [n, rate] of [
      [20_000, 0.01],
      [50_000, 0.001],
      [10_000, 0.05],
    ] as const) {
      const bloom = new BloomFilter({ expectedItems: n, falsePositiveRate: rate });
      for (let i = 0; i < n; i++) bloom.add(`member:${i}`);
      const probes = 200_000;
      let positives = 0;
      for (let i = 0; i < probes; i++) if (bloom.mightContain(`absent:${i}`)) positives++;
      expect(positives / probes).toBeLessThanOrEqual(1.5 * rate);
    }
    // 810 000 hash computations: seconds on a loaded 2-core machine, not a timing claim.
  }, 120_000);

  it('is sized from the count and rate (1 % is 9.585 bits per element, k = 7)', () => {
    expect(bloomShape({ expectedItems: 1_000_000, falsePositiveRate: 0.01 })).toEqual({
      bits: 9_585_059,
      hashes: 7,
    });
    expect(invalidOption(() => new BloomFilter({ expectedItems: 0 })).option).toBe('expectedItems');
    expect(
      invalidOption(() => new BloomFilter({ expectedItems: 10, falsePositiveRate: 1 })).option,
    ).toBe('falsePositiveRate');
    expect(
      invalidOption(() => new BloomFilter({ expectedItems: 1e12, falsePositiveRate: 1e-9 })).option,
    ).toBe('expectedItems');
    expect(invalidOption(() => new BloomFilter({ expectedItems: 10 }).add(1 as never)).option).toBe(
      'key',
    );
  });
});
