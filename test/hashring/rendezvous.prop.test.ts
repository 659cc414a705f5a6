import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Key, NodeSpec } from '../../src/hashring/types.js';
import { RendezvousHash } from '../../src/hashring/rendezvous.js';
import { key as keyArb, keys as keysArb, nodeId, nodeSet, nodeSpec } from './arbitraries.js';
import { shuffled } from '../support/helpers.js';

const owners = (router: RendezvousHash<number>, keys: readonly Key[]): (string | undefined)[] =>
  keys.map((k) => router.get(k)?.id);

const ids = (nodes: readonly { id: string }[]): string[] => nodes.map((n) => n.id);

/** Node sets plus one extra node whose id is not in the set. */
const setAndNewcomer = nodeSet(10).chain((nodes) =>
  nodeId
    .filter((id) => !nodes.some((n) => n.id === id))
    .chain(nodeSpec)
    .map((extra) => ({ nodes, extra })),
);

// Rendezvous hashing exists for minimal disruption with nested replica sets: a change touches
// only the keys of the node that changed, and the top-n lists are prefixes of one ranking.
describe('RendezvousHash (properties)', () => {
  it('is deterministic and independent of insertion order', () => {
    fc.assert(
      fc.property(nodeSet(10), keysArb, fc.nat(), (nodes, keys, seed) => {
        const a = new RendezvousHash({ nodes });
        const b = new RendezvousHash({ nodes: shuffled(nodes, seed) });
        const c = new RendezvousHash<number>();
        for (const node of shuffled(nodes, seed + 1)) c.add(node);
        expect(owners(b, keys)).toEqual(owners(a, keys));
        expect(owners(c, keys)).toEqual(owners(a, keys));
        for (const k of keys.slice(0, 10)) {
          expect(ids(b.getN(k, Infinity))).toEqual(ids(a.getN(k, Infinity)));
          expect(ids(c.getN(k, Infinity))).toEqual(ids(a.getN(k, Infinity)));
        }
      }),
      { numRuns: 80 },
    );
  });

  it('getN returns min(n, size) distinct nodes, owner first, each a prefix of the next', () => {
    fc.assert(
      fc.property(nodeSet(12), keyArb, fc.nat({ max: 14 }), (nodes, key, n) => {
        const router = new RendezvousHash({ nodes });
        const set = router.getN(key, n);
        expect(set).toHaveLength(Math.min(n, nodes.length));
        expect(new Set(ids(set)).size).toBe(set.length);
        if (set.length > 0) expect(set[0]).toBe(router.get(key));
        expect(router.getN(key, n + 1).slice(0, set.length)).toEqual(set);
        const bytes = typeof key === 'string' ? new TextEncoder().encode(key) : key;
        expect(router.getN(bytes, n)).toEqual(set);
      }),
      { numRuns: 200 },
    );
  });

  it('adding a node moves keys only to it; removing it restores every key', () => {
    fc.assert(
      fc.property(setAndNewcomer, keysArb, ({ nodes, extra }, keys) => {
        const router = new RendezvousHash({ nodes });
        const before = owners(router, keys);
        const beforeSets = keys.map((k) => ids(router.getN(k, 3)));
        router.add(extra);
        const after = owners(router, keys);
        keys.forEach((k, i) => {
          if (after[i] !== before[i]) expect(after[i]).toBe(extra.id);
          // Replica sets: the newcomer is inserted into the old ranking, nothing else changes.
          const now = ids(router.getN(k, 3)).filter((id) => id !== extra.id);
          expect(now).toEqual((beforeSets[i] ?? []).slice(0, now.length));
        });
        router.remove(extra.id);
        expect(owners(router, keys)).toEqual(before);
      }),
      { numRuns: 100 },
    );
  });

  it('removing a node moves only its keys, and replica sets lose only that node', () => {
    fc.assert(
      fc.property(nodeSet(10, 1), keysArb, fc.nat(), (nodes, keys, pick) => {
        const router = new RendezvousHash({ nodes });
        const victim = (nodes[pick % nodes.length] as NodeSpec<number>).id;
        const before = owners(router, keys);
        const ranking = keys.map((k) => ids(router.getN(k, Infinity)));
        router.remove(victim);
        keys.forEach((k, i) => {
          if (before[i] !== victim) expect(router.get(k)?.id).toBe(before[i]);
          expect(ids(router.getN(k, Infinity))).toEqual(
            (ranking[i] ?? []).filter((id) => id !== victim),
          );
        });
      }),
      { numRuns: 100 },
    );
  });

  it('setWeight moves keys only to a node whose weight rises, only away when it falls', () => {
    fc.assert(
      fc.property(
        nodeSet(8, 2),
        keysArb,
        fc.nat(),
        fc.constantFrom(0.25, 0.5, 2, 3, 10),
        (nodes, keys, pick, factor) => {
          const router = new RendezvousHash({ nodes });
          const target = nodes[pick % nodes.length] as NodeSpec<number>;
          const before = owners(router, keys);
          router.setWeight(target.id, (target.weight ?? 1) * factor);
          keys.forEach((k, i) => {
            const now = router.get(k)?.id;
            if (now === before[i]) return;
            if (factor > 1) expect(now).toBe(target.id);
            else expect(before[i]).toBe(target.id);
          });
          // The result equals a fresh build with the new weight.
          const fresh = new RendezvousHash({
            nodes: nodes.map((n) =>
              n.id === target.id ? { ...n, weight: (target.weight ?? 1) * factor } : n,
            ),
          });
          expect(owners(router, keys)).toEqual(owners(fresh, keys));
        },
      ),
      { numRuns: 100 },
    );
  });

  it('shares follow weights (logarithmic method) within a binomial tolerance', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(0.5, 1, 2, 3, 5), { minLength: 2, maxLength: 5 }),
        fc.string({ maxLength: 4 }),
        (weights, salt) => {
          const router = new RendezvousHash({
            nodes: weights.map((weight, i) => ({ id: `${salt}n${i}`, weight })),
          });
          const total = 4000;
          const counts = new Map<string, number>();
          for (let i = 0; i < total; i++) {
            const id = router.get(`${salt}:${i}`)?.id ?? '';
            counts.set(id, (counts.get(id) ?? 0) + 1);
          }
          const sum = weights.reduce((a, b) => a + b, 0);
          weights.forEach((weight, i) => {
            const p = weight / sum;
            const sigma = Math.sqrt(total * p * (1 - p));
            const count = counts.get(`${salt}n${i}`) ?? 0;
            expect(Math.abs(count - total * p)).toBeLessThanOrEqual(6 * sigma + 1);
          });
        },
      ),
      { numRuns: 25 },
    );
  });
});
