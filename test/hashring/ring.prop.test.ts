import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HashRing, type Key, type NodeSpec } from '../../src/hashring/index.js';
import { key as keyArb, keys as keysArb, nodeId, nodeSet, nodeSpec } from './arbitraries.js';
import { shuffled } from '../support/helpers.js';

const owners = (ring: HashRing<number>, keys: readonly Key[]): (string | undefined)[] =>
  keys.map((k) => ring.get(k)?.id);

// The invariants a consistent-hash ring exists for.
describe('HashRing (properties)', () => {
  it('is deterministic: the same node set gives the same ring whatever the insertion order', () => {
    fc.assert(
      fc.property(nodeSet(), keysArb, fc.nat(), (nodes, keys, seed) => {
        const a = new HashRing({ nodes });
        const b = new HashRing({ nodes: shuffled(nodes, seed) });
        const c = new HashRing<number>();
        for (const node of shuffled(nodes, seed + 1)) c.add(node);
        expect(b.fingerprint).toBe(a.fingerprint);
        expect(c.fingerprint).toBe(a.fingerprint);
        expect(owners(b, keys)).toEqual(owners(a, keys));
        expect(owners(c, keys)).toEqual(owners(a, keys));
      }),
      { numRuns: 60 },
    );
  });

  it('get(key) is the owner of the first point at or after hash(key), wrapping (brute force)', () => {
    fc.assert(
      fc.property(
        nodeSet(6, 1),
        fc.integer({ min: 1, max: 40 }),
        keysArb,
        fc.array(fc.nat(), { maxLength: 20 }),
        (nodes, pointsPerWeight, keys, hashes) => {
          const ring = new HashRing({ nodes, pointsPerWeight });
          const all = nodes
            .flatMap((node) => [...ring.pointsOf(node.id)].map((point) => ({ point, id: node.id })))
            .sort((a, b) => a.point - b.point || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
          const expected = (hash: number): string | undefined =>
            (all.find((p) => p.point >= hash) ?? all[0])?.id;
          for (const key of keys) expect(ring.get(key)?.id).toBe(expected(ring.hashKey(key)));
          // Hashes right at, just before and just after points, and the extremes.
          const probes = [0, 2 ** 32 - 1, ...hashes.map((h) => h % 2 ** 32)];
          for (const p of all.slice(0, 30))
            probes.push(p.point, Math.max(0, p.point - 1), Math.min(2 ** 32 - 1, p.point + 1));
          for (const hash of probes) expect(ring.ownerOfHash(hash)?.id).toBe(expected(hash));
        },
      ),
      { numRuns: 80 },
    );
  });

  it('incremental add/remove/setWeight give exactly the ring a fresh build of the final set gives', () => {
    const op = fc.oneof(
      nodeId.chain(nodeSpec).map((node) => ({ kind: 'add' as const, node })),
      nodeId.map((id) => ({ kind: 'remove' as const, id })),
      fc
        .tuple(nodeId, fc.constantFrom(0.5, 1, 2, 3))
        .map(([id, weight]) => ({ kind: 'weight' as const, id, weight })),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        const ring = new HashRing<number>();
        const model = new Map<string, NodeSpec<number>>();
        for (const o of ops) {
          if (o.kind === 'add') {
            if (model.has(o.node.id)) continue;
            ring.add(o.node);
            model.set(o.node.id, o.node);
          } else if (o.kind === 'remove') {
            expect(ring.remove(o.id)).toBe(model.delete(o.id));
          } else {
            const node = model.get(o.id);
            if (node === undefined) continue;
            ring.setWeight(o.id, o.weight);
            model.set(o.id, { ...node, weight: o.weight });
          }
        }
        const fresh = new HashRing({ nodes: [...model.values()] });
        expect(ring.fingerprint).toBe(fresh.fingerprint);
        expect(ring.size).toBe(model.size);
      }),
      { numRuns: 60 },
    );
  });

  it('after add(x), every key either stays or moves to x', () => {
    fc.assert(
      fc.property(nodeSet(8, 1), nodeId, keysArb, (nodes, id, keys) => {
        fc.pre(!nodes.some((n) => n.id === id));
        const ring = new HashRing({ nodes });
        const before = owners(ring, keys);
        ring.add({ id });
        owners(ring, keys).forEach((owner, i) => {
          expect([before[i], id]).toContain(owner);
        });
      }),
      { numRuns: 80 },
    );
  });

  it('after remove(x), only the keys x owned move', () => {
    fc.assert(
      fc.property(nodeSet(8, 2), fc.nat(), keysArb, (nodes, pick, keys) => {
        const ring = new HashRing({ nodes });
        const victim = (nodes[pick % nodes.length] as NodeSpec).id;
        const before = owners(ring, keys);
        ring.remove(victim);
        owners(ring, keys).forEach((owner, i) => {
          if (before[i] !== victim) expect(owner).toBe(before[i]);
          else expect(owner).not.toBe(victim);
        });
      }),
      { numRuns: 80 },
    );
  });

  it('changing one weight moves no key between two other nodes', () => {
    fc.assert(
      fc.property(
        nodeSet(8, 2),
        fc.nat(),
        fc.constantFrom(0.5, 1, 2, 4),
        keysArb,
        (nodes, pick, weight, keys) => {
          const ring = new HashRing({ nodes });
          const changed = (nodes[pick % nodes.length] as NodeSpec).id;
          const before = owners(ring, keys);
          ring.setWeight(changed, weight);
          owners(ring, keys).forEach((owner, i) => {
            if (owner !== before[i]) expect([owner, before[i]]).toContain(changed);
          });
        },
      ),
      { numRuns: 80 },
    );
  });

  it('getN returns min(n, size) distinct nodes, the first being get(key)', () => {
    fc.assert(
      fc.property(nodeSet(), keyArb, fc.nat(10), fc.boolean(), (nodes, key, n, distinctZones) => {
        const ring = new HashRing({ nodes });
        const replicas = ring.getN(key, n, { distinctZones });
        expect(replicas).toHaveLength(Math.min(n, nodes.length));
        expect(new Set(replicas.map((r) => r.id)).size).toBe(replicas.length);
        if (replicas.length > 0) expect(replicas[0]).toBe(ring.get(key));
        if (distinctZones) {
          // Zones are preferred: no zone repeats among the first k nodes, where k is how many
          // distinct failure domains exist (a node without a zone is a domain of its own).
          const zoned = nodes.filter((node) => node.zone !== undefined);
          const domains =
            new Set(zoned.map((node) => node.zone)).size + nodes.length - zoned.length;
          const first = replicas
            .slice(0, Math.min(domains, replicas.length))
            .filter((r) => r.zone !== undefined);
          expect(new Set(first.map((r) => r.zone)).size).toBe(first.length);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('shares from stats() sum to 1 and count every point', () => {
    fc.assert(
      fc.property(nodeSet(8, 1), (nodes) => {
        const ring = new HashRing({ nodes });
        const stats = ring.stats();
        const sum = stats.nodes.reduce((total, n) => total + n.share, 0);
        expect(sum).toBeCloseTo(1, 12);
        expect(stats.nodes.reduce((total, n) => total + n.points, 0)).toBe(ring.pointCount);
      }),
      { numRuns: 60 },
    );
  });

  it('diff(a, b) agrees with comparing the two rings key by key', () => {
    fc.assert(
      fc.property(nodeSet(6), nodeSet(6), keysArb, (left, right, keys) => {
        const a = new HashRing({ nodes: left });
        const b = new HashRing({ nodes: right });
        const { moves, movedFraction } = HashRing.diff(a, b);
        for (const k of keys) {
          const hash = a.hashKey(k);
          const move = moves.find((m) => m.start <= hash && hash <= m.end);
          const from = a.get(k)?.id;
          const to = b.get(k)?.id;
          if (from === to) expect(move).toBeUndefined();
          else expect(move).toMatchObject({ from, to });
        }
        const covered = moves.reduce((total, m) => total + (m.end - m.start + 1), 0);
        expect(movedFraction).toBeCloseTo(covered / 2 ** 32, 12);
        for (let i = 1; i < moves.length; i++) {
          expect((moves[i] as { start: number }).start).toBeGreaterThan(
            (moves[i - 1] as { end: number }).end,
          );
        }
      }),
      { numRuns: 60 },
    );
  });

  it('fromJSON(toJSON(ring)) maps every key identically, through JSON text too', () => {
    fc.assert(
      fc.property(
        nodeSet(),
        keysArb,
        fc.constantFrom('keel', 'libmemcached', 'libketama', 'hashring-legacy' as const),
        (nodes, keys, mode) => {
          const ring = new HashRing({ nodes, mode });
          const copy = HashRing.fromJSON<number>(JSON.stringify(ring));
          expect(copy.fingerprint).toBe(ring.fingerprint);
          expect(owners(copy, keys)).toEqual(owners(ring, keys));
          expect(copy.nodes()).toEqual(ring.nodes());
        },
      ),
      { numRuns: 40 },
    );
  });
});
