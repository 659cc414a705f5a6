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

const retry = (delayMs: number, wait: boolean, counted = true): Next => ({
  step: 'retry',
  delayMs,
  wait,
  counted,
});

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
    name: 'split vote: retry after 5 ms backoff, counted; it buys the rest of a retry delay',
    round: { granted: 2, refusals: undefined },
    next: retry(55, false),
    after: { splits: 1, credit: 145 },
  },
  {
    name: 'split vote within the delay a counted retry bought: quick, uncounted',
    round: { granted: 2, refusals: undefined },
    before: { splits: 1, credit: 145 },
    next: retry(60, false, false),
    after: { splits: 2, credit: 85 },
  },
  {
    name: 'split vote when what is left of the bought delay is too short: counted again',
    round: { granted: 2, refusals: undefined },
    before: { splits: 2, credit: 69 },
    next: retry(70, false),
    after: { splits: 3, credit: 130 },
  },
  {
    name: 'split vote on the last attempt with bought delay left: still made, uncounted',
    round: { granted: 2, refusals: undefined, attempt: 10 },
    before: { credit: 100 },
    next: retry(55, false, false),
    after: { splits: 1, credit: 45 },
  },
  {
    name: 'split vote on the last attempt, the bought delay spent: give up',
    round: { granted: 2, refusals: undefined, attempt: 10 },
    before: { credit: 54 },
    next: { step: 'give-up' },
    after: { credit: 54 },
  },
  {
    name: 'release still landing within a bought delay: quick, uncounted',
    round: { refusals: 'landing' },
    before: { splits: 1, credit: 145 },
    next: retry(60, false, false),
    after: { splits: 2, credit: 85 },
  },
  {
    name: 'held after quick retries: the bought delay and the backoff end',
    round: {},
    before: { splits: 3, credit: 100 },
    next: retry(250, true),
    after: { splits: 0, credit: 0 },
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
    name: 'majority failed, some granted, a bought delay left: still counted',
    round: { failed: 3, granted: 2, refusals: undefined },
    before: { credit: 1000 },
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
    name: 'too slow, a bought delay left: still counted',
    round: { granted: 3, tooSlow: true, refusals: undefined },
    before: { credit: 1000 },
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

/**
 * Plays failed rounds through the planner as `Quorum.acquire` does: a retry the plan counts
 * (and an informed re-attempt) moves to the next attempt, a quick re-attempt within a retry
 * delay it bought does not. Returns the steps taken, the delays of the uncounted retries and
 * how many retries were counted, stopping at the first step that is not a retry.
 */
function play(
  rounds: Iterable<Partial<RoundView>>,
  retryCount: number,
  plan: typeof settings,
): { steps: Next['step'][]; counted: number; uncountedMs: number } {
  const state = newPlanState();
  const steps: Next['step'][] = [];
  let attempt = 0;
  let counted = 0;
  let uncountedMs = 0;
  for (const round of rounds) {
    const next = planNext({ ...held, retryCount, ...round, attempt }, state, plan);
    steps.push(next.step);
    if (next.step !== 'retry') break;
    // A plan without `counted` (before quick retries could be uncounted) counts every retry.
    if ((next as { counted?: boolean }).counted === false) uncountedMs += next.delayMs;
    else {
      attempt++;
      counted++;
    }
  }
  return { steps, counted, uncountedMs };
}

describe('planNext: a release still landing does not spend the retry budget at once', () => {
  // The flaky "semaphore: a release wakes a waiter at once" (shared-suite.ts), as the planner
  // saw it: a waiter with retryCount 5 and a 20 s retry delay is refused twice (its first
  // attempt, and the one right after subscribing), then woken by the release. The release
  // reaches the nodes one after another on a loaded machine, so the rounds while it lands are
  // split votes (a semaphore's refusals name no holder) — or, for a lock, refusals naming the
  // holder whose release was seen. Quick retries back off from 5 ms; if each counted as a
  // retry, the five were gone in ~35 ms and the waiter gave up before the release had reached a
  // quorum. Ten quick rounds span ~5 s here: all of it within the first retry delay.
  const waiter = { retryDelayMs: 20_000, retryJitterMs: 0, nodeTimeoutMs: 100, random: () => 0.5 };
  const landing = (kind: 'split' | 'landing', n: number): Partial<RoundView>[] =>
    Array.from({ length: n }, () =>
      kind === 'split' ? { granted: 2, refusals: undefined } : { refusals: 'landing' },
    );

  it.each(['split', 'landing'] as const)(
    'a semaphore (%s votes) keeps retrying while the release lands, on one counted retry',
    (kind) => {
      const { steps, counted } = play([{}, {}, ...landing(kind, 10)], 5, waiter);
      expect(steps).toEqual(Array.from({ length: 12 }, () => 'retry'));
      expect(counted).toBe(3); // two waits for the release, one retry spread over quick rounds
    },
  );

  it('split votes that never end still give up, after about retryCount retry delays', () => {
    const rounds = (function* () {
      for (;;) yield { granted: 2, refusals: undefined } as Partial<RoundView>;
    })();
    const { steps, counted, uncountedMs } = play(rounds, 3, waiter);
    expect(steps.at(-1)).toBe('give-up');
    expect(counted).toBe(3);
    expect(uncountedMs).toBeLessThanOrEqual(3 * 20_000);
  });

  it('for any settings and votes: quick rounds never stretch a counted retry past its delay', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 6 }),
        fc.record({
          retryDelayMs: fc.integer({ min: 0, max: 5_000 }),
          retryJitterMs: fc.integer({ min: 0, max: 300 }),
          nodeTimeoutMs: fc.integer({ min: 1, max: 2_000 }),
        }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), {
          minLength: 1,
        }),
        fc.array(
          fc.constantFrom<Partial<RoundView>>(
            { granted: 2, refusals: undefined },
            { granted: 1, refusals: undefined },
            { refusals: 'landing' },
            { granted: 2, refusals: 'landing' },
            {},
          ),
          { minLength: 1 },
        ),
        (retryCount, timing, draws, kinds) => {
          let d = 0;
          const random = (): number => draws[d++ % draws.length] as number;
          const rounds = (function* () {
            for (let i = 0; ; i++) yield kinds[i % kinds.length] as Partial<RoundView>;
          })();
          const { steps, counted, uncountedMs } = play(rounds, retryCount, { ...timing, random });
          // It ends (it does not retry forever), by giving up after exactly retryCount retries,
          // and the uncounted quick rounds waited no longer in all than the counted retries'
          // delays: the budget is retryCount retry delays, however the votes split.
          return (
            steps.at(-1) === 'give-up' &&
            counted === retryCount &&
            uncountedMs <= counted * timing.retryDelayMs
          );
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
