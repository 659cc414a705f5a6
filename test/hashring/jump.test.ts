import { describe, expect, it } from 'vitest';
import { isKeelError } from '../../src/core/index.js';
import { isDuplicateNodeError } from '../../src/hashring/errors.js';
import { JumpHash, jumpConsistentHash } from '../../src/hashring/jump.js';
import { murmur3String } from '../../src/hashring/murmur3.js';
import { invalidOption, thrown } from '../support/helpers.js';

const shards = (n: number): { id: string }[] =>
  Array.from({ length: n }, (_, i) => ({ id: `shard-${i}` }));

describe('jumpConsistentHash', () => {
  it('matches the reference C++ on published vectors', () => {
    // Outputs of Lamping & Veach's JumpConsistentHash (the paper's C++), computed with an
    // independent BigInt transcription of it; (42, 57) → 43 etc. are also the values commonly
    // quoted by other implementations' test suites.
    const vectors: [bigint, number, number][] = [
      [1n, 1, 0],
      [42n, 57, 43],
      [256n, 1024, 520],
      [3735883980n, 1, 0],
      [3735883980n, 666, 361],
      [16045690984833335023n, 255, 237],
    ];
    for (const [key, buckets, expected] of vectors) {
      const hi = Number(key >> 32n);
      const lo = Number(key & 0xffffffffn);
      expect(jumpConsistentHash(hi, lo, buckets)).toBe(expected);
    }
  });

  it('handles the carry of the +1 into the high word and extreme keys', () => {
    // Expected values from a BigInt transcription of the paper's C++. 0x12345678_666313AB times
    // the LCG multiplier has low word 0xFFFFFFFF, so its first "+ 1" carries into the high word.
    const cases: [number, number, number, number][] = [
      [0x12345678, 0x666313ab, 1000, 764],
      [0x12345678, 0x666313ab, 77, 24],
      [0xffffffff, 0xffffffff, 1000, 313],
      [0xffffffff, 0xffffffff, 1 << 20, 589430],
      [0, 0xffffffff, 1000, 875],
      [0xffffffff, 0, 1 << 20, 719551],
      [0, 0, 1000, 0],
    ];
    for (const [hi, lo, buckets, expected] of cases) {
      expect(jumpConsistentHash(hi, lo, buckets)).toBe(expected);
    }
  });
});

describe('JumpHash basics', () => {
  it('an empty router returns undefined from get and [] from getN', () => {
    const jump = new JumpHash();
    expect(jump.size).toBe(0);
    expect(jump.get('anything')).toBeUndefined();
    expect(jump.getN('anything', 3)).toEqual([]);
    expect(jump.nodes()).toEqual([]);
    expect(jump.buckets()).toEqual([]);
    expect(jump.removeLast()).toBeUndefined();
  });

  it('numbers buckets in the order given and lists nodes in id order', () => {
    const jump = new JumpHash({ nodes: [{ id: 'c' }, { id: 'a', data: 1 }, { id: 'b' }] });
    expect(jump.buckets().map((n) => n.id)).toEqual(['c', 'a', 'b']);
    expect(jump.nodes().map((n) => n.id)).toEqual(['a', 'b', 'c']);
    expect(jump.bucketOf('a')).toBe(1);
    expect(jump.bucketOf('zz')).toBeUndefined();
    expect(jump.has('a')).toBe(true);
    expect(jump.has('zz')).toBe(false);
    expect(jump.node('a')).toEqual({ id: 'a', weight: 1, zone: undefined, data: 1 });
    expect(jump.node('zz')).toBeUndefined();
    expect(Object.isFrozen(jump.node('a'))).toBe(true);
  });

  it('routes a key to bucket jump(murmur3(key, 0)·2³² + murmur3(key, 0x9E3779B9))', () => {
    const jump = new JumpHash({ nodes: shards(37) });
    for (const key of ['user:1', 'order:42', '', 'zoë', '😀 emoji']) {
      const bucket = jumpConsistentHash(murmur3String(key, 0), murmur3String(key, 0x9e3779b9), 37);
      expect(jump.get(key)).toBe(jump.buckets()[bucket]);
    }
  });

  it('routes a string and its UTF-8 bytes alike', () => {
    const jump = new JumpHash({ nodes: shards(10) });
    const encoder = new TextEncoder();
    for (const key of ['a', 'café', '€uro', 'x'.repeat(300)]) {
      expect(jump.get(encoder.encode(key))).toBe(jump.get(key));
      expect(jump.getN(encoder.encode(key), 4)).toEqual(jump.getN(key, 4));
    }
  });

  it('returns the same frozen node object on every lookup', () => {
    const jump = new JumpHash({ nodes: shards(5) });
    const owner = jump.get('k');
    expect(owner).toBeDefined();
    expect(jump.get('k')).toBe(owner);
    expect(jump.getN('k', 1)[0]).toBe(owner);
  });

  it('gives every bucket about the same share', () => {
    const jump = new JumpHash({ nodes: shards(8) });
    const counts = new Map<string, number>();
    for (let i = 0; i < 16_000; i++) {
      const id = jump.get(`key-${i}`)?.id ?? '';
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect(counts.size).toBe(8);
    // Binomial(16000, 1/8): mean 2000, σ ≈ 42; 6σ is a safe band.
    for (const count of counts.values()) expect(Math.abs(count - 2000)).toBeLessThan(250);
  });
});

describe('JumpHash changes', () => {
  it('add appends a bucket and moves keys only to it', () => {
    const jump = new JumpHash({ nodes: shards(4) });
    const keys = Array.from({ length: 4000 }, (_, i) => `key-${i}`);
    const before = keys.map((k) => jump.get(k)?.id);
    expect(jump.add({ id: 'shard-4' })).toBe(jump);
    expect(jump.bucketOf('shard-4')).toBe(4);
    let moved = 0;
    keys.forEach((k, i) => {
      const after = jump.get(k)?.id;
      if (after !== before[i]) {
        moved++;
        expect(after).toBe('shard-4');
      }
    });
    // About 1/5 of the keys move: Binomial(4000, 0.2) has σ ≈ 25.
    expect(moved).toBeGreaterThan(800 - 200);
    expect(moved).toBeLessThan(800 + 200);
  });

  it('removeLast undoes add exactly', () => {
    const jump = new JumpHash({ nodes: shards(6) });
    const keys = Array.from({ length: 500 }, (_, i) => `k${i}`);
    const before = keys.map((k) => jump.get(k));
    jump.add({ id: 'extra' });
    expect(jump.removeLast()?.id).toBe('extra');
    expect(jump.has('extra')).toBe(false);
    expect(keys.map((k) => jump.get(k))).toEqual(before);
  });

  it('remove(id) removes the last bucket and returns false for an unknown id', () => {
    const jump = new JumpHash({ nodes: shards(3) });
    expect(jump.remove('nope')).toBe(false);
    expect(jump.remove('shard-2')).toBe(true);
    expect(jump.buckets().map((n) => n.id)).toEqual(['shard-0', 'shard-1']);
    expect(jump.nodes().map((n) => n.id)).toEqual(['shard-0', 'shard-1']);
    jump.add({ id: 'shard-2b' });
    expect(jump.nodes().map((n) => n.id)).toEqual(['shard-0', 'shard-1', 'shard-2b']);
  });

  it('remove(id) of a node that is not the last bucket throws and changes nothing', () => {
    const jump = new JumpHash({ nodes: shards(3) });
    const error = invalidOption(() => jump.remove('shard-0'));
    expect(isKeelError(error)).toBe(true);
    expect(error.code).toBe('KEEL_INVALID_OPTION');
    expect(error.owner).toBe('JumpHash');
    expect(error.option).toBe('id');
    expect(error.expected).toBe('the id of the last bucket ("shard-2")');
    expect(error.message).toContain('only remove the last bucket');
    expect(jump.size).toBe(3);
    expect(jump.has('shard-0')).toBe(true);
  });
});

describe('JumpHash getN', () => {
  it('returns min(n, size) distinct nodes, owner first', () => {
    const jump = new JumpHash({ nodes: shards(5) });
    for (const n of [0, 1, 3, 5, 9, Infinity]) {
      const set = jump.getN('key', n);
      expect(set).toHaveLength(Math.min(n, 5));
      expect(new Set(set).size).toBe(set.length);
      if (n > 0) expect(set[0]).toBe(jump.get('key'));
    }
  });

  it('collects every bucket of a large router (bucket-order fallback when draws repeat)', () => {
    const jump = new JumpHash({ nodes: shards(2000) });
    const all = jump.getN('everything', Infinity);
    expect(all).toHaveLength(2000);
    expect(new Set(all.map((n) => n.id)).size).toBe(2000);
    expect(all[0]).toBe(jump.get('everything'));
  });

  it('mostly keeps replica sets when a bucket is appended', () => {
    const jump = new JumpHash({ nodes: shards(10) });
    const keys = Array.from({ length: 2000 }, (_, i) => `r${i}`);
    const before = keys.map((k) => jump.getN(k, 3).map((n) => n.id));
    jump.add({ id: 'shard-10' });
    let changedBeyondNew = 0;
    keys.forEach((k, i) => {
      const old = new Set(before[i]);
      const extra = jump.getN(k, 3).filter((n) => !old.has(n.id) && n.id !== 'shard-10');
      if (extra.length > 0) changedBeyondNew++;
    });
    // A set gains a node other than the new bucket only when two of its draws both move to
    // the new bucket: probability ≈ C(3,2)/11² ≈ 2.5%.
    expect(changedBeyondNew / keys.length).toBeLessThan(0.06);
  });
});

describe('JumpHash errors', () => {
  it('rejects weights other than 1, naming nodes[i].weight', () => {
    const error = invalidOption(
      () => new JumpHash({ nodes: [{ id: 'a' }, { id: 'b', weight: 1 }, { id: 'c', weight: 2 }] }),
    );
    expect(error.owner).toBe('JumpHash');
    expect(error.option).toBe('nodes[2].weight');
    expect(error.received).toBe('2');
    expect(error.message).toContain('jump hash does not support weights');
    expect(invalidOption(() => new JumpHash().add({ id: 'x', weight: 0.5 })).option).toBe(
      'node.weight',
    );
  });

  it('rejects malformed nodes and options', () => {
    expect(invalidOption(() => new JumpHash({ nodes: [{ id: 'a', weight: -1 }] })).option).toBe(
      'nodes[0].weight',
    );
    expect(invalidOption(() => new JumpHash({ nodes: [{ id: '' }] })).option).toBe('nodes[0].id');
    expect(invalidOption(() => new JumpHash({ nodes: 5 } as unknown as { nodes: [] })).option).toBe(
      'nodes',
    );
    expect(invalidOption(() => new JumpHash({ node: [] } as never)).message).toContain(
      'did you mean "nodes"?',
    );
    expect(invalidOption(() => new JumpHash(null as never)).option).toBe('options');
    expect(invalidOption(() => new JumpHash().add(null as never)).option).toBe('node');
  });

  it('rejects duplicate ids in the constructor and in add', () => {
    const error = thrown(() => new JumpHash({ nodes: [{ id: 'a' }, { id: 'a' }] }));
    expect(isDuplicateNodeError(error)).toBe(true);
    const jump = new JumpHash({ nodes: [{ id: 'a' }] });
    expect(isDuplicateNodeError(thrown(() => jump.add({ id: 'a' })))).toBe(true);
    expect(jump.size).toBe(1);
  });

  it('rejects bad keys and counts', () => {
    const jump = new JumpHash({ nodes: shards(2) });
    expect(invalidOption(() => jump.get(42 as never)).option).toBe('key');
    expect(invalidOption(() => new JumpHash().get(null as never)).option).toBe('key');
    expect(invalidOption(() => jump.getN([1] as never, 1)).option).toBe('key');
    for (const n of [-1, 1.5, Number.NaN, '2']) {
      const error = invalidOption(() => jump.getN('k', n as never));
      expect(error.option).toBe('n');
      expect(error.owner).toBe('JumpHash');
    }
  });
});
