import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MaglevHash } from '../../src/hashring/maglev.js';
import type { Key, NodeSpec } from '../../src/hashring/types.js';
import { key as keyArb, keys as keysArb, nodeId, nodeSet, nodeSpec } from './arbitraries.js';
import { seededRandom, shuffled } from '../support/helpers.js';

const owners = (router: MaglevHash<number>, keys: readonly Key[]): (string | undefined)[] =>
  keys.map((k) => router.get(k)?.id);

const ids = (nodes: readonly { id: string }[]): string[] => nodes.map((n) => n.id);

/** Sieve of Eratosthenes up to `max`: the independent oracle for the table-size check. */
function sieve(max: number): Uint8Array {
  const prime = new Uint8Array(max + 1).fill(1);
  prime[0] = 0;
  prime[1] = 0;
  for (let p = 2; p * p <= max; p++) {
    if (prime[p] === 1) for (let q = p * p; q <= max; q += p) prime[q] = 0;
  }
  return prime;
}

function smallestPrimeAtLeast(n: number, primes: Uint8Array): number {
  while (primes[n] !== 1) n++;
  return n;
}

const PRIMES = sieve(20_000);
/** Small prime tables keep the properties fast; 65537 is the paper's (and the default) size. */
const tableSize = fc.constantFrom(11, 101, 251, 1009, 4099, 65537);

// Maglev hashing exists for O(1) lookups with near-perfect balance and small disruption: the
// table is always full, shares match weights, and a change moves few keys beyond its own.
describe('MaglevHash (properties)', () => {
  it('is deterministic and independent of insertion order', () => {
    fc.assert(
      fc.property(nodeSet(8), tableSize, keysArb, fc.nat(), (nodes, m, keys, seed) => {
        const a = new MaglevHash({ nodes, tableSize: m });
        const b = new MaglevHash({ nodes: shuffled(nodes, seed), tableSize: m });
        const c = new MaglevHash<number>({ tableSize: m });
        for (const node of shuffled(nodes, seed + 1)) c.add(node);
        expect(b.slotCounts()).toEqual(a.slotCounts());
        expect(c.slotCounts()).toEqual(a.slotCounts());
        expect(owners(b, keys)).toEqual(owners(a, keys));
        expect(owners(c, keys)).toEqual(owners(a, keys));
        for (const k of keys.slice(0, 5)) {
          expect(ids(c.getN(k, Infinity))).toEqual(ids(a.getN(k, Infinity)));
        }
      }),
      { numRuns: 60 },
    );
  });

  it('incremental add/remove/setWeight give exactly the table a fresh build gives', () => {
    const op = fc.oneof(
      nodeId.chain(nodeSpec).map((node) => ({ kind: 'add' as const, node })),
      nodeId.map((id) => ({ kind: 'remove' as const, id })),
      fc
        .tuple(nodeId, fc.constantFrom(0.5, 1, 2, 3))
        .map(([id, weight]) => ({ kind: 'weight' as const, id, weight })),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 20 }), keysArb, (ops, keys) => {
        const router = new MaglevHash<number>({ tableSize: 251 });
        const model = new Map<string, NodeSpec<number>>();
        for (const o of ops) {
          if (o.kind === 'add') {
            if (model.has(o.node.id)) continue;
            router.add(o.node);
            model.set(o.node.id, o.node);
          } else if (o.kind === 'remove') {
            expect(router.remove(o.id)).toBe(model.delete(o.id));
          } else {
            const node = model.get(o.id);
            if (node === undefined) continue;
            router.setWeight(o.id, o.weight);
            model.set(o.id, { ...node, weight: o.weight });
          }
        }
        const fresh = new MaglevHash({ nodes: [...model.values()], tableSize: 251 });
        expect(router.slotCounts()).toEqual(fresh.slotCounts());
        expect(owners(router, keys)).toEqual(owners(fresh, keys));
        expect(ids(router.nodes())).toEqual([...model.keys()].sort());
      }),
      { numRuns: 60 },
    );
  });

  it('fills every slot; each node’s slot count is within the documented tolerance', () => {
    fc.assert(
      fc.property(nodeSet(12, 1), tableSize, (nodes, m) => {
        fc.pre(nodes.length <= m);
        const router = new MaglevHash({ nodes, tableSize: m });
        const counts = router.slotCounts();
        let filled = 0;
        for (const count of counts.values()) filled += count;
        // slotCounts counts the table itself: an empty slot would make the sum fall short.
        expect(filled).toBe(m);
        const weights = nodes.map((n) => n.weight ?? 1);
        const total = weights.reduce((a, b) => a + b, 0);
        const mean = total / nodes.length;
        nodes.forEach((node, i) => {
          const weight = weights[i] ?? 1;
          const share = (m * weight) / total;
          const count = counts.get(node.id) ?? 0;
          expect(count).toBeGreaterThanOrEqual(1);
          // Documented: at most w/w̄ + 1 slots below and 2 above the exact share M·w/Σw
          // (1e-9 allows for floating-point rounding of the shares).
          expect(count).toBeLessThan(share + 2 + 1e-9);
          expect(count).toBeGreaterThanOrEqual(share - (weight / mean + 1) - 1e-9);
        });
        if (weights.every((w) => w === weights[0])) {
          const values = [...counts.values()];
          expect(Math.max(...values) - Math.min(...values)).toBeLessThanOrEqual(1);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('removing a node keeps almost every key of the other nodes in place', () => {
    // The removed node's keys must move (checked key by key); Maglev's point (§3.4: minimal
    // disruption) is that few others do — on average, not in every case. Measured over random
    // node sets of 2–30 (3 000 keys): at M = 65537 the mean is 0.1–0.2% and single sets reach
    // 2.7%; with the smallest table the paper recommends (M ≈ 101·N) the mean is 1.6–2.4%, but a
    // single 3-node set can move half of the others' keys (worst of 4 000 sets: 50%), so a
    // per-set bound would be a claim Maglev does not make. The property bounds the mean over a
    // batch of 20 random node sets, with node ids from a seeded PRNG (fast-check's bias towards
    // tiny ids would make the sets of a batch alike, and the mean no mean).
    fc.assert(
      fc.property(fc.integer(), fc.boolean(), (seed, small) => {
        const random = seededRandom(seed);
        let sum = 0;
        const sets = 20;
        for (let s = 0; s < sets; s++) {
          const size = 2 + Math.floor(random() * 29);
          const nodeIds = new Set<string>();
          while (nodeIds.size < size) nodeIds.add(Math.floor(random() * 2 ** 32).toString(36));
          const nodes = [...nodeIds].map((id) => ({ id }));
          const m = small ? smallestPrimeAtLeast(101 * nodes.length, PRIMES) : 65537;
          const before = new MaglevHash({ nodes, tableSize: m });
          const after = new MaglevHash({ nodes, tableSize: m });
          const victim = (nodes[Math.floor(random() * nodes.length)] as { id: string }).id;
          after.remove(victim);
          let others = 0;
          let moved = 0;
          for (let i = 0; i < 2000; i++) {
            const key = `${seed}:${s}:${i}`;
            const owner = before.get(key)?.id;
            if (owner === victim) {
              expect(after.get(key)?.id).not.toBe(victim);
              continue;
            }
            others++;
            if (after.get(key)?.id !== owner) moved++;
          }
          sum += moved / others;
        }
        expect(sum / sets).toBeLessThan(small ? 0.08 : 0.01);
      }),
      { numRuns: 12 },
    );
  });

  it('getN returns min(n, size) distinct nodes, owner first, a string like its bytes', () => {
    fc.assert(
      fc.property(nodeSet(10), tableSize, keyArb, fc.nat({ max: 12 }), (nodes, m, key, n) => {
        fc.pre(nodes.length <= m);
        const router = new MaglevHash({ nodes, tableSize: m });
        const set = router.getN(key, n);
        expect(set).toHaveLength(Math.min(n, nodes.length));
        expect(new Set(ids(set)).size).toBe(set.length);
        if (set.length > 0) expect(set[0]).toBe(router.get(key));
        const bytes = typeof key === 'string' ? new TextEncoder().encode(key) : key;
        expect(router.get(bytes)).toBe(router.get(key));
        expect(router.getN(bytes, n)).toEqual(set);
      }),
      { numRuns: 150 },
    );
  });

  it('accepts exactly the primes as tableSize, and the default is the next prime >= 101·N', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 20_000 }), (n) => {
        if (PRIMES[n] === 1) {
          expect(new MaglevHash({ tableSize: n }).tableSize).toBe(n);
        } else {
          expect(() => new MaglevHash({ tableSize: n })).toThrow(/tableSize/);
        }
      }),
      { numRuns: 400 },
    );
    for (const count of [0, 1, 648, 649, 700]) {
      const nodes = Array.from({ length: count }, (_, i) => ({ id: `n${i}` }));
      expect(new MaglevHash({ nodes }).tableSize).toBe(
        smallestPrimeAtLeast(Math.max(65537, 101 * count), sieve(101 * 700 + 100)),
      );
    }
  });
});
