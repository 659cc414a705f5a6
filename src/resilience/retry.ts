/**
 * `retry()`: runs a call again after a failure, with a backoff, a retry budget and respect for
 * the callee's pushback.
 *
 * @packageDocumentation
 */
import {
  INVALID_OPTION,
  InvalidOptionError,
  KeelChannel,
  guardedOption,
  integerOption,
  isClock,
  isKeelError,
  isRandomSource,
  numberOption,
  resolveOptions,
  sleep,
  systemClock,
  wallTime,
  type Clock,
} from '../core/index.js';
import { isBreakerOpenError } from '../breaker/index.js';
import { resolveBackoff, type Backoff, type BackoffOptions } from './backoff.js';
import { isRetryBudget, type RetryBudget } from './budget.js';
import { BULKHEAD_REJECTED } from './errors.js';
import { NEVER, SinglePolicy, type Attempt, type Chain, type Policy } from './policy.js';

/** A class of errors, for `retryOn: [TypeError, MyHttpError]`. */
export type ErrorClass = abstract new (...args: never[]) => unknown;

/** Which errors count as retryable: a predicate, or a list of error classes. */
export type ErrorFilter = ((error: unknown) => boolean) | readonly ErrorClass[];

/**
 * What a retry retries on: an {@link ErrorFilter}, or `{ error, result }` to also retry on
 * some results (a `503` response returned rather than thrown). A predicate that throws counts
 * as "do not retry".
 */
export type RetryOn =
  | ErrorFilter
  | {
      /** Errors to retry. @defaultValue every error but Keel's own local rejections */
      readonly error?: ErrorFilter;
      /** Results to retry; after the last attempt such a result is returned as it is. */
      readonly result?: (value: unknown) => boolean;
    };

/** Options of {@link retry}. */
export interface RetryOptions {
  /** Attempts in all, the first included, 1 … 100. @defaultValue 3 */
  readonly maxAttempts?: number;
  /** The wait between attempts. @defaultValue `{ type: 'decorrelated', baseMs: 25, capMs: 250 }` */
  readonly backoff?: BackoffOptions;
  /**
   * What to retry. By default every error except Keel's local rejections that a retry cannot
   * fix: an `InvalidOptionError`, a `BulkheadRejectedError`, a `NoEndpointError`; and never
   * after the caller's signal aborted.
   */
  readonly retryOn?: RetryOn;
  /** A budget shared by the client's calls; retries beyond it are not made. @defaultValue none */
  readonly budget?: RetryBudget;
  /**
   * Longest pushback honoured (ms). An error carrying `retryAfterMs` (a callee's `Retry-After`,
   * a `BreakerOpenError`'s time until its trial call) is retried after that long instead of the
   * backoff — or, when it asks for longer than this (or an open breaker cannot say when), not
   * retried at all: the call fails at once rather than wait on a local rejection.
   * @defaultValue 1000
   */
  readonly maxPushbackMs?: number;
  /** Clock for the waits. @defaultValue `systemClock` */
  readonly clock?: Clock;
  /** Random numbers in [0, 1) for the jitter. @defaultValue `Math.random` */
  readonly random?: () => number;
}

/** What `keel:resilience:retry` publishes for each failed attempt. */
export interface RetryEvent {
  /** The attempt that failed (1 = the first). */
  readonly attempt: number;
  /**
   * `retry` (and after how long) or why not. `retry-scheduled` (`resilientCall` only): another
   * attempt of the call failed first and its retry is already waiting — that retry answers this
   * failure too, so each retry made is told by exactly one `retry` message.
   */
  readonly decision:
    | 'retry'
    | 'retry-scheduled'
    | 'max-attempts'
    | 'not-retryable'
    | 'budget'
    | 'pushback'
    | 'aborted';
  /** The wait before the next attempt (ms): for `retry`, and what is left of it for `retry-scheduled`. */
  readonly delayMs: number;
  /** The attempt's error, or its result when a result was retried. */
  readonly error: unknown;
  /** Wall-clock time (epoch ms). */
  readonly time: number;
}

/** `keel:resilience:retry`: one message per failed attempt. */
export const retryChannel = /* @__PURE__ */ new KeelChannel<RetryEvent>('resilience', 'retry');

const OWNER = 'retry';

function isFilter(value: unknown): value is ErrorFilter {
  return (
    typeof value === 'function' ||
    (Array.isArray(value) && value.every((c) => typeof c === 'function'))
  );
}

/** A retry's decision: a delay in ms, or why it stops. @internal */
export type Decision = number | Exclude<RetryEvent['decision'], 'retry' | 'retry-scheduled'>;

/** Local rejections a retry cannot fix (codes, so duplicate installs agree). */
function isLocalRejection(error: unknown): boolean {
  return (
    isKeelError(error) &&
    (error.code === INVALID_OPTION ||
      error.code === BULKHEAD_REJECTED ||
      error.code === 'KEEL_NO_ENDPOINT')
  );
}

/** Whether `filter` matches `error`; a predicate that throws does not. @internal */
export function matches(filter: ErrorFilter | undefined, error: unknown): boolean {
  if (filter === undefined) return !isLocalRejection(error);
  try {
    if (typeof filter === 'function') {
      // Only `true` counts: a predicate typed loosely elsewhere may answer 'yes' or 1.
      const answer: unknown = filter(error);
      return answer === true;
    }
    for (const cls of filter) if (error instanceof cls) return true;
  } catch {
    // A classifier that throws must not turn into the call's error: no retry.
  }
  return false;
}

/**
 * The pushback an error carries (ms): a `BreakerOpenError`'s `retryAfterMs` (0, "unknown",
 * reads as Infinity: never wait on it) or any error's own finite `retryAfterMs >= 0`;
 * `undefined` when it carries none. @internal
 */
export function pushbackOf(error: unknown): number | undefined {
  if (isBreakerOpenError(error)) return error.retryAfterMs > 0 ? error.retryAfterMs : Infinity;
  if (typeof error !== 'object' || error === null) return undefined;
  let after: unknown;
  try {
    after = (error as { retryAfterMs?: unknown }).retryAfterMs;
  } catch {
    return undefined;
  }
  return typeof after === 'number' && after >= 0 && Number.isFinite(after) ? after : undefined;
}

const spec = {
  maxAttempts: integerOption({ min: 1, max: 100, default: 3 }),
  maxPushbackMs: numberOption({ min: 0, max: 86_400_000, default: 1000 }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
  backoff: { parse: (value: unknown) => value },
  retryOn: {
    parse(value: unknown, owner: string, option: string): unknown {
      if (value === undefined || isFilter(value)) return value;
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
        return resolveOptions(
          owner,
          value,
          {
            error: {
              parse(v: unknown, o: string, p: string): unknown {
                if (v === undefined || isFilter(v)) return v;
                throw new InvalidOptionError(o, p, 'a predicate or an array of error classes', v);
              },
            },
            result: {
              parse(v: unknown, o: string, p: string): unknown {
                if (v === undefined || typeof v === 'function') return v;
                throw new InvalidOptionError(o, p, 'a predicate (value) => boolean', v);
              },
            },
          },
          option,
        );
      }
      throw new InvalidOptionError(
        owner,
        option,
        'a predicate, an array of error classes, or { error?, result? }',
        value,
      );
    },
  },
  budget: guardedOption(isRetryBudget, 'a RetryBudget', { optional: true }),
};

/** The validated rules of a retry, shared with `resilientCall`. @internal */
export class RetryRules {
  readonly maxAttempts: number;
  readonly backoff: Backoff;
  readonly errorFilter: ErrorFilter | undefined;
  readonly resultFilter: ((value: unknown) => boolean) | undefined;
  readonly budget: RetryBudget | undefined;
  readonly maxPushbackMs: number;
  readonly clock: Clock;
  readonly random: () => number;

  constructor(owner: string, options: unknown, defaultBackoff?: BackoffOptions) {
    const o = resolveOptions(owner, options, spec);
    this.maxAttempts = o.maxAttempts;
    this.backoff = resolveBackoff(owner, 'backoff', o.backoff ?? defaultBackoff);
    const on = o.retryOn as RetryOn | undefined;
    if (on === undefined || isFilter(on)) {
      this.errorFilter = on;
      this.resultFilter = undefined;
    } else {
      this.errorFilter = on.error;
      this.resultFilter = on.result;
    }
    this.budget = o.budget;
    this.maxPushbackMs = o.maxPushbackMs;
    this.clock = o.clock;
    this.random = o.random;
  }

  /** Whether a result is to be retried (a throwing predicate: no). */
  retriesResult(value: unknown): boolean {
    const filter = this.resultFilter;
    if (filter === undefined) return false;
    try {
      const answer: unknown = filter(value);
      return answer === true;
    } catch {
      return false;
    }
  }

  /**
   * After attempt `attempt` failed with `error` (or returned a result to retry): the wait
   * before the next, or why there is none. Withdraws from the budget only when it retries.
   */
  decide(
    attempt: number,
    error: unknown,
    isResult: boolean,
    previousMs: number,
    signal: AbortSignal,
  ): Decision {
    if (signal.aborted) return 'aborted';
    if (attempt >= this.maxAttempts) return 'max-attempts';
    if (!isResult && !matches(this.errorFilter, error)) return 'not-retryable';
    let delay = this.backoff(attempt, previousMs, this.random);
    const pushback = isResult ? undefined : pushbackOf(error);
    if (pushback !== undefined) {
      if (pushback > this.maxPushbackMs) return 'pushback';
      // An open breaker's time is exact: wait that, no more. A callee's is a minimum.
      delay = isBreakerOpenError(error) ? pushback : Math.max(delay, pushback);
    }
    if (this.budget !== undefined && !this.budget.tryWithdraw()) return 'budget';
    return delay;
  }
}

/** Publishes a retry decision, when somebody listens. @internal */
export function publishRetry(
  attempt: number,
  decision: Decision | 'retry-scheduled',
  error: unknown,
  leftMs = 0,
): void {
  if (!retryChannel.active) return;
  retryChannel.publish({
    attempt,
    decision: typeof decision === 'number' ? 'retry' : decision,
    delayMs: typeof decision === 'number' ? decision : leftMs,
    error,
    time: wallTime(),
  });
}

/** @internal */
export class RetryPolicy extends SinglePolicy {
  readonly observesSignal = true;
  protected readonly owner = OWNER;
  readonly #rules: RetryRules;

  constructor(options: RetryOptions | undefined) {
    super();
    this.#rules = new RetryRules(OWNER, options);
  }

  /**
   * Whether a pipeline's specialised executor may run this retry's first attempt itself: it
   * retries on errors only (no result filter), so a first attempt that succeeds is the call's
   * outcome as it is. @internal
   */
  get errorsOnly(): boolean {
    return this.#rules.resultFilter === undefined;
  }

  /** What `run` does before the first attempt (a specialised executor calls it). @internal */
  begin(): void {
    this.#rules.budget?.deposit();
  }

  /**
   * What `run` does when the first attempt failed with `error`: the next attempts' outcome
   * (run with `chain.step(next, …)`), or the rejection. @internal
   */
  recover<R>(
    chain: Chain,
    next: number,
    fn: Attempt<R>,
    signal: AbortSignal,
    error: unknown,
  ): Promise<R> {
    if (this.#rules.maxAttempts === 1) return Promise.reject(error);
    return this.#again(chain, next, fn, signal, error, false);
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    const rules = this.#rules;
    rules.budget?.deposit();
    const first = chain.step(next, fn, signal);
    if (rules.maxAttempts === 1) return first;
    if (rules.resultFilter === undefined) {
      // The no-failure path: one reaction, no async function, no timer.
      return first.then(undefined, (error: unknown) =>
        this.#again(chain, next, fn, signal, error, false),
      );
    }
    return first.then(
      (value) =>
        rules.retriesResult(value) ? this.#again(chain, next, fn, signal, value, true) : value,
      (error: unknown) => this.#again(chain, next, fn, signal, error, false),
    );
  }

  async #again<R>(
    chain: Chain,
    next: number,
    fn: Attempt<R>,
    signal: AbortSignal,
    firstOutcome: unknown,
    firstIsResult: boolean,
  ): Promise<R> {
    const rules = this.#rules;
    let outcome = firstOutcome;
    let isResult = firstIsResult;
    let previous = 0;
    for (let attempt = 1; ; attempt++) {
      const decision = rules.decide(attempt, outcome, isResult, previous, signal);
      publishRetry(attempt, decision, outcome);
      if (typeof decision !== 'number') {
        if (decision === 'aborted') throw signal.reason;
        if (isResult) return outcome as R;
        throw outcome;
      }
      if (decision > 0) {
        await sleep(decision, {
          clock: rules.clock,
          signal: signal === NEVER ? undefined : signal,
        });
      }
      previous = decision;
      try {
        const value = await chain.step(next, fn, signal);
        if (!rules.retriesResult(value)) return value;
        outcome = value;
        isResult = true;
      } catch (error) {
        outcome = error;
        isResult = false;
      }
    }
  }
}

/**
 * A policy that runs a call again when it fails: up to `maxAttempts` in all, waiting a backoff
 * between attempts (decorrelated jitter by default), within a shared {@link RetryBudget} if
 * given, after the callee's pushback (`retryAfterMs`) when it sends one — and never waiting on
 * a local open breaker that cannot let the call through in time.
 *
 * A call that succeeds the first time costs one promise reaction: no timer, no async function.
 *
 * @example
 * ```ts
 * import { retry } from 'keel/resilience';
 *
 * const policy = retry({ maxAttempts: 3, backoff: { type: 'exponential', initialMs: 10 } });
 * let calls = 0;
 * const value = await policy.execute(async () => {
 *   if (++calls < 2) throw new Error('flaky');
 *   return 'ok';
 * });
 * console.log(value, calls); // ok 2
 * ```
 */
export function retry(options?: RetryOptions): Policy {
  return new RetryPolicy(options);
}
