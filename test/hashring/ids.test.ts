/**
 * Node ids are hashed as UTF-8, where every lone (unpaired) UTF-16 surrogate becomes U+FFFD:
 * two ids that differ only there would get the very same points, and the one that loses every
 * tie would own no key at all, whatever its weight. Every router refuses such an id with a
 * typed error naming it; well-formed ids (astral characters, `__proto__`) keep working.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isInvalidOptionError } from '../../src/core/index.js';
import { LoadBalancer, consistentHash, roundRobin } from '../../src/balancer/index.js';
import {
  HashRing,
  JumpHash,
  MaglevHash,
  PartitionedRing,
  RendezvousHash,
} from '../../src/hashring/index.js';
import { thrown } from '../support/helpers.js';

/** Strings with at least one lone surrogate somewhere. */
const illFormed = fc
  .tuple(
    fc.string({ unit: 'grapheme', maxLength: 4 }),
    fc.oneof(fc.integer({ min: 0xd800, max: 0xdbff }), fc.integer({ min: 0xdc00, max: 0xdfff })),
    fc.string({ unit: 'grapheme-ascii', maxLength: 4 }),
  )
  .map(([before, unit, after]) => before + String.fromCharCode(unit) + after);

function expectBadId(fn: () => unknown, option: string): void {
  const error = thrown(fn);
  expect(isInvalidOptionError(error), String(error)).toBe(true);
  expect((error as { option: string }).option).toBe(option);
}

describe('node ids with a lone surrogate', () => {
  it('would collide: "n\\uD800" and "n\\uDC00" are different ids with the same UTF-8', () => {
    expect(new TextEncoder().encode('n\uD800')).toEqual(new TextEncoder().encode('n\uDC00'));
  });

  it('are refused by every router, at construction and on add, naming the id', () => {
    fc.assert(
      fc.property(illFormed, (id) => {
        expectBadId(() => new HashRing({ nodes: [{ id: 'ok' }, { id }] }), 'nodes[1].id');
        expectBadId(() => new HashRing().add({ id }), 'node.id');
        expectBadId(() => new RendezvousHash({ nodes: [{ id }] }), 'nodes[0].id');
        expectBadId(() => new MaglevHash({ nodes: [{ id }] }), 'nodes[0].id');
        expectBadId(() => new PartitionedRing({ partitionCount: 7 }).add({ id }), 'node.id');
        expectBadId(() => new JumpHash({ nodes: [{ id }] }), 'nodes[0].id');
        const snapshot = new HashRing({ nodes: [{ id: 'ok' }] }).toJSON();
        expect(thrown(() => HashRing.fromJSON({ ...snapshot, nodes: [{ id }] }))).toBeInstanceOf(
          Error,
        );
      }),
      { numRuns: 200 },
    );
  });

  it('leave a ring unchanged when add() refuses one', () => {
    const ring = new HashRing({ nodes: [{ id: 'n\uD800\uDC00' }] });
    const before = { revision: ring.revision, fingerprint: ring.fingerprint };
    expectBadId(() => ring.add({ id: 'n\uDC00' }), 'node.id');
    expect({ revision: ring.revision, fingerprint: ring.fingerprint }).toEqual(before);
  });

  it('well-formed ids that look alike still get their own share', () => {
    const ring = new HashRing({
      nodes: [{ id: 'n\uD83D\uDE00' }, { id: 'n\uFFFD' }, { id: '__proto__' }],
    });
    for (const node of ring.stats().nodes) expect(node.share).toBeGreaterThan(0.2);
  });

  it('in a balancer: refused by the consistent-hash strategy (the update changes nothing), fine elsewhere', () => {
    const sticky = new LoadBalancer({ strategy: consistentHash(), endpoints: [{ id: 'a' }] });
    expectBadId(() => sticky.update([{ id: 'n\uD800' }, { id: 'n\uDC00' }]), 'endpoints');
    expect(sticky.endpoints().map((e) => e.id)).toEqual(['a']);
    // Other strategies never hash ids: both endpoints are told apart and both get picks.
    const plain = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: [{ id: 'n\uD800' }, { id: 'n\uDC00' }],
    });
    const seen = new Set([plain.pick()?.id, plain.pick()?.id]);
    expect(seen.size).toBe(2);
  });
});
