/**
 * Bloom filters (Bloom, "Space/Time Trade-offs in Hash Coding with Allowable Errors", CACM
 * 1970): a bit array of m bits and k hash functions; `add` sets k bits, `mightContain` checks
 * them. No false negatives; false positives at rate ≈ (1 − e^(−kn/m))^k after n adds.
 *
 * - **Sizing** from the expected count n and target rate p: m = ⌈−n·ln p / (ln 2)²⌉ bits and
 *   k = round((m/n)·ln 2), the optimum (Broder & Mitzenmacher, "Network Applications of Bloom
 *   Filters: A Survey", 2004, §2.1). 1 % at any n is 9.585 bits per element and k = 7.
 * - **k hashes by double hashing** over MurmurHash3 (`src/hashring/murmur3.ts`):
 *   gᵢ(x) = h₁(x) + i·h₂(x) mod m, with h₁, h₂ two seeds of murmur3 — Kirsch & Mitzenmacher,
 *   "Less Hashing, Same Performance: Building a Better Bloom Filter" (ESA 2006), which shows
 *   the false-positive rate is asymptotically that of k independent hashes.
 *
 * This module is pure: it computes bit positions and keeps an in-memory bit array. The Redis
 * filter (`redis-bloom.ts`) sends the same positions to a script.
 *
 * @packageDocumentation
 */
import { InvalidOptionError, numberOption, integerOption, resolveOptions } from '../core/index.js';
import { murmur3StringInt } from '../hashring/murmur3.js';

/** Largest bit array: a Redis string holds at most 512 MB = 2³² bits. */
export const MAX_BLOOM_BITS = 2 ** 32;

const SEED_1 = 0;
const SEED_2 = 0x9747b28c;

/** Options of {@link BloomFilter} (and the sizing part of `RedisBloomFilter`'s). */
export interface BloomOptions {
  /** How many distinct keys the filter is designed for. */
  readonly expectedItems: number;
  /** Target false-positive rate at `expectedItems`, in (0, 1). @defaultValue `0.01` */
  readonly falsePositiveRate?: number | undefined;
}

/** A filter's shape: m bits and k hashes. */
export interface BloomShape {
  /** Bits in the array (m). */
  readonly bits: number;
  /** Hash functions (k). */
  readonly hashes: number;
}

const sizingSpec = {
  expectedItems: integerOption({ min: 1, required: true }),
  falsePositiveRate: numberOption({ min: 0, minExclusive: true, max: 0.5, default: 0.01 }),
};

/**
 * The optimal shape for `expectedItems` at `falsePositiveRate` (see the module header).
 *
 * @throws InvalidOptionError for a bad count or rate, or a filter over 2³² bits
 *
 * @example
 * ```ts
 * import { bloomShape } from 'keel/cache';
 *
 * console.log(bloomShape({ expectedItems: 1_000_000, falsePositiveRate: 0.01 }));
 * // { bits: 9585059, hashes: 7 }
 * ```
 */
export function bloomShape(options: BloomOptions, owner = 'bloomShape'): BloomShape {
  const { expectedItems: n, falsePositiveRate: p } = resolveOptions(owner, options, sizingSpec);
  const bits = Math.ceil((-n * Math.log(p)) / (Math.LN2 * Math.LN2));
  if (bits > MAX_BLOOM_BITS) {
    throw new InvalidOptionError(
      owner,
      'expectedItems',
      `a count and rate that fit in 2^32 bits (this needs ${bits})`,
      n,
    );
  }
  const hashes = Math.max(1, Math.round((bits / n) * Math.LN2));
  return { bits, hashes };
}

/**
 * Writes the k bit positions of `key` into `out` from `at` (double hashing, see the header).
 * @internal
 */
export function bloomPositions(
  key: string,
  shape: BloomShape,
  out: number[] | Float64Array,
  at = 0,
): void {
  const m = shape.bits;
  let position = (murmur3StringInt(key, SEED_1) >>> 0) % m;
  // A step of at least 1 (a zero step would put all k probes on one bit). `>>> 0` after the
  // `| 1`: bitwise OR yields a signed int32, and a negative step walks off the array.
  const step = ((murmur3StringInt(key, SEED_2) | 1) >>> 0) % m || 1;
  for (let i = 0; i < shape.hashes; i++) {
    out[at + i] = position;
    position += step;
    if (position >= m) position -= m;
  }
}

/** Checks a key argument; keys are strings (hash whatever identifies the item). @internal */
export function checkBloomKey(owner: string, key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidOptionError(owner, 'key', 'a string', key);
}

/**
 * An in-memory Bloom filter over string keys: no false negatives, false positives at about the
 * designed rate once `expectedItems` keys are in. Usable alone or as a `Cache`'s `guard`.
 *
 * @example
 * ```ts
 * import { BloomFilter } from 'keel/cache';
 *
 * const skus = new BloomFilter({ expectedItems: 10_000, falsePositiveRate: 0.01 });
 * skus.add('sku-1');
 * console.log(skus.mightContain('sku-1')); // true
 * console.log(skus.mightContain('sku-404')); // false (almost surely)
 * ```
 */
export class BloomFilter {
  /** Bits (m) and hashes (k). */
  readonly shape: BloomShape;
  readonly #bits: Uint8Array;
  readonly #scratch: Float64Array;
  #added = 0;

  /** @throws InvalidOptionError for a bad count or rate */
  constructor(options: BloomOptions) {
    this.shape = Object.freeze(bloomShape(options, 'BloomFilter'));
    this.#bits = new Uint8Array(Math.ceil(this.shape.bits / 8));
    this.#scratch = new Float64Array(this.shape.hashes);
  }

  /** Keys added that were not (as far as the filter could tell) in it already. */
  get approximateCount(): number {
    return this.#added;
  }

  /** Size of the bit array in bytes. */
  get byteLength(): number {
    return this.#bits.length;
  }

  /** Adds `key`; returns true when it was certainly not in the filter before. */
  add(key: string): boolean {
    checkBloomKey('BloomFilter.add', key);
    bloomPositions(key, this.shape, this.#scratch);
    const bits = this.#bits;
    let fresh = false;
    for (let i = 0; i < this.#scratch.length; i++) {
      const p = this.#scratch[i] as number;
      const byte = p >>> 3;
      const mask = 1 << (p & 7);
      if (((bits[byte] as number) & mask) === 0) {
        fresh = true;
        bits[byte] = (bits[byte] as number) | mask;
      }
    }
    if (fresh) this.#added++;
    return fresh;
  }

  /** False only when `key` was certainly never added. */
  mightContain(key: string): boolean {
    checkBloomKey('BloomFilter.mightContain', key);
    bloomPositions(key, this.shape, this.#scratch);
    const bits = this.#bits;
    for (let i = 0; i < this.#scratch.length; i++) {
      const p = this.#scratch[i] as number;
      if (((bits[p >>> 3] as number) & (1 << (p & 7))) === 0) return false;
    }
    return true;
  }

  /** {@link BloomFilter.add} for each key; one result per key, in order. */
  addAll(keys: Iterable<string>): boolean[] {
    const out: boolean[] = [];
    for (const key of keys) out.push(this.add(key));
    return out;
  }

  /** {@link BloomFilter.mightContain} for each key; one result per key, in order. */
  mightContainAll(keys: Iterable<string>): boolean[] {
    const out: boolean[] = [];
    for (const key of keys) out.push(this.mightContain(key));
    return out;
  }
}
