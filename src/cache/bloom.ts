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
 *   the false-positive rate is asymptotically that of k independent hashes. Both seeds are
 *   hashed in one pass over the key, and the k probes follow from h₁ and h₂ alone: a lookup
 *   reads the key once and allocates nothing.
 *
 * This module is pure: it computes bit positions and keeps an in-memory bit array. The Redis
 * filter (`redis-bloom.ts`) sends the same positions to a script; they are pinned by a test,
 * since a change would make every filter already in Redis answer "absent" for present keys.
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

// MurmurHash3 x86_32's constants (SMHasher's MurmurHash3.cpp, `MurmurHash3_x86_32`).
const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/**
 * The two hashes of the last key given to {@link hashPair}, as signed int32s: module state
 * rather than a returned pair, so a lookup allocates nothing (a returned array or object would
 * be one allocation per call; int32s stay unboxed in registers).
 */
let hash1 = 0;
let hash2 = 0;

/** One 4-byte block into a murmur3 state (the reference's body step). */
function mixBlock(h: number, k: number): number {
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** The reference's finalisation (length, then fmix32), as a signed int32. */
function finishHash(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * Sets {@link hash1} and {@link hash2} to MurmurHash3 x86_32 of the UTF-8 bytes of `key` with
 * seeds {@link SEED_1} and {@link SEED_2} — bit for bit `murmur3StringInt(key, SEED_1)` and
 * `murmur3StringInt(key, SEED_2)` (tested), so the probe positions, and with them the bits of
 * every Redis filter written before, are unchanged — in **one pass** over the key: the block
 * scramble (`k·c1`, rotate, `·c2`) does not depend on the seed, so each block is read and
 * scrambled once and folded into both states. ASCII keys are read from their char codes;
 * others (rare) fall back to the UTF-8 path of `keel/hashring`'s murmur3, twice.
 */
function hashPair(key: string): void {
  const length = key.length;
  let a = SEED_1 | 0;
  let b = SEED_2 | 0;
  const end = length & ~3;
  let i = 0;
  for (; i < end; i += 4) {
    const c0 = key.charCodeAt(i);
    const c1 = key.charCodeAt(i + 1);
    const c2 = key.charCodeAt(i + 2);
    const c3 = key.charCodeAt(i + 3);
    if ((c0 | c1 | c2 | c3) > 0x7f) {
      hashPairUtf8(key);
      return;
    }
    let k = Math.imul(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24), C1);
    k = Math.imul((k << 15) | (k >>> 17), C2);
    a = mixBlock(a, k);
    b = mixBlock(b, k);
  }
  const tail = length & 3;
  if (tail !== 0) {
    const c0 = key.charCodeAt(i);
    const c1 = tail > 1 ? key.charCodeAt(i + 1) : 0;
    const c2 = tail > 2 ? key.charCodeAt(i + 2) : 0;
    if ((c0 | c1 | c2) > 0x7f) {
      hashPairUtf8(key);
      return;
    }
    let k = Math.imul(c0 | (c1 << 8) | (c2 << 16), C1);
    k = Math.imul((k << 15) | (k >>> 17), C2);
    a ^= k;
    b ^= k;
  }
  hash1 = finishHash(a, length);
  hash2 = finishHash(b, length);
}

/** {@link hashPair} for a key with non-ASCII characters: its UTF-8 bytes, hashed twice. */
function hashPairUtf8(key: string): void {
  hash1 = murmur3StringInt(key, SEED_1);
  hash2 = murmur3StringInt(key, SEED_2);
}

/**
 * Writes the k bit positions of `key` into `out` from `at` (double hashing, see the header):
 * gᵢ = (h₁ + i·s) mod m for i = 0 … k − 1, with h₁ = murmur3(key, seed 0) mod m and the step
 * s = (murmur3(key, seed 0x9747b28c) | 1) mod m, or 1 if that is 0. The Redis filter sends
 * these positions to `SETBIT`/`GETBIT`; {@link BloomFilter} tests the same ones in memory.
 * @internal
 */
export function bloomPositions(
  key: string,
  shape: BloomShape,
  out: number[] | Float64Array,
  at = 0,
): void {
  hashPair(key);
  const m = shape.bits;
  const m32 = m >>> 0;
  let position = modBits(hash1 >>> 0, m32);
  // A step of at least 1 (a zero step would put all k probes on one bit). `>>> 0` after the
  // `| 1`: bitwise OR yields a signed int32, and a negative step walks off the array.
  const step = modBits((hash2 | 1) >>> 0, m32) || 1;
  const back = (m - step) >>> 0;
  for (let i = 0; i < shape.hashes; i++) {
    out[at + i] = position;
    position = nextProbe(position, step, back);
  }
}

// The probe walk in 32-bit unsigned integers. m is at most 2³², so every position and step
// fits a uint32, but `x % m` with m read as a plain number, and `position += step` (up to
// 2³³ − 2 before the wrap), are double arithmetic to the optimizing compiler: a float modulus
// (a C call) per lookup. Here every operand is a `>>> 0`-typed uint32, so both compile to
// integer instructions, and the positions are exactly those of the plain formula:
// - m32 = m >>> 0 is m itself below 2³², and 0 for m = 2³², where h mod 2³² = h for any
//   uint32 h: so `m32 === 0 ? h : h % m32` (`modBits`) is h mod m for every m in [1, 2³²].
// - With back = m − step (in [0, m), a uint32), (p + step) mod m for p in [0, m) is p − back
//   when p ≥ back, else p + step (then < m): neither leaves [0, 2³²), so no `>>> 0` wraps
//   anything. (`(p + step) >>> 0` followed by `− m` would: for m > 2³¹, p + step can pass 2³².)

/** (position + step) mod m, for position and step in [0, m) and back = m − step (see above). */
function nextProbe(position: number, step: number, back: number): number {
  return position >= back ? (position - back) >>> 0 : (position + step) >>> 0;
}

/**
 * h mod m for a uint32 h and m32 = m >>> 0 (see above). `m32 >>> 0` again here, not only where
 * m32 was made: the compiler types an operand by the expression it sees, and a parameter or
 * field read is just "a number" — without it the modulus stayed a float one (a C call; an
 * absent-key lookup measured ~80 ns, ~55 ns with it).
 */
function modBits(h: number, m32: number): number {
  return m32 === 0 ? h : (h % (m32 >>> 0)) >>> 0;
}

/**
 * Checks a list of keys (an array, a set, a generator, …): anything not iterable — or a string,
 * which would be read character by character — is a typed error naming `keys`. @internal
 */
export function checkKeyList(owner: string, keys: unknown): asserts keys is Iterable<unknown> {
  if (
    typeof keys !== 'object' ||
    keys === null ||
    typeof (keys as Partial<Iterable<unknown>>)[Symbol.iterator] !== 'function'
  ) {
    throw new InvalidOptionError(owner, 'keys', 'an iterable of keys (an array, a set, …)', keys);
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
  /** m and k, copied out of `shape` for the hot paths. */
  readonly #m: number;
  readonly #k: number;
  #added = 0;

  /** @throws InvalidOptionError for a bad count or rate */
  constructor(options: BloomOptions) {
    this.shape = Object.freeze(bloomShape(options, 'BloomFilter'));
    this.#bits = new Uint8Array(Math.ceil(this.shape.bits / 8));
    this.#m = this.shape.bits;
    this.#k = this.shape.hashes;
  }

  /** Keys added that were not (as far as the filter could tell) in it already. */
  get approximateCount(): number {
    return this.#added;
  }

  /** Size of the bit array in bytes. */
  get byteLength(): number {
    return this.#bits.length;
  }

  // `add` and `mightContain` walk the positions of `bloomPositions` inline: one hash pass, then
  // k bit tests, with no position array and no allocation per call, in uint32 arithmetic (see
  // `modBits`). Bit p is bit p & 7 of byte p >>> 3 (p < 2³², so `>>>` and `&` see it exactly).

  /** Adds `key`; returns true when it was certainly not in the filter before. */
  add(key: string): boolean {
    if (typeof key !== 'string') checkBloomKey('BloomFilter.add', key);
    hashPair(key);
    const m32 = this.#m >>> 0;
    const bits = this.#bits;
    let position = modBits(hash1 >>> 0, m32);
    const step = modBits((hash2 | 1) >>> 0, m32) || 1;
    const back = (this.#m - step) >>> 0;
    let fresh = false;
    for (let i = this.#k; i > 0; i--) {
      const byte = position >>> 3;
      const mask = 1 << (position & 7);
      const old = bits[byte] as number;
      if ((old & mask) === 0) {
        fresh = true;
        bits[byte] = old | mask;
      }
      position = nextProbe(position, step, back);
    }
    if (fresh) this.#added++;
    return fresh;
  }

  /**
   * False only when `key` was certainly never added.
   *
   * The first probe, g₀ = h₁ mod m, needs only h₁, so it is tested before the step
   * (h₂ | 1) mod m is computed: in a filter at its designed load about half the bits are set,
   * so about half of all absent keys are answered after one modulus instead of two (an integer
   * division each). Same positions, same order, same answer as testing all k in a row.
   */
  mightContain(key: string): boolean {
    if (typeof key !== 'string') checkBloomKey('BloomFilter.mightContain', key);
    hashPair(key);
    const m32 = this.#m >>> 0;
    const bits = this.#bits;
    let position = modBits(hash1 >>> 0, m32);
    if (((bits[position >>> 3] as number) & (1 << (position & 7))) === 0) return false;
    const step = modBits((hash2 | 1) >>> 0, m32) || 1;
    const back = (this.#m - step) >>> 0;
    for (let i = this.#k - 1; i > 0; i--) {
      position = nextProbe(position, step, back);
      if (((bits[position >>> 3] as number) & (1 << (position & 7))) === 0) return false;
    }
    return true;
  }

  /** {@link BloomFilter.add} for each key; one result per key, in order. */
  addAll(keys: Iterable<string>): boolean[] {
    checkKeyList('BloomFilter.addAll', keys);
    const out: boolean[] = [];
    for (const key of keys) out.push(this.add(key));
    return out;
  }

  /** {@link BloomFilter.mightContain} for each key; one result per key, in order. */
  mightContainAll(keys: Iterable<string>): boolean[] {
    checkKeyList('BloomFilter.mightContainAll', keys);
    const out: boolean[] = [];
    for (const key of keys) out.push(this.mightContain(key));
    return out;
  }
}
