import { describe, expect, it } from 'vitest';
import { ManualClock, isInvalidOptionError, isKeelError } from '../../src/core/index.js';
import {
  LoadBalancer,
  NoEndpointError,
  consistentHash,
  leastConnections,
  leastRequest,
  peakEwma,
  random,
  roundRobin,
  smoothWeightedRoundRobin,
  weightedRandom,
  type HealthChange,
  type Strategy,
} from '../../src/balancer/index.js';
import { invalidOption, seededRandom, thrown } from '../support/helpers.js';

const three = [{ id: 'a' }, { id: 'b' }, { id: 'c' }];
const factories: [string, () => Strategy][] = [
  ['round-robin', () => roundRobin()],
  ['random', () => random()],
  ['weighted-random', () => weightedRandom()],
  ['least-connections', () => leastConnections()],
  ['least-request', () => leastRequest()],
  ['peak-ewma', () => peakEwma()],
  ['smooth-weighted-round-robin', () => smoothWeightedRoundRobin()],
  ['consistent-hash', () => consistentHash()],
  ['consistent-hash maglev bounded', () => consistentHash({ table: 'maglev', boundedLoad: 1.25 })],
];

describe.each(factories)('every strategy: %s', (_, make) => {
  it('returns undefined with no endpoints, and picks one when there is one', () => {
    const balancer = new LoadBalancer({ strategy: make(), random: seededRandom(1) });
    expect(balancer.pick()).toBeUndefined();
    expect(balancer.acquire()).toBeUndefined();
    balancer.update([{ id: 'only', data: 42 }]);
    expect(balancer.pick({ key: 'k' })?.id).toBe('only');
    expect(balancer.pick()?.data).toBe(42);
  });

  it('never hands out a removed endpoint and honours exclude when it can', () => {
    const balancer = new LoadBalancer({
      strategy: make(),
      endpoints: three,
      random: seededRandom(2),
    });
    balancer.update([{ id: 'a' }, { id: 'c' }]);
    for (let i = 0; i < 200; i++) {
      const id = balancer.pick({ key: `k${i}` })?.id;
      expect(['a', 'c']).toContain(id);
      expect(balancer.pick({ key: `k${i}`, exclude: new Set(['a']) })?.id).toBe('c');
    }
    // Everything excluded: a repeat is better than nothing.
    expect(balancer.pick({ exclude: new Set(['a', 'c']) })).toBeDefined();
  });

  it('skips ejected endpoints', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      strategy: make(),
      endpoints: three,
      clock,
      random: seededRandom(3),
      outlierEjection: { consecutiveFailures: 1, baseEjectionMs: 1000, maxEjectionPercent: 50 },
    });
    let lease = balancer.acquire({ key: 'x' });
    while (lease?.endpoint.id !== 'b') {
      lease?.done({ ok: true });
      lease = balancer.acquire({ key: `x${clock.now()}${Math.random()}` });
    }
    lease.done({ ok: false });
    expect(balancer.stats('b')?.ejectedUntil).toBe(1000);
    for (let i = 0; i < 100; i++) expect(balancer.pick({ key: `k${i}` })?.id).not.toBe('b');
  });
});

describe('LoadBalancer', () => {
  it('round-robin visits each endpoint in turn from a random offset', () => {
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: three,
      random: () => 0.5,
    });
    expect([1, 2, 3, 4].map(() => balancer.pick()?.id)).toEqual(['b', 'c', 'a', 'b']);
  });

  it('round-robin continues after the last pick across an update instead of restarting', () => {
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: three,
      random: () => 0,
    });
    expect(balancer.pick()?.id).toBe('a');
    expect(balancer.pick()?.id).toBe('b');
    balancer.update([...three, { id: 'd' }]);
    expect([1, 2, 3].map(() => balancer.pick()?.id)).toEqual(['c', 'd', 'a']);
  });

  it('smooth weighted round-robin is not skewed by a pick that excluded an endpoint', () => {
    const balancer = new LoadBalancer({ strategy: smoothWeightedRoundRobin(), endpoints: three });
    expect(balancer.pick({ exclude: new Set(['a']) })?.id).not.toBe('a');
    const next = [1, 2, 3, 4, 5, 6].map(() => balancer.pick()?.id);
    // Equal weights: every endpoint twice in six picks — `a` is not starved afterwards.
    expect(next.filter((id) => id === 'a')).toHaveLength(2);
  });

  it("smooth weighted round-robin gives nginx's sequence for weights 5, 1, 1", () => {
    const balancer = new LoadBalancer({
      strategy: smoothWeightedRoundRobin(),
      endpoints: [
        { id: 'a', weight: 5 },
        { id: 'b', weight: 1 },
        { id: 'c', weight: 1 },
      ],
    });
    expect([1, 2, 3, 4, 5, 6, 7].map(() => balancer.pick()?.id).join(' ')).toBe('a a b a c a a');
  });

  it('keeps per-endpoint state for endpoints that stay and drops it for those that leave', () => {
    const balancer = new LoadBalancer({
      strategy: leastRequest(),
      endpoints: three,
      random: seededRandom(4),
    });
    const leases = [balancer.acquire(), balancer.acquire(), balancer.acquire()];
    const held = leases.map((l) => l?.endpoint.id ?? '');
    const before = balancer.allStats().reduce((sum, s) => sum + s.inFlight, 0);
    expect(before).toBe(3);
    balancer.update([{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }]);
    expect(balancer.allStats().reduce((sum, s) => sum + s.inFlight, 0)).toBe(3);
    balancer.update([{ id: 'd' }]);
    expect(balancer.stats('a')).toBeUndefined();
    // Finishing a lease on a removed endpoint is harmless.
    for (const lease of leases) lease?.done({ ok: true });
    balancer.update([{ id: 'a' }]);
    expect(balancer.stats('a')?.inFlight).toBe(0);
    expect(held).toHaveLength(3);
  });

  it('an updated weight, zone or data replaces the endpoint object but keeps its state', () => {
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: [{ id: 'a', data: 1 }],
    });
    const lease = balancer.acquire();
    balancer.update([{ id: 'a', data: 2, weight: 3 }]);
    expect(balancer.pick()?.data).toBe(2);
    expect(balancer.stats('a')).toMatchObject({ inFlight: 1, weight: 3 });
    lease?.done({ ok: true });
    expect(balancer.stats('a')?.inFlight).toBe(0);
  });

  it('done() is idempotent and records latency and outcome', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({ strategy: peakEwma(), endpoints: [{ id: 'a' }], clock });
    const lease = balancer.acquire();
    lease?.done({ ok: true, latencyMs: 40 });
    lease?.done({ ok: false, latencyMs: 1 });
    expect(balancer.stats('a')).toMatchObject({
      inFlight: 0,
      successes: 1,
      failures: 0,
      latencyEwmaMs: 40,
      picks: 1,
    });
    clock.advance(10_000); // one decay time: e⁻¹ of the estimate is left
    expect(balancer.stats('a')?.latencyEwmaMs).toBeCloseTo(40 * Math.exp(-1), 9);
    // Peak sensitivity: a slower sample replaces the estimate at once.
    balancer.acquire()?.done({ ok: true, latencyMs: 100 });
    expect(balancer.stats('a')?.latencyEwmaMs).toBe(100);
  });

  it('expires a lease that is never finished, counting it as a failure', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      strategy: leastRequest(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      clock,
      leaseTimeoutMs: 1000,
      outlierEjection: { consecutiveFailures: 0 },
    });
    const forgotten = balancer.acquire();
    const id = forgotten?.endpoint.id ?? '';
    expect(balancer.stats(id)?.inFlight).toBe(1);
    clock.advance(999);
    expect(balancer.stats(id)?.inFlight).toBe(1);
    clock.advance(1);
    expect(balancer.stats(id)).toMatchObject({ inFlight: 0, failures: 1 }); // expired on access
    const next = balancer.acquire(); // acquire() expires old leases too
    next?.done({ ok: true });
    forgotten?.done({ ok: true }); // too late: ignored
    expect(balancer.stats(id)).toMatchObject({ inFlight: 0, failures: 1 });
  });

  it('ejects after k consecutive failures for base × times ejected, capped, and brings it back', () => {
    const clock = new ManualClock();
    const changes: HealthChange[] = [];
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }],
      clock,
      random: () => 0,
      outlierEjection: {
        consecutiveFailures: 2,
        baseEjectionMs: 100,
        maxEjectionMs: 250,
        maxEjectionPercent: 50,
      },
      panicThresholdPercent: 0,
    });
    using _subscription = balancer.onHealthChange((change) => changes.push(change));
    const failOn = (id: string, times: number): void => {
      for (let done = 0; done < times;) {
        const lease = balancer.acquire();
        if (lease === undefined) throw new Error('no endpoint');
        if (lease.endpoint.id === id) {
          lease.done({ ok: false });
          done++;
        } else {
          lease.done({ ok: true });
        }
      }
    };
    failOn('a', 2);
    expect(balancer.stats('a')).toMatchObject({ ejectedUntil: 100, timesEjected: 1 });
    clock.advance(100);
    expect(balancer.stats('a')?.ejectedUntil).toBeUndefined();
    failOn('a', 2);
    expect(balancer.stats('a')).toMatchObject({ ejectedUntil: clock.now() + 200, timesEjected: 2 });
    clock.advance(200);
    balancer.pick();
    failOn('a', 2);
    expect(balancer.stats('a')).toMatchObject({ ejectedUntil: clock.now() + 250, timesEjected: 3 }); // capped
    expect(changes.map((c) => `${c.id}:${c.state}`)).toEqual([
      'a:ejected',
      'a:returned',
      'a:ejected',
      'a:returned',
      'a:ejected',
    ]);
    expect(_subscription).toBeDefined();
  });

  it('never ejects more than the maximum percentage', () => {
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: three,
      outlierEjection: { consecutiveFailures: 1, maxEjectionPercent: 34 },
      panicThresholdPercent: 0,
    });
    for (let i = 0; i < 30; i++) balancer.acquire()?.done({ ok: false });
    expect(balancer.allStats().filter((s) => s.ejectedUntil !== undefined)).toHaveLength(1);
  });

  it('panic mode balances over every endpoint when too few are healthy', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      strategy: roundRobin(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      clock,
      outlierEjection: { consecutiveFailures: 1, maxEjectionPercent: 100 },
      panicThresholdPercent: 60,
    });
    expect(balancer.panicking).toBe(false);
    const lease = balancer.acquire();
    lease?.done({ ok: false }); // 1 of 2 ejected: 50% usable < 60%: panic
    expect(balancer.panicking).toBe(true);
    const seen = new Set([1, 2, 3, 4].map(() => balancer.pick()?.id));
    expect(seen).toEqual(new Set(['a', 'b']));
  });

  it('slow start ramps a new endpoint up from minWeightPercent over the window', () => {
    const clock = new ManualClock();
    const balancer = new LoadBalancer({
      strategy: weightedRandom(),
      endpoints: [{ id: 'old', weight: 10 }],
      clock,
      random: seededRandom(9),
      slowStart: { windowMs: 1000, minWeightPercent: 10 },
    });
    clock.advance(5000);
    balancer.update([
      { id: 'old', weight: 10 },
      { id: 'new', weight: 10 },
    ]);
    expect(balancer.stats('new')?.effectiveWeight).toBe(1);
    expect(balancer.stats('old')?.effectiveWeight).toBe(10);
    clock.advance(500);
    expect(balancer.stats('new')?.effectiveWeight).toBe(5);
    let share = 0;
    for (let i = 0; i < 4000; i++) if (balancer.pick()?.id === 'new') share++;
    expect(share / 4000).toBeGreaterThan(0.28); // 5 / 15 ≈ 0.33
    expect(share / 4000).toBeLessThan(0.39);
    clock.advance(500);
    expect(balancer.stats('new')?.effectiveWeight).toBe(10);
  });

  it('consistent hashing keeps a key on its endpoint and moves it only when it must', () => {
    const balancer = new LoadBalancer({ strategy: consistentHash(), endpoints: three });
    const owner = balancer.pick({ key: 'cart:1' })?.id;
    for (let i = 0; i < 10; i++) expect(balancer.pick({ key: 'cart:1' })?.id).toBe(owner);
    const others = three.filter((e) => e.id !== owner);
    balancer.update([...three, { id: 'd' }]);
    expect(['d', owner]).toContain(balancer.pick({ key: 'cart:1' })?.id);
    balancer.update(others);
    expect(others.map((e) => e.id)).toContain(balancer.pick({ key: 'cart:1' })?.id);
  });

  it('acquireOrThrow throws a typed error when there is nothing to pick', () => {
    const error = thrown(() => new LoadBalancer({ strategy: roundRobin() }).acquireOrThrow());
    expect(isKeelError(error)).toBe(true);
    expect((error as { code: string }).code).toBe('KEEL_NO_ENDPOINT');
  });

  // Issue 16: the error named neither the service nor the real reason ("every endpoint is
  // excluded" when they were all ejected).
  it('NoEndpointError names the balancer and says the list is empty', () => {
    const error = thrown(() =>
      new LoadBalancer({ name: 'orders', strategy: roundRobin() }).acquireOrThrow(),
    ) as NoEndpointError;
    expect(error).toBeInstanceOf(NoEndpointError);
    expect(error.service).toBe('orders');
    expect(error.reason).toBe('no-endpoints');
    expect(error.endpoints).toBe(0);
    expect(error.message).toBe(
      'no endpoint to pick for "orders" (round-robin): the endpoint list is empty',
    );
    const unnamed = thrown(() =>
      new LoadBalancer({ strategy: roundRobin() }).acquireOrThrow(),
    ) as NoEndpointError;
    expect(unnamed.service).toBeUndefined();
    expect(unnamed.message).toBe('no endpoint to pick (round-robin): the endpoint list is empty');
  });

  it('NoEndpointError says every endpoint is ejected (panic mode off), excluded ones or not', () => {
    const balancer = new LoadBalancer({
      name: 'orders',
      strategy: leastRequest(),
      endpoints: [{ id: 'a' }, { id: 'b' }],
      clock: new ManualClock(),
      outlierEjection: { consecutiveFailures: 1, maxEjectionPercent: 100 },
      panicThresholdPercent: 0,
    });
    balancer.acquire()?.done({ ok: false });
    balancer.acquire()?.done({ ok: false });
    for (const exclude of [undefined, new Set(['a'])]) {
      const error = thrown(() => balancer.acquireOrThrow({ exclude })) as NoEndpointError;
      expect(error.reason).toBe('all-ejected');
      expect(error.endpoints).toBe(2);
      expect(error.ejected).toBe(2);
      expect(error.message).toBe(
        'no endpoint to pick for "orders" (least-request): all 2 endpoints are ejected by ' +
          'outlier detection and panic mode is off',
      );
    }
  });

  it('NoEndpointError says when the strategy picked none of the usable endpoints', () => {
    const declines: Strategy = {
      name: 'never',
      loadAware: false,
      reset: () => {},
      pick: () => undefined,
    };
    const error = thrown(() =>
      new LoadBalancer({ strategy: declines, endpoints: three }).acquireOrThrow(),
    ) as NoEndpointError;
    expect(error.reason).toBe('strategy-declined');
    expect(error.ejected).toBe(0);
    expect(error.message).toBe(
      'no endpoint to pick (never): the strategy picked none of the 3 endpoints (0 ejected)',
    );
  });

  it('NoEndpointError does not blame ejection while panic mode balances over ejected endpoints', () => {
    let decline = false;
    const inner = roundRobin();
    const flaky: Strategy = {
      name: 'flaky',
      loadAware: false,
      reset: (states) => inner.reset(states),
      pick: (ctx) => (decline ? undefined : inner.pick(ctx)),
    };
    const balancer = new LoadBalancer({
      strategy: flaky,
      endpoints: [{ id: 'a' }, { id: 'b' }],
      clock: new ManualClock(),
      outlierEjection: { consecutiveFailures: 1, maxEjectionPercent: 100 },
      panicThresholdPercent: 50,
    });
    balancer.acquire()?.done({ ok: false });
    balancer.acquire()?.done({ ok: false });
    expect(balancer.panicking).toBe(true);
    decline = true;
    const error = thrown(() => balancer.acquireOrThrow()) as NoEndpointError;
    expect(error.ejected).toBe(2);
    expect(error.reason).toBe('strategy-declined');
    expect(error.message).toBe(
      'no endpoint to pick (flaky): the strategy picked none of the 2 endpoints (2 ejected, ' +
        'panic mode on)',
    );
  });

  it('validates the name option', () => {
    expect(invalidOption(() => new LoadBalancer({ strategy: roundRobin(), name: '' })).option).toBe(
      'name',
    );
    expect(
      invalidOption(() => new LoadBalancer({ strategy: roundRobin(), name: 7 as never })).option,
    ).toBe('name');
    expect(new LoadBalancer({ strategy: roundRobin(), name: 'orders' }).name).toBe('orders');
    expect(new LoadBalancer({ strategy: roundRobin() }).name).toBeUndefined();
  });

  it('rejects bad endpoints and options with typed errors naming them', () => {
    expect(
      invalidOption(
        () => new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: 'a', weight: 0 }] }),
      ).option,
    ).toBe('endpoints[0].weight');
    expect(
      invalidOption(() => new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: '' }] }))
        .option,
    ).toBe('endpoints[0].id');
    expect(
      invalidOption(() => new LoadBalancer({ strategy: roundRobin(), endpoints: [null as never] }))
        .option,
    ).toBe('endpoints[0]');
    const dup = thrown(
      () => new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: 'a' }, { id: 'a' }] }),
    );
    expect((dup as { code: string }).code).toBe('KEEL_DUPLICATE_ENDPOINT');
    expect(invalidOption(() => new LoadBalancer({} as never)).option).toBe('strategy');
    expect(
      invalidOption(() => new LoadBalancer({ strategy: roundRobin(), leaseTimeoutMs: 0 })).option,
    ).toBe('leaseTimeoutMs');
    expect(
      invalidOption(
        () =>
          new LoadBalancer({
            strategy: roundRobin(),
            outlierEjection: { maxEjectionPercent: 101 },
          }),
      ).option,
    ).toBe('outlierEjection.maxEjectionPercent');
    expect(
      invalidOption(
        () =>
          new LoadBalancer({
            strategy: roundRobin(),
            outlierEjection: { baseEjectionMs: 500, maxEjectionMs: 100 },
          }),
      ).option,
    ).toBe('outlierEjection.maxEjectionMs');
    expect(
      invalidOption(
        () => new LoadBalancer({ strategy: roundRobin(), slowStart: { aggression: 0 } }),
      ).option,
    ).toBe('slowStart.aggression');
    expect(invalidOption(() => leastRequest({ activeRequestBias: -1 })).option).toBe(
      'activeRequestBias',
    );
    expect(invalidOption(() => consistentHash({ boundedLoad: 1 })).option).toBe('boundedLoad');
    const balancer = new LoadBalancer({ strategy: roundRobin(), endpoints: three });
    expect(invalidOption(() => balancer.update(5 as never)).option).toBe('endpoints');
    const lease = balancer.acquire();
    expect(invalidOption(() => lease?.done({ ok: 'yes' } as never)).option).toBe('outcome');
    expect(invalidOption(() => lease?.done({ ok: true, latencyMs: -1 })).option).toBe(
      'outcome.latencyMs',
    );
    expect(
      isInvalidOptionError(
        thrown(() => new LoadBalancer({ strategy: roundRobin(), clock: {} as never })),
      ),
    ).toBe(true);
  });
});
