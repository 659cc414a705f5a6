/**
 * MurmurHash3, x86 32-bit variant (Austin Appleby, public domain; the reference is
 * `MurmurHash3_x86_32` in SMHasher's MurmurHash3.cpp). Written from the reference algorithm;
 * bit-for-bit equal to the npm package `murmurhash3js-revisited`'s `x86.hash32`, which the
 * tests check.
 *
 * Strings are hashed as their UTF-8 bytes. ASCII strings (the common case for keys) are read
 * straight from their char codes; other strings are encoded into a reused scratch buffer.
 * Neither allocates.
 *
 * @packageDocumentation
 */
import { InvalidOptionError } from '../core/index.js';
import type { KeyHasher } from './types.js';
import { encodeUtf8Into } from './utf8.js';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mixK(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

function mixH(h: number, k: number): number {
  h ^= mixK(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** MurmurHash3's 32-bit finaliser: a bijection on 32 bits with full avalanche. @internal */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The finaliser as a signed 32-bit integer. Internal hashes stay int32 until the caller needs
 * the unsigned value: V8 keeps an int32 in a register (a "small integer"), while an unsigned
 * value above 2³¹ returned from a function that is not inlined is boxed as a heap number — an
 * allocation per lookup.
 */
function finish(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** MurmurHash3 x86_32 as a signed int32 (see `finish`). @internal */
export function murmur3Int(
  bytes: Uint8Array,
  seed = 0,
  offset = 0,
  length = bytes.length - offset,
): number {
  let h = seed | 0;
  const end = offset + (length & ~3);
  let i = offset;
  for (; i < end; i += 4) {
    const k =
      (bytes[i] as number) |
      ((bytes[i + 1] as number) << 8) |
      ((bytes[i + 2] as number) << 16) |
      ((bytes[i + 3] as number) << 24);
    h = mixH(h, k);
  }
  const tail = length & 3;
  if (tail !== 0) {
    let k = bytes[i] as number;
    if (tail > 1) k |= (bytes[i + 1] as number) << 8;
    if (tail > 2) k |= (bytes[i + 2] as number) << 16;
    h ^= mixK(k);
  }
  return finish(h, length);
}

/**
 * MurmurHash3 x86_32 of `bytes` (bytes `offset` … `offset + length − 1`).
 *
 * @example
 * ```ts
 * import { murmur3 } from 'keel/hashring';
 *
 * const h = murmur3(new TextEncoder().encode('order:42'));
 * console.log(h >>> 0 === h); // true: an unsigned 32-bit integer
 * ```
 */
export function murmur3(bytes: Uint8Array, seed = 0, offset = 0, length?: number): number {
  if (!(bytes instanceof Uint8Array)) {
    throw new InvalidOptionError('murmur3', 'bytes', 'a Uint8Array', bytes);
  }
  checkSeed('murmur3', seed);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > bytes.length) {
    throw new InvalidOptionError(
      'murmur3',
      'offset',
      `an integer from 0 to ${bytes.length}`,
      offset,
    );
  }
  const span = length ?? bytes.length - offset;
  if (!Number.isSafeInteger(span) || span < 0 || offset + span > bytes.length) {
    throw new InvalidOptionError(
      'murmur3',
      'length',
      `an integer from 0 to ${bytes.length - offset} (bytes.length - offset)`,
      length,
    );
  }
  return murmur3Int(bytes, seed, offset, span) >>> 0;
}

/** The seed of the public hash functions: a number (used as its low 32 bits, as `seed | 0`). */
function checkSeed(owner: string, seed: unknown): void {
  if (typeof seed !== 'number') {
    throw new InvalidOptionError(owner, 'seed', 'a number (its low 32 bits are used)', seed);
  }
}

const encoder = /* @__PURE__ */ new TextEncoder();
let scratch = /* @__PURE__ */ new Uint8Array(256);

/** Encodes `key` as UTF-8 into the shared scratch buffer; returns the byte length. */
function encodeScratch(key: string): number {
  // UTF-8 needs at most 3 bytes per UTF-16 code unit.
  if (scratch.length < key.length * 3) scratch = new Uint8Array(key.length * 3);
  return encodeUtf8Into(key, scratch);
}

/** MurmurHash3 x86_32 of a string's UTF-8 bytes as a signed int32. @internal */
export function murmur3StringInt(key: string, seed = 0): number {
  const length = key.length;
  let h = seed | 0;
  const end = length & ~3;
  let i = 0;
  for (; i < end; i += 4) {
    const a = key.charCodeAt(i);
    const b = key.charCodeAt(i + 1);
    const c = key.charCodeAt(i + 2);
    const d = key.charCodeAt(i + 3);
    if ((a | b | c | d) > 0x7f) return murmur3Utf8(key, seed);
    h = mixH(h, a | (b << 8) | (c << 16) | (d << 24));
  }
  const tail = length & 3;
  if (tail !== 0) {
    const a = key.charCodeAt(i);
    const b = tail > 1 ? key.charCodeAt(i + 1) : 0;
    const c = tail > 2 ? key.charCodeAt(i + 2) : 0;
    if ((a | b | c) > 0x7f) return murmur3Utf8(key, seed);
    h ^= mixK(a | (b << 8) | (c << 16));
  }
  return finish(h, length);
}

/**
 * MurmurHash3 x86_32 of the UTF-8 bytes of `key`, without allocating for ASCII keys.
 *
 * @example
 * ```ts
 * import { murmur3, murmur3String } from 'keel/hashring';
 *
 * const key = 'café';
 * console.log(murmur3String(key) === murmur3(new TextEncoder().encode(key))); // true
 * ```
 */
export function murmur3String(key: string, seed = 0): number {
  if (typeof key !== 'string') {
    throw new InvalidOptionError('murmur3String', 'key', 'a string', key);
  }
  checkSeed('murmur3String', seed);
  return murmur3StringInt(key, seed) >>> 0;
}

function murmur3Utf8(key: string, seed: number): number {
  const length = encodeScratch(key);
  return murmur3Int(scratch, seed, 0, length);
}

/** Keel's default key hasher: MurmurHash3 x86_32, seed 0. */
export const murmur3Hasher: KeyHasher = /* @__PURE__ */ Object.freeze({
  name: 'murmur3',
  string: (key: string) => murmur3String(key),
  bytes: (bytes: Uint8Array) => murmur3(bytes),
});

/** UTF-8 bytes of a string (allocates; for cold paths such as placing points). @internal */
export function utf8(key: string): Uint8Array {
  return encoder.encode(key);
}
