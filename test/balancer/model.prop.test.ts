/**
 * Model-based test of LoadBalancer (issue 14): random interleavings of update, pick,
 * acquire/done, targeted failures and clock advances, for every strategy, against a small
 * reference of the health layer written from its documented rules. After every operation the
 * balancer must agree with the reference on the endpoint list and on every endpoint's in-flight
 * count, failures, ejection and slow-start weight, and the invariants must hold: the ejection
 * cap, panic mode, no pick of an ejected endpoint outside panic, exclusions honoured when
 * possible, bounded loads, and least-connections' exact minimum.
 */
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
  type Lease,
  type Strategy,
} from '../../src/balancer/index.js';
import { seededRandom } from '../support/helpers.js';

const POOL = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];

interface Config {
  readonly consecutiveFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectionPercent: number;
  readonly panicThresholdPercent: number;
  readonly windowMs: number;
  readonly minWeightPercent: number;
  readonly aggression: number;
  readonly leaseTimeoutMs: number;
}

type Op =
  | { readonly kind: 'update'; readonly list: readonly { id: string; weight: number }[] }
  | { readonly kind: 'pick'; readonly key: string | undefined; readonly exclude: string[] }
  | { readonly kind: 'acquire'; readonly key: string | undefined; readonly exclude: string[] }
  | { readonly kind: 'done'; readonly which: number; readonly ok: boolean; readonly ms: number }
  | { readonly kind: 'fail'; readonly id: string }
  | { readonly kind: 'advance'; readonly ms: number };

const configArb: fc.Arbitrary<Config> = fc
  .record({
    consecutiveFailures: fc.integer({ min: 0, max: 3 }),
    baseEjectionMs: fc.integer({ min: 1, max: 20_000 }),
    extraEjectionMs: fc.integer({ min: 0, max: 60_000 }),
    maxEjectionPercent: fc.constantFrom(0, 10, 34, 50, 90, 100),
    panicThresholdPercent: fc.constantFrom(0, 0, 30, 50, 80),
    windowMs: fc.constantFrom(0, 0, 1_000, 30_000),
    minWeightPercent: fc.constantFrom(1, 10, 50, 100),
    aggression: fc.constantFrom(0.5, 1, 2),
    leaseTimeoutMs: fc.constantFrom(5_000, 60_000),
  })
  .map(({ extraEjectionMs, ...rest }) => ({
    ...rest,
    maxEjectionMs: rest.baseEjectionMs + extraEjectionMs,
  }));

const idSubset = fc.subarray(POOL);
const keyArb = fc.option(fc.constantFrom('k1', 'k2', 'k3', 'user:42', 'x'), { nil: undefined });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 1,
    arbitrary: fc
      .uniqueArray(
        fc.record({ id: fc.constantFrom(...POOL), weight: fc.constantFrom(0.5, 1, 1, 2, 3) }),
        { selector: (e) => e.id, maxLength: POOL.length },
      )
      .map((list) => ({ kind: 'update' as const, list })),
  },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('pick' as const), key: keyArb, exclude: idSubset }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('acquire' as const), key: keyArb, exclude: idSubset }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('done' as const),
      which: fc.nat(),
      ok: fc.boolean(),
      ms: fc.integer({ min: 0, max: 500 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('fail' as const), id: fc.constantFrom(...POOL) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.oneof(fc.integer({ min: 0, max: 2_000 }), fc.integer({ min: 0, max: 70_000 })),
    }),
  },
);

/** Per-endpoint state of the reference: a fresh object per arrival, like the balancer's. */
interface RefEndpoint {
  readonly id: string;
  weight: number;
  inFlight: number;
  consecutiveFailures: number;
  ejectedUntil: number;
  timesEjected: number;
  warmingSince: number;
}

interface RefLease {
  readonly endpoint: RefEndpoint;
  readonly startedAt: number;
  finished: boolean;
  readonly real: Lease;
}

/** The health layer as documented, O(n) everywhere, no caching. */
class Reference {
  list: RefEndpoint[] = [];
  readonly byId = new Map<string, RefEndpoint>();
  readonly leases: RefLease[] = [];
  constructor(readonly config: Config) {}

  get cap(): number {
    return Math.floor((this.list.length * this.config.maxEjectionPercent) / 100);
  }

  get ejected(): number {
    return this.list.filter((e) => e.ejectedUntil !== 0).length;
  }

  get panic(): boolean {
    const n = this.list.length;
    const t = this.config.panicThresholdPercent;
    return n > 0 && t > 0 && ((n - this.ejected) * 100) / n < t;
  }

  available(e: RefEndpoint): boolean {
    return this.panic || e.ejectedUntil === 0;
  }

  /** Slow start: progress quantised to 32 steps, factor progress^(1/aggression), 1/1024 grid. */
  effectiveWeight(e: RefEndpoint, now: number): number {
    const { windowMs, minWeightPercent, aggression } = this.config;
    if (windowMs === 0) return e.weight;
    const progress = (now - e.warmingSince) / windowMs;
    if (progress >= 1) return e.weight;
    const step = Math.floor(Math.max(0, progress) * 32) / 32;
    const factor = Math.max(minWeightPercent / 100, step ** (1 / aggression));
    return Math.max(1 / 1024, Math.round(e.weight * factor * 1024) / 1024);
  }

  /** Everything time changes: ejections that ended return (ramping from their end), then leases older than the timeout expire as failures. */
  tick(now: number): void {
    for (const e of this.list) {
      if (e.ejectedUntil !== 0 && e.ejectedUntil <= now) {
        e.warmingSince = e.ejectedUntil;
        e.ejectedUntil = 0;
      }
    }
    for (const lease of this.leases) {
      if (!lease.finished && lease.startedAt <= now - this.config.leaseTimeoutMs) {
        this.settle(lease, false, now);
      }
    }
  }

  settle(lease: RefLease, ok: boolean, now: number): void {
    lease.finished = true;
    const e = lease.endpoint;
    e.inFlight--;
    if (this.byId.get(e.id) !== e) return;
    if (ok) {
      e.consecutiveFailures = 0;
      return;
    }
    e.consecutiveFailures++;
    const limit = this.config.consecutiveFailures;
    if (limit > 0 && e.consecutiveFailures >= limit && e.ejectedUntil === 0) {
      if (this.ejected + 1 > this.cap) return;
      e.timesEjected++;
      e.ejectedUntil =
        now + Math.min(this.config.baseEjectionMs * e.timesEjected, this.config.maxEjectionMs);
      e.consecutiveFailures = 0;
    }
  }

  update(list: readonly { id: string; weight: number }[], now: number): void {
    this.tick(now);
    const next = list.map(({ id, weight }) => {
      const existing = this.byId.get(id);
      if (existing !== undefined) {
        existing.weight = weight;
        return existing;
      }
      return {
        id,
        weight,
        inFlight: 0,
        consecutiveFailures: 0,
        ejectedUntil: 0,
        timesEjected: 0,
        warmingSince: now,
      };
    });
    this.list = next;
    this.byId.clear();
    for (const e of next) this.byId.set(e.id, e);
    // The cap after a shrink: the ejections that would end first end now.
    const order = next
      .map((e, index) => ({ e, index }))
      .filter(({ e }) => e.ejectedUntil !== 0)
      .sort((x, y) => x.e.ejectedUntil - y.e.ejectedUntil || x.index - y.index);
    for (const { e } of order) {
      if (this.ejected <= this.cap) break;
      e.ejectedUntil = 0;
      e.warmingSince = now;
    }
  }
}

/** Name, factory, and the bounded-load factor c where there is one. */
const strategies: [string, () => Strategy, number | undefined][] = [
  ['round-robin', () => roundRobin(), undefined],
  ['random', () => random(), undefined],
  ['weighted-random', () => weightedRandom(), undefined],
  ['least-connections', () => leastConnections(), undefined],
  ['least-request', () => leastRequest(), undefined],
  ['peak-ewma', () => peakEwma(), undefined],
  ['smooth-weighted-round-robin', () => smoothWeightedRoundRobin(), undefined],
  ['consistent-hash', () => consistentHash(), undefined],
  ['consistent-hash bounded', () => consistentHash({ boundedLoad: 1.25 }), 1.25],
  ['consistent-hash maglev bounded', () => consistentHash({ table: 'maglev', boundedLoad: 2 }), 2],
];

/** Operations and runs per strategy: ten strategies × RUNS × up to OPS operations in all. */
const RUNS = Number(process.env.KEEL_FUZZ_RUNS ?? 60);
const OPS = 60;

function run(
  name: string,
  make: () => Strategy,
  boundedLoad: number | undefined,
  config: Config,
  ops: readonly Op[],
  seed: number,
): void {
  const clock = new ManualClock(1_000);
  const strategy = make();
  const balancer = new LoadBalancer({
    strategy,
    clock,
    random: seededRandom(seed),
    outlierEjection: {
      consecutiveFailures: config.consecutiveFailures,
      baseEjectionMs: config.baseEjectionMs,
      maxEjectionMs: config.maxEjectionMs,
      maxEjectionPercent: config.maxEjectionPercent,
    },
    panicThresholdPercent: config.panicThresholdPercent,
    slowStart: {
      windowMs: config.windowMs,
      minWeightPercent: config.minWeightPercent,
      aggression: config.aggression,
    },
    leaseTimeoutMs: config.leaseTimeoutMs,
  });
  const ref = new Reference(config);

  /** Checks a pick against the reference (already ticked to now), before it counts in flight. */
  const checkPick = (
    id: string | undefined,
    key: string | undefined,
    exclude: ReadonlySet<string>,
    step: string,
  ): void => {
    const now = clock.now();
    const usable = ref.list.filter((e) => ref.available(e));
    if (usable.length === 0) {
      expect(id, step).toBeUndefined();
      return;
    }
    expect(id, step).toBeDefined();
    const chosen = ref.byId.get(id as string);
    expect(chosen, step).toBeDefined();
    expect(ref.available(chosen as RefEndpoint), `${step}: picked an ejected endpoint`).toBe(true);
    const allowed = usable.filter((e) => !exclude.has(e.id));
    if (allowed.length > 0) expect(exclude.has(id as string), `${step}: excluded`).toBe(false);
    const candidates = allowed.length > 0 ? allowed : usable;
    const e = chosen as RefEndpoint;
    if (strategy.name === 'least-connections') {
      const load = (x: RefEndpoint): number => x.inFlight / ref.effectiveWeight(x, now);
      const best = Math.min(...candidates.map(load));
      expect(load(e), `${step}: not the least loaded`).toBe(best);
    }
    if (boundedLoad !== undefined && key !== undefined) {
      // Mirrokni et al.'s cap: ceil(c · (in flight + 1) · w / W), W over every endpoint.
      const totalInFlight = ref.list.reduce((sum, x) => sum + x.inFlight, 0);
      const totalWeight = ref.list.reduce((sum, x) => sum + x.weight, 0);
      const cap = (x: RefEndpoint): number =>
        Math.ceil((boundedLoad * (totalInFlight + 1) * x.weight) / totalWeight);
      const anyUnder = candidates.some((x) => x.inFlight < cap(x));
      if (anyUnder) expect(e.inFlight < cap(e), `${step}: over its bounded-load cap`).toBe(true);
    }
  };

  const check = (step: string): void => {
    const now = clock.now();
    expect(balancer.size, step).toBe(ref.list.length);
    expect(
      balancer.endpoints().map((e) => e.id),
      step,
    ).toEqual(ref.list.map((e) => e.id));
    const stats = balancer.allStats();
    expect(
      stats.map((s) => ({
        id: s.id,
        weight: s.weight,
        effectiveWeight: s.effectiveWeight,
        inFlight: s.inFlight,
        consecutiveFailures: s.consecutiveFailures,
        ejectedUntil: s.ejectedUntil,
        timesEjected: s.timesEjected,
      })),
      step,
    ).toEqual(
      ref.list.map((e) => ({
        id: e.id,
        weight: e.weight,
        effectiveWeight: ref.effectiveWeight(e, now),
        inFlight: e.inFlight,
        consecutiveFailures: e.consecutiveFailures,
        ejectedUntil: e.ejectedUntil === 0 ? undefined : e.ejectedUntil,
        timesEjected: e.timesEjected,
      })),
    );
    const ejected = stats.filter((s) => s.ejectedUntil !== undefined).length;
    expect(ejected, `${step}: ejection cap`).toBeLessThanOrEqual(ref.cap);
    expect(balancer.panicking, `${step}: panic mode`).toBe(ref.panic);
  };

  check('start');
  ops.forEach((op, i) => {
    const step = `op ${i} ${JSON.stringify(op)} (${name})`;
    const now = clock.now();
    switch (op.kind) {
      case 'update':
        balancer.update(op.list);
        ref.update(op.list, now);
        break;
      case 'pick': {
        ref.tick(now);
        const exclude = new Set(op.exclude);
        const picked = balancer.pick({ key: op.key, exclude });
        checkPick(picked?.id, op.key, exclude, step);
        break;
      }
      case 'acquire': {
        ref.tick(now);
        const exclude = new Set(op.exclude);
        const lease = balancer.acquire({ key: op.key, exclude });
        checkPick(lease?.endpoint.id, op.key, exclude, step);
        if (lease !== undefined) {
          const e = ref.byId.get(lease.endpoint.id) as RefEndpoint;
          e.inFlight++;
          ref.leases.push({ endpoint: e, startedAt: now, finished: false, real: lease });
        }
        break;
      }
      case 'done': {
        const open = ref.leases.filter((l) => !l.finished);
        if (open.length === 0) break;
        const lease = open[op.which % open.length] as RefLease;
        lease.real.done({ ok: op.ok, latencyMs: op.ms });
        ref.tick(now);
        if (!lease.finished) ref.settle(lease, op.ok, now);
        break;
      }
      case 'fail': {
        // Aim a failure at one endpoint: exclude every other one.
        ref.tick(now);
        const exclude = new Set(POOL.filter((id) => id !== op.id));
        const lease = balancer.acquire({ exclude });
        checkPick(lease?.endpoint.id, undefined, exclude, step);
        if (lease !== undefined) {
          const e = ref.byId.get(lease.endpoint.id) as RefEndpoint;
          e.inFlight++;
          const record = { endpoint: e, startedAt: now, finished: false, real: lease };
          ref.leases.push(record);
          lease.done({ ok: false });
          ref.settle(record, false, now);
        }
        break;
      }
      case 'advance':
        clock.advance(op.ms);
        ref.tick(clock.now());
        break;
    }
    check(step);
  });
}

describe('LoadBalancer against a reference health layer', () => {
  it.each(strategies)('%s: every operation keeps the invariants', (name, make, boundedLoad) => {
    fc.assert(
      fc.property(
        configArb,
        fc.array(opArb, { maxLength: OPS }),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        (config, ops, seed) => {
          run(
            name,
            make,
            boundedLoad,
            config,
            [
              {
                kind: 'update',
                list: [
                  { id: 'a', weight: 1 },
                  { id: 'b', weight: 2 },
                  { id: 'c', weight: 1 },
                ],
              },
              ...ops,
            ],
            seed,
          );
        },
      ),
      { numRuns: RUNS },
    );
  });
});
