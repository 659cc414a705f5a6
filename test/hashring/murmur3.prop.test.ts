import fc from 'fast-check';
import reference from 'murmurhash3js-revisited';
import { describe, expect, it } from 'vitest';
import { murmur3, murmur3Hasher, murmur3String } from '../../src/hashring/murmur3.js';

const referenceHash32 = (bytes: Uint8Array, seed?: number): number =>
  reference.x86.hash32(bytes, seed);
const encoder = new TextEncoder();

// Invariant: Keel's murmur3 is bit-for-bit MurmurHash3 x86_32 as murmurhash3js-revisited
// computes it, for any bytes and seed; and a string hashes exactly as its UTF-8 bytes.
describe('murmur3 (property)', () => {
  it('matches murmurhash3js-revisited on arbitrary bytes and seeds', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.nat(), (bytes, seed) => {
        expect(murmur3(bytes, seed)).toBe(referenceHash32(bytes, seed));
      }),
      { numRuns: 500 },
    );
  });

  it('hashes any string as its UTF-8 bytes (ASCII fast path and non-ASCII path)', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 40 }),
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.string({ unit: fc.constantFrom('a', 'b', 'Ā', 'é', '€', '😀'), maxLength: 12 }),
        ),
        (key) => {
          const bytes = encoder.encode(key);
          expect(murmur3String(key)).toBe(referenceHash32(bytes, 0));
          expect(murmur3Hasher.string(key)).toBe(murmur3Hasher.bytes(bytes));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('hashes a slice of a buffer like the slice itself', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const start = bytes.length === 0 ? 0 : a % bytes.length;
        const length = bytes.length - start === 0 ? 0 : b % (bytes.length - start + 1);
        expect(murmur3(bytes, 7, start, length)).toBe(
          referenceHash32(bytes.slice(start, start + length), 7),
        );
      }),
    );
  });
});

describe('murmur3', () => {
  it('gives the published test vectors', () => {
    // From SMHasher's verification and widely reproduced tables for MurmurHash3_x86_32.
    expect(murmur3(new Uint8Array(0), 0)).toBe(0);
    expect(murmur3(new Uint8Array(0), 1)).toBe(0x514e28b7);
    expect(murmur3(new Uint8Array(0), 0xffffffff)).toBe(0x81f16f39);
    expect(murmur3String('Hello, world!', 1234)).toBe(0xfaf6cdb3);
    expect(murmur3String('The quick brown fox jumps over the lazy dog', 0x9747b28c)).toBe(
      0x2fa826cd,
    );
  });

  it('takes the UTF-8 path for a non-ASCII char in any position of the tail', () => {
    for (const key of ['Ā', 'aĀ', 'abĀ', 'abcdĀ', 'Āb', 'aĀc', 'é', 'ab€', '😀', 'a😀']) {
      expect(murmur3String(key)).toBe(referenceHash32(encoder.encode(key), 0));
    }
  });

  it('handles long non-ASCII keys (scratch buffer growth)', () => {
    const key = '€'.repeat(1000);
    expect(murmur3String(key)).toBe(referenceHash32(encoder.encode(key), 0));
  });
});
