import { describe, expect, it } from 'vitest';
import { isDuplicateNodeError } from '../../src/hashring/errors.js';
import { RendezvousHash } from '../../src/hashring/rendezvous.js';
import { invalidOption, thrown } from '../support/helpers.js';

const named = (n: number, prefix = 'node'): { id: string }[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}` }));

function shares(router: RendezvousHash, keys: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < keys; i++) {
    const id = router.get(`key-${i}`)?.id ?? '';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('RendezvousHash basics', () => {
  it('an empty router returns undefined from get and [] from getN', () => {
    const router = new RendezvousHash();
    expect(router.size).toBe(0);
    expect(router.get('anything')).toBeUndefined();
    expect(router.getN('anything', 3)).toEqual([]);
    expect(router.nodes()).toEqual([]);
  });

  it('lists nodes in id order and hands back the same frozen node', () => {
    const router = new RendezvousHash({
      nodes: [{ id: 'c' }, { id: 'a', data: 'x', zone: 'z1' }, { id: 'b', weight: 2 }],
    });
    expect(router.nodes().map((n) => n.id)).toEqual(['a', 'b', 'c']);
    expect(router.node('a')).toEqual({ id: 'a', weight: 1, zone: 'z1', data: 'x' });
    expect(router.node('zz')).toBeUndefined();
    expect(router.has('b')).toBe(true);
    expect(router.has('zz')).toBe(false);
    const owner = router.get('k');
    expect(Object.isFrozen(owner)).toBe(true);
    expect(router.get('k')).toBe(owner);
  });

  it('routes a string and its UTF-8 bytes alike', () => {
    const router = new RendezvousHash({ nodes: named(7) });
    const encoder = new TextEncoder();
    for (const key of ['a', 'café', '€uro', '😀', 'x'.repeat(300)]) {
      expect(router.get(encoder.encode(key))).toBe(router.get(key));
      expect(router.getN(encoder.encode(key), 7)).toEqual(router.getN(key, 7));
    }
  });

  it('keeps placements stable across releases (regression snapshot)', () => {
    // Pinned outputs: a change here changes where every user's keys live.
    const router = new RendezvousHash({ nodes: named(5) });
    expect(['a', 'b', 'user:42', ''].map((k) => router.get(k)?.id)).toMatchInlineSnapshot(`
      [
        "node-4",
        "node-0",
        "node-0",
        "node-2",
      ]
    `);
    const weighted = new RendezvousHash({
      nodes: [
        { id: 'x', weight: 1 },
        { id: 'y', weight: 2.5 },
        { id: 'z', weight: 0.5 },
      ],
    });
    expect(['a', 'b', 'user:42', ''].map((k) => weighted.get(k)?.id)).toMatchInlineSnapshot(`
      [
        "y",
        "y",
        "y",
        "x",
      ]
    `);
  });

  it('gives equal nodes equal shares', () => {
    const counts = shares(new RendezvousHash({ nodes: named(5) }), 20_000);
    expect(counts.size).toBe(5);
    // Binomial(20000, 0.2): σ ≈ 57; 6σ band.
    for (const count of counts.values()) expect(Math.abs(count - 4000)).toBeLessThan(340);
  });

  it('gives weighted nodes shares proportional to weight (logarithmic method)', () => {
    const router = new RendezvousHash({
      nodes: [
        { id: 'a', weight: 1 },
        { id: 'b', weight: 2 },
        { id: 'c', weight: 3 },
        { id: 'd', weight: 4 },
      ],
    });
    const total = 40_000;
    const counts = shares(router, total);
    for (const [id, weight] of [
      ['a', 1],
      ['b', 2],
      ['c', 3],
      ['d', 4],
    ] as const) {
      const p = weight / 10;
      const sigma = Math.sqrt(total * p * (1 - p));
      expect(Math.abs((counts.get(id) ?? 0) - total * p)).toBeLessThan(6 * sigma);
    }
  });

  it('scales weights: multiplying every weight by a constant changes nothing', () => {
    const base = [
      { id: 'a', weight: 1 },
      { id: 'b', weight: 3 },
      { id: 'c', weight: 0.5 },
    ];
    const a = new RendezvousHash({ nodes: base });
    const b = new RendezvousHash({ nodes: base.map((n) => ({ ...n, weight: n.weight * 8 })) });
    for (let i = 0; i < 500; i++) {
      expect(b.getN(`k${i}`, 3).map((n) => n.id)).toEqual(a.getN(`k${i}`, 3).map((n) => n.id));
    }
  });

  it('equal weights other than 1 route exactly like weight 1', () => {
    const a = new RendezvousHash({ nodes: named(6) });
    const b = new RendezvousHash({ nodes: named(6).map((n) => ({ ...n, weight: 2.5 })) });
    const c = new RendezvousHash({ nodes: named(6) });
    // Forces the weighted (logarithmic) path with the same relative weights.
    c.setWeight('node-0', 3).setWeight('node-0', 1);
    for (let i = 0; i < 500; i++) {
      expect(b.get(`k${i}`)?.id).toBe(a.get(`k${i}`)?.id);
      expect(c.getN(`k${i}`, 6).map((n) => n.id)).toEqual(a.getN(`k${i}`, 6).map((n) => n.id));
    }
  });
});

describe('RendezvousHash getN', () => {
  it('returns min(n, size) distinct nodes, owner first, nested in n', () => {
    const router = new RendezvousHash({ nodes: named(6) });
    const all = router.getN('key', Infinity);
    expect(all).toHaveLength(6);
    expect(new Set(all).size).toBe(6);
    expect(all[0]).toBe(router.get('key'));
    for (const n of [0, 1, 2, 5, 6, 10]) {
      expect(router.getN('key', n)).toEqual(all.slice(0, n));
    }
  });

  it('removing a node drops it from replica sets and promotes the next', () => {
    const router = new RendezvousHash({ nodes: named(8) });
    const before = router.getN('replicated', 4).map((n) => n.id);
    const next = router.getN('replicated', 5)[4]?.id;
    const victim = before[1] ?? '';
    router.remove(victim);
    expect(router.getN('replicated', 4).map((n) => n.id)).toEqual([
      ...before.filter((id) => id !== victim),
      next,
    ]);
  });
});

describe('RendezvousHash changes', () => {
  it('add moves keys only to the new node; remove moves only the removed node’s keys', () => {
    const router = new RendezvousHash({ nodes: named(5) });
    const keys = Array.from({ length: 3000 }, (_, i) => `k${i}`);
    const before = keys.map((k) => router.get(k)?.id);
    expect(router.add({ id: 'node-5' })).toBe(router);
    const afterAdd = keys.map((k) => router.get(k)?.id);
    let moved = 0;
    keys.forEach((_, i) => {
      if (afterAdd[i] !== before[i]) {
        moved++;
        expect(afterAdd[i]).toBe('node-5');
      }
    });
    expect(moved).toBeGreaterThan(500 - 150);
    expect(moved).toBeLessThan(500 + 150);
    expect(router.remove('node-5')).toBe(true);
    expect(keys.map((k) => router.get(k)?.id)).toEqual(before);
    expect(router.remove('node-5')).toBe(false);
  });

  it('setWeight moves keys only to (raise) or away from (lower) the node', () => {
    const router = new RendezvousHash({ nodes: named(4) });
    const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`);
    const before = keys.map((k) => router.get(k)?.id);
    const original = router.node('node-2');
    expect(router.setWeight('node-2', 3)).toBe(router);
    expect(router.node('node-2')?.weight).toBe(3);
    expect(router.node('node-2')).not.toBe(original);
    expect(Object.isFrozen(router.node('node-2'))).toBe(true);
    const raised = keys.map((k) => router.get(k)?.id);
    keys.forEach((_, i) => {
      if (raised[i] !== before[i]) expect(raised[i]).toBe('node-2');
    });
    router.setWeight('node-2', 0.25);
    keys.forEach((k, i) => {
      const now = router.get(k)?.id;
      if (now !== raised[i]) expect(raised[i]).toBe('node-2');
    });
    // Setting the same weight again is a no-op that keeps the node object.
    const current = router.node('node-2');
    router.setWeight('node-2', 0.25);
    expect(router.node('node-2')).toBe(current);
  });
});

describe('RendezvousHash errors', () => {
  it('rejects malformed nodes and options', () => {
    const weight = invalidOption(() => new RendezvousHash({ nodes: [{ id: 'a', weight: 0 }] }));
    expect(weight.owner).toBe('RendezvousHash');
    expect(weight.option).toBe('nodes[0].weight');
    expect(invalidOption(() => new RendezvousHash({ nodes: [{ id: 7 as never }] })).option).toBe(
      'nodes[0].id',
    );
    expect(invalidOption(() => new RendezvousHash({ nodes: 'ab' as never })).option).toBe('nodes');
    expect(invalidOption(() => new RendezvousHash({ nodes: [null] as never })).option).toBe(
      'nodes[0]',
    );
    expect(invalidOption(() => new RendezvousHash({ nodez: [] } as never)).message).toContain(
      'did you mean "nodes"?',
    );
    expect(invalidOption(() => new RendezvousHash().add({ id: 'a', weight: NaN })).option).toBe(
      'node.weight',
    );
  });

  it('rejects duplicate ids in the constructor and in add', () => {
    const error = thrown(() => new RendezvousHash({ nodes: [{ id: 'a' }, { id: 'a' }] }));
    expect(isDuplicateNodeError(error)).toBe(true);
    const router = new RendezvousHash({ nodes: [{ id: 'a' }] });
    expect(isDuplicateNodeError(thrown(() => router.add({ id: 'a' })))).toBe(true);
    expect(router.size).toBe(1);
  });

  it('rejects a bad weight or an unknown id in setWeight', () => {
    const router = new RendezvousHash({ nodes: [{ id: 'a' }] });
    for (const weight of [0, -1, Infinity, Number.NaN, '2']) {
      const error = invalidOption(() => router.setWeight('a', weight as never));
      expect(error.option).toBe('weight');
      expect(error.expected).toBe('a finite number > 0');
    }
    const unknown = invalidOption(() => router.setWeight('zz', 2));
    expect(unknown.option).toBe('id');
    expect(router.node('a')?.weight).toBe(1);
  });

  it('rejects bad keys and counts', () => {
    const router = new RendezvousHash({ nodes: named(2) });
    expect(invalidOption(() => router.get(undefined as never)).option).toBe('key');
    expect(invalidOption(() => new RendezvousHash().get({} as never)).option).toBe('key');
    expect(invalidOption(() => router.getN(3 as never, 1)).option).toBe('key');
    for (const n of [-1, 0.5, Number.NaN, -Infinity, null]) {
      const error = invalidOption(() => router.getN('k', n as never));
      expect(error.option).toBe('n');
      expect(error.owner).toBe('RendezvousHash');
    }
  });
});
