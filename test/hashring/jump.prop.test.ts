import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JumpHash, jumpConsistentHash } from '../../src/hashring/jump.js';
import { murmur3 } from '../../src/hashring/murmur3.js';
import { key as keyArb, keys as keysArb } from './arbitraries.js';

const MASK_64 = (1n << 64n) - 1n;

/** Lamping & Veach's C++ listing in BigInt: the reference the 32-bit-halves version must equal. */
function referenceJump(key: bigint, buckets: number): number {
  let b = -1n;
  let j = 0n;
  while (j < BigInt(buckets)) {
    b = j;
    key = (key * 2862933555777941757n + 1n) & MASK_64;
    j = BigInt(Math.floor(Number(b + 1n) * (2 ** 31 / Number((key >> 33n) + 1n))));
  }
  return Number(b);
}

const shards = (n: number, prefix = 's'): { id: string }[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}` }));

const encoder = new TextEncoder();
const asBytes = (key: string | Uint8Array): Uint8Array =>
  typeof key === 'string' ? encoder.encode(key) : key;

// Jump hash exists for one invariant: growing from N to N+1 buckets moves only the keys that
// land in the new bucket, about 1/(N+1) of them.
describe('JumpHash (properties)', () => {
  it('equals the BigInt reference of the paper for any 64-bit key and bucket count', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: MASK_64 }),
        fc.integer({ min: 1, max: 1 << 20 }),
        (key, buckets) => {
          const got = jumpConsistentHash(Number(key >> 32n), Number(key & 0xffffffffn), buckets);
          expect(got).toBe(referenceJump(key, buckets));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('routes a key by the reference jump of its documented 64-bit murmur3 hash', () => {
    fc.assert(
      fc.property(keyArb, fc.integer({ min: 1, max: 300 }), (key, n) => {
        const bytes = asBytes(key);
        const hash = (BigInt(murmur3(bytes, 0)) << 32n) | BigInt(murmur3(bytes, 0x9e3779b9));
        const jump = new JumpHash({ nodes: shards(n) });
        expect(jump.get(key)).toBe(jump.buckets()[referenceJump(hash, n)]);
        expect(jump.get(bytes)).toBe(jump.get(key));
      }),
      { numRuns: 200 },
    );
  });

  it('adding a bucket moves keys only to it, and about 1/(N+1) of them', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), fc.string({ maxLength: 6 }), (n, salt) => {
        const jump = new JumpHash({ nodes: shards(n) });
        const total = 3000;
        const before: (string | undefined)[] = [];
        for (let i = 0; i < total; i++) before.push(jump.get(`${salt}/${i}`)?.id);
        jump.add({ id: 'new' });
        let moved = 0;
        for (let i = 0; i < total; i++) {
          const after = jump.get(`${salt}/${i}`)?.id;
          if (after !== before[i]) {
            expect(after).toBe('new');
            moved++;
          }
        }
        // Binomial(total, 1/(N+1)); 6σ (+1) cannot fail by chance in practice.
        const p = 1 / (n + 1);
        const sigma = Math.sqrt(total * p * (1 - p));
        expect(Math.abs(moved - total * p)).toBeLessThanOrEqual(6 * sigma + 1);
      }),
      { numRuns: 40 },
    );
  });

  it('removeLast moves only the last bucket’s keys and restores the earlier mapping', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 40 }), keysArb, (n, keys) => {
        const jump = new JumpHash({ nodes: shards(n) });
        const before = keys.map((k) => jump.get(k)?.id);
        const removed = jump.removeLast()?.id;
        keys.forEach((k, i) => {
          if (before[i] !== removed) expect(jump.get(k)?.id).toBe(before[i]);
        });
        const smaller = new JumpHash({ nodes: shards(n - 1) });
        expect(keys.map((k) => jump.get(k)?.id)).toEqual(keys.map((k) => smaller.get(k)?.id));
      }),
      { numRuns: 60 },
    );
  });

  it('getN returns min(n, size) distinct nodes, owner first, deterministically', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 50 }),
        keyArb,
        fc.oneof(fc.nat({ max: 60 }), fc.constant(Infinity)),
        (size, key, n) => {
          const a = new JumpHash({ nodes: shards(size) });
          const b = new JumpHash({ nodes: shards(size) });
          const set = a.getN(key, n);
          expect(set).toHaveLength(Math.min(n, size));
          expect(new Set(set.map((node) => node.id)).size).toBe(set.length);
          if (set.length > 0) expect(set[0]).toBe(a.get(key));
          expect(b.getN(key, n).map((node) => node.id)).toEqual(set.map((node) => node.id));
          expect(a.getN(asBytes(key), n)).toEqual(set);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('add/removeLast/remove behave like a list of buckets (model-based)', () => {
    type Model = string[];
    class Add implements fc.Command<Model, JumpHash> {
      constructor(readonly id: string) {}
      check = (): boolean => true;
      run(model: Model, real: JumpHash): void {
        if (model.includes(this.id)) {
          expect(() => real.add({ id: this.id })).toThrow(/already present/);
        } else {
          real.add({ id: this.id });
          model.push(this.id);
        }
      }
      toString = (): string => `add(${this.id})`;
    }
    class RemoveLast implements fc.Command<Model, JumpHash> {
      check = (): boolean => true;
      run(model: Model, real: JumpHash): void {
        expect(real.removeLast()?.id).toBe(model.pop());
      }
      toString = (): string => 'removeLast()';
    }
    class Remove implements fc.Command<Model, JumpHash> {
      constructor(readonly id: string) {}
      check = (): boolean => true;
      run(model: Model, real: JumpHash): void {
        const at = model.indexOf(this.id);
        if (at === -1) expect(real.remove(this.id)).toBe(false);
        else if (at === model.length - 1) {
          expect(real.remove(this.id)).toBe(true);
          model.pop();
        } else expect(() => real.remove(this.id)).toThrow(/last bucket/);
      }
      toString = (): string => `remove(${this.id})`;
    }
    const id = fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f');
    const commands = [
      id.map((x) => new Add(x)),
      fc.constant(new RemoveLast()),
      id.map((x) => new Remove(x)),
    ];
    fc.assert(
      fc.property(fc.commands(commands, { maxCommands: 30 }), keysArb, (cmds, keys) => {
        const model: Model = [];
        const real = new JumpHash();
        fc.modelRun(() => ({ model, real }), cmds);
        expect(real.buckets().map((n) => n.id)).toEqual(model);
        expect(real.nodes().map((n) => n.id)).toEqual([...model].sort());
        // Whatever the history, the router equals a fresh one over the same buckets.
        const fresh = new JumpHash({ nodes: model.map((x) => ({ id: x })) });
        expect(keys.map((k) => real.get(k)?.id)).toEqual(keys.map((k) => fresh.get(k)?.id));
      }),
      { numRuns: 100 },
    );
  });
});
