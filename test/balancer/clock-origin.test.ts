// A Clock's `now()` counts from "an arbitrary, fixed origin" (ManualClock takes any finite
// start), so its readings may be negative or cross 0. The balancer must behave the same
// whatever the origin: it once used 0 as "not ejected" and a negative time as "no latency
// sample yet", so an ejection ending exactly at 0 was announced but never took effect (the
// endpoint kept getting picks and its ejection counted against the cap for ever), and
// latency samples taken before 0 were never averaged.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  LoadBalancer,
  peakEwma,
  roundRobin,
  type EndpointStats,
  type Strategy,
} from '../../src/balancer/index.js';

type Op =
  | { kind: 'call'; key: number; ok: boolean; latencyMs: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'pick' };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('call' as const),
    key: fc.nat(),
    ok: fc.boolean(),
    latencyMs: fc.integer({ min: 0, max: 500 }),
  }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 150 }) }),
  fc.record({ kind: fc.constant('pick' as const) }),
);

/** A seeded source in [0, 1), the same sequence for both balancers of a run. */
function seeded(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** What a run saw: every pick, and every endpoint's stats with clock times made relative. */
function run(
  strategy: () => Strategy,
  origin: number,
  seed: number,
  ops: readonly Op[],
): unknown[] {
  const clock = new ManualClock(origin);
  const balancer = new LoadBalancer({
    strategy: strategy(),
    clock,
    random: seeded(seed),
    endpoints: ['a', 'b', 'c', 'd'].map((id) => ({ id })),
    outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 100, maxEjectionPercent: 50 },
    panicThresholdPercent: 0,
  });
  const relative = (s: EndpointStats): unknown => ({
    ...s,
    ejectedUntil: s.ejectedUntil === undefined ? undefined : s.ejectedUntil - origin,
    ejectedUntilTime: undefined,
    latencyEwmaMs: Math.round(s.latencyEwmaMs * 1e6) / 1e6,
  });
  const seen: unknown[] = [];
  for (const step of ops) {
    if (step.kind === 'advance') clock.advance(step.ms);
    else if (step.kind === 'pick') seen.push(balancer.pick()?.id);
    else {
      const lease = balancer.acquire();
      seen.push(lease?.endpoint.id);
      lease?.done({ ok: step.ok, latencyMs: step.latencyMs });
    }
    // Never an ejected endpoint (panic mode is off).
    for (const s of balancer.allStats()) {
      if (s.ejectedUntil !== undefined) expect(s.ejectedUntil).toBeGreaterThan(clock.now());
    }
  }
  seen.push(balancer.allStats().map(relative));
  return seen;
}

describe('the balancer does not depend on its clock’s origin', () => {
  it('an ejection that ends exactly at time 0 ejects (and a later one can still happen)', () => {
    const clock = new ManualClock(-100);
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      clock,
      endpoints: ['a', 'b', 'c', 'd'].map((id) => ({ id })),
      outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 100, maxEjectionPercent: 50 },
      panicThresholdPercent: 0,
    });
    const first = balancer.acquire();
    first?.done({ ok: false }); // ejected until -100 + 100 = 0
    const id = first?.endpoint.id as string;
    expect(balancer.stats(id)?.ejectedUntil).toBeDefined();
    for (let i = 0; i < 20; i++) expect(balancer.pick()?.id).not.toBe(id);
    clock.advance(1_000); // back; two more ejections fit under the cap (2 of 4)
    for (let i = 0; i < 2; i++) balancer.acquire()?.done({ ok: false });
    expect(balancer.allStats().filter((s) => s.ejectedUntil !== undefined)).toHaveLength(2);
  });

  it.each([
    ['round-robin', roundRobin],
    ['peak EWMA', peakEwma],
  ] as const)('%s: the same calls give the same picks and stats from any origin', (_, strategy) => {
    fc.assert(
      fc.property(
        fc.integer({ min: -2_000, max: 0 }).map((n) => n * 10),
        fc.integer({ min: 1, max: 2 ** 31 }),
        fc.array(op, { maxLength: 60 }),
        (origin, seed, ops) => {
          expect(run(strategy, origin, seed, ops)).toEqual(run(strategy, 1e6, seed, ops));
        },
      ),
      { numRuns: 300 },
    );
  });
});
