import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeUtf8Into } from '../../src/hashring/utf8.js';

// Invariant: the allocation-free encoder produces exactly TextEncoder's bytes for every
// string, lone surrogates included.
describe('encodeUtf8Into (property)', () => {
  it('matches TextEncoder for any string', () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.string({ unit: 'grapheme', maxLength: 20 }),
          fc.string({
            unit: fc.constantFrom('a', '\ud800', '\udc00', 'é', '€', '😀', '\uffff'),
            maxLength: 12,
          }),
        ),
        (text) => {
          const buffer = new Uint8Array(text.length * 3);
          const written = encodeUtf8Into(text, buffer);
          expect([...buffer.subarray(0, written)]).toEqual([...encoder.encode(text)]);
        },
      ),
      { numRuns: 500 },
    );
  });
});
