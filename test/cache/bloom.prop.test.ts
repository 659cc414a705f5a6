import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BloomFilter, bloomShape } from '../../src/cache/index.js';
import { bloomPositions } from '../../src/cache/bloom.js';
import { murmur3String } from '../../src/hashring/index.js';
import { invalidOption, seededRandom } from '../support/helpers.js';

/**
 * The documented probe sequence, from the public murmur3: gᵢ = (h₁ + i·s) mod m with
 * h₁ = murmur3(key, 0) mod m and s = (murmur3(key, 0x9747b28c) | 1) mod m (1 if 0). The Redis
 * filter's bits are these positions, so they may not change without a migration.
 */
function referencePositions(key: string, bits: number, hashes: number): number[] {
  let position = murmur3String(key, 0) % bits;
  const step = ((murmur3String(key, 0x9747b28c) | 1) >>> 0) % bits || 1;
  const out: number[] = [];
  for (let i = 0; i < hashes; i++) {
    out.push(position);
    position = (position + step) % bits;
  }
  return out;
}

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

  it('bit positions are the documented double hashing over murmur3 (the Redis layout), for any string', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' })),
        fc.integer({ min: 1, max: 2 ** 32 }),
        fc.integer({ min: 1, max: 12 }),
        (key, bits, hashes) => {
          const out: number[] = [];
          bloomPositions(key, { bits, hashes }, out);
          expect(out).toEqual(referencePositions(key, bits, hashes));
        },
      ),
      { numRuns: 1_000 },
    );
    // Pinned values (as written to Redis by earlier versions): a change here orphans every
    // filter already stored.
    const pinned: number[] = [];
    bloomPositions('sku-1', { bits: 9_585_059, hashes: 7 }, pinned);
    expect(pinned).toEqual(PINNED_SKU_1);
  });

  it('bit positions match the reference where m is near 2^31 and 2^32 (position + step passes 2^32)', () => {
    // The walk runs in uint32 arithmetic; these are the shapes where a naive uint32 sum would
    // wrap: position and step near m, with m above 2^31.
    const sizes = [2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 3_000_000_017, 2 ** 32 - 1, 2 ** 32];
    let crossings = 0;
    for (const bits of sizes) {
      for (let i = 0; i < 400; i++) {
        const key = `edge:${bits}:${i}`;
        const out: number[] = [];
        bloomPositions(key, { bits, hashes: 12 }, out);
        const reference = referencePositions(key, bits, 12);
        expect(out).toEqual(reference);
        for (let j = 1; j < reference.length; j++) {
          const step = ((murmur3String(key, 0x9747b28c) | 1) >>> 0) % bits || 1;
          if ((reference[j - 1] as number) + step >= 2 ** 32) crossings++;
        }
      }
    }
    // The keys do exercise the case (hundreds of steps cross 2^32 with these sizes).
    expect(crossings).toBeGreaterThan(100);
  });

  it('in memory, a filter of more than 2^31 bits has no false negatives', () => {
    // ~448 M items at 1 %: m just under 2^32 (a 512 MiB array, zero pages until written).
    const bloom = new BloomFilter({ expectedItems: 448_000_000, falsePositiveRate: 0.01 });
    expect(bloom.shape.bits).toBeGreaterThan(2 ** 31);
    const keys = Array.from({ length: 2_000 }, (_, i) => `big:${i}`);
    for (const key of keys) expect(bloom.add(key)).toBe(true);
    for (const key of keys) expect(bloom.mightContain(key)).toBe(true);
    let absent = 0;
    for (let i = 0; i < 2_000; i++) if (!bloom.mightContain(`absent:${i}`)) absent++;
    expect(absent).toBe(2_000);
  });

  it('in memory, add and mightContain test exactly the positions of bloomPositions', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.string({ maxLength: 12 })), { maxLength: 200 }),
        fc.integer({ min: 8, max: 4_000 }),
        (steps, expectedItems) => {
          const bloom = new BloomFilter({ expectedItems, falsePositiveRate: 0.2 });
          const set = new Set<number>();
          for (const [adding, key] of steps) {
            const positions: number[] = [];
            bloomPositions(key, bloom.shape, positions);
            const all = positions.every((p) => set.has(p));
            if (adding) {
              expect(bloom.add(key)).toBe(!all);
              for (const p of positions) set.add(p);
            } else {
              expect(bloom.mightContain(key)).toBe(all);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('mightContain is true exactly when all k positions are set, for every k from 1 up (first probe tested on its own)', () => {
    // mightContain tests g₀ = h₁ mod m before it computes the step and walks g₁ … g_{k−1}: at
    // k = 1 (a rate of 0.5) the walk is empty, and a set g₀ alone must answer true; at larger
    // k every later position still has to be set. Model: the set of positions ever added.
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.string({ maxLength: 12 })), { maxLength: 150 }),
        fc.integer({ min: 1, max: 2_000 }),
        fc.constantFrom(0.5, 0.3, 0.1, 0.01, 0.0001),
        (steps, expectedItems, rate) => {
          const bloom = new BloomFilter({ expectedItems, falsePositiveRate: rate });
          const set = new Set<number>();
          const added: string[] = [];
          for (const [adding, key] of steps) {
            const positions: number[] = [];
            bloomPositions(key, bloom.shape, positions);
            if (adding) {
              bloom.add(key);
              added.push(key);
              for (const p of positions) set.add(p);
            } else {
              expect(bloom.mightContain(key)).toBe(positions.every((p) => set.has(p)));
            }
          }
          // And never a false negative.
          for (const key of added) expect(bloom.mightContain(key)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
    expect(bloomShape({ expectedItems: 100, falsePositiveRate: 0.5 }).hashes).toBe(1);
  });

  it('at the design count of 1e6 and 1 %, the measured false-positive rate is ≤ 1.05 % (fixed seed)', () => {
    const n = 1_000_000;
    const bloom = new BloomFilter({ expectedItems: n, falsePositiveRate: 0.01 });
    expect(bloom.shape.bits / n).toBeLessThanOrEqual(9.6);
    const random = seededRandom(18);
    // Random-looking keys of the shape an application uses; members and probes are disjoint
    // (different prefixes), so every positive probe is a false one.
    const token = (): string => Math.floor(random() * 2 ** 32).toString(36);
    for (let i = 0; i < n; i++) bloom.add(`sku:${token()}:${i}`);
    const probes = 1_000_000;
    let positives = 0;
    for (let i = 0; i < probes; i++) if (bloom.mightContain(`missing:${token()}:${i}`)) positives++;
    // (1 − e^(−7/9.585))^7 ≈ 1.003 % in theory; one standard error at 1e6 probes is 0.01 %.
    expect(positives / probes).toBeLessThanOrEqual(0.0105);
  }, 120_000);

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

/** bloomPositions('sku-1', 1e6 items at 1 %) as the code before the one-pass hash computed it. */
const PINNED_SKU_1: readonly number[] = [
  8_632_566, 3_679_725, 8_311_943, 3_359_102, 7_991_320, 3_038_479, 7_670_697,
];
