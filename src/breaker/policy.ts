/**
 * The breaker's decisions, apart from its execution (the split cockatiel makes between its
 * `Breaker` and `CircuitBreakerPolicy`; the rules are Resilience4j's CircuitBreaker state
 * machine). Plain code over plain data: it is told the time and the outcomes, never reads a
 * timer, holds no promise, no waiter and no signal. {@link CircuitBreaker} is the shell that
 * owns those, and the model test drives this class directly.
 *
 * Every method changes the state at most once and returns that change, so the shell can
 * apply its consequences (rebinding the hot path, waking waiters, emitting events).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { exponentialDelay, jitter } from '../core/index.js';
import type { BreakerState } from './types.js';
import { FAILED, SLOW, type OutcomeWindow } from './window.js';

/** The options the policy decides by (already validated). @internal */
export interface PolicyConfig {
  readonly minimumCalls: number;
  readonly failureRateThreshold: number;
  readonly slowCallRateThreshold: number;
  readonly consecutiveFailures: number;
  readonly openDurationMs: number;
  readonly backoff: {
    readonly multiplier: number;
    readonly maxOpenDurationMs: number;
    readonly jitter: number;
  };
  readonly halfOpenPermits: number;
  readonly maxHalfOpenMs: number;
  /** Random numbers in [0, 1] for the jitter; anything else is read as 0.5 (no spread). */
  readonly random: () => number;
}

/** Where the policy reads the time when the shell did not (see onOutcome). @internal */
export interface TimeSource {
  now(): number;
}

/** One change of state and why. @internal */
export interface Transition {
  readonly from: BreakerState;
  readonly to: BreakerState;
  readonly reason: string;
}

/**
 * What one outcome did: nothing (`undefined`), a change of state, or — in `metrics-only` —
 * the reason the breaker would have opened (a string). @internal
 */
export type Verdict = Transition | string | undefined;

const NO_CALLS = Object.freeze({ calls: 0, failures: 0, slow: 0 });

/** The breaker's state machine. @internal */
export class BreakerPolicy {
  readonly #c: PolicyConfig;
  /** The window, or what makes it on the first outcome (most breakers wait long for one). */
  #window: OutcomeWindow | (() => OutcomeWindow);
  #state: BreakerState = 'closed';
  #generation = 0;
  #stateSince: number;
  #openUntil = 0;
  #consecutiveOpens = 0;
  #consecutiveFailures = 0;
  #trialsStarted = 0;
  #trialsDone = 0;
  #trialFailures = 0;
  #trialSlow = 0;

  constructor(config: PolicyConfig, window: OutcomeWindow | (() => OutcomeWindow), now: number) {
    this.#c = config;
    this.#window = window;
    this.#stateSince = now;
  }

  /** The state as last advanced. */
  get state(): BreakerState {
    return this.#state;
  }

  /** Bumped on every transition: outcomes of calls admitted under an older one do not count. */
  get generation(): number {
    return this.#generation;
  }

  /** When the current state began. */
  get stateSince(): number {
    return this.#stateSince;
  }

  /** Openings in a row without closing in between (drives backoff). */
  get consecutiveOpens(): number {
    return this.#consecutiveOpens;
  }

  /** Milliseconds until open turns half-open (0 unless open). */
  retryAfter(now: number): number {
    return this.#state === 'open' ? Math.max(0, this.#openUntil - now) : 0;
  }

  /** Calls, failures and slow calls in the window. */
  totals(now: number): {
    readonly calls: number;
    readonly failures: number;
    readonly slow: number;
  } {
    const window = this.#window;
    return typeof window === 'function' ? NO_CALLS : window.totals(now);
  }

  /** When half-open gives up, for the shell's wake-up of waiters. */
  halfOpenDeadline(): number {
    return this.#stateSince + this.#c.maxHalfOpenMs;
  }

  /** Applies what time has changed: open → half-open when its time is up; half-open → open when stuck. */
  advance(now: number): Transition | undefined {
    if (this.#state === 'open' && now >= this.#openUntil) {
      return this.#transition('half-open', 'open duration elapsed', now);
    }
    if (this.#state === 'half-open' && now - this.#stateSince >= this.#c.maxHalfOpenMs) {
      return this.open(now, `half-open for ${this.#c.maxHalfOpenMs} ms without a verdict`);
    }
    return undefined;
  }

  /**
   * Whether a call may start now (call {@link BreakerPolicy.advance} first): always when
   * closed, disabled or metrics-only; in half-open while trial permits are left (taking one);
   * never when open or forced open.
   */
  admit(): boolean {
    switch (this.#state) {
      case 'closed':
      case 'disabled':
      case 'metrics-only':
        return true;
      case 'half-open':
        if (this.#trialsStarted >= this.#c.halfOpenPermits) return false;
        this.#trialsStarted++;
        return true;
      case 'open':
      case 'forced-open':
        return false;
    }
  }

  /**
   * An ignored outcome of a call admitted under `generation`. A half-open trial that was
   * ignored said nothing about the dependency, so its permit goes back for another call to be
   * the trial; kept, it would leave half-open unable to reach a verdict until `maxHalfOpenMs`
   * (and then re-open, with a longer backoff, though no trial failed). Whether a permit was
   * given back.
   */
  ignored(generation: number): boolean {
    const back =
      generation === this.#generation &&
      this.#state === 'half-open' &&
      this.#trialsStarted > this.#trialsDone;
    if (back) this.#trialsStarted--;
    return back;
  }

  /**
   * A counted outcome (not ignored) of a call admitted under `generation`. `now` may be NaN
   * ("not read", when nothing here needs it): a transition then reads `clock.now()`.
   */
  onOutcome(
    generation: number,
    failed: boolean,
    slow: boolean,
    now: number,
    clock: TimeSource,
  ): Verdict {
    // A result from a call admitted under an earlier state must not steer this one (gobreaker's
    // generation rule): a slow success from before the breaker opened cannot close it.
    if (generation !== this.#generation) return undefined;
    const moved = this.advance(now);
    if (moved !== undefined) return moved; // the call's state is over; it does not count
    switch (this.#state) {
      case 'closed':
      case 'metrics-only':
      case 'disabled':
        this.#madeWindow().record((failed ? FAILED : 0) | (slow ? SLOW : 0), now);
        this.#consecutiveFailures = failed ? this.#consecutiveFailures + 1 : 0;
        if (this.#state === 'disabled') return undefined;
        return this.#judgeWindow(now, clock);
      case 'half-open':
        this.#trialsDone++;
        if (failed) this.#trialFailures++;
        if (slow) this.#trialSlow++;
        return this.#judgeTrials(now);
      case 'open':
      case 'forced-open':
        return undefined;
    }
  }

  /**
   * {@link BreakerPolicy.onOutcome} for a success that is not slow, of a call admitted under
   * the current generation in the closed, disabled or metrics-only state, with a count window
   * and `now` not read: the same steps without the checks that cannot apply there (`advance`
   * changes none of these states). A window without a failure or a slow call is not judged:
   * both rates are 0, below any threshold (thresholds are > 0), and the consecutive failures
   * are 0 after a success.
   */
  untimedSuccess(clock: TimeSource): Verdict {
    this.#consecutiveFailures = 0;
    if (!this.#madeWindow().recordSuccess(Number.NaN) || this.#state === 'disabled') {
      return undefined;
    }
    return this.#judgeWindow(Number.NaN, clock);
  }

  /** Opens now (thresholds exceeded, a failed trial, stuck half-open, or by hand). */
  open(at: number, reason: string, clock?: TimeSource): Transition {
    const c = this.#c;
    const now = Number.isNaN(at) && clock !== undefined ? clock.now() : at;
    // The open time grows by the multiplier per opening in a row, capped, then spread by ± the
    // jitter fraction: core/backoff's formulas. An injected source that returns NaN, 7 or a
    // string, or throws, reads as 0.5 there (no spread): the open time never becomes NaN (an
    // open breaker that never half-opens) and a broken source never stops it opening.
    const base = exponentialDelay(
      this.#consecutiveOpens + 1,
      c.openDurationMs,
      c.backoff.maxOpenDurationMs,
      c.backoff.multiplier,
    );
    this.#openUntil = now + jitter(base, c.backoff.jitter, c.random);
    this.#consecutiveOpens++;
    return this.#transition('open', reason, now);
  }

  /** A manual state: `forced-open`, `disabled`, `metrics-only` (or `closed`, see reset). */
  moveTo(state: BreakerState, reason: string, now: number): Transition {
    return this.#transition(state, reason, now);
  }

  /** Back to closed with an empty window and no backoff history. */
  reset(now: number): Transition {
    if (typeof this.#window !== 'function') this.#window.reset();
    this.#consecutiveOpens = 0;
    this.#consecutiveFailures = 0;
    return this.#transition('closed', 'manual', now);
  }

  /** The state of a snapshot: open (or half-open, as open with no time left) or a manual state. */
  restore(
    state: BreakerState,
    openRemainingMs: number,
    consecutiveOpens: number,
    now: number,
  ): Transition | undefined {
    this.#consecutiveOpens = consecutiveOpens;
    if (state === 'open' || state === 'half-open') {
      this.#openUntil = now + (state === 'open' ? openRemainingMs : 0);
      return this.#transition('open', 'restored', now);
    }
    return state === 'closed' ? undefined : this.#transition(state, 'restored', now);
  }

  #madeWindow(): OutcomeWindow {
    const window = this.#window;
    return typeof window === 'function' ? (this.#window = window()) : window;
  }

  #judgeWindow(now: number, clock: TimeSource): Verdict {
    const c = this.#c;
    let reason: string | undefined;
    if (c.consecutiveFailures > 0 && this.#consecutiveFailures >= c.consecutiveFailures) {
      reason = `${this.#consecutiveFailures} consecutive failures`;
    } else {
      const { calls, failures, slow } = this.totals(now);
      if (calls >= c.minimumCalls) {
        if (failures / calls >= c.failureRateThreshold) {
          reason = `failure rate ${(failures / calls).toFixed(3)} >= ${c.failureRateThreshold}`;
        } else if (slow / calls >= c.slowCallRateThreshold) {
          reason = `slow-call rate ${(slow / calls).toFixed(3)} >= ${c.slowCallRateThreshold}`;
        }
      }
    }
    if (reason === undefined) return undefined;
    if (this.#state === 'metrics-only') return reason;
    return this.open(now, reason, clock);
  }

  #judgeTrials(now: number): Transition | undefined {
    const c = this.#c;
    const permits = c.halfOpenPermits;
    // Decide as soon as the outcome is certain: enough failures (or slow calls) among the
    // permitted trials that the rate reaches its threshold whatever the rest do — or all done.
    if (this.#trialFailures / permits >= c.failureRateThreshold) {
      return this.open(now, `half-open trials failed (${this.#trialFailures}/${permits})`);
    }
    if (this.#trialSlow / permits >= c.slowCallRateThreshold) {
      return this.open(now, `half-open trials slow (${this.#trialSlow}/${permits})`);
    }
    if (this.#trialsDone >= permits) {
      this.#consecutiveOpens = 0;
      this.#consecutiveFailures = 0;
      if (typeof this.#window !== 'function') this.#window.reset();
      return this.#transition('closed', 'half-open trials succeeded', now);
    }
    return undefined;
  }

  #transition(to: BreakerState, reason: string, now: number): Transition {
    const from = this.#state;
    this.#state = to;
    this.#generation++;
    this.#stateSince = now;
    if (to === 'half-open') {
      this.#trialsStarted = 0;
      this.#trialsDone = 0;
      this.#trialFailures = 0;
      this.#trialSlow = 0;
    }
    if (to === 'closed' && from !== 'half-open') this.#consecutiveFailures = 0;
    return { from, to, reason };
  }
}
