import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope, makeEntry } from '../../src/cache/entry.js';

/**
 * The envelope header is read character by character (no regular expression, nothing
 * allocated): it must accept exactly what the header's grammar — written here as the regular
 * expression the reader replaced — accepts, with the same numbers and the same reasons.
 */
const GRAMMAR = /^k1\|(\d{1,16})\|(\d{1,16})\|(\d{1,16})\|(\d{1,12})\|([vn])$/;

function byGrammar(raw: string): unknown {
  const newline = raw.indexOf('\n');
  if (newline === -1) return { malformed: 'no envelope header' };
  const match = GRAMMAR.exec(raw.slice(0, newline));
  if (match === null) return { malformed: 'unknown envelope header' };
  const [freshUntil, staleUntil, graceUntil] = [match[1], match[2], match[3]].map(Number) as [
    number,
    number,
    number,
  ];
  if (!(freshUntil <= staleUntil && staleUntil <= graceUntil)) {
    return { malformed: 'envelope deadlines out of order' };
  }
  const negative = match[5] === 'n';
  const payload = raw.slice(newline + 1);
  if (negative && payload !== '') return { malformed: 'negative entry with a payload' };
  return { negative, freshUntil, staleUntil, graceUntil, deltaMs: Number(match[4]), payload };
}

const digits = (max: number): fc.Arbitrary<string> =>
  fc.oneof(
    fc
      .integer({ min: 0, max: max + 2 })
      .chain((length) =>
        fc
          .array(fc.integer({ min: 0, max: 9 }), { minLength: length, maxLength: length })
          .map((chars) => chars.join('')),
      ),
    fc.nat().map(String),
    fc.constantFrom('', '-1', '1.5', ' 1', '１'),
  );

/** Texts near the grammar: mostly well formed, with every part sometimes wrong. */
const nearHeader: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom('k1', 'k1', 'k1', 'k2', 'K1', 'k', ''),
    digits(16),
    digits(16),
    digits(16),
    digits(12),
    fc.constantFrom('v', 'n', 'v', 'x', 'vv', ''),
    fc.constantFrom('|', '|', '|', '||', ':'),
    fc.constantFrom('\n', '\n', '\r\n', ''),
    fc.oneof(fc.constant(''), fc.json(), fc.string()),
  )
  .map(
    ([tag, a, b, c, d, kind, sep, newline, payload]) =>
      `${tag}${sep}${a}|${b}|${c}|${d}|${kind}${newline}${payload}`,
  );

describe('cache envelope header', () => {
  it('accepts exactly what its grammar accepts, with the same fields and reasons', () => {
    fc.assert(
      fc.property(fc.oneof(nearHeader, fc.string()), (raw) => {
        expect(decodeEnvelope(raw)).toEqual(byGrammar(raw));
      }),
      { numRuns: 5_000 },
    );
  });

  it('reads back what it writes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 45 }),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        (now, ttlMs, staleMs, deltaMs) => {
          const entry = makeEntry({ n: 1 }, false, now, { ttlMs, staleMs, graceMs: 0 }, deltaMs);
          const text = encodeEnvelope(entry, '{"n":1}');
          expect(decodeEnvelope(text)).toEqual({
            negative: false,
            freshUntil: now + ttlMs,
            staleUntil: now + ttlMs + staleMs,
            graceUntil: now + ttlMs + staleMs,
            deltaMs,
            payload: '{"n":1}',
          });
        },
      ),
    );
  });
});
