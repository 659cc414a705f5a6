import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HashRing, loadXxhash } from '../../src/hashring/index.js';

describe('xxhash hashers', () => {
  it('load once and hash strings exactly as their UTF-8 bytes', async () => {
    const first = await loadXxhash();
    expect(await loadXxhash()).toBe(first);
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), (key) => {
        const bytes = encoder.encode(key);
        expect(first.xxh32.string(key)).toBe(first.xxh32.bytes(bytes));
        expect(first.xxh64.string(key)).toBe(first.xxh64.bytes(bytes));
        expect(first.xxh32.string(key) >>> 0).toBe(first.xxh32.string(key));
      }),
    );
  });

  it('give the published XXH32 / XXH64 values', async () => {
    const { xxh32, xxh64 } = await loadXxhash();
    // XXH32("", 0) = 0x02CC5D05; XXH64("", 0) = 0xEF46DB3751D8E999 (low 32 bits 0x51D8E999).
    expect(xxh32.string('')).toBe(0x02cc5d05);
    expect(xxh64.string('')).toBe(0x51d8e999);
    // The CommonJS build of xxhash-wasm agrees with the ESM one we load.
    const require = createRequire(import.meta.url);
    const cjs = (await (require('xxhash-wasm') as () => Promise<{ h32(s: string): number }>)()).h32(
      'abc',
    );
    expect(xxh32.string('abc')).toBe(cjs);
  });

  it('can drive a ring', async () => {
    const { xxh32 } = await loadXxhash();
    const ring = new HashRing({ hash: xxh32, nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] });
    expect(ring.hashName).toBe('xxh32');
    expect(ring.get('k')).toBeDefined();
    const copy = HashRing.fromJSON(ring.toJSON(), { hash: xxh32 });
    expect(copy.fingerprint).toBe(ring.fingerprint);
  });
});
