import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FREE_RETRIES,
  SLOW_RETRIES,
  UNAVAILABLE_RETRIES,
  newPlanState,
  planNext,
  shortestTtl,
  type Next,
  type PlanState,
  type RoundView,
} from '../../src/lock/plan.js';

// The retry rules of an acquisition, as a table: what one failed round showed and what the
// acquisition had used up → the next step, and what it has used up after. Five nodes (quorum
// 3); retry delay 200 ms + jitter 100 ms; node timeout 100 ms (quick-retry backoff from 5 ms);
// every random draw is 0.5, so the jittered retry delay is 250 ms and a quick retry after a
// backoff b waits b × 1 + 50 ms.

const settings = { retryDelayMs: 200, retryJitterMs: 100, nodeTimeoutMs: 100, random: () => 0.5 };

/** A round refused by a quorum that named one holder, at the first of 10 attempts. */
const held: RoundView = {
  attempt: 0,
  retryCount: 10,
  nodes: 5,
  quorum: 3,
  granted: 0,
  failed: 0,
  tooSlow: false,
  refusals: 'held',
  freesIn: Infinity,
  notifications: true,
};

interface Row {
  readonly name: string;
  readonly round: Partial<RoundView>;
  readonly before?: Partial<PlanState>;
  /** What `retryAtOnce` answers, when the round offers it. */
  readonly atOnce?: boolean;
  readonly next: Next;
  readonly after: Partial<PlanState>;
  /** Whether `retryAtOnce` must have been asked. */
  readonly asked?: boolean;
}

const retry = (delayMs: number, wait: boolean): Next => ({ step: 'retry', delayMs, wait });

const rows: Row[] = [
  // Held by someone: wait for the release, at most the jittered delay, or until it expires.
  { name: 'held: wait for a release', round: {}, next: retry(250, true), after: { splits: 0 } },
  {
    name: 'held, expiring in 30 ms: wait until just after',
    round: { freesIn: 30 },
    next: retry(31, true),
    after: {},
  },
  {
    name: 'held, expiring later than the delay',
    round: { freesIn: 900 },
    next: retry(250, true),
    after: {},
  },
  {
    name: 'held, no notifications: poll after the delay',
    round: { notifications: false, freesIn: 30 },
    next: retry(250, false),
    after: {},
  },
  {
    name: 'held by one holder though two nodes granted: not a split vote',
    round: { granted: 2 },
    before: { splits: 3 },
    next: retry(250, true),
    after: { splits: 0 },
  },
  // Split votes and releases still landing: retry soon, backing off.
  {
    name: 'split vote: retry after 5 ms backoff',
    round: { granted: 2, refusals: undefined },
    next: retry(55, false),
    after: { splits: 1 },
  },
  {
    name: 'fourth split vote in a row: 40 ms backoff',
    round: { granted: 2, refusals: undefined },
    before: { splits: 3 },
    next: retry(90, false),
    after: { splits: 4 },
  },
  {
    name: 'many split votes: backoff capped at the retry delay',
    round: { granted: 1, refusals: undefined },
    before: { splits: 10 },
    next: retry(250, false),
    after: { splits: 11 },
  },
  {
    name: 'release still landing: retry soon though nobody granted',
    round: { refusals: 'landing' },
    next: retry(55, false),
    after: { splits: 1 },
  },
  {
    name: 'nobody granted, holders differ: wait as when held',
    round: { refusals: undefined },
    next: retry(250, true),
    after: {},
  },
  // The last attempt.
  {
    name: 'last attempt refused: give up',
    round: { attempt: 10 },
    next: { step: 'give-up' },
    after: {},
  },
  {
    name: 'no retries at all: give up',
    round: { retryCount: 0 },
    next: { step: 'give-up' },
    after: {},
  },
  // Nodes failing.
  {
    name: 'majority failed once: retried like a refusal',
    round: { failed: 3, refusals: undefined },
    next: retry(250, true),
    after: { unavailable: 1 },
  },
  {
    name: 'majority failed, some granted: retried soon',
    round: { failed: 3, granted: 2, refusals: undefined },
    next: retry(55, false),
    after: { unavailable: 1, splits: 1 },
  },
  {
    name: 'majority failed once more than the budget: unavailable',
    round: { failed: 3 },
    before: { unavailable: UNAVAILABLE_RETRIES },
    next: { step: 'unavailable' },
    after: { unavailable: UNAVAILABLE_RETRIES + 1 },
  },
  {
    name: 'majority failed on the last attempt: unavailable',
    round: { failed: 4, attempt: 10 },
    next: { step: 'unavailable' },
    after: { unavailable: 1 },
  },
  {
    name: 'a minority failed: not counted',
    round: { failed: 2, refusals: undefined },
    next: retry(250, true),
    after: { unavailable: 0 },
  },
  // Granted too late.
  {
    name: 'too slow once: retried soon',
    round: { granted: 3, tooSlow: true, refusals: undefined },
    next: retry(55, false),
    after: { slow: 1, splits: 1 },
  },
  {
    name: 'too slow once more than the budget: too slow',
    round: { granted: 5, tooSlow: true, refusals: undefined },
    before: { slow: SLOW_RETRIES },
    next: { step: 'too-slow' },
    after: { slow: SLOW_RETRIES + 1 },
  },
  {
    name: 'too slow on the last attempt: too slow, not taken',
    round: { granted: 3, tooSlow: true, refusals: undefined, attempt: 10 },
    next: { step: 'too-slow' },
    after: { slow: 1 },
  },
  // Informed re-attempts.
  {
    name: 'the caller knows a better attempt: again, uncounted',
    round: {},
    atOnce: true,
    next: { step: 'again' },
    after: { freeRetries: 1 },
    asked: true,
  },
  {
    name: 'a better attempt on the last attempt: again',
    round: { attempt: 10 },
    atOnce: true,
    next: { step: 'again' },
    after: { freeRetries: 1 },
    asked: true,
  },
  {
    name: 'the caller knows nothing better: retried as usual',
    round: {},
    atOnce: false,
    next: retry(250, true),
    after: { freeRetries: 0 },
    asked: true,
  },
  {
    name: 'free re-attempts used up: not even asked',
    round: {},
    before: { freeRetries: FREE_RETRIES },
    atOnce: true,
    next: retry(250, true),
    after: { freeRetries: FREE_RETRIES },
    asked: false,
  },
  {
    name: 'after a round granted too late: not asked',
    round: { granted: 3, tooSlow: true, refusals: undefined },
    atOnce: true,
    next: retry(55, false),
    after: { slow: 1, freeRetries: 0 },
    asked: false,
  },
  {
    name: 'after a failed majority: not asked',
    round: { failed: 3 },
    atOnce: true,
    next: retry(250, true),
    after: { unavailable: 1, freeRetries: 0 },
    asked: false,
  },
];

describe('planNext: what an acquisition does after a failed round', () => {
  it.each(rows)('$name', (row) => {
    let asked = false;
    const round: RoundView = {
      ...held,
      ...row.round,
      ...(row.atOnce === undefined
        ? {}
        : {
            retryAtOnce: () => {
              asked = true;
              return row.atOnce === true;
            },
          }),
    };
    const state = { ...newPlanState(), ...row.before };
    expect(planNext(round, state, settings)).toEqual(row.next);
    expect(state).toMatchObject(row.after);
    if (row.asked !== undefined) expect(asked).toBe(row.asked);
  });

  it('jitter: a retry delay stays within delay … delay + jitter, a quick one within its bounds', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 0, max: 20 }),
        fc.boolean(),
        (draw, splits, split) => {
          const next = planNext(
            { ...held, ...(split ? { granted: 2, refusals: undefined } : {}) },
            { ...newPlanState(), splits },
            { ...settings, random: () => draw },
          );
          if (next.step !== 'retry') return false;
          if (!split) return next.delayMs >= 200 && next.delayMs <= 300;
          const backoff = Math.min(200, 5 * 2 ** splits);
          return next.delayMs >= backoff / 2 && next.delayMs <= backoff * 1.5 + 100;
        },
      ),
    );
  });
});

describe('shortestTtl: the shortest ttl that can leave more than minValidityMs', () => {
  it('with the defaults, 13 ms (12 ms leaves 9.88 ms, not more than 10)', () => {
    expect(shortestTtl(10, 0.01)).toBe(13);
    expect(shortestTtl(0, 0)).toBe(3);
  });

  it('is exactly the boundary for any minimum and drift factor', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 86_400_000, noNaN: true }),
        fc.double({ min: 0, max: 0.5, noNaN: true }),
        (minValidity, drift) => {
          const ttl = shortestTtl(minValidity, drift);
          const validity = (t: number): number => t - (t * drift + 2);
          return (
            Number.isInteger(ttl) &&
            validity(ttl) > minValidity &&
            (ttl === 1 || validity(ttl - 1) <= minValidity)
          );
        },
      ),
    );
  });
});
