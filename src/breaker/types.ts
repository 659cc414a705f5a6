/**
 * Public types of `keel/breaker`.
 *
 * @packageDocumentation
 */

/**
 * Where a breaker is. `closed`, `open` and `half-open` are automatic (Resilience4j's model);
 * the others are set by hand: `forced-open` rejects everything (isolate a dependency),
 * `disabled` lets everything through and only counts, `metrics-only` lets everything through
 * and still evaluates the thresholds, reporting when it would have opened.
 */
export type BreakerState =
  'closed' | 'open' | 'half-open' | 'forced-open' | 'disabled' | 'metrics-only';

/** A state change, from `onStateChange`. */
export interface StateChange {
  /** The state left. */
  readonly from: BreakerState;
  /** The state entered. */
  readonly to: BreakerState;
  /** Why, in a few words: `failure rate 0.6 >= 0.5`, `open duration elapsed`, `manual`, … */
  readonly reason: string;
  /** Wall-clock time of the change (epoch ms, `Date.now()`), for dashboards and logs. */
  readonly time: number;
}

/** A rejected call, from `onCallRejected`. */
export interface CallRejected {
  /** The state that rejected the call: `open`, `half-open` (trials all taken) or `forced-open`. */
  readonly state: BreakerState;
  /**
   * Whole milliseconds (rounded up) until a trial call may be let through (0 when that is not
   * time-bound).
   */
  readonly retryAfterMs: number;
  /** Wall-clock time of the rejection (epoch ms). */
  readonly time: number;
}

/** A finished call, from `onCallFinished`. */
export interface CallFinished {
  /** How the call counted (`ignored`: by the `ignore` option or `permit.ignore()`). */
  readonly outcome: 'success' | 'failure' | 'ignored';
  /** The call's duration; 0 unless calls are timed (slow-call detection or a time window). */
  readonly durationMs: number;
  /** Slower than the slow-call threshold. */
  readonly slow: boolean;
  /** False when the call started under an earlier state and so did not count toward this one. */
  readonly counted: boolean;
}

/** A snapshot of a breaker's numbers, from `metrics()`. */
export interface BreakerMetrics {
  /** The current state. */
  readonly state: BreakerState;
  /** Calls in the sliding window. */
  readonly calls: number;
  /** Failed calls in the sliding window. */
  readonly failures: number;
  /** Slow calls in the sliding window. */
  readonly slowCalls: number;
  /** Failures ÷ calls in the window (0 when empty). */
  readonly failureRate: number;
  /** Slow calls ÷ calls in the window (0 when empty). */
  readonly slowCallRate: number;
  /** Totals since creation. */
  readonly successfulTotal: number;
  /** Failed calls since creation. */
  readonly failedTotal: number;
  /** Calls classified as neither success nor failure, since creation. */
  readonly ignoredTotal: number;
  /** Calls rejected without running (open, or no trial left), since creation. */
  readonly rejectedTotal: number;
  /** Milliseconds spent in the current state. */
  readonly timeInStateMs: number;
  /** Whole milliseconds (rounded up) until a trial call is let through (0 unless open). */
  readonly retryAfterMs: number;
  /** Wall-clock time of the snapshot (epoch ms), beside the monotonic durations above. */
  readonly time: number;
}

/**
 * The two-step API for calls that are not one async function: get a permit, then report once.
 * Reporting twice is ignored.
 */
export interface BreakerPermit {
  /** The call succeeded. */
  success(): void;
  /** The call failed (the error is passed through the breaker's `ignore`/`isFailure`). */
  failure(error?: unknown): void;
  /** The call's outcome should count neither way. */
  ignore(): void;
}

/** A JSON-safe snapshot of a breaker's state, from `toJSON()`. */
export interface BreakerSnapshot {
  /** Marks the object as a breaker snapshot. */
  readonly format: 'keel.breaker';
  /** Snapshot format version. */
  readonly version: 1;
  /** The breaker's name. */
  readonly name: string;
  /** Its state when the snapshot was taken. */
  readonly state: BreakerState;
  /** Remaining open time when the snapshot was taken (ms). */
  readonly openRemainingMs: number;
  /** How many times in a row it has opened (drives backoff). */
  readonly consecutiveOpens: number;
}
