/**
 * The balancer's health layer on its own (issue 14, "shape"): outlier ejection, the ejection
 * cap, panic mode and slow start, driven with plain clock readings and no balancer or strategy.
 */
import { describe, expect, it } from 'vitest';
import { Health, SLOW_START_STEPS, type HealthSettings } from '../../src/balancer/health.js';
import { EndpointState, NOT_EJECTED } from '../../src/balancer/state.js';
import type { HealthChange } from '../../src/balancer/types.js';

const settings = (overrides: {
  consecutiveFailures?: number;
  baseEjectionMs?: number;
  maxEjectionMs?: number;
  maxEjectionPercent?: number;
  panicThresholdPercent?: number;
  windowMs?: number;
  minWeightPercent?: number;
  aggression?: number;
}): HealthSettings => ({
  outlierEjection: {
    consecutiveFailures: overrides.consecutiveFailures ?? 2,
    baseEjectionMs: overrides.baseEjectionMs ?? 1_000,
    maxEjectionMs: overrides.maxEjectionMs ?? 2_500,
    maxEjectionPercent: overrides.maxEjectionPercent ?? 50,
  },
  panicThresholdPercent: overrides.panicThresholdPercent ?? 0,
  slowStart: {
    windowMs: overrides.windowMs ?? 0,
    minWeightPercent: overrides.minWeightPercent ?? 10,
    aggression: overrides.aggression ?? 1,
  },
});

function states(weights: readonly number[], now = 0): EndpointState[] {
  return weights.map((weight, index) => {
    const state = new EndpointState(
      { id: `e${index}`, weight, zone: undefined, data: undefined },
      now,
    );
    state.index = index;
    return state;
  });
}

/** A health layer over `list`, recording its events and how often it reported a change. */
function setup(options: Parameters<typeof settings>[0], list: EndpointState[], now = 0) {
  const events: HealthChange[] = [];
  const seen = { changes: 0, changesAtEvents: [] as number[], nextChange: Number.NaN };
  const health = new Health(settings(options), (nextChange) => {
    seen.changes++;
    seen.nextChange = nextChange;
  });
  health.changes.subscribe((change) => {
    // Wall-clock fields move with Date.now(); test/balancer/observability.test.ts checks them.
    const rest: Record<string, unknown> = { ...change };
    delete rest.time;
    delete rest.untilTime;
    events.push(rest as unknown as HealthChange);
    seen.changesAtEvents.push(seen.changes);
  });
  health.reset(list, now);
  return { health, events, seen };
}

const fail = (health: Health, state: EndpointState, now: number, times = 1): void => {
  for (let i = 0; i < times; i++) health.record(state, false, now);
};

describe('Health: outlier ejection', () => {
  it('ejects after consecutiveFailures failures in a row, for baseEjectionMs × times ejected (capped), and a success resets the streak', () => {
    const list = states([1, 1, 1, 1]);
    const { health, events } = setup({}, list);
    const e0 = list[0] as EndpointState;
    fail(health, e0, 10);
    health.record(e0, true, 20);
    fail(health, e0, 30);
    expect(e0.ejectedUntil).toBe(NOT_EJECTED);
    expect(e0.available).toBe(true);
    fail(health, e0, 40);
    expect(e0.ejectedUntil).toBe(1_040);
    expect(e0.available).toBe(false);
    expect(health.ejectedCount).toBe(1);
    expect(health.nextChange).toBe(1_040);
    expect(events).toEqual([{ id: 'e0', state: 'ejected', until: 1_040 }]);
    expect([e0.successes, e0.failures, e0.timesEjected]).toEqual([1, 3, 1]);

    // Before the ejection ends, advancing changes nothing; at its end, it returns.
    health.advance(1_039);
    expect(e0.ejectedUntil).toBe(1_040);
    health.advance(5_000);
    expect(e0.ejectedUntil).toBe(NOT_EJECTED);
    expect(e0.available).toBe(true);
    expect(e0.warmingSince).toBe(1_040); // the ramp starts when the ejection ended
    expect(events.at(-1)).toEqual({ id: 'e0', state: 'returned' });

    // Second ejection: 2 × base; third: 3 × base capped at maxEjectionMs.
    fail(health, e0, 6_000, 2);
    expect(e0.ejectedUntil).toBe(8_000);
    health.advance(8_000);
    fail(health, e0, 9_000, 2);
    expect(e0.ejectedUntil).toBe(11_500);
  });

  it('never ejects with consecutiveFailures 0', () => {
    const list = states([1, 1]);
    const { health, events } = setup({ consecutiveFailures: 0 }, list);
    fail(health, list[0] as EndpointState, 0, 50);
    expect(list[0]?.ejectedUntil).toBe(NOT_EJECTED);
    expect(events).toEqual([]);
  });

  it('keeps an endpoint in rotation when ejecting it would exceed maxEjectionPercent of the list', () => {
    const list = states([1, 1, 1, 1, 1]); // 50 % of 5 → at most 2
    const { health } = setup({}, list);
    for (const state of list) fail(health, state, 0, 2);
    expect(list.map((s) => s.ejectedUntil !== NOT_EJECTED)).toEqual([
      true,
      true,
      false,
      false,
      false,
    ]);
    expect(health.ejectedCount).toBe(2);
    expect(list.filter((s) => s.available)).toHaveLength(3);
  });

  it('reset() on a shorter list returns the ejections that end first (list order on a tie) until the cap holds, with events', () => {
    const list = states([1, 1, 1, 1, 1, 1]); // 50 % of 6 → 3
    const { health, events } = setup({ maxEjectionMs: 60_000 }, list);
    const [a, b, c, d, e, f] = list as [
      EndpointState,
      EndpointState,
      EndpointState,
      EndpointState,
      EndpointState,
      EndpointState,
    ];
    fail(health, c, 100, 2); // until 1 100
    fail(health, a, 200, 2); // until 1 200
    fail(health, b, 100, 2); // until 1 100 (ties c)
    expect(health.ejectedCount).toBe(3);
    events.length = 0;
    // Down to 3 endpoints (cap 1), a, b and c stay — in a new order, c before b, which
    // breaks their tie (the position in the new list counts).
    for (const [index, state] of [c, b, a].entries()) state.index = index;
    health.reset([c, b, a], 500);
    expect(health.ejectedCount).toBe(1);
    expect(events).toEqual([
      { id: 'e2', state: 'returned' },
      { id: 'e1', state: 'returned' },
    ]);
    expect([a.ejectedUntil, b.ejectedUntil, c.ejectedUntil]).toEqual([
      1_200,
      NOT_EJECTED,
      NOT_EJECTED,
    ]);
    expect([b.warmingSince, c.warmingSince]).toEqual([500, 500]);
    expect([d, e, f].every((s) => s.ejectedUntil === NOT_EJECTED)).toBe(true);
  });

  it('reports a change, with the new nextChange, before every event, so a listener sees the new usability', () => {
    const list = states([1, 1]);
    const { health, seen } = setup({}, list);
    const before = seen.changes;
    fail(health, list[0] as EndpointState, 0, 2);
    expect(seen.nextChange).toBe(1_000);
    health.advance(1_000);
    expect(seen.nextChange).toBe(Infinity);
    expect(seen.changesAtEvents).toEqual([before + 1, before + 2]);
  });
});

describe('Health: panic mode', () => {
  it('makes every endpoint available while fewer than panicThresholdPercent are usable, and ends when they return', () => {
    const list = states([1, 1, 1, 1]);
    const { health } = setup({ panicThresholdPercent: 50, maxEjectionPercent: 100 }, list);
    fail(health, list[0] as EndpointState, 0, 2);
    fail(health, list[1] as EndpointState, 0, 2);
    // 2 of 4 usable: 50 % is not below 50 %.
    expect(health.panicking).toBe(false);
    expect(list.map((s) => s.available)).toEqual([false, false, true, true]);
    fail(health, list[2] as EndpointState, 10, 2);
    expect(health.panicking).toBe(true);
    expect(list.every((s) => s.available)).toBe(true);
    health.advance(1_000); // e0 and e1 return; e2 (until 1 010) is still out
    expect(health.panicking).toBe(false);
    expect(list.map((s) => s.available)).toEqual([true, true, false, true]);
  });

  it('is never on with panicThresholdPercent 0, nor on an empty list', () => {
    const list = states([1, 1]);
    const { health } = setup({ maxEjectionPercent: 100 }, list);
    fail(health, list[0] as EndpointState, 0, 2);
    fail(health, list[1] as EndpointState, 0, 2);
    expect(health.panicking).toBe(false);
    expect(list.some((s) => s.available)).toBe(false);
    const empty = setup({ panicThresholdPercent: 100 }, []);
    expect(empty.health.panicking).toBe(false);
  });
});

describe('Health: slow start', () => {
  it('ramps a new endpoint from minWeightPercent to its full weight in quantised steps, with nextChange at each step', () => {
    const list = states([64], 0);
    const window = 3_200; // 100 ms per step
    const { health } = setup({ windowMs: window, minWeightPercent: 10 }, list, 0);
    const e0 = list[0] as EndpointState;
    expect(e0.effectiveWeight).toBeCloseTo(6.4, 2); // 10 % floor at progress 0
    expect(health.nextChange).toBe(window / SLOW_START_STEPS);
    health.advance(1_650); // progress 0.515 → step 16/32 = 0.5
    expect(e0.effectiveWeight).toBe(32);
    expect(health.nextChange).toBe(1_700);
    health.advance(3_200);
    expect(e0.effectiveWeight).toBe(64);
    expect(health.nextChange).toBe(Infinity);
  });

  it('weightAt follows progress^(1/aggression) on a 1/1024 grid, and is the full weight with slow start off', () => {
    const [state] = states([10], 0) as [EndpointState];
    const fast = new Health(settings({ windowMs: 1_000, aggression: 2 }), () => {});
    // progress 0.25 → factor 0.5 with aggression 2.
    expect(fast.weightAt(state, 250)).toBe(5);
    expect(fast.weightAt(state, 2_000)).toBe(10);
    const linear = new Health(settings({ windowMs: 1_000 }), () => {});
    expect(linear.weightAt(state, 250)).toBe(2.5);
    // 10 × 1/32 = 0.3125 is below the 10 % floor.
    expect(linear.weightAt(state, 40)).toBe(1);
    const w = linear.weightAt(state, 333);
    expect(Number.isInteger(w * 1024)).toBe(true);
    const off = new Health(settings({}), () => {});
    expect(off.weightAt(state, 0)).toBe(10);
  });

  it('ramps a returning endpoint from the moment its ejection ended', () => {
    const list = states([32, 32]);
    const { health } = setup({ windowMs: 3_200, maxEjectionPercent: 50 }, list, 0);
    health.advance(10_000);
    const e0 = list[0] as EndpointState;
    expect(e0.effectiveWeight).toBe(32);
    fail(health, e0, 10_000, 2); // ejected until 11 000
    health.advance(12_600); // returned at 11 000, progress 0.5
    expect(e0.warmingSince).toBe(11_000);
    expect(e0.effectiveWeight).toBe(16);
  });
});
