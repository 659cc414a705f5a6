import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BoundedLoads, HashRing, PartitionedRing } from '../../src/hashring/index.js';
import { nodeSet } from './arbitraries.js';

// The invariant bounded loads exist for: no node ever exceeds its cap, under any sequence of
// assignments and releases, for any c > 1 and any weights.
describe('bounded loads (properties)', () => {
  it('no assignment ever pushes a node above its cap', () => {
    fc.assert(
      fc.property(
        nodeSet(8, 1),
        fc.double({ min: 1.01, max: 3, noNaN: true }),
        fc.array(
          fc.oneof(
            fc.string({ maxLength: 10 }).map((k) => ({ assign: k })),
            fc.nat().map((n) => ({ release: n })),
          ),
          {
            maxLength: 300,
          },
        ),
        (nodes, c, ops) => {
          const ring = new HashRing({ nodes, pointsPerWeight: 20 });
          const loads = new BoundedLoads(ring, { c });
          const held: string[] = [];
          for (const op of ops) {
            if ('assign' in op) {
              const caps = new Map(nodes.map((n) => [n.id, loads.capOf(n.id)]));
              const node = loads.assign(op.assign);
              expect(node).toBeDefined();
              const id = node?.id ?? '';
              expect(loads.load(id)).toBeLessThanOrEqual(caps.get(id) ?? -1);
              held.push(id);
            } else if (held.length > 0) {
              const [id] = held.splice(op.release % held.length, 1);
              loads.release(id ?? '');
            }
          }
          expect(loads.totalLoad).toBe(held.length);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('every partition has an owner and no node owns more than its cap', () => {
    fc.assert(
      fc.property(
        nodeSet(8, 1),
        fc.integer({ min: 1, max: 600 }),
        fc.double({ min: 1.01, max: 2, noNaN: true }),
        (nodes, partitionCount, c) => {
          const ring = new PartitionedRing({ nodes, partitionCount, c, pointsPerWeight: 20 });
          let total = 0;
          for (const node of nodes) {
            const owned = ring.partitionsOf(node.id).length;
            expect(owned).toBeLessThanOrEqual(ring.capOf(node.id));
            total += owned;
          }
          expect(total).toBe(partitionCount);
        },
      ),
      { numRuns: 60 },
    );
  });
});
