/**
 * The chaos checker on hand-made histories: it must catch each violation it claims to catch
 * (so a clean chaos run means something) and must not flag legal histories — back-to-back
 * holds, a hold that ended early, a late ack past the deadline. Plus the fault planner's
 * promises: a seed gives the same plan, a minority at most is down, empty restarts one at a
 * time and only among the listed kinds.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { faultMix } from './config.js';
import { DEFAULT_LOCK_MIX, LOCK_FAULTS, planFaults, type LockFault } from './faults.js';
import {
  FencedRegister,
  findInversions,
  findOvercommits,
  findOverlaps,
  refusedLegitimate,
  type Hold,
} from './history.js';

const hold = (
  id: string,
  start: number,
  ack: number,
  validUntil: number,
  token = 0,
  extra: Partial<Hold> = {},
): Hold => ({
  id,
  resources: ['r'],
  tokens: { r: token },
  permits: 1,
  start,
  ack,
  validUntil,
  ...extra,
});

describe('chaos history checker', () => {
  it('finds two valid holds of one resource at once, and only those', () => {
    expect(findOverlaps([hold('a', 0, 10, 100), hold('b', 50, 60, 200)])).toEqual([
      { resource: 'r', first: 'a', second: 'b', ms: 40 },
    ]);
    // Back to back, an early end, a grant learnt after its deadline: all legal.
    expect(findOverlaps([hold('a', 0, 10, 100), hold('b', 90, 100, 200)])).toEqual([]);
    expect(findOverlaps([hold('a', 0, 10, 100, 0, { end: 40 }), hold('b', 40, 50, 200)])).toEqual(
      [],
    );
    expect(findOverlaps([hold('a', 0, 10, 100), hold('late', 20, 120, 110)])).toEqual([]);
    // Another resource does not overlap.
    expect(
      findOverlaps([hold('a', 0, 10, 100), hold('b', 0, 20, 100, 0, { resources: ['s'] })]),
    ).toEqual([]);
  });

  it('finds a token not above one granted before it', () => {
    const a = hold('a', 0, 10, 100, 5);
    expect(findInversions([a, hold('b', 200, 210, 300, 6)])).toEqual([]);
    expect(findInversions([a, hold('b', 200, 210, 300, 5)])).toEqual([
      { resource: 'r', earlier: 'a', earlierToken: 5, later: 'b', laterToken: 5 },
    ]);
    expect(findInversions([a, hold('c', 200, 210, 300, 6), hold('b', 400, 410, 500, 1)])).toEqual([
      { resource: 'r', earlier: 'c', earlierToken: 6, later: 'b', laterToken: 1 },
    ]);
    // Its grant was known only after its deadline (never used, never writes): not counted.
    expect(findInversions([a, hold('b', 5, 210, 200, 4)])).toEqual([]);
  });

  it('counts permits validly held at once against the limit', () => {
    const holds = [hold('a', 0, 10, 100), hold('b', 0, 20, 100), hold('c', 0, 30, 100)];
    expect(findOvercommits(holds, 3)).toEqual([]);
    expect(findOvercommits(holds, 2)).toEqual([
      { resource: 'r', at: 30, held: 3, holders: ['a', 'b', 'c'] },
    ]);
    expect(
      findOvercommits([hold('a', 0, 10, 100, 0, { permits: 2 }), hold('b', 0, 100, 200)], 2),
    ).toEqual([]);
  });

  it('the fenced register refuses lower tokens and equal tokens of another holder', () => {
    const register = new FencedRegister();
    expect(register.write('a', 'r', 5, 0, 1)).toBe(true);
    expect(register.write('a', 'r', 5, 2, 3)).toBe(true);
    expect(register.write('b', 'r', 5, 4, 5)).toBe(false);
    expect(register.write('c', 'r', 4, 6, 7)).toBe(false);
    expect(register.write('d', 'r', 6, 8, 9)).toBe(true);
    expect(register.write('e', 's', 1, 8, 9)).toBe(true);
    // b's write came while b's hold was valid: legitimate, refused — a fencing failure.
    const holds = new Map([
      ['b', hold('b', 0, 4, 50, 5)],
      ['c', hold('c', 0, 1, 6.5, 4)],
    ]);
    expect(refusedLegitimate(register.writes, holds).map((w) => w.hold)).toEqual(['b']);
  });
});

describe('chaos fault planner', () => {
  const mixes = fc.dictionary(fc.constantFrom(...LOCK_FAULTS), fc.integer({ min: 0, max: 5 }), {
    minKeys: 1,
  });

  it('a seed gives the same plan; a minority down at once; empty restarts one at a time', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), mixes, (seed, weights) => {
        const mix = new Map(Object.entries(weights) as [LockFault, number][]);
        fc.pre([...mix.values()].some((w) => w > 0));
        const input = { seed, durationMs: 30_000, nodes: 5, maxDown: 2, ttlMs: 500, mix };
        const plan = planFaults(input);
        expect(planFaults(input)).toEqual(plan);
        for (const e of plan) expect(mix.get(e.kind) ?? 0).toBeGreaterThan(0);
        // Planned spans (start, start + hold + the runner's settle) never exceed the promises.
        const span = (e: (typeof plan)[number]): [number, number] => [
          e.at,
          e.at + e.holdMs + (e.kind.startsWith('restart-empty') ? 800 : 300),
        ];
        for (const e of plan) {
          const [from] = span(e);
          const concurrent = plan.filter((o) => {
            const [a, b] = span(o);
            return a <= from && from < b;
          });
          expect(concurrent.length).toBeLessThanOrEqual(2);
          expect(new Set(concurrent.map((o) => o.node)).size).toBe(concurrent.length);
          expect(
            concurrent.filter((o) => o.kind.startsWith('restart-empty')).length,
          ).toBeLessThanOrEqual(1);
          if (e.kind === 'restart-empty-delayed') expect(e.holdMs).toBeGreaterThanOrEqual(1000);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('the default mix is the envelope, and a bad mix is refused by name', () => {
    expect(faultMix('KEEL_CHAOS_TEST_UNSET_MIX', LOCK_FAULTS, DEFAULT_LOCK_MIX)).toEqual(
      new Map(Object.entries(DEFAULT_LOCK_MIX)),
    );
    process.env.KEEL_CHAOS_TEST_MIX = 'pause:2,meteor';
    try {
      expect(() => faultMix('KEEL_CHAOS_TEST_MIX', LOCK_FAULTS, DEFAULT_LOCK_MIX)).toThrow(
        /unknown fault kind "meteor"/,
      );
    } finally {
      delete process.env.KEEL_CHAOS_TEST_MIX;
    }
  });
});
