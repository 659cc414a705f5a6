import fc from 'fast-check';
import { expect, it } from 'vitest';
import { Redlock, type LockClient } from '../../src/lock/index.js';
import { keySlot } from '../../src/lock/slot.js';

// The key scheme of a Redlock, as a property over resource names and prefixes: no resource's
// keys (lock, fencing counter, semaphore and its quarantine) are another resource's, none is a
// node-wide key (the incarnation key and the repair sessions of fencing), and every key of one
// resource lives in one Redis Cluster slot. (Pure: no command is sent.)

/** A client that is never called (keyOf sends nothing). */
const idle: LockClient = {
  evalsha: () => Promise.reject(new Error('no command may be sent')),
  eval: () => Promise.reject(new Error('no command may be sent')),
};

/** Every key `redlock` uses for resource (or semaphore name) `r`. */
const keysOf = (redlock: Redlock, r: string): string[] => {
  const lock = redlock.keyOf(r);
  return [lock, `${lock}:fence`, `${lock}:semaphore`, `${lock}:semaphore:quarantine`];
};

// Names built from the characters that matter: braces (hash tags), the separator, and the
// letters of every suffix the scheme uses.
const name = fc.string({
  unit: fc.constantFrom(
    '{',
    '}',
    ':',
    'f',
    'e',
    'n',
    'c',
    'l',
    'o',
    'k',
    's',
    'a',
    'x',
    'w',
    'i',
    'g',
  ),
  minLength: 1,
  maxLength: 14,
});
// Not empty: an empty keyPrefix is refused (see inputs.test.ts).
const prefix = fc.oneof(
  fc.constantFrom('keel:lock:', 'app:{locks}:', '{', '}', 'x{'),
  fc.string({ unit: fc.constantFrom('{', '}', ':', 'a'), minLength: 1, maxLength: 6 }),
);

it('no resource name reaches another resource’s keys or a node-wide key, and each resource’s keys share a slot', () => {
  fc.assert(
    fc.property(prefix, name, name, (keyPrefix, a, b) => {
      fc.pre(a !== b);
      const redlock = new Redlock({ clients: [idle], keyPrefix });
      const mine = keysOf(redlock, a);
      const theirs = keysOf(redlock, b);
      const nodeWide = [`${keyPrefix}incarnation`, `${keyPrefix}repairing`];
      const all = [...mine, ...theirs, ...nodeWide];
      expect(new Set(all).size, JSON.stringify(all)).toBe(all.length);
      // One slot — except where no hash tag can be made: a prefix whose first `{` is directly
      // followed by `}`, or a name that starts with `}` (`{}…` is no tag), which Redis Cluster
      // hashes whole.
      const tagless =
        /^[^{]*\{\}/.test(keyPrefix) || (!keyPrefix.includes('{') && a.startsWith('}'));
      if (!tagless) expect(new Set(mine.map(keySlot)).size, JSON.stringify(mine)).toBe(1);
    }),
    { numRuns: 3000 },
  );
});

it('the name from issue 13 — `{f}:fence` — is not the fencing counter of `f`', () => {
  const redlock = new Redlock({ clients: [idle] });
  expect(redlock.keyOf('{f}:fence')).not.toBe(`${redlock.keyOf('f')}:fence`);
  expect(keysOf(redlock, 'f')).not.toContain(redlock.keyOf('{f}:fence'));
});
