import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { md5Into, md5StringInto } from '../../src/hashring/md5.js';

function words(digest: Buffer): number[] {
  return [0, 1, 2, 3].map((i) => digest.readUInt32LE(i * 4));
}

// Invariant: the allocation-free MD5 used by the ketama modes is MD5 (checked against
// node:crypto) for every length, including the padding boundaries at 55/56/63/64 bytes.
describe('md5 (property)', () => {
  it('matches node:crypto on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const out = new Uint32Array(4);
        md5Into(bytes, 0, bytes.length, out);
        expect([...out]).toEqual(words(createHash('md5').update(bytes).digest()));
      }),
      { numRuns: 300 },
    );
  });

  it('matches node:crypto on strings (UTF-8)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 100 }), (text) => {
        const out = new Uint32Array(4);
        md5StringInto(text, out);
        expect([...out]).toEqual(words(createHash('md5').update(text, 'utf8').digest()));
      }),
      { numRuns: 300 },
    );
  });

  it('is right at every padding boundary and for the RFC 1321 test suite', () => {
    const out = new Uint32Array(4);
    for (let n = 0; n <= 130; n++) {
      const bytes = new Uint8Array(n).fill(97);
      md5Into(bytes, 0, n, out);
      expect([...out]).toEqual(words(createHash('md5').update(bytes).digest()));
    }
    const hex = (text: string): string =>
      Buffer.from(new Uint32Array(md5StringInto(text, new Uint32Array(4))).buffer).toString('hex');
    expect(hex('')).toBe('d41d8cd98f00b204e9800998ecf8427e');
    expect(hex('abc')).toBe('900150983cd24fb0d6963f7d28e17f72');
    expect(hex('message digest')).toBe('f96b697d7cb7938d525a2f31aaf161d0');
  });
});
