import { describe, expect, it } from 'vitest';
import { isInvalidOptionError, isKeelError } from '../../src/core/index.js';
import {
  HashRing,
  isDuplicateNodeError,
  isInvalidSnapshotError,
  murmur3,
} from '../../src/hashring/index.js';
import { thrown } from '../support/helpers.js';

const three = [
  { id: 'a', data: { host: '10.0.0.1' } },
  { id: 'b', data: { host: '10.0.0.2' }, weight: 2 },
  { id: 'c', data: { host: '10.0.0.3' }, zone: 'z2' },
];

describe('HashRing basics', () => {
  it('an empty ring returns undefined from get and [] from getN', () => {
    const ring = new HashRing();
    expect(ring.size).toBe(0);
    expect(ring.get('anything')).toBeUndefined();
    expect(ring.getN('anything', 3)).toEqual([]);
    expect(ring.stats().nodes).toEqual([]);
    expect(ring.findFrom('x', () => true)).toBeUndefined();
  });

  it('places 160 points per unit of weight by default and hands back the same frozen node', () => {
    const ring = new HashRing({ nodes: three });
    expect(ring.pointCount).toBe(160 + 320 + 160);
    expect(ring.pointsOf('b')).toHaveLength(320);
    expect(ring.pointsOf('zz')).toHaveLength(0);
    const owner = ring.get('order:1');
    expect(owner).toBeDefined();
    expect(Object.isFrozen(owner)).toBe(true);
    expect(ring.get('order:1')).toBe(owner);
    expect(ring.node('b')).toEqual({
      id: 'b',
      weight: 2,
      zone: undefined,
      data: { host: '10.0.0.2' },
    });
    expect(ring.nodes().map((n) => n.id)).toEqual(['a', 'b', 'c']);
    expect(ring.has('a')).toBe(true);
    expect(ring.has('zz')).toBe(false);
    expect(ring.mode).toBe('keel');
    expect(ring.hashName).toBe('murmur3');
  });

  it('a key as a string and as its UTF-8 bytes map to the same node', () => {
    const ring = new HashRing({ nodes: three });
    for (const key of ['cart:7', 'zoë', '订单-42', '']) {
      expect(ring.get(new TextEncoder().encode(key))).toBe(ring.get(key));
    }
  });

  it('a key maps to the owner of the first point at or after its hash', () => {
    const ring = new HashRing({ nodes: three });
    const key = 'order:99';
    const hash = ring.hashKey(key);
    const all = ['a', 'b', 'c'].flatMap((id) => [...ring.pointsOf(id)].map((p) => ({ p, id })));
    all.sort((x, y) => x.p - y.p);
    const expected = all.find((x) => x.p >= hash) ?? all[0];
    expect(ring.get(key)?.id).toBe(expected?.id);
  });

  it('balances keys roughly by weight', () => {
    const ring = new HashRing({ nodes: three });
    const counts = new Map<string, number>();
    for (let i = 0; i < 40_000; i++) {
      const id = ring.get(`key-${i}`)?.id ?? '';
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect((counts.get('b') ?? 0) / 40_000).toBeGreaterThan(0.4);
    expect((counts.get('a') ?? 0) / 40_000).toBeGreaterThan(0.18);
    const stats = ring.stats();
    expect(stats.maxOverIdeal).toBeLessThan(1.25);
    expect(stats.nodes.find((n) => n.id === 'b')?.ideal).toBe(0.5);
  });

  it('getN walks distinct nodes and can prefer distinct zones', () => {
    const ring = new HashRing({
      nodes: [
        { id: 'a1', zone: 'a' },
        { id: 'a2', zone: 'a' },
        { id: 'a3', zone: 'a' },
        { id: 'b1', zone: 'b' },
      ],
    });
    for (let i = 0; i < 200; i++) {
      const replicas = ring.getN(`k${i}`, 2, { distinctZones: true });
      expect(new Set(replicas.map((r) => r.zone)).size).toBe(2);
      expect(replicas[0]).toBe(ring.get(`k${i}`));
    }
    expect(ring.getN('k', 10)).toHaveLength(4);
    expect(ring.getN('k', Infinity)).toHaveLength(4);
    expect(ring.getN('k', 0)).toEqual([]);
  });

  it('findFrom visits distinct nodes clockwise and stops when told', () => {
    const ring = new HashRing({ nodes: three });
    const seen: string[] = [];
    const found = ring.findFrom('key', (node) => {
      seen.push(node.id);
      return false;
    });
    expect(found).toBeUndefined();
    expect(new Set(seen).size).toBe(3);
    expect(seen[0]).toBe(ring.get('key')?.id);
    expect(ring.getN('key', 3).map((n) => n.id)).toEqual(seen);
    expect(ring.findFrom('key', (node) => node.id === seen[1])?.id).toBe(seen[1]);
  });

  it('remove of an unknown id is a documented no-op returning false', () => {
    const ring = new HashRing({ nodes: three });
    const before = ring.fingerprint;
    expect(ring.remove('nope')).toBe(false);
    expect(ring.fingerprint).toBe(before);
    expect(ring.remove('a')).toBe(true);
    expect(ring.remove('a')).toBe(false);
    expect(ring.size).toBe(2);
  });

  it('setWeight changes the point count and is a no-op for the same weight', () => {
    const ring = new HashRing({ nodes: three });
    const before = ring.fingerprint;
    ring.setWeight('a', 1);
    expect(ring.fingerprint).toBe(before);
    ring.setWeight('a', 0.5);
    expect(ring.pointsOf('a')).toHaveLength(80);
    expect(ring.node('a')?.weight).toBe(0.5);
    expect(ring.node('a')?.data).toEqual({ host: '10.0.0.1' });
  });

  it('accepts a custom hash function or hasher', () => {
    const fnv = (bytes: Uint8Array): number => {
      let h = 0x811c9dc5;
      for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
      return h >>> 0;
    };
    const ring = new HashRing({ nodes: three, hash: fnv });
    expect(ring.hashName).toBe('custom');
    expect(ring.hashKey('x')).toBe(fnv(new TextEncoder().encode('x')));
    expect(ring.get('x')).toBeDefined();
    const seeded = new HashRing({
      nodes: three,
      hash: {
        name: 'murmur3-seed-7',
        string: (s) => murmur3(new TextEncoder().encode(s), 7),
        bytes: (b) => murmur3(b, 7),
      },
    });
    expect(seeded.hashName).toBe('murmur3-seed-7');
    expect(seeded.fingerprint).not.toBe(new HashRing({ nodes: three }).fingerprint);
  });

  it('the optional cache returns the same owners and is cleared on change', () => {
    const plain = new HashRing({ nodes: three });
    const cached = new HashRing({ nodes: three, cacheSize: 4 });
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 10; i++)
        expect(cached.get(`k${i}`)).toBe(cached.node(plain.get(`k${i}`)?.id ?? ''));
    }
    cached.add({ id: 'd' });
    plain.add({ id: 'd' });
    for (let i = 0; i < 10; i++) expect(cached.get(`k${i}`)?.id).toBe(plain.get(`k${i}`)?.id);
  });

  it('large rings (radix-sorted build) agree with incremental construction and brute force', () => {
    const nodes = Array.from({ length: 200 }, (_, i) => ({ id: `node-${i}`, weight: 1 + (i % 3) }));
    const fresh = new HashRing({ nodes });
    expect(fresh.pointCount).toBeGreaterThan(20_000);
    const incremental = new HashRing();
    for (const node of [...nodes].reverse()) incremental.add(node);
    expect(incremental.fingerprint).toBe(fresh.fingerprint);
    const all = nodes
      .flatMap((node) => [...fresh.pointsOf(node.id)].map((point) => ({ point, id: node.id })))
      .sort((a, b) => a.point - b.point || (a.id < b.id ? -1 : 1));
    for (let i = 0; i < 2000; i++) {
      const key = `key-${i}`;
      const hash = fresh.hashKey(key);
      expect(fresh.get(key)?.id).toBe((all.find((p) => p.point >= hash) ?? all[0])?.id);
    }
  });

  it('pointsPerWeight controls the virtual node count', () => {
    const ring = new HashRing({ nodes: three, pointsPerWeight: 10 });
    expect(ring.pointCount).toBe(40);
    const tiny = new HashRing({ nodes: [{ id: 'x', weight: 0.001 }], pointsPerWeight: 10 });
    expect(tiny.pointCount).toBe(1); // every node gets at least one point
  });
});

describe('HashRing introspection', () => {
  it('diff reports exact moved ranges when a node joins', () => {
    const before = new HashRing({ nodes: three });
    const after = new HashRing({ nodes: [...three, { id: 'd' }] });
    const { moves, movedFraction } = HashRing.diff(before, after);
    expect(moves.length).toBeGreaterThan(0);
    expect(moves.every((m) => m.to === 'd' && m.from !== 'd')).toBe(true);
    expect(movedFraction).toBeCloseTo(
      after.stats().nodes.find((n) => n.id === 'd')?.share ?? -1,
      12,
    );
    expect(HashRing.diff(before, before)).toEqual({ moves: [], movedFraction: 0 });
    const fromEmpty = HashRing.diff(new HashRing(), after);
    expect(fromEmpty.movedFraction).toBe(1);
  });

  it('diff refuses rings that hash keys differently', () => {
    const error = thrown(() => HashRing.diff(new HashRing(), new HashRing({ mode: 'libketama' })));
    expect(isInvalidOptionError(error)).toBe(true);
  });

  it('fingerprint is short, stable and sensitive to any change', () => {
    const ring = new HashRing({ nodes: three });
    expect(ring.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(new HashRing({ nodes: [...three].reverse() }).fingerprint).toBe(ring.fingerprint);
    const f = ring.fingerprint;
    ring.setWeight('c', 2);
    expect(ring.fingerprint).not.toBe(f);
    expect(new HashRing({ nodes: three, mode: 'libketama' }).fingerprint).not.toBe(f);
  });

  it('toJSON/fromJSON round-trips nodes, data and zones', () => {
    const ring = new HashRing({ nodes: three });
    const snapshot = ring.toJSON();
    expect(snapshot).toMatchObject({
      format: 'keel.hashring',
      version: 1,
      mode: 'keel',
      hash: 'murmur3',
      pointsPerWeight: 160,
    });
    expect(snapshot.nodes).toEqual([
      { id: 'a', weight: 1, data: { host: '10.0.0.1' } },
      { id: 'b', weight: 2, data: { host: '10.0.0.2' } },
      { id: 'c', weight: 1, zone: 'z2', data: { host: '10.0.0.3' } },
    ]);
    const copy = HashRing.fromJSON(snapshot);
    expect(copy.nodes()).toEqual(ring.nodes());
    expect(copy.fingerprint).toBe(ring.fingerprint);
  });

  it('fromJSON of a custom-hash ring needs the function again', () => {
    const hash = (bytes: Uint8Array): number => murmur3(bytes, 99);
    const ring = new HashRing({ nodes: three, hash });
    const error = thrown(() => HashRing.fromJSON(ring.toJSON()));
    expect(isInvalidSnapshotError(error)).toBe(true);
    expect((error as Error).message).toMatch(/pass the same function as options.hash/);
    expect(HashRing.fromJSON(ring.toJSON(), { hash }).fingerprint).toBe(ring.fingerprint);
    const wrong = thrown(() =>
      HashRing.fromJSON(ring.toJSON(), { hash: (b: Uint8Array) => murmur3(b, 1) }),
    );
    expect((wrong as { path: string }).path).toBe('fingerprint');
  });

  it.each<[string, unknown, string]>([
    ['text that is not JSON', '{nope', '$'],
    ['a non-object', 42, '$'],
    ['a wrong format tag', { format: 'other' }, 'format'],
    ['an unknown version', { format: 'keel.hashring', version: 2 }, 'version'],
    ['an unknown mode', { format: 'keel.hashring', version: 1, mode: 'x' }, 'mode'],
    [
      'a bad pointsPerWeight',
      { format: 'keel.hashring', version: 1, mode: 'keel', pointsPerWeight: 0 },
      'pointsPerWeight',
    ],
    [
      'a missing fingerprint',
      {
        format: 'keel.hashring',
        version: 1,
        mode: 'keel',
        pointsPerWeight: 160,
        hash: 'murmur3',
        nodes: [],
      },
      'fingerprint',
    ],
    [
      'nodes that are not an array',
      {
        format: 'keel.hashring',
        version: 1,
        mode: 'keel',
        pointsPerWeight: 160,
        hash: 'murmur3',
        nodes: {},
        fingerprint: '0'.repeat(16),
      },
      'nodes',
    ],
    [
      'a node with a bad weight',
      {
        format: 'keel.hashring',
        version: 1,
        mode: 'keel',
        pointsPerWeight: 160,
        hash: 'murmur3',
        nodes: [{ id: 'a', weight: -1 }],
        fingerprint: '0'.repeat(16),
      },
      'nodes[0].weight',
    ],
    [
      'duplicate node ids',
      {
        format: 'keel.hashring',
        version: 1,
        mode: 'keel',
        pointsPerWeight: 160,
        hash: 'murmur3',
        nodes: [{ id: 'a' }, { id: 'a' }],
        fingerprint: '0'.repeat(16),
      },
      'nodes',
    ],
    [
      'a fingerprint that does not match',
      {
        format: 'keel.hashring',
        version: 1,
        mode: 'keel',
        pointsPerWeight: 160,
        hash: 'murmur3',
        nodes: [{ id: 'a' }],
        fingerprint: '0'.repeat(16),
      },
      'fingerprint',
    ],
  ])('fromJSON rejects %s with InvalidSnapshotError at %s', (_, snapshot, path) => {
    const error = thrown(() => HashRing.fromJSON(snapshot));
    expect(isInvalidSnapshotError(error)).toBe(true);
    expect(isKeelError(error)).toBe(true);
    expect((error as { code: string }).code).toBe('KEEL_INVALID_SNAPSHOT');
    expect((error as { path: string }).path).toBe(path);
  });
});

describe('HashRing errors', () => {
  it('rejects a duplicate node id, at construction and on add', () => {
    const atStart = thrown(() => new HashRing({ nodes: [{ id: 'a' }, { id: 'a' }] }));
    expect(isDuplicateNodeError(atStart)).toBe(true);
    expect((atStart as Error).message).toBe(
      'HashRing: node id "a" is already present; node ids must be unique',
    );
    const ring = new HashRing({ nodes: [{ id: 'a' }] });
    expect(isDuplicateNodeError(thrown(() => ring.add({ id: 'a' })))).toBe(true);
  });

  it.each<[unknown, string]>([
    [0, 'a finite number > 0'],
    [-1, 'a finite number > 0'],
    [Infinity, 'a finite number > 0'],
    [Number.NaN, 'a finite number > 0'],
    ['2', 'a finite number > 0'],
  ])('rejects weight %s naming the node', (weight, expected) => {
    const error = thrown(
      () => new HashRing({ nodes: [{ id: 'ok' }, { id: 'bad', weight: weight as number }] }),
    );
    expect(isInvalidOptionError(error)).toBe(true);
    expect((error as { option: string }).option).toBe('nodes[1].weight');
    expect((error as { expected: string }).expected).toBe(expected);
    expect((error as Error).message).toContain('node "bad"');
    const ring = new HashRing({ nodes: [{ id: 'ok' }] });
    expect(isInvalidOptionError(thrown(() => ring.setWeight('ok', weight as number)))).toBe(true);
  });

  it('rejects bad ids, zones, node lists and options', () => {
    expect((thrown(() => new HashRing({ nodes: [{ id: '' }] })) as { option: string }).option).toBe(
      'nodes[0].id',
    );
    expect(
      (
        thrown(() => new HashRing({ nodes: [{ id: 7 as unknown as string }] })) as {
          option: string;
        }
      ).option,
    ).toBe('nodes[0].id');
    expect(
      (
        thrown(() => new HashRing({ nodes: [null as unknown as { id: string }] })) as {
          option: string;
        }
      ).option,
    ).toBe('nodes[0]');
    expect(
      (
        thrown(() => new HashRing({ nodes: [{ id: 'a', zone: 3 as unknown as string }] })) as {
          option: string;
        }
      ).option,
    ).toBe('nodes[0].zone');
    expect(
      (thrown(() => new HashRing({ nodes: 5 as unknown as [] })) as { option: string }).option,
    ).toBe('nodes');
    expect((thrown(() => new HashRing({ pointsPerWeight: 0 })) as { option: string }).option).toBe(
      'pointsPerWeight',
    );
    expect((thrown(() => new HashRing({ cacheSize: -1 })) as { option: string }).option).toBe(
      'cacheSize',
    );
    expect(
      (thrown(() => new HashRing({ mode: 'ketama' as 'libketama' })) as { option: string }).option,
    ).toBe('mode');
    expect(
      (thrown(() => new HashRing({ hash: 'md5' as unknown as () => number })) as { option: string })
        .option,
    ).toBe('hash');
    expect((thrown(() => new HashRing({ vnodes: 100 } as never)) as Error).message).toMatch(
      /unknown option/,
    );
  });

  it('rejects n < 0 or fractional n in getN, and keys that are neither string nor bytes', () => {
    const ring = new HashRing({ nodes: three });
    for (const n of [-1, 1.5, Number.NaN]) {
      const error = thrown(() => ring.getN('k', n));
      expect(isInvalidOptionError(error)).toBe(true);
      expect((error as { option: string }).option).toBe('n');
    }
    for (const key of [42, null, undefined, { id: 1 }]) {
      expect((thrown(() => ring.get(key as unknown as string)) as { option: string }).option).toBe(
        'key',
      );
      expect(
        (thrown(() => new HashRing().get(key as unknown as string)) as { option: string }).option,
      ).toBe('key');
    }
  });

  it('ownerOfHash takes a 32-bit unsigned hash only', () => {
    const ring = new HashRing({ nodes: three });
    expect(ring.ownerOfHash(ring.hashKey('k'))).toBe(ring.get('k'));
    expect(new HashRing().ownerOfHash(5)).toBeUndefined();
    for (const hash of [-1, 2 ** 32, 1.5, Number.NaN]) {
      expect((thrown(() => ring.ownerOfHash(hash)) as { option: string }).option).toBe('hash');
    }
  });

  it('setWeight of an unknown id throws', () => {
    const ring = new HashRing({ nodes: three });
    const error = thrown(() => ring.setWeight('zz', 2));
    expect(isInvalidOptionError(error)).toBe(true);
    expect((error as Error).message).toMatch(/the id of a node on the ring/);
  });
});
