// An assignment can end after its node left the ring (a session that outlives its server). Its
// release must not depend on whether some other assign() ran in between: before, it was a
// no-op-like decrement if none had, and an InvalidOptionError ("an integer from 1 to 0") if
// one had (assign() forgets the loads of departed nodes). Now it is always a no-op: the load
// left with the node. Bookkeeping errors on nodes still on the ring are still refused.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isInvalidOptionError } from '../../src/core/index.js';
import { BoundedLoads, HashRing } from '../../src/hashring/index.js';
import { thrown } from '../support/helpers.js';

describe('BoundedLoads.release after the node left the ring', () => {
  it('is a no-op whether or not an assign() ran in between', () => {
    for (const assignBetween of [false, true]) {
      const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] });
      const loads = new BoundedLoads(ring);
      const node = loads.assign('session:1');
      const id = node?.id as string;
      ring.remove(id);
      if (assignBetween) loads.assign('session:2');
      loads.release(id);
      expect(loads.load(id)).toBe(0);
      expect(loads.totalLoad).toBe(assignBetween ? 1 : 0);
    }
  });

  it('any interleaving of assign, release of a held assignment, and node removal: never throws, totals add up, caps hold', () => {
    const ids = ['a', 'b', 'c', 'd', 'e'];
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('assign' as const), key: fc.nat(1_000) }),
            fc.record({ kind: fc.constant('release' as const), which: fc.nat() }),
            fc.record({ kind: fc.constant('remove' as const), id: fc.constantFrom(...ids) }),
          ),
          { maxLength: 80 },
        ),
        (ops) => {
          const ring = new HashRing({ nodes: ids.map((id) => ({ id })) });
          const loads = new BoundedLoads(ring, { c: 1.25 });
          const held: string[] = [];
          for (const op of ops) {
            if (op.kind === 'assign') {
              const node = loads.assign(`k${op.key}`);
              if (node !== undefined) {
                held.push(node.id);
                expect(loads.load(node.id)).toBeLessThanOrEqual(Math.max(1, loads.capOf(node.id)));
              }
            } else if (op.kind === 'release') {
              if (held.length === 0) continue;
              const [id] = held.splice(op.which % held.length, 1);
              loads.release(id as string);
            } else if (ring.size > 1) {
              ring.remove(op.id);
            }
          }
          const live = held.filter((id) => ring.has(id));
          for (const id of ids) {
            if (ring.has(id)) expect(loads.load(id)).toBe(live.filter((x) => x === id).length);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('still refuses releasing more than a node on the ring holds, and a bad count', () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }] });
    const loads = new BoundedLoads(ring);
    loads.assign('x');
    expect(isInvalidOptionError(thrown(() => loads.release('a', 2)))).toBe(true);
    expect(isInvalidOptionError(thrown(() => loads.release('gone', 0)))).toBe(true);
    expect(isInvalidOptionError(thrown(() => loads.release('gone', 1.5)))).toBe(true);
    expect(loads.load('a')).toBe(1);
  });
});
