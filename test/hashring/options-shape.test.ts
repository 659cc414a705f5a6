import { describe, expect, it } from 'vitest';
import {
  HashRing,
  JumpHash,
  MaglevHash,
  PartitionedRing,
  RendezvousHash,
  murmur3,
} from '../../src/hashring/index.js';
import { InvalidOptionError } from '../../src/core/index.js';
import { invalidOption } from '../support/helpers.js';

// Issue 16 papercut: `new HashRing(['a','b'])` reported `invalid option "0"`. Every router takes
// one options object ({ nodes: [{ id }, ...] }); anything else must say so, naming `options`.
const routers: [string, (input: never) => unknown][] = [
  ['HashRing', (input) => new HashRing(input)],
  ['PartitionedRing', (input) => new PartitionedRing(input)],
  ['JumpHash', (input) => new JumpHash(input)],
  ['RendezvousHash', (input) => new RendezvousHash(input)],
  ['MaglevHash', (input) => new MaglevHash(input)],
];

describe('router constructors given something other than an options object', () => {
  for (const [owner, make] of routers) {
    it(`${owner}: an array of ids points to { nodes: [{ id }, ...] }`, () => {
      const error = invalidOption(() => make(['a', 'b'] as never));
      expect(error.owner).toBe(owner);
      expect(error.option).toBe('options');
      expect(error.expected).toBe('an options object ({ nodes: [...] })');
      expect(error.message).toContain(
        `${owner}: invalid option "options": expected an options object ({ nodes: [...] }), ` +
          'received an array of length 2',
      );
      expect(error.message).toContain(`new ${owner}({ nodes: [{ id: "a" }, { id: "b" }] })`);
    });

    it(`${owner}: an array of node objects, a string, a number and null are rejected too`, () => {
      const nodes = invalidOption(() => make([{ id: 'a' }] as never));
      expect(nodes.option).toBe('options');
      expect(nodes.message).toContain(`new ${owner}({ nodes: [...] })`);
      for (const input of ['a', 3, null, new Map()]) {
        const error = invalidOption(() => make(input as never));
        expect(error.option).toBe('options');
        expect(error.expected).toBe('an options object ({ nodes: [...] })');
      }
    });
  }
});

describe('a custom hash function that answers something other than a 32-bit integer', () => {
  const bad: [string, unknown][] = [
    ['a bigint', 5n],
    ['a string', '12'],
    ['NaN', Number.NaN],
    ['a fraction', 1.5],
    ['a number beyond 32 bits', 2 ** 40],
    ['undefined', undefined],
  ];
  for (const [what, answer] of bad) {
    it(`is an InvalidOptionError on "hash" when it returns ${what}`, () => {
      const hash = (() => answer) as unknown as (bytes: Uint8Array) => number;
      let caught: unknown;
      try {
        new HashRing({ nodes: [{ id: 'a' }], hash });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(InvalidOptionError);
      expect((caught as InvalidOptionError).option).toBe('hash');
    });
  }

  it('takes signed 32-bit answers as their two’s complement, the same ring as the unsigned ones', () => {
    const unsigned = (bytes: Uint8Array): number => murmur3(bytes);
    const signed = (bytes: Uint8Array): number => murmur3(bytes) | 0;
    const a = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }], hash: unsigned });
    const b = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }], hash: signed });
    for (let i = 0; i < 200; i++) expect(b.get(`key-${i}`)?.id).toBe(a.get(`key-${i}`)?.id);
  });
});
