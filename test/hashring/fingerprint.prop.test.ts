// HashRing.fingerprint is what processes compare to check that they route alike, and what
// fromJSON checks a snapshot against. It digested the points and their owners' ids only, so two
// rings that place keys differently had one fingerprint:
// - zones: getN(key, n, { distinctZones: true }) picks replicas by zone;
// - weights that round to the same point count (1 and 1.001 at 160 points per unit): the
//   bounded-load caps (BoundedLoads, boundedGet, PartitionedRing) follow the weights.
// A snapshot whose zones or weights were edited also passed fromJSON's fingerprint check.
// The invariant: equal fingerprints ⇒ identical placement, replica sets and bounded caps.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BoundedLoads,
  HashRing,
  PartitionedRing,
  isInvalidSnapshotError,
  type NodeSpec,
} from '../../src/hashring/index.js';
import { keys as keysArb, nodeSet } from './arbitraries.js';
import { thrown } from '../support/helpers.js';

type Spec = NodeSpec<number>;

/** A copy of `nodes` with some zones and weights changed (weights possibly by a hair). */
const variant = (nodes: Spec[]): fc.Arbitrary<Spec[]> =>
  fc
    .array(
      fc.record({
        zone: fc.constantFrom(undefined, 'z1', 'z2', 'z3', ''),
        weight: fc.constantFrom(undefined, 1e-9, 0.001, 1),
        keepZone: fc.boolean(),
        keepWeight: fc.boolean(),
      }),
      { minLength: nodes.length, maxLength: nodes.length },
    )
    .map((changes) =>
      nodes.map((node, i) => {
        const change = changes[i] as (typeof changes)[number];
        const out: {
          id: string;
          weight?: number | undefined;
          zone?: string | undefined;
          data?: number | undefined;
        } = { ...node };
        if (!change.keepZone) {
          if (change.zone === undefined) delete out.zone;
          else out.zone = change.zone;
        }
        if (!change.keepWeight && change.weight !== undefined) {
          out.weight = (node.weight ?? 1) + change.weight;
        }
        return out;
      }),
    );

const placement = (ring: HashRing<number>, keys: readonly unknown[]): unknown[] => {
  const n = Math.min(3, ring.size);
  const loads = new BoundedLoads(ring, { c: 1.1 });
  return keys.map((k) => {
    const key = k as string;
    return [
      ring.get(key)?.id,
      ring.getN(key, n).map((x) => x.id),
      ring.getN(key, n, { distinctZones: true }).map((x) => x.id),
      loads.assign(key)?.id,
    ];
  });
};

describe('HashRing.fingerprint (properties)', () => {
  it('equal fingerprints ⇒ identical placement, replica sets (by zone too) and bounded caps', () => {
    fc.assert(
      fc.property(
        nodeSet(6, 1).chain((nodes) => fc.tuple(fc.constant(nodes), variant(nodes))),
        keysArb,
        fc.integer({ min: 1, max: 40 }),
        ([nodes, other], keys, partitionCount) => {
          const a = new HashRing({ nodes });
          const b = new HashRing({ nodes: other });
          if (a.fingerprint !== b.fingerprint) return;
          expect(placement(b, keys)).toEqual(placement(a, keys));
          for (const node of a.nodes()) {
            expect(b.node(node.id)).toEqual(node);
          }
          const pa = new PartitionedRing({ nodes, partitionCount });
          const pb = new PartitionedRing({ nodes: other, partitionCount });
          for (let p = 0; p < partitionCount; p++) {
            expect(pb.ownerOf(p)?.id).toBe(pa.ownerOf(p)?.id);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a zone or a weight that changes no point still changes the fingerprint', () => {
    const base = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] });
    const zoned = new HashRing({ nodes: [{ id: 'a', zone: 'z1' }, { id: 'b' }, { id: 'c' }] });
    const heavier = new HashRing({ nodes: [{ id: 'a', weight: 1.001 }, { id: 'b' }, { id: 'c' }] });
    expect(zoned.pointsOf('a')).toEqual(base.pointsOf('a'));
    expect(heavier.pointsOf('a')).toEqual(base.pointsOf('a'));
    expect(zoned.fingerprint).not.toBe(base.fingerprint);
    expect(heavier.fingerprint).not.toBe(base.fingerprint);
    // Zones are not refused for lone surrogates; two such zones are still two zones.
    expect(new HashRing({ nodes: [{ id: 'a', zone: 'z\uD800' }] }).fingerprint).not.toBe(
      new HashRing({ nodes: [{ id: 'a', zone: 'z\uDC00' }] }).fingerprint,
    );
    expect(new HashRing({ nodes: [{ id: 'a', zone: '' }] }).fingerprint).not.toBe(
      new HashRing({ nodes: [{ id: 'a' }] }).fingerprint,
    );
  });

  it('fromJSON refuses a snapshot whose zones or weights were edited', () => {
    const ring = new HashRing({
      nodes: [
        { id: 'a', zone: 'z1' },
        { id: 'b', zone: 'z2' },
      ],
    });
    const snapshot = ring.toJSON();
    const edited = {
      ...snapshot,
      nodes: snapshot.nodes.map((n) => (n.id === 'a' ? { ...n, zone: 'z2' } : n)),
    };
    const error = thrown(() => HashRing.fromJSON(edited));
    expect(isInvalidSnapshotError(error)).toBe(true);
    expect((error as { path: string }).path).toBe('fingerprint');
    const reweighted = {
      ...snapshot,
      nodes: snapshot.nodes.map((n) => (n.id === 'a' ? { ...n, weight: 1.001 } : n)),
    };
    expect((thrown(() => HashRing.fromJSON(reweighted)) as { path: string }).path).toBe(
      'fingerprint',
    );
    expect(HashRing.fromJSON(snapshot).fingerprint).toBe(ring.fingerprint);
  });
});
