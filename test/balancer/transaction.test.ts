/**
 * Issue 14, items 5–8: `update()` is a transaction, the ejection cap holds after a shrink, and
 * a misbehaving injected RNG or overflowing weights give typed errors instead of crashes or
 * silent skew.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock, isInvalidOptionError, isKeelError } from '../../src/core/index.js';
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
  type Strategy,
} from '../../src/balancer/index.js';
import { seededRandom, thrown } from '../support/helpers.js';

/** Everything observable about a balancer, for "nothing changed" checks. */
function snapshot(balancer: LoadBalancer): unknown {
  return {
    size: balancer.size,
    endpoints: balancer.endpoints(),
    stats: balancer.allStats(),
    panicking: balancer.panicking,
  };
}

describe('update() is a transaction', () => {
  it('a consistent-hash update too large for the ring leaves the old list, and picks stay in it (item 5)', () => {
    const balancer = new LoadBalancer({
      strategy: consistentHash(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
    });
    const before = snapshot(balancer);
    const many = Array.from({ length: 70_000 }, (_, i) => ({ id: `e${i}` }));
    const error = thrown(() => balancer.update(many));
    expect(isInvalidOptionError(error)).toBe(true);
    expect((error as { option: string }).option).toBe('endpoints');
    expect(snapshot(balancer)).toEqual(before);
    for (let i = 0; i < 200; i++) {
      expect(['a', 'b']).toContain(balancer.pick({ key: `k${i}` })?.id);
    }
  });

  it('a later invalid or duplicate entry changes no weight, zone or data (item 6)', () => {
    const balancer = new LoadBalancer({
      strategy: weightedRandom(),
      endpoints: [
        { id: 'a', data: 1 },
        { id: 'b', data: 2 },
      ],
      random: seededRandom(6),
    });
    const before = snapshot(balancer);
    const bad: unknown[][] = [
      [{ id: 'a', weight: 9, zone: 'z', data: 3 }, { id: 'b' }, { id: 'b' }],
      [
        { id: 'a', weight: 9 },
        { id: 'b', weight: -1 },
      ],
      [{ id: 'a', weight: 9 }, null],
    ];
    for (const list of bad) {
      expect(isKeelError(thrown(() => balancer.update(list as EndpointSpec[])))).toBe(true);
      expect(snapshot(balancer)).toEqual(before);
    }
    const counts = { a: 0, b: 0 };
    for (let i = 0; i < 4000; i++) counts[balancer.pick()?.id as 'a' | 'b']++;
    // Still 50/50 (weight 9 would give ~90/10).
    expect(counts.a).toBeGreaterThan(1700);
    expect(counts.a).toBeLessThan(2300);
  });

  it('a throwing iterable changes nothing', () => {
    const balancer = new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: 'a' }] });
    const before = snapshot(balancer);
    function* list(): Generator<EndpointSpec> {
      yield { id: 'a', weight: 5 };
      yield { id: 'b' };
      throw new Error('iterator broke');
    }
    const error = thrown(() => balancer.update(list()));
    // A typed error naming the option, with the iterator's own error as its cause.
    expect(isInvalidOptionError(error)).toBe(true);
    expect((error as { option: string }).option).toBe('endpoints');
    expect(((error as Error).cause as Error).message).toBe('iterator broke');
    expect(snapshot(balancer)).toEqual(before);
  });
});

describe('the ejection cap holds after every operation (item 7)', () => {
  it('a shrinking update returns ejected endpoints until the cap holds again', () => {
    const clock = new ManualClock();
    const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: ids.map((id) => ({ id })),
      clock,
      outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 10_000, maxEjectionPercent: 50 },
      panicThresholdPercent: 0,
      random: () => 0,
    });
    const returned: string[] = [];
    balancer.onHealthChange((change) => {
      if (change.state === 'returned') returned.push(change.id);
    });
    // Eject a … e (5 of 10, the cap), at distinct times so their return times differ.
    for (const id of ['a', 'b', 'c', 'd', 'e']) {
      clock.advance(1);
      let lease = balancer.acquire();
      while (lease?.endpoint.id !== id) {
        lease?.done({ ok: true });
        lease = balancer.acquire();
      }
      lease.done({ ok: false });
    }
    expect(balancer.allStats().filter((s) => s.ejectedUntil !== undefined)).toHaveLength(5);
    // Keep the five ejected and one healthy endpoint: the cap is now floor(6 × 50%) = 3.
    balancer.update(['a', 'b', 'c', 'd', 'e', 'f'].map((id) => ({ id })));
    const ejected = balancer.allStats().filter((s) => s.ejectedUntil !== undefined);
    expect(ejected.map((s) => s.id)).toEqual(['c', 'd', 'e']);
    // The two whose ejection would have ended first return.
    expect(returned).toEqual(['a', 'b']);
    const picked = new Set<string>();
    for (let i = 0; i < 12; i++) picked.add(balancer.pick()?.id ?? '');
    expect([...picked].sort()).toEqual(['a', 'b', 'f']);
  });
});

const strategies: [string, () => Strategy][] = [
  ['round-robin', () => roundRobin()],
  ['random', () => random()],
  ['weighted-random', () => weightedRandom()],
  ['least-connections', () => leastConnections()],
  ['least-request', () => leastRequest()],
  ['peak-ewma', () => peakEwma()],
  ['consistent-hash', () => consistentHash()],
];

describe('an injected RNG out of [0, 1) gives a typed error (item 8)', () => {
  describe.each(strategies)('%s', (_, make) => {
    it.each([1, Number.NaN, -0.5, 2, Infinity, '0.5', undefined])(
      'random() returning %s',
      (bad) => {
        const good = seededRandom(8);
        let broken = false;
        const balancer = new LoadBalancer({
          strategy: make(),
          endpoints: [{ id: 'a' }, { id: 'b' }, { id: 'c', weight: 2 }],
          random: () => (broken ? (bad as number) : good()),
        });
        const before = snapshot(balancer);
        broken = true;
        // Every strategy draws on its first pick or on a tie; pick several times to reach one.
        let error: unknown;
        for (let i = 0; i < 10 && error === undefined; i++) {
          try {
            balancer.pick({ exclude: new Set(['b']) });
          } catch (caught) {
            error = caught;
          }
        }
        expect(isInvalidOptionError(error)).toBe(true);
        expect((error as { option: string }).option).toBe('random');
        // A failed pick counts nothing and leaves no exclusion behind.
        broken = false;
        expect(snapshot(balancer)).toEqual(before);
        const seen = new Set<string>();
        for (let i = 0; i < 40; i++) seen.add(balancer.pick({ key: `k${i}` })?.id ?? '');
        expect(seen.has('b')).toBe(true);
      },
    );
  });
});

describe('weights whose sum would overflow are refused (item 8)', () => {
  it.each([
    ['weighted-random', () => weightedRandom()],
    ['smooth-weighted-round-robin', () => smoothWeightedRoundRobin()],
  ] as const)('%s', (_, make) => {
    const balancer = new LoadBalancer({ strategy: make(), endpoints: [{ id: 'a' }] });
    const before = snapshot(balancer);
    const error = thrown(() =>
      balancer.update([
        { id: 'a', weight: Number.MAX_VALUE },
        { id: 'b', weight: Number.MAX_VALUE },
        { id: 'c', weight: 1 },
      ]),
    );
    expect(isInvalidOptionError(error)).toBe(true);
    expect((error as { option: string }).option).toMatch(/^endpoints\[\d\]\.weight$/);
    expect(snapshot(balancer)).toEqual(before);
    // The documented bound itself is accepted (Envoy's: the sum fits in a uint32).
    balancer.update([
      { id: 'a', weight: 2 ** 32 - 2 },
      { id: 'b', weight: 1 },
    ]);
    expect(balancer.size).toBe(2);
  });
});
