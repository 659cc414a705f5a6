import { describe, expect, it } from 'vitest';
import { isDuplicateNodeError } from '../../src/hashring/errors.js';
import { MaglevHash } from '../../src/hashring/maglev.js';
import { murmur3String } from '../../src/hashring/murmur3.js';
import { invalidOption, thrown } from '../support/helpers.js';

const named = (n: number, prefix = 'be'): { id: string }[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}` }));

const sum = (counts: Map<string, number>): number =>
  [...counts.values()].reduce((a, b) => a + b, 0);

describe('MaglevHash basics', () => {
  it('an empty router returns undefined from get and [] from getN', () => {
    const router = new MaglevHash();
    expect(router.size).toBe(0);
    expect(router.tableSize).toBe(65537);
    expect(router.get('anything')).toBeUndefined();
    expect(router.getN('anything', 3)).toEqual([]);
    expect(router.nodes()).toEqual([]);
    expect(router.slotCounts()).toEqual(new Map());
  });

  it('defaults the table size to the smallest prime >= max(65537, 101 × initial nodes), then keeps it', () => {
    expect(new MaglevHash({ nodes: named(3) }).tableSize).toBe(65537);
    expect(new MaglevHash({ nodes: named(648) }).tableSize).toBe(65537);
    // 101 × 649 = 65549, the next prime is 65551; 101 × 1000 = 101000 → 101009.
    expect(new MaglevHash({ nodes: named(649) }).tableSize).toBe(65551);
    const big = new MaglevHash({ nodes: named(1000) });
    expect(big.tableSize).toBe(101009);
    // Fixed for the router's life: resizing would remap nearly every key.
    big.remove('be-0');
    expect(big.tableSize).toBe(101009);
    const grown = new MaglevHash({ nodes: named(3) });
    for (let i = 0; i < 700; i++) grown.add({ id: `extra-${i}` });
    expect(grown.tableSize).toBe(65537);
  });

  it('keeps an explicit table size whatever the node count', () => {
    const router = new MaglevHash({ nodes: named(3), tableSize: 7 });
    expect(router.tableSize).toBe(7);
    router.add({ id: 'x' }).remove('be-0');
    expect(router.tableSize).toBe(7);
    expect(sum(router.slotCounts())).toBe(7);
  });

  it('lists nodes in id order and hands back the same frozen node', () => {
    const router = new MaglevHash({
      nodes: [{ id: 'c' }, { id: 'a', data: 1, zone: 'z' }, { id: 'b', weight: 2 }],
    });
    expect(router.nodes().map((n) => n.id)).toEqual(['a', 'b', 'c']);
    expect([...router.slotCounts().keys()]).toEqual(['a', 'b', 'c']);
    expect(router.node('a')).toEqual({ id: 'a', weight: 1, zone: 'z', data: 1 });
    expect(router.node('zz')).toBeUndefined();
    expect(router.has('c')).toBe(true);
    expect(router.has('zz')).toBe(false);
    const owner = router.get('k');
    expect(Object.isFrozen(owner)).toBe(true);
    expect(router.get('k')).toBe(owner);
  });

  it('routes a key to table[murmur3(key) mod M], a string like its UTF-8 bytes', () => {
    const router = new MaglevHash({ nodes: named(4), tableSize: 13 });
    const encoder = new TextEncoder();
    // Keys landing in the same slot share an owner; the slot is murmur3(key) mod M.
    const bySlot = new Map<number, string | undefined>();
    for (let i = 0; i < 200; i++) {
      const key = `k${i}`;
      const slot = murmur3String(key) % 13;
      const owner = router.get(key)?.id;
      if (bySlot.has(slot)) expect(owner).toBe(bySlot.get(slot));
      bySlot.set(slot, owner);
      expect(router.get(encoder.encode(key))?.id).toBe(owner);
    }
    expect(bySlot.size).toBe(13);
    for (const key of ['café', '😀', 'x'.repeat(300)]) {
      expect(router.get(encoder.encode(key))).toBe(router.get(key));
      expect(router.getN(encoder.encode(key), 4)).toEqual(router.getN(key, 4));
    }
  });

  it('fills a tiny table exactly as the paper’s round-robin does', () => {
    // M = 7 with three nodes: the turn order a, b, c, a, b, c, a fills all 7 slots, so the
    // counts are 3, 2, 2 — each node one slot per round.
    const router = new MaglevHash({ nodes: named(3), tableSize: 7 });
    expect([...router.slotCounts().values()]).toEqual([3, 2, 2]);
  });

  it('keeps placements stable across releases (regression snapshot)', () => {
    const router = new MaglevHash({ nodes: named(5) });
    expect(['a', 'b', 'user:42', ''].map((k) => router.get(k)?.id)).toMatchInlineSnapshot(`
      [
        "be-2",
        "be-0",
        "be-2",
        "be-1",
      ]
    `);
    expect([...router.slotCounts().values()]).toMatchInlineSnapshot(`
      [
        13108,
        13108,
        13107,
        13107,
        13107,
      ]
    `);
  });
});

describe('MaglevHash weights', () => {
  it('gives slots in proportion to weight', () => {
    const router = new MaglevHash({
      nodes: [
        { id: 'a', weight: 1 },
        { id: 'b', weight: 2 },
        { id: 'c', weight: 3 },
        { id: 'd', weight: 4 },
      ],
    });
    const counts = router.slotCounts();
    expect(sum(counts)).toBe(65537);
    // Exact shares 6553.7, 13107.4, 19661.1, 26214.8; documented tolerance: at most w/w̄ + 1
    // below and 2 above.
    for (const [id, weight] of [
      ['a', 1],
      ['b', 2],
      ['c', 3],
      ['d', 4],
    ] as const) {
      const share = (65537 * weight) / 10;
      const count = counts.get(id) ?? 0;
      expect(count).toBeLessThan(share + 2);
      expect(count).toBeGreaterThanOrEqual(share - (weight / 2.5 + 1));
    }
  });

  it('gives a tiny-weight node at least one slot', () => {
    const router = new MaglevHash({
      nodes: [
        { id: 'heavy', weight: 1e9 },
        { id: 'light', weight: 1 },
      ],
      tableSize: 101,
    });
    expect(router.slotCounts().get('light')).toBe(1);
    expect(
      router
        .getN('k', 2)
        .map((n) => n.id)
        .sort(),
    ).toEqual(['heavy', 'light']);
  });

  it('setWeight rebuilds the table with the new weight', () => {
    const router = new MaglevHash({ nodes: named(2), tableSize: 1009 });
    expect(router.setWeight('be-0', 3)).toBe(router);
    expect(router.node('be-0')?.weight).toBe(3);
    const counts = router.slotCounts();
    expect(counts.get('be-0')).toBeGreaterThanOrEqual(756 - 3);
    expect(counts.get('be-0')).toBeLessThanOrEqual(757 + 2);
    const fresh = new MaglevHash({
      nodes: [{ id: 'be-0', weight: 3 }, { id: 'be-1' }],
      tableSize: 1009,
    });
    expect(router.slotCounts()).toEqual(fresh.slotCounts());
    // Same weight again: a no-op that keeps the node object.
    const node = router.node('be-0');
    router.setWeight('be-0', 3);
    expect(router.node('be-0')).toBe(node);
  });
});

describe('MaglevHash getN', () => {
  it('returns min(n, size) distinct nodes, owner first', () => {
    const router = new MaglevHash({ nodes: named(6), tableSize: 101 });
    for (const n of [0, 1, 3, 6, 10, Infinity]) {
      const set = router.getN('key', n);
      expect(set).toHaveLength(Math.min(n, 6));
      expect(new Set(set).size).toBe(set.length);
      if (n > 0) expect(set[0]).toBe(router.get('key'));
    }
  });

  it('finds every node even when the table has one slot per node', () => {
    const router = new MaglevHash({ nodes: named(5), tableSize: 5 });
    expect([...router.slotCounts().values()]).toEqual([1, 1, 1, 1, 1]);
    expect(router.getN('x', Infinity)).toHaveLength(5);
  });
});

describe('MaglevHash changes', () => {
  it('add and remove rebuild the table; most keys stay put', () => {
    const router = new MaglevHash({ nodes: named(10) });
    const keys = Array.from({ length: 5000 }, (_, i) => `k${i}`);
    const before = keys.map((k) => router.get(k)?.id);
    expect(router.add({ id: 'be-10' })).toBe(router);
    let moved = 0;
    keys.forEach((k, i) => {
      if (router.get(k)?.id !== before[i]) moved++;
    });
    // Ideal: 1/11 ≈ 9.1%; Maglev adds a little disruption on top.
    expect(moved / keys.length).toBeLessThan(0.15);
    expect(router.remove('be-10')).toBe(true);
    expect(keys.map((k) => router.get(k)?.id)).toEqual(before);
    expect(router.remove('be-10')).toBe(false);
  });
});

describe('MaglevHash errors', () => {
  it('rejects a tableSize that is not a prime', () => {
    for (const tableSize of [0, 1, 4, 9, 65536, 2.5, -7, Infinity, Number.NaN, '65537', 2 ** 31]) {
      const error = invalidOption(() => new MaglevHash({ tableSize: tableSize as never }));
      expect(error.owner).toBe('MaglevHash');
      expect(error.option).toBe('tableSize');
      expect(error.expected).toBe('a prime number <= 2147483647');
    }
    for (const tableSize of [2, 3, 5, 7919, 65537]) {
      expect(new MaglevHash({ tableSize }).tableSize).toBe(tableSize);
    }
  });

  it('rejects a fixed table smaller than the node count, in the constructor and in add', () => {
    const error = invalidOption(() => new MaglevHash({ nodes: named(4), tableSize: 3 }));
    expect(error.option).toBe('tableSize');
    expect(error.expected).toBe('a prime >= the number of nodes (4)');
    const router = new MaglevHash({ nodes: named(3), tableSize: 3 });
    expect(invalidOption(() => router.add({ id: 'x' })).message).toContain('add(node)');
    expect(router.size).toBe(3);
    expect(router.has('x')).toBe(false);
  });

  it('rejects malformed nodes and options', () => {
    expect(invalidOption(() => new MaglevHash({ nodes: [{ id: 'a', weight: -2 }] })).option).toBe(
      'nodes[0].weight',
    );
    expect(invalidOption(() => new MaglevHash({ nodes: [{ id: '' }] })).option).toBe('nodes[0].id');
    expect(invalidOption(() => new MaglevHash({ tablesize: 7 } as never)).message).toContain(
      'did you mean "tableSize"?',
    );
    expect(invalidOption(() => new MaglevHash().add({ id: 'a', weight: 0 })).option).toBe(
      'node.weight',
    );
  });

  it('rejects duplicate ids in the constructor and in add', () => {
    const error = thrown(() => new MaglevHash({ nodes: [{ id: 'a' }, { id: 'a' }] }));
    expect(isDuplicateNodeError(error)).toBe(true);
    const router = new MaglevHash({ nodes: [{ id: 'a' }], tableSize: 7 });
    expect(isDuplicateNodeError(thrown(() => router.add({ id: 'a' })))).toBe(true);
    expect(router.size).toBe(1);
  });

  it('rejects a bad weight or an unknown id in setWeight', () => {
    const router = new MaglevHash({ nodes: [{ id: 'a' }], tableSize: 7 });
    for (const weight of [0, -1, Infinity, Number.NaN, '2']) {
      expect(invalidOption(() => router.setWeight('a', weight as never)).option).toBe('weight');
    }
    expect(invalidOption(() => router.setWeight('zz', 2)).option).toBe('id');
  });

  it('rejects bad keys and counts', () => {
    const router = new MaglevHash({ nodes: named(2), tableSize: 7 });
    expect(invalidOption(() => router.get(5 as never)).option).toBe('key');
    expect(invalidOption(() => new MaglevHash().get([] as never)).option).toBe('key');
    expect(invalidOption(() => router.getN(null as never, 1)).option).toBe('key');
    for (const n of [-1, 2.5, Number.NaN, 'all']) {
      const error = invalidOption(() => router.getN('k', n as never));
      expect(error.option).toBe('n');
      expect(error.owner).toBe('MaglevHash');
    }
  });
});
