import { describe, expect, it } from 'vitest';
import { EndpointState } from '../../src/balancer/state.js';
import {
  nginxSmoothWeightedRoundRobin,
  smoothWeightedRoundRobin,
  type SmoothWeightedRoundRobinStrategy,
} from '../../src/balancer/strategies/swrr.js';
import type { PickContext, Strategy } from '../../src/balancer/strategy.js';

type State = EndpointState<undefined>;

/** A pick context whose eligibility, weights and version the test sets by hand. */
class FakeContext implements PickContext<undefined> {
  version = 0;
  key = undefined;
  /** Ids that are not usable. */
  readonly down = new Set<string>();
  /** Effective weights that differ from the endpoint's weight. */
  readonly weights = new Map<string, number>();
  /** How many times `usable` was asked. */
  usableCalls = 0;

  random(): number {
    return 0;
  }

  randomIndex(): number {
    return 0;
  }

  latencyOf(): number | undefined {
    return undefined;
  }

  usable(state: State): boolean {
    this.usableCalls++;
    return !this.down.has(state.id);
  }

  weightOf(state: State): number {
    return this.weights.get(state.id) ?? state.endpoint.weight;
  }
}

const endpoint = (id: string, weight: number): State =>
  new EndpointState({ id, weight, zone: undefined, data: undefined }, 0);

const endpoints = (weights: Record<string, number>): State[] =>
  Object.entries(weights).map(([id, weight], index) => {
    const state = endpoint(id, weight);
    state.index = index;
    return state;
  });

function picks(strategy: Strategy<undefined>, ctx: PickContext<undefined>, count: number) {
  const ids: (string | undefined)[] = [];
  for (let i = 0; i < count; i++) ids.push(strategy.pick(ctx)?.id);
  return ids;
}

/** `current` of every state, as the strategy keeps it. */
function currents(
  strategy: SmoothWeightedRoundRobinStrategy<undefined>,
  states: readonly State[],
): number[] {
  return states.map((state) => {
    const current = strategy.currentOf(state);
    if (current === undefined) throw new Error(`${state.id} is not in the strategy's list`);
    return current;
  });
}

const strategies = [
  ['nginx reference', () => nginxSmoothWeightedRoundRobin<undefined>()],
  ['grouped', () => smoothWeightedRoundRobin<undefined>()],
] as const;

describe.each(strategies)('smooth weighted round-robin (%s)', (_, create) => {
  it("picks nginx's documented sequence a a b a c a a for weights {a: 5, b: 1, c: 1}", () => {
    // By hand from the algorithm (the table in nginx commit 2c96914): `current` after adding the
    // weights → winner → `current` after the winner loses the total 7.
    //   5  1  1 → a → -2  1  1
    //   3  2  2 → a → -4  2  2
    //   1  3  3 → b →  1 -4  3   (b and c tie at 3: the first in list order wins)
    //   6 -3  4 → a → -1 -3  4
    //   4 -2  5 → c →  4 -2 -2
    //   9 -1 -1 → a →  2 -1 -1
    //   7  0  0 → a →  0  0  0
    const states = endpoints({ a: 5, b: 1, c: 1 });
    const strategy = create();
    strategy.reset(states);
    const ctx = new FakeContext();
    const after = [
      [-2, 1, 1],
      [-4, 2, 2],
      [1, -4, 3],
      [-1, -3, 4],
      [4, -2, -2],
      [2, -1, -1],
      [0, 0, 0],
    ];
    const seen: (string | undefined)[] = [];
    for (const expected of after) {
      seen.push(strategy.pick(ctx)?.id);
      expect(currents(strategy, states)).toEqual(expected);
    }
    expect(seen).toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a']);
    // The cycle repeats from the all-zero state.
    expect(picks(strategy, ctx, 7)).toEqual(['a', 'a', 'b', 'a', 'c', 'a', 'a']);
  });

  it('returns undefined with no endpoints, before and after reset', () => {
    const strategy = create();
    const ctx = new FakeContext();
    expect(strategy.pick(ctx)).toBeUndefined();
    strategy.reset([]);
    expect(strategy.pick(ctx)).toBeUndefined();
  });

  it('returns undefined when nothing is usable, and leaves every current alone', () => {
    const states = endpoints({ a: 2, b: 1 });
    const strategy = create();
    strategy.reset(states);
    const ctx = new FakeContext();
    ctx.down.add('a').add('b');
    expect(picks(strategy, ctx, 3)).toEqual([undefined, undefined, undefined]);
    expect(currents(strategy, states)).toEqual([0, 0]);
    ctx.down.clear();
    ctx.version++;
    expect(picks(strategy, ctx, 3)).toEqual(['a', 'b', 'a']);
  });

  it('always picks a single endpoint, whose current stays 0', () => {
    const states = endpoints({ only: 7 });
    const strategy = create();
    strategy.reset(states);
    const ctx = new FakeContext();
    expect(picks(strategy, ctx, 5)).toEqual(['only', 'only', 'only', 'only', 'only']);
    expect(currents(strategy, states)).toEqual([0]);
  });

  it('skips an unusable endpoint, which keeps its current until it returns', () => {
    const states = endpoints({ a: 1, b: 1, c: 1 });
    const strategy = create();
    strategy.reset(states);
    const ctx = new FakeContext();
    expect(picks(strategy, ctx, 1)).toEqual(['a']); // currents -2 1 1
    ctx.down.add('b');
    ctx.version++;
    // a and c, total 2: -1 2 → c → -1 0; 0 1 → c → 0 -1; 1 0 → a → -1 0
    expect(picks(strategy, ctx, 3)).toEqual(['c', 'c', 'a']);
    expect(currents(strategy, states)).toEqual([-1, 1, 0]);
    ctx.down.clear();
    ctx.version++;
    // total 3 again: 0 2 1 → b → 0 -1 1; 1 0 2 → c → 1 0 -1; 2 1 0 → a → -1 1 0
    expect(picks(strategy, ctx, 3)).toEqual(['b', 'c', 'a']);
  });

  it('keeps the current of endpoints that stay across reset: an added endpoint does not restart the rotation', () => {
    const [a, b, c] = endpoints({ a: 1, b: 1, c: 1 });
    const strategy = create();
    const ctx = new FakeContext();
    strategy.reset([a as State, b as State, c as State]);
    // 1 1 1 → a → -2 1 1; -1 2 2 → b → -1 -1 2
    expect(picks(strategy, ctx, 2)).toEqual(['a', 'b']);
    const d = endpoint('d', 1);
    const states = [a as State, b as State, c as State, d];
    strategy.reset(states);
    ctx.version++;
    expect(currents(strategy, states)).toEqual([-1, -1, 2, 0]);
    // c, whose turn it was, comes next; then the new d; then the rotation goes on with period 4:
    // 0 0 3 1 → c → 0 0 -1 1; 1 1 0 2 → d → 1 1 0 -2; 2 2 1 -1 → a → -2 2 1 -1;
    // -1 3 2 0 → b → -1 -1 2 0 (the state right after the update).
    // Restarting (all zeros) would have given a b c d.
    expect(picks(strategy, ctx, 8)).toEqual(['c', 'd', 'a', 'b', 'c', 'd', 'a', 'b']);
  });

  it('keeps the current of endpoints that stay across reset: a removed endpoint does not restart the rotation', () => {
    const states = endpoints({ a: 1, b: 1, c: 1, d: 1 });
    const strategy = create();
    const ctx = new FakeContext();
    strategy.reset(states);
    // 1 1 1 1 → a → -3 1 1 1; -2 2 2 2 → b → -2 -2 2 2
    expect(picks(strategy, ctx, 2)).toEqual(['a', 'b']);
    const stay = states.slice(1); // a leaves
    strategy.reset(stay);
    ctx.version++;
    expect(currents(strategy, stay)).toEqual([-2, 2, 2]);
    // b was just served: c and d come first, not b as a restarted rotation would give.
    // -1 3 3 → c → -1 0 3; 0 1 4 → d → 0 1 1; 1 2 2 → c → 1 -1 2; 2 0 3 → d → 2 0 0;
    // 3 1 1 → b → 0 1 1; then b c d b c d … (the current of the removed a left with it).
    expect(picks(strategy, ctx, 8)).toEqual(['c', 'd', 'c', 'd', 'b', 'c', 'd', 'b']);
  });

  it('uses the list order of the last reset to break ties', () => {
    const [a, b, c] = endpoints({ a: 1, b: 1, c: 1 });
    const strategy = create();
    const ctx = new FakeContext();
    strategy.reset([c as State, a as State, b as State]);
    expect(picks(strategy, ctx, 6)).toEqual(['c', 'a', 'b', 'c', 'a', 'b']);
  });

  it('follows effective weights from the context, not the configured weight', () => {
    const states = endpoints({ a: 1, b: 1 });
    const strategy = create();
    strategy.reset(states);
    const ctx = new FakeContext();
    ctx.weights.set('b', 3);
    // 1 3 → b → 1 -1; 2 2 → a → -2 2; -1 5 → b → -1 1; 0 4 → b → 0 0
    expect(picks(strategy, ctx, 4)).toEqual(['b', 'a', 'b', 'b']);
  });

  it('lags more than one pick behind the ideal share for some weights (the tight bound is not 1)', () => {
    // Weights 3 3 3 3 3 1 1 1 1 (total 19): some endpoint's current reaches 20 = 19·(20/19), i.e.
    // it lags 20/19 of a pick behind k·w/W. The property tests check the proven bound H_n − 1.
    const states = endpoints({ a: 3, b: 3, c: 3, d: 3, e: 3, f: 1, g: 1, h: 1, i: 1 });
    const strategy = create();
    strategy.reset(states);
    const ctx = new FakeContext();
    let most = 0;
    for (let k = 0; k < 19; k++) {
      strategy.pick(ctx);
      most = Math.max(most, ...currents(strategy, states));
    }
    expect(most).toBe(20);
  });
});

describe('smoothWeightedRoundRobin (grouped)', () => {
  it('names itself and is not load-aware', () => {
    const grouped = smoothWeightedRoundRobin();
    const reference = nginxSmoothWeightedRoundRobin();
    expect([grouped.name, grouped.loadAware]).toEqual(['smooth-weighted-round-robin', false]);
    expect([reference.name, reference.loadAware]).toEqual(['swrr-reference', false]);
  });

  it('does not consult every endpoint on each pick when weights repeat', () => {
    const weights: Record<string, number> = {};
    for (let i = 0; i < 200; i++) weights[`e${i}`] = 1 + (i % 4);
    for (const scale of [1, 1 / 8]) {
      const scaled = Object.fromEntries(Object.entries(weights).map(([id, w]) => [id, w * scale]));
      const strategy = smoothWeightedRoundRobin<undefined>();
      strategy.reset(endpoints(scaled));
      const ctx = new FakeContext();
      strategy.pick(ctx); // rebuild: one usable() per endpoint
      ctx.usableCalls = 0;
      picks(strategy, ctx, 1000);
      // One check of the winner per pick; the nginx loop would ask 200 times per pick.
      expect(ctx.usableCalls).toBe(1000);
    }
  });

  it('runs the nginx loop itself when float weights would round (and still matches it)', () => {
    const weights = { a: 0.1, b: 0.2, c: 0.3, d: 0.1 };
    const fast = smoothWeightedRoundRobin<undefined>();
    const reference = nginxSmoothWeightedRoundRobin<undefined>();
    const fastStates = endpoints(weights);
    const referenceStates = endpoints(weights);
    fast.reset(fastStates);
    reference.reset(referenceStates);
    const ctx = new FakeContext();
    fast.pick(ctx);
    reference.pick(ctx);
    ctx.usableCalls = 0;
    for (let i = 0; i < 500; i++) {
      expect(fast.pick(ctx)?.id).toBe(reference.pick(ctx)?.id);
    }
    expect(ctx.usableCalls).toBe(2 * 500 * 4); // both ran the loop
    expect(currents(fast, fastStates)).toEqual(currents(reference, referenceStates));
  });

  it('matches the loop after a slow-start-like step with a rounding weight, once weights are integers again', () => {
    // While e0 weighs 0.37 the sums round and `current`s pick up fine fractional bits; integer
    // weights afterwards do not make grouping exact by themselves (the currents are checked too).
    const weights: Record<string, number> = {};
    for (let i = 0; i < 50; i++) weights[`e${i}`] = 1 + (i % 4);
    const fast = smoothWeightedRoundRobin<undefined>();
    const reference = nginxSmoothWeightedRoundRobin<undefined>();
    const fastStates = endpoints(weights);
    const referenceStates = endpoints(weights);
    fast.reset(fastStates);
    reference.reset(referenceStates);
    const ctx = new FakeContext();
    for (const step of [0.37, 1.5, undefined, 0.37 * 3, undefined]) {
      if (step === undefined) ctx.weights.delete('e0');
      else ctx.weights.set('e0', step);
      ctx.version++;
      for (let i = 0; i < 600; i++) {
        const expected = reference.pick(ctx)?.id;
        if (fast.pick(ctx)?.id !== expected) expect(fast.pick(ctx)?.id).toBe(expected);
      }
      expect(currents(fast, fastStates)).toEqual(currents(reference, referenceStates));
    }
  });

  it('stays exact when the lazy offsets are folded (weights 1 … 2^45)', () => {
    // Grain 1 and a largest weight of 2^45: the offsets are folded every 2^50 / 2^45 = 32 picks.
    // Unfolded, they would pass 2^53 within 256 picks and the sums would round. (2·n·Σw stays
    // under 2^50, so these weights are grouped, not left to the loop.)
    const weights = { a: 2 ** 45, b: 2 ** 45, c: 2 ** 43, d: 2 ** 42 + 2 ** 20, e: 1 };
    const fast = smoothWeightedRoundRobin<undefined>();
    const reference = nginxSmoothWeightedRoundRobin<undefined>();
    const fastStates = endpoints(weights);
    const referenceStates = endpoints(weights);
    fast.reset(fastStates);
    reference.reset(referenceStates);
    const fastCtx = new FakeContext();
    const referenceCtx = new FakeContext();
    fast.pick(fastCtx);
    reference.pick(referenceCtx);
    fastCtx.usableCalls = 0;
    for (let i = 0; i < 5000; i++) {
      const expected = reference.pick(referenceCtx)?.id;
      const got = fast.pick(fastCtx)?.id;
      if (got !== expected) expect(got).toBe(expected);
      if (i % 997 === 0) {
        expect(currents(fast, fastStates)).toEqual(currents(reference, referenceStates));
      }
    }
    expect(fastCtx.usableCalls).toBe(5000); // grouped: only the winner is checked
    expect(currents(fast, fastStates)).toEqual(currents(reference, referenceStates));
  });

  it('never returns an endpoint made unusable without a version bump, and matches the loop on that pick', () => {
    const weights = { a: 1, b: 1, c: 2, d: 2 };
    const fast = smoothWeightedRoundRobin<undefined>();
    const reference = nginxSmoothWeightedRoundRobin<undefined>();
    const fastStates = endpoints(weights);
    const referenceStates = endpoints(weights);
    fast.reset(fastStates);
    reference.reset(referenceStates);
    const ctx = new FakeContext();
    expect(picks(fast, ctx, 2)).toEqual(picks(reference, ctx, 2));
    // The next winner (by the reference's `current` values: nginx adds every weight, the first
    // greatest wins) is excluded for one pick, the version unchanged.
    const grown = referenceStates.map(
      (state) => (reference.currentOf(state) as number) + state.endpoint.weight,
    );
    const next = referenceStates[grown.indexOf(Math.max(...grown))]?.id as string;
    ctx.down.add(next);
    const got = fast.pick(ctx);
    expect(got?.id).not.toBe(next);
    expect(got?.id).toBe(reference.pick(ctx)?.id);
    expect(currents(fast, fastStates)).toEqual(currents(reference, referenceStates));
  });

  it('makes state.current exact on flush() and reset(), and picks carry on unchanged after a flush', () => {
    const weights = { a: 4, b: 4, c: 2, d: 1, e: 1 };
    const fast = smoothWeightedRoundRobin<undefined>();
    const reference = nginxSmoothWeightedRoundRobin<undefined>();
    const fastStates = endpoints(weights);
    const referenceStates = endpoints(weights);
    fast.reset(fastStates);
    reference.reset(referenceStates);
    const ctx = new FakeContext();
    for (let i = 0; i < 37; i++) {
      expect(fast.pick(ctx)?.id).toBe(reference.pick(ctx)?.id);
      if (i % 5 === 0) fast.flush();
    }
    fast.reset(fastStates);
    expect(currents(fast, fastStates)).toEqual(currents(reference, referenceStates));
    reference.reset(referenceStates);
    expect(picks(fast, ctx, 24)).toEqual(picks(reference, ctx, 24));
  });
});
