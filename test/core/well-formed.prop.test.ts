// One lone-surrogate check for every component that refuses such names (hashring node ids,
// lock resource names and key prefixes). It must agree exactly with the regex /\p{Cs}/u.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isWellFormedText } from '../../src/core/index.js';

describe('isWellFormedText', () => {
  it('is false exactly when the string has a lone surrogate (as /\\p{Cs}/u finds)', () => {
    const unit = fc.oneof(
      fc.constantFrom('\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\uD83D\uDE00', 'a', '\uFFFD', ''),
      fc.string({ unit: 'binary', maxLength: 4 }),
    );
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 8 }), (parts) => {
        const text = parts.join('');
        expect(isWellFormedText(text)).toBe(!/\p{Cs}/u.test(text));
      }),
      { numRuns: 2_000 },
    );
    expect(isWellFormedText('n\uD800')).toBe(false);
    expect(isWellFormedText('\uDC00n')).toBe(false);
    expect(isWellFormedText('\uD83D\uDE00')).toBe(true);
  });
});
