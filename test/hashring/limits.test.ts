/**
 * Issue 14, item 9: a ring has a documented size bound (MAX_RING_POINTS in mode keel; weights
 * the C libraries can hold in the compatibility modes), enforced with a typed error naming the
 * option before anything changes — never a RangeError, an endless build or an empty ring.
 */
import { describe, expect, it } from 'vitest';
import { isInvalidOptionError } from '../../src/core/index.js';
import {
  HashRing,
  MAX_RING_POINTS,
  isInvalidSnapshotError,
  type RingMode,
} from '../../src/hashring/index.js';
import { thrown } from '../support/helpers.js';

function observable(ring: HashRing): unknown {
  return {
    size: ring.size,
    points: ring.pointCount,
    revision: ring.revision,
    fingerprint: ring.fingerprint,
    nodes: ring.nodes(),
    owner: ring.get('some key')?.id,
  };
}

function expectInvalid(fn: () => unknown, option: string): void {
  const error = thrown(fn);
  expect(isInvalidOptionError(error), String(error)).toBe(true);
  expect((error as { option: string }).option).toBe(option);
  expect((error as Error).message).toContain('MAX_RING_POINTS');
}

describe('HashRing size bound (mode keel)', () => {
  it('is 2^24 points', () => {
    expect(MAX_RING_POINTS).toBe(2 ** 24);
  });

  it.each([1e6, 1e7, 1e300, Number.MAX_VALUE])('refuses weight %s at construction', (weight) => {
    expectInvalid(
      () => new HashRing({ nodes: [{ id: 'a' }, { id: 'b', weight }] }),
      'nodes[1].weight',
    );
  });

  it('counts the points of every node, not one at a time', () => {
    const weight = MAX_RING_POINTS / 160 / 2 + 1; // each fits alone, two do not
    expectInvalid(
      () =>
        new HashRing({
          nodes: [
            { id: 'a', weight },
            { id: 'b', weight },
          ],
        }),
      'nodes[1].weight',
    );
  });

  it('counts max(1, round(pointsPerWeight × weight)) points per node', () => {
    // One point past the bound is refused; a ring at the bound takes seconds to build on a
    // loaded machine, so it is not built here.
    expectInvalid(
      () => new HashRing({ nodes: [{ id: 'a', weight: MAX_RING_POINTS + 1 }], pointsPerWeight: 1 }),
      'nodes[0].weight',
    );
    const ring = new HashRing({ nodes: [{ id: 'a', weight: 1e-300 }], pointsPerWeight: 1 });
    expect(ring.pointCount).toBe(1);
  });

  it('add and setWeight past the bound throw and change nothing', () => {
    const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b', weight: 2 }] });
    const before = observable(ring);
    expectInvalid(() => ring.add({ id: 'c', weight: 1e7 }), 'node.weight');
    expect(observable(ring)).toEqual(before);
    expectInvalid(() => ring.setWeight('a', 1e300), 'weight');
    expect(observable(ring)).toEqual(before);
  });

  it('fromJSON reports the bound as an invalid snapshot', () => {
    const snapshot = { ...new HashRing({ nodes: [{ id: 'a' }] }).toJSON() };
    const error = thrown(() =>
      HashRing.fromJSON({ ...snapshot, nodes: [{ id: 'a', weight: 1e300 }] }),
    );
    expect(isInvalidSnapshotError(error)).toBe(true);
    expect((error as { path: string }).path).toBe('nodes[0].weight');
  });
});

describe.each(['libmemcached', 'libketama', 'hashring-legacy'] as RingMode[])(
  'HashRing weights in mode %s',
  (mode) => {
    it.each([3.5e38, 1e300, 2 ** 32])(
      'refuses weight %s, which the C float32 maths loses',
      (weight) => {
        const error = thrown(
          () => new HashRing({ mode, nodes: [{ id: 'a:1', weight }, { id: 'b:1' }] }),
        );
        expect(isInvalidOptionError(error)).toBe(true);
        expect((error as { option: string }).option).toBe('nodes[0].weight');
      },
    );

    it('refuses weights too small for float32 (they would give no points at all)', () => {
      const error = thrown(
        () =>
          new HashRing({
            mode,
            nodes: [
              { id: 'a:1', weight: 1e-46 },
              { id: 'b:1', weight: 1e-46 },
            ],
          }),
      );
      expect(isInvalidOptionError(error)).toBe(true);
    });

    it('add and setWeight past the bound throw and change nothing', () => {
      const ring = new HashRing({ mode, nodes: [{ id: 'a:1' }, { id: 'b:1', weight: 2 }] });
      const before = observable(ring);
      expect(isInvalidOptionError(thrown(() => ring.add({ id: 'c:1', weight: 2 ** 32 })))).toBe(
        true,
      );
      expect(observable(ring)).toEqual(before);
      expect(isInvalidOptionError(thrown(() => ring.setWeight('a:1', 3.5e38)))).toBe(true);
      expect(observable(ring)).toEqual(before);
      // Large weights the C libraries hold are fine, and every node gets points.
      ring.setWeight('a:1', 2 ** 31);
      expect(ring.get('k')).toBeDefined();
      expect(ring.pointCount).toBeGreaterThan(0);
    });
  },
);
