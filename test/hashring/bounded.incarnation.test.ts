// A node removed and re-added under the same id is a new node (a new incarnation): assignments
// made to the old one left with it. Before, BoundedLoads kept loads by id only, so
// - a remove + re-add between two calls went unnoticed and the new node inherited the old load;
// - release(id) of an assignment made to the old node lowered the new node's count, so the new
//   node's count fell below its live assignments and the cap could be passed.
// Now loads are kept per incarnation; release(node) (the node assign() returned) is exact, and
// release(id) charges a departed incarnation's outstanding assignments first, so a count is never
// below the node's live assignments (the bound holds) and is exact once they are released.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BoundedLoads, HashRing, type RingNode } from '../../src/hashring/index.js';
import { invalidOption } from '../support/helpers.js';

const ids = ['a', 'b', 'c', 'd'];

describe('BoundedLoads across a remove and re-add of the same id', () => {
  it('the re-added node starts empty, even with no call between the removal and the re-add', () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }] });
    const loads = new BoundedLoads(ring);
    loads.assign('k1');
    loads.assign('k2');
    ring.remove('a');
    ring.add({ id: 'a' });
    expect(loads.load('a')).toBe(0);
    expect(loads.totalLoad).toBe(0);
    loads.assign('k3');
    expect(loads.load('a')).toBe(1);
    expect(loads.totalLoad).toBe(1);
  });

  it("release(id) of an old-incarnation assignment does not lower the new node's count", () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }] });
    const loads = new BoundedLoads(ring);
    const old = loads.assign('session:1') as RingNode;
    ring.remove(old.id);
    loads.assign('session:2'); // a call while the node is away
    ring.add({ id: old.id });
    const fresh = [0, 1, 2, 3, 4, 5, 6, 7]
      .map((i) => loads.assign(`new:${i}`) as RingNode)
      .filter((n) => n.id === old.id);
    expect(fresh.length).toBeGreaterThan(0);
    // The old session ends, released by id as before.
    loads.release(old.id);
    expect(loads.load(old.id)).toBeGreaterThanOrEqual(fresh.length);
    // …and by node, exactly.
    const ring2 = new HashRing({ nodes: [{ id: 'a' }] });
    const loads2 = new BoundedLoads(ring2);
    const first = loads2.assign('x') as RingNode;
    ring2.remove('a');
    ring2.add({ id: 'a' });
    loads2.assign('y');
    loads2.release(first);
    expect(loads2.load('a')).toBe(1);
    expect(loads2.totalLoad).toBe(1);
  });

  it('release(node) after setWeight still counts against the same node', () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }] });
    const loads = new BoundedLoads(ring);
    const node = loads.assign('k') as RingNode;
    ring.setWeight(node.id, 3);
    expect(loads.load(node.id)).toBe(1);
    loads.release(node);
    expect(loads.load(node.id)).toBe(0);
    expect(loads.totalLoad).toBe(0);
  });

  it('release refuses what is neither an id nor a node, and a node it never saw', () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }] });
    const loads = new BoundedLoads(ring);
    loads.assign('k');
    for (const bad of [undefined, null, 42, Symbol('a'), {}, { id: 'a' }]) {
      expect(invalidOption(() => loads.release(bad as unknown as string)).option).toBe('id');
    }
    expect(loads.load('a')).toBe(1);
    // The ring's own node for the id is taken as that node; a node of another ring is not.
    const other = new HashRing({ nodes: [{ id: 'a' }] }).node('a');
    expect(invalidOption(() => loads.release(other as RingNode)).option).toBe('id');
    loads.release(ring.node('a') as RingNode);
    expect(loads.load('a')).toBe(0);
  });

  type Op =
    | { kind: 'assign'; key: number }
    | { kind: 'release'; which: number; byId: boolean }
    | { kind: 'remove'; id: string }
    | { kind: 'add'; id: string; weight: number }
    | { kind: 'weight'; id: string; weight: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('assign' as const), key: fc.nat(500) }) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('release' as const),
        which: fc.nat(),
        byId: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('remove' as const), id: fc.constantFrom(...ids) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('add' as const),
        id: fc.constantFrom(...ids),
        weight: fc.constantFrom(0.5, 1, 2),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('weight' as const),
        id: fc.constantFrom(...ids),
        weight: fc.constantFrom(0.5, 1, 2),
      }),
    },
  );

  // The invariants, over any interleaving of assign, release (by node or by id), remove, re-add
  // and weight changes, with a model that knows each assignment's incarnation:
  // - with releases by node only, each live node's count equals its live assignments;
  // - with releases by id too, a count is never below the live assignments (so the cap is never
  //   passed by the true load), and counts are exact once every departed assignment is released;
  // - no assignment pushes a node's count past the cap it had just before.
  it('counts follow the live assignments per incarnation, and the bound holds', () => {
    fc.assert(
      fc.property(
        fc.array(op, { minLength: 10, maxLength: 120, size: 'max' }),
        fc.boolean(),
        fc.double({ min: 1.05, max: 2, noNaN: true }),
        (ops, allowById, c) => {
          const ring = new HashRing({ nodes: ids.slice(0, 3).map((id) => ({ id })) });
          const loads = new BoundedLoads(ring, { c });
          const incarnation = new Map<string, number>(ids.slice(0, 3).map((id) => [id, 0]));
          const held: { node: RingNode; id: string; inc: number }[] = [];
          let anyById = false;
          const liveOf = (id: string): number =>
            held.filter((h) => h.id === id && h.inc === incarnation.get(id)).length;
          for (const o of ops) {
            if (o.kind === 'assign') {
              const before = new Map(ring.nodes().map((n) => [n.id, loads.capOf(n.id)]));
              const node = loads.assign(`k${o.key}`);
              if (ring.size === 0) {
                expect(node).toBeUndefined();
                continue;
              }
              const n = node as RingNode;
              expect(loads.load(n.id)).toBeLessThanOrEqual(before.get(n.id) as number);
              held.push({ node: n, id: n.id, inc: incarnation.get(n.id) as number });
            } else if (o.kind === 'release') {
              if (held.length === 0) continue;
              const [h] = held.splice(o.which % held.length, 1);
              const byId = allowById && o.byId;
              anyById ||= byId;
              loads.release(byId ? (h?.id as string) : (h?.node as RingNode));
            } else if (o.kind === 'remove') {
              if (ring.remove(o.id)) incarnation.delete(o.id);
            } else if (o.kind === 'add') {
              if (ring.has(o.id)) continue;
              ring.add({ id: o.id, weight: o.weight });
              incarnation.set(o.id, (incarnation.get(`${o.id}#`) ?? 0) + 1);
              incarnation.set(`${o.id}#`, incarnation.get(o.id) as number);
            } else if (ring.has(o.id)) {
              ring.setWeight(o.id, o.weight);
            }
            let total = 0;
            for (const node of ring.nodes()) {
              const live = liveOf(node.id);
              if (anyById) expect(loads.load(node.id)).toBeGreaterThanOrEqual(live);
              else expect(loads.load(node.id)).toBe(live);
              total += live;
            }
            if (anyById) expect(loads.totalLoad).toBeGreaterThanOrEqual(total);
            else expect(loads.totalLoad).toBe(total);
          }
          // Every departed assignment released: the counts are exact whichever way releases came.
          for (const h of [...held]) {
            if (h.inc !== incarnation.get(h.id)) {
              held.splice(held.indexOf(h), 1);
              loads.release(allowById ? h.id : h.node);
            }
          }
          for (const node of ring.nodes()) expect(loads.load(node.id)).toBe(liveOf(node.id));
          expect(loads.totalLoad).toBe(held.length);
        },
      ),
      { numRuns: 150 },
    );
  });
});
