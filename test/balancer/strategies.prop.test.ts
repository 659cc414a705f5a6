import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  LoadBalancer,
  consistentHash,
  leastConnections,
  leastRequest,
  peakEwma,
  random,
  roundRobin,
  smoothWeightedRoundRobin,
  weightedRandom,
  type EndpointSpec,
  type Lease,
  type Strategy,
} from '../../src/balancer/index.js';
import { seededRandom } from '../support/helpers.js';

const endpointSet = (min = 1, max = 12): fc.Arbitrary<EndpointSpec[]> =>
  fc
    .uniqueArray(fc.constantFrom(...'abcdefghijklmnop'.split('')), {
      minLength: min,
      maxLength: max,
    })
    .chain((ids) =>
      fc.tuple(
        ...ids.map((id) => fc.constantFrom(1, 1, 2, 3, 0.5).map((weight) => ({ id, weight }))),
      ),
    );

const allStrategies: (() => Strategy)[] = [
  () => roundRobin(),
  () => random(),
  () => weightedRandom(),
  () => leastConnections(),
  () => leastRequest(),
  () => peakEwma(),
  () => consistentHash(),
  () => consistentHash({ table: 'maglev', boundedLoad: 1.5 }),
  () => smoothWeightedRoundRobin(),
];

describe('balancer strategies (properties)', () => {
  it('round-robin visits every endpoint exactly once per cycle', () => {
    fc.assert(
      fc.property(
        endpointSet(),
        fc.nat(),
        fc.integer({ min: 1, max: 4 }),
        (endpoints, seed, cycles) => {
          const balancer = new LoadBalancer({
            strategy: roundRobin(),
            endpoints,
            random: seededRandom(seed),
          });
          for (let cycle = 0; cycle < cycles; cycle++) {
            const ids = endpoints.map(() => balancer.pick()?.id);
            expect(new Set(ids).size).toBe(endpoints.length);
          }
        },
      ),
    );
  });

  it('weighted random converges to the weights (seeded, 6σ bound: about 1 false alarm in 10⁹ checks)', () => {
    fc.assert(
      fc.property(endpointSet(2, 8), fc.nat(), (endpoints, seed) => {
        const balancer = new LoadBalancer({
          strategy: weightedRandom(),
          endpoints,
          random: seededRandom(seed),
        });
        const draws = 20_000;
        const counts = new Map<string, number>();
        for (let i = 0; i < draws; i++) {
          const id = balancer.pick()?.id ?? '';
          counts.set(id, (counts.get(id) ?? 0) + 1);
        }
        const total = endpoints.reduce((sum, e) => sum + (e.weight ?? 1), 0);
        for (const e of endpoints) {
          const p = (e.weight ?? 1) / total;
          const sigma = Math.sqrt(draws * p * (1 - p));
          expect(Math.abs((counts.get(e.id) ?? 0) - draws * p)).toBeLessThanOrEqual(6 * sigma + 1);
        }
      }),
      { numRuns: 25 },
    );
  });

  it('least-connections never picks an endpoint whose load is above the minimum', () => {
    fc.assert(
      fc.property(
        endpointSet(),
        fc.nat(),
        fc.array(fc.boolean(), { maxLength: 80 }),
        (endpoints, seed, ops) => {
          const balancer = new LoadBalancer({
            strategy: leastConnections(),
            endpoints,
            random: seededRandom(seed),
          });
          const open: Lease[] = [];
          for (const acquire of ops) {
            if (acquire || open.length === 0) {
              const loads = balancer.allStats().map((s) => s.inFlight / s.effectiveWeight);
              const min = Math.min(...loads);
              const lease = balancer.acquire();
              const stats = balancer.stats(lease?.endpoint.id ?? '');
              expect(((stats?.inFlight ?? 0) - 1) / (stats?.effectiveWeight ?? 1)).toBe(min);
              if (lease) open.push(lease);
            } else {
              open.splice(seed % open.length, 1)[0]?.done({ ok: true });
            }
          }
        },
      ),
    );
  });

  it('least-request (P2C) never picks the worse of its two samples', () => {
    fc.assert(
      fc.property(
        endpointSet(2, 12),
        fc.nat(),
        fc.array(fc.boolean(), { maxLength: 60 }),
        (endpoints, seed, ops) => {
          const source = seededRandom(seed);
          const draws: number[] = [];
          const recorder = (): number => {
            const value = source();
            draws.push(value);
            return value;
          };
          const balancer = new LoadBalancer({
            strategy: leastRequest(),
            endpoints,
            random: recorder,
          });
          const open: Lease[] = [];
          for (const acquire of ops) {
            if (acquire || open.length === 0) {
              const before = balancer.allStats();
              draws.length = 0;
              const lease = balancer.acquire();
              // Decode the two samples exactly as the strategy draws them.
              const n = endpoints.length;
              const i = Math.floor((draws[0] ?? 0) * n);
              let j = Math.floor((draws[1] ?? 0) * (n - 1));
              if (j >= i) j++;
              const load = (k: number): number =>
                ((before[k]?.inFlight ?? 0) + 1) / (before[k]?.effectiveWeight ?? 1);
              const picked = before.findIndex((s) => s.id === lease?.endpoint.id);
              expect([i, j]).toContain(picked);
              expect(load(picked)).toBeLessThanOrEqual(Math.max(load(i), load(j)));
              expect(load(picked)).toBe(Math.min(load(i), load(j)));
              if (lease) open.push(lease);
            } else {
              open.splice(seed % open.length, 1)[0]?.done({ ok: true });
            }
          }
        },
      ),
    );
  });

  it('update never loses an in-flight count and never hands out a removed endpoint', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('acquire' as const), key: fc.string({ maxLength: 3 }) }),
      fc.record({ kind: fc.constant('finish' as const), which: fc.nat(), ok: fc.boolean() }),
      fc.record({ kind: fc.constant('update' as const), endpoints: endpointSet(0, 8) }),
    );
    fc.assert(
      fc.property(
        fc.nat(allStrategies.length - 1),
        fc.nat(),
        endpointSet(0, 8),
        fc.array(op, { maxLength: 50 }),
        (s, seed, initial, ops) => {
          const balancer = new LoadBalancer({
            strategy: (allStrategies[s] as () => Strategy)(),
            endpoints: initial,
            random: seededRandom(seed),
            outlierEjection: { consecutiveFailures: 2, maxEjectionPercent: 50 },
          });
          let current = new Set(initial.map((e) => e.id));
          const open: Lease[] = [];
          const detached = new Set<Lease>();
          for (const o of ops) {
            if (o.kind === 'acquire') {
              const lease = balancer.acquire({ key: o.key });
              if (current.size === 0) expect(lease).toBeUndefined();
              else expect(current.has(lease?.endpoint.id ?? '')).toBe(true);
              if (lease) open.push(lease);
            } else if (o.kind === 'finish') {
              if (open.length > 0) open.splice(o.which % open.length, 1)[0]?.done({ ok: o.ok });
            } else {
              balancer.update(o.endpoints);
              const next = new Set(o.endpoints.map((e) => e.id));
              // Leases on removed endpoints no longer count anywhere (even if the id comes back
              // later, as a new endpoint); they can still be finished, harmlessly.
              for (const lease of open) if (!next.has(lease.endpoint.id)) detached.add(lease);
              current = next;
            }
            // Every open lease on a current endpoint is counted there; nothing else is.
            for (const stats of balancer.allStats()) {
              expect(stats.inFlight).toBe(
                open.filter((l) => l.endpoint.id === stats.id && !detached.has(l)).length,
              );
            }
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('ejection never exceeds the maximum percentage, and an endpoint that returns gets traffic again', () => {
    fc.assert(
      fc.property(
        endpointSet(1, 10),
        fc.nat(),
        fc.integer({ min: 0, max: 100 }),
        fc.array(fc.boolean(), { maxLength: 120 }),
        (endpoints, seed, percent, outcomes) => {
          const clock = new ManualClock();
          const balancer = new LoadBalancer({
            strategy: roundRobin(),
            endpoints,
            clock,
            random: seededRandom(seed),
            outlierEjection: {
              consecutiveFailures: 1,
              baseEjectionMs: 100,
              maxEjectionPercent: percent,
            },
            panicThresholdPercent: 0,
          });
          const cap = Math.floor((endpoints.length * percent) / 100);
          for (const ok of outcomes) {
            balancer.acquire()?.done({ ok });
            expect(
              balancer.allStats().filter((x) => x.ejectedUntil !== undefined).length,
            ).toBeLessThanOrEqual(cap);
            clock.advance(7);
          }
          // After every ejection has run out, every endpoint is picked again.
          clock.advance(100 * outcomes.length + 1);
          const seen = new Set(endpoints.map(() => balancer.pick()?.id));
          expect(seen.size).toBe(endpoints.length);
        },
      ),
    );
  });
});
