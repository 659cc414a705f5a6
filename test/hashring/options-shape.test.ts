import { describe, expect, it } from 'vitest';
import {
  HashRing,
  JumpHash,
  MaglevHash,
  PartitionedRing,
  RendezvousHash,
} from '../../src/hashring/index.js';
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
