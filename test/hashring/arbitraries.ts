import fc from 'fast-check';
import type { NodeSpec } from '../../src/hashring/index.js';

/** Node ids: short, unique, including non-ASCII and prefix-related ids ("a", "a-1"). */
export const nodeId = fc.oneof(
  fc.string({ minLength: 1, maxLength: 8 }),
  fc.constantFrom('a', 'a-1', 'a-10', 'b', 'node-1', 'node-10', 'cache:11211', 'zoë'),
);

/** A node with a weight from a small set (including fractional) and an optional zone. */
export const nodeSpec = (id: string): fc.Arbitrary<NodeSpec<number>> =>
  fc
    .record(
      {
        weight: fc.constantFrom(0.5, 1, 1, 1, 2, 3),
        zone: fc.constantFrom('z1', 'z2', 'z3'),
        data: fc.nat(),
      },
      { requiredKeys: ['weight'] },
    )
    .map((rest) => ({ id, ...rest }));

/** 0 to `max` nodes with unique ids. */
export const nodeSet = (max = 8, min = 0): fc.Arbitrary<NodeSpec<number>[]> =>
  fc
    .uniqueArray(nodeId, { minLength: min, maxLength: max })
    .chain((ids) => (ids.length === 0 ? fc.constant([]) : fc.tuple(...ids.map(nodeSpec))));

/** Keys: strings (ASCII and not) and raw bytes. */
export const key = fc.oneof(
  fc.string({ maxLength: 24 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.uint8Array({ maxLength: 24 }),
);

export const keys = fc.array(key, { minLength: 1, maxLength: 60 });
