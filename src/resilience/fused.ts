/**
 * Specialised executors for the pipeline issue 17 names, `pipeline(retry, timeout, breaker)`:
 * on a call that needs its deadline (an aggressive timeout, or a cooperative one whose function
 * takes the signal) and has no caller's signal, they do in ONE reaction on the function's
 * promise what the three stages do in three — the breaker counts the outcome, the deadline
 * bucket lets the call go, the call's own promise settles (or, on a failure, follows the
 * retry's further attempts, which run through the stages as usual).
 *
 * Each shape has its own executor, with its own functions: a process that runs the same
 * pipeline with `() => fn` (which goes through the stages, untouched) and with
 * `(signal) => fn`, or an aggressive pipeline next to a cooperative one, keeps each hot path's
 * call sites monomorphic. (Fusing the reactions inside the shared stage functions instead made
 * every variant's code polymorphic, and the `() => fn` pipeline three times slower in one
 * process: see the CHANGELOG, 2026-12-05.)
 *
 * Anything off the hot path goes through the stages: a caller's signal, a breaker that is not
 * on its hot path (open, half-open, timed, observed), the attempts after a failure.
 *
 * @internal
 * @packageDocumentation
 */
import type { CircuitBreaker } from '../breaker/index.js';
import { hotPathHandler } from '../breaker/breaker.js';
import { NEVER, invoke, type Attempt, type Chain } from './policy.js';
import type { RetryPolicy } from './retry.js';
import type { Bucket, Racer, TimeoutPolicy } from './timeout.js';

type Handler = (outcome: unknown) => void;

/**
 * `pipeline(retry, timeout cooperative, breaker)` for a function that takes the signal, called
 * without a caller's signal. @internal
 */
export class CooperativeExecutor {
  readonly #chain: Chain;
  readonly #retry: RetryPolicy;
  readonly #timeout: TimeoutPolicy;
  readonly #breaker: CircuitBreaker;
  /**
   * The success reaction for the bucket and breaker handler the last call had: made once per
   * millisecond of deadline (and breaker generation), not per call.
   */
  #ok: (value: unknown) => unknown = (value) => value;
  #okBucket: Bucket | undefined;
  #okCounts: Handler | undefined;
  /**
   * The failure reaction for the last call's bucket, breaker handler and function: made once
   * per function per tick, not per call. Forgotten at the end of the tick it was made in, so
   * the executor holds on to no call's function after the call (as {@link Chain.observed}).
   */
  #fail: (error: unknown) => unknown = (error) => error;
  #failBucket: Bucket | undefined;
  #failCounts: Handler | undefined;
  #failFn: Attempt<unknown> | undefined;
  #forgetQueued = false;
  readonly #forget = (): void => {
    this.#forgetQueued = false;
    this.#failFn = undefined;
    this.#failBucket = undefined;
    this.#fail = (error) => error;
  };

  /** `chain`: the pipeline's stages, retry, timeout and breaker, for everything else. */
  constructor(chain: Chain, retry: RetryPolicy, timeout: TimeoutPolicy, breaker: CircuitBreaker) {
    this.#chain = chain;
    this.#retry = retry;
    this.#timeout = timeout;
    this.#breaker = breaker;
  }

  run<R>(fn: Attempt<R>): Promise<R> {
    // Read before the call starts, as the breaker does: the outcome counts for the generation
    // the call was admitted under.
    const onSuccess = hotPathHandler(this.#breaker, false);
    const onFailure = hotPathHandler(this.#breaker, true);
    if (onSuccess === undefined || onFailure === undefined) return this.#chain.step(0, fn, NEVER);
    const retry = this.#retry;
    retry.begin();
    const bucket = this.#timeout.sharedBucket();
    bucket.join();
    const promise = invoke(fn, bucket.signal);
    let ok = this.#ok;
    if (bucket !== this.#okBucket || onSuccess !== this.#okCounts) {
      this.#okBucket = bucket;
      this.#okCounts = onSuccess;
      ok = this.#ok = (value: unknown): unknown => {
        onSuccess(value);
        bucket.release();
        return value;
      };
    }
    let fail = this.#fail;
    if (bucket !== this.#failBucket || onFailure !== this.#failCounts || fn !== this.#failFn) {
      this.#failBucket = bucket;
      this.#failCounts = onFailure;
      this.#failFn = fn;
      const chain = this.#chain;
      fail = this.#fail = (error: unknown): unknown => {
        onFailure(error);
        bucket.release();
        return retry.recover(chain, 1, fn, NEVER, error);
      };
      if (!this.#forgetQueued) {
        this.#forgetQueued = true;
        process.nextTick(this.#forget);
      }
    }
    return promise.then(ok as (value: R) => R, fail as (error: unknown) => Promise<R>);
  }
}

/** The resolving functions {@link capture} was last handed. */
let capturedResolve: (value: unknown) => void = () => undefined;
/** Hands a new promise's resolve function to {@link RacingAttempt}'s constructor. */
function capture(resolve: (value: unknown) => void): void {
  capturedResolve = resolve;
}

/**
 * A call of {@link AggressiveExecutor}: its promise settles once — with the first attempt's
 * value, or (the attempt failed, or its deadline came first) with the retry's further attempts.
 */
class RacingAttempt<R> implements Racer {
  prev: Racer | undefined;
  next: Racer | undefined;
  done = false;
  readonly promise: Promise<R>;
  readonly #resolve: (value: R | Promise<R>) => void;
  readonly #executor: AggressiveExecutor;
  readonly #bucket: Bucket;
  readonly #fn: Attempt<R>;

  constructor(executor: AggressiveExecutor, bucket: Bucket, fn: Attempt<R>) {
    this.promise = new Promise<R>(capture as (resolve: (value: R) => void) => void);
    this.#resolve = capturedResolve;
    this.#executor = executor;
    this.#bucket = bucket;
    this.#fn = fn;
  }

  /** The attempt succeeded. */
  succeed(value: R): void {
    if (this.done) return;
    this.done = true;
    this.#bucket.detach(this);
    this.#resolve(value);
  }

  /** The attempt failed, before its deadline. */
  fail(error: unknown): void {
    if (this.done) return;
    this.done = true;
    this.#bucket.detach(this);
    this.#resolve(this.#executor.recover(this.#fn, error));
  }

  /** The deadline (the bucket set `done` and took the call off its list). */
  reject(error: unknown): void {
    this.#resolve(this.#executor.recover(this.#fn, error));
  }
}

/**
 * `pipeline(retry, timeout aggressive, breaker)`, called without a caller's signal. @internal
 */
export class AggressiveExecutor {
  readonly #chain: Chain;
  readonly #retry: RetryPolicy;
  readonly #timeout: TimeoutPolicy;
  readonly #breaker: CircuitBreaker;

  /** `chain`: the pipeline's stages, retry, timeout and breaker, for everything else. */
  constructor(chain: Chain, retry: RetryPolicy, timeout: TimeoutPolicy, breaker: CircuitBreaker) {
    this.#chain = chain;
    this.#retry = retry;
    this.#timeout = timeout;
    this.#breaker = breaker;
  }

  run<R>(fn: Attempt<R>): Promise<R> {
    const onSuccess = hotPathHandler(this.#breaker, false);
    const onFailure = hotPathHandler(this.#breaker, true);
    if (onSuccess === undefined || onFailure === undefined) return this.#chain.step(0, fn, NEVER);
    this.#retry.begin();
    const bucket = this.#timeout.sharedBucket();
    const call = new RacingAttempt<R>(this, bucket, fn);
    bucket.attach(call);
    // The breaker counts every outcome, also one that comes after the deadline (it sits inside
    // the timeout); the call takes the outcome only while it is not done.
    invoke(fn, bucket.signal).then(
      (value) => {
        onSuccess(value);
        call.succeed(value);
      },
      (error: unknown) => {
        onFailure(error);
        call.fail(error);
      },
    );
    return call.promise;
  }

  /** After the first attempt failed (or timed out) with `error`: the retry's next attempts. */
  recover<R>(fn: Attempt<R>, error: unknown): Promise<R> {
    return this.#retry.recover(this.#chain, 1, fn, NEVER, error);
  }
}
