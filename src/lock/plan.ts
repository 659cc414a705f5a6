/**
 * The retry rules of an acquisition, as a pure decision: given what one failed round showed
 * (its votes, counted) and what earlier rounds used up, what the acquisition loop does next —
 * give up with which error, re-attempt at once, retry soon, or wait for a release. No I/O, no
 * clock: randomness comes in through `settings.random`, and the one question only the caller
 * can answer (`retryAtOnce`) is asked only when the rules get that far. `Quorum.acquire`
 * executes the plan; test/lock/plan.test.ts states the rules as a table.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */

/** Informed re-attempts per acquisition that do not count as retries (see `retryAtOnce`). */
export const FREE_RETRIES = 3;

/** Retries of rounds in which too many nodes failed, before QuorumUnavailableError. */
export const UNAVAILABLE_RETRIES = 2;

/**
 * Retries of rounds that a quorum granted too late (too little validity left), before
 * LockTooSlowError. A slow round may be a blip (a reconnect, a busy node); slow rounds over
 * and over mean the ttl is too short for these nodes, which retrying for the whole retry
 * budget (meant for waiting on a holder) would not cure.
 */
export const SLOW_RETRIES = 2;

/** What the refusing nodes said of their holder (see `Quorum.acquire`). */
export type Refusals = 'landing' | 'held' | undefined;

/** A failed round (no lock came of it), as the planner needs to know it. */
export interface RoundView {
  /** This attempt's number, 0 … `retryCount`. */
  readonly attempt: number;
  readonly retryCount: number;
  /** Nodes in all, and how many must agree. */
  readonly nodes: number;
  readonly quorum: number;
  /** Nodes that granted. */
  readonly granted: number;
  /** Nodes that failed (not counting those the round did not wait for). */
  readonly failed: number;
  /** A quorum granted, but too little validity was left: the round was too slow. */
  readonly tooSlow: boolean;
  /** What the refusals said of the holder. */
  readonly refusals: Refusals;
  /** The soonest a refusing node said it frees up (ms), or Infinity. */
  readonly freesIn: number;
  /** Whether release notifications can wake this acquisition. */
  readonly notifications: boolean;
  /** Would an informed re-attempt likely succeed at once? Asked only when it could be used. */
  readonly retryAtOnce?: (() => boolean) | undefined;
}

/** What the rounds of one acquisition have used up so far (updated by {@link planNext}). */
export interface PlanState {
  /** Rounds in which too many nodes failed. */
  unavailable: number;
  /** Rounds a quorum granted too late. */
  slow: number;
  /** Quick retries in a row (split votes, releases still landing). */
  splits: number;
  /**
   * What is left (ms) of the retry delay the last counted quick retry stood for: quick
   * retries whose delays fit in it are not counted (see {@link planNext}, rule 4).
   */
  credit: number;
  /** Re-attempts made at once, not counted as retries. */
  freeRetries: number;
}

/** The timing settings the plan draws delays from. */
export interface PlanSettings {
  readonly retryDelayMs: number;
  readonly retryJitterMs: number;
  readonly nodeTimeoutMs: number;
  /** Uniform in [0, 1). */
  readonly random: () => number;
}

/**
 * What to do after a failed round:
 *
 * - `unavailable`: give up, the quorum is unavailable (QuorumUnavailableError).
 * - `too-slow`: give up, the rounds leave too little validity (LockTooSlowError).
 * - `give-up`: that was the last attempt; the lock stays taken (LockTakenError).
 * - `again`: re-attempt at once; it does not count as a retry.
 * - `retry`: re-attempt after `delayMs`; with `wait`, wait for a release notification as well
 *   (whichever comes first), subscribing to the release channels if not yet done. Unless
 *   `counted`, it does not count as a retry (a quick retry within a counted one's delay).
 */
export type Next =
  | { readonly step: 'unavailable' | 'too-slow' | 'give-up' | 'again' }
  | {
      readonly step: 'retry';
      readonly delayMs: number;
      readonly wait: boolean;
      readonly counted: boolean;
    };

/** A fresh state for a new acquisition. */
export const newPlanState = (): PlanState => ({
  unavailable: 0,
  slow: 0,
  splits: 0,
  credit: 0,
  freeRetries: 0,
});

const UNAVAILABLE: Next = { step: 'unavailable' };
const TOO_SLOW: Next = { step: 'too-slow' };
const GIVE_UP: Next = { step: 'give-up' };
const AGAIN: Next = { step: 'again' };

/**
 * The next step after the failed round `round`, updating `state`. The rules, in order:
 *
 * 1. Too many nodes failed for any quorum: a blip is retried, but only
 *    {@link UNAVAILABLE_RETRIES} times per acquisition (and never past the last attempt), so
 *    a majority that is down is reported promptly.
 * 2. A quorum granted too late: retried {@link SLOW_RETRIES} times per acquisition (and never
 *    past the last attempt), then reported as too slow — not as taken.
 * 3. The caller knows better now (a semaphore learned which slots are free): re-attempt at
 *    once, up to {@link FREE_RETRIES} times, uncounted. Not after a failed majority, nor
 *    after a round granted too late (it taught nothing about who holds what).
 * 4. A split vote (some nodes granted, and no quorum names one holder), or a release still
 *    landing on some nodes: no notification may come, so retry soon — after a backoff that
 *    doubles with each such attempt in a row, from a twentieth of the node timeout up to the
 *    retry delay, at a random moment so contenders stop colliding. Such quick retries spend
 *    the retry budget by time, not by number: the first of a run counts as a retry and stands
 *    for a whole retry delay (`retryDelayMs`); the ones after it whose delays still fit in what
 *    is left of that delay are not counted (even after the last attempt), and the next that
 *    does not fit counts again. So `retryCount` keeps meaning about `retryCount` retry delays
 *    of patience: a release that takes a few hundred milliseconds to reach a quorum (a loaded
 *    machine, a distant node; each round meanwhile is a split vote) is waited out, not answered
 *    with LockTakenError after five quick retries in ~35 ms. Not after a failed majority, nor
 *    a round granted too late: those have budgets of their own and count every retry.
 * 5. That was the last attempt: give up.
 * 6. Otherwise the resource is held: retry after the jittered retry delay — or, with
 *    notifications, when a release is announced or when the hold expires on the first node
 *    that reported it, whichever comes first.
 */
export function planNext(round: RoundView, state: PlanState, settings: PlanSettings): Next {
  const last = round.attempt >= round.retryCount;
  const failedMajority = round.failed > round.nodes - round.quorum;
  if (failedMajority && (++state.unavailable > UNAVAILABLE_RETRIES || last)) return UNAVAILABLE;
  if (round.tooSlow && (++state.slow > SLOW_RETRIES || last)) return TOO_SLOW;
  if (
    !failedMajority &&
    !round.tooSlow &&
    state.freeRetries < FREE_RETRIES &&
    round.retryAtOnce !== undefined &&
    round.retryAtOnce()
  ) {
    state.freeRetries++;
    return AGAIN;
  }
  const { random, retryDelayMs, retryJitterMs, nodeTimeoutMs } = settings;
  const soon = round.refusals === 'landing' || (round.granted > 0 && round.refusals !== 'held');
  if (soon) {
    // Not when a quorum names one holder whose release we have not seen: some nodes granted
    // only because that holder's own attempt had not reached them (a slow or reconnecting
    // node), and quick retries would spend the retry budget while the lock is simply held.
    const backoff = Math.min(
      Math.max(1, retryDelayMs),
      Math.max(1, nodeTimeoutMs / 20) * 2 ** state.splits++,
    );
    const delayMs = backoff * (0.5 + random()) + random() * retryJitterMs;
    if (!failedMajority && !round.tooSlow && delayMs <= state.credit) {
      state.credit -= delayMs;
      return { step: 'retry', delayMs, wait: false, counted: false };
    }
    if (last) return GIVE_UP;
    state.credit = failedMajority || round.tooSlow ? 0 : Math.max(0, retryDelayMs - delayMs);
    return { step: 'retry', delayMs, wait: false, counted: true };
  }
  state.splits = 0;
  state.credit = 0;
  if (last) return GIVE_UP;
  let delayMs = retryDelayMs + random() * retryJitterMs;
  if (!round.notifications) return { step: 'retry', delayMs, wait: false, counted: true };
  if (round.freesIn >= 0 && round.freesIn < delayMs) delayMs = round.freesIn + 1;
  return { step: 'retry', delayMs, wait: true, counted: true };
}

/**
 * The shortest ttl whose validity, with no time spent on the round at all, is above
 * `minValidityMs`: validity = ttl − (ttl × driftFactor + 2) − elapsed (see `Quorum.deadline`),
 * so ttl × (1 − driftFactor) − 2 > minValidityMs. A shorter ttl can never be granted: every
 * attempt would be found too short and undone, so it is refused before any round.
 */
export function shortestTtl(minValidityMs: number, driftFactor: number): number {
  let ttl = Math.max(1, Math.floor((minValidityMs + 2) / (1 - driftFactor)));
  while (ttl - (ttl * driftFactor + 2) <= minValidityMs) ttl++;
  return ttl;
}

/** What a ttl must be, in words, for an `InvalidOptionError`. */
export const ttlExpectation = (minTtlMs: number, minValidityMs: number, driftFactor: number) =>
  `at least ${minTtlMs} ms, so that a lock can keep more than minValidityMs ` +
  `(${minValidityMs} ms) of validity after the drift allowance (driftFactor ${driftFactor} ` +
  '× ttl + 2 ms)';
