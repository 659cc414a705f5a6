/**
 * Specialised executors for the pipeline issue 17 names, `pipeline(retry, timeout, breaker)`:
 * on a call that needs its deadline (an aggressive timeout, or a cooperative one whose function
 * takes the signal) and has no caller's signal, they do in ONE reaction on the function's
 * promise what the three stages do in three — the breaker counts the outcome, the deadline
 * bucket lets the call go, the call's own promise settles (or, on a failure, follows the
 * retry's further attempts, which run through the stages as usual).
 *
 * A cooperative pipeline's call whose function takes no signal has nothing the deadline could
 * abort: {@link PlainExecutor} runs it as the retry around the breaker, also in one reaction.
 *
 * Each shape has its own executor, with its own functions: a process that runs the same
 * pipeline with `() => fn` and with `(signal) => fn`, or an aggressive pipeline next to a
 * cooperative one, keeps each hot path's call sites monomorphic. (Fusing the reactions inside the shared stage functions instead made
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
import type { Bucket, SlotDeadline, TimeoutPolicy } from './timeout.js';

type Handler = (outcome: unknown) => void;

/**
 * An executor's failure reaction for the breaker handler, deadline bucket and function the
 * last call had: made once per function per tick, not per call. Forgotten at the end of the
 * tick it was made in, so the executor holds on to no call's function after the call (as
 * {@link Chain.observed}).
 */
class FailureMemo {
  reaction: (error: unknown) => unknown = (error) => error;
  #counts: Handler | undefined;
  #bucket: Bucket | undefined;
  #fn: Attempt<unknown> | undefined;
  #forgetQueued = false;
  readonly #forget = (): void => {
    this.#forgetQueued = false;
    this.#fn = undefined;
    this.#bucket = undefined;
    this.#counts = undefined;
    this.reaction = (error) => error;
  };

  /** Whether {@link FailureMemo.reaction} was made for these. */
  holds(counts: Handler, bucket: Bucket | undefined, fn: Attempt<unknown>): boolean {
    return counts === this.#counts && bucket === this.#bucket && fn === this.#fn;
  }

  remember(
    counts: Handler,
    bucket: Bucket | undefined,
    fn: Attempt<unknown>,
    reaction: (error: unknown) => unknown,
  ): void {
    this.#counts = counts;
    this.#bucket = bucket;
    this.#fn = fn;
    this.reaction = reaction;
    if (!this.#forgetQueued) {
      this.#forgetQueued = true;
      process.nextTick(this.#forget);
    }
  }
}

/**
 * What each executor is made of: the pipeline's stages (for everything off its hot path) and
 * its three policies. Each subclass has a `run` of its own, so each hot path's call sites stay
 * its own.
 */
abstract class Executor {
  protected readonly chain: Chain;
  protected readonly retry: RetryPolicy;
  protected readonly timeout: TimeoutPolicy;
  protected readonly breaker: CircuitBreaker;

  constructor(chain: Chain, retry: RetryPolicy, timeout: TimeoutPolicy, breaker: CircuitBreaker) {
    this.chain = chain;
    this.retry = retry;
    this.timeout = timeout;
    this.breaker = breaker;
  }
}

/**
 * `pipeline(retry, timeout cooperative, breaker)` for a function that takes the signal, called
 * without a caller's signal. @internal
 */
export class CooperativeExecutor extends Executor {
  /**
   * The success reaction for the bucket and breaker handler the last call had: made once per
   * millisecond of deadline (and breaker generation), not per call.
   */
  #ok: (value: unknown) => unknown = (value) => value;
  #okBucket: Bucket | undefined;
  #okCounts: Handler | undefined;
  readonly #fail = new FailureMemo();

  run<R>(fn: Attempt<R>): Promise<R> {
    // Read before the call starts, as the breaker does: the outcome counts for the generation
    // the call was admitted under.
    const onSuccess = hotPathHandler(this.breaker, false);
    const onFailure = hotPathHandler(this.breaker, true);
    if (onSuccess === undefined || onFailure === undefined) return this.chain.step(0, fn, NEVER);
    this.retry.begin();
    const bucket = this.timeout.sharedBucket();
    bucket.join();
    const promise = invoke(fn, bucket.signal);
    const ok =
      bucket === this.#okBucket && onSuccess === this.#okCounts
        ? this.#ok
        : this.#makeOk(onSuccess, bucket);
    const fail = this.#fail.holds(onFailure, bucket, fn)
      ? this.#fail.reaction
      : this.#makeFail(onFailure, bucket, fn);
    return promise.then(ok as (value: R) => R, fail as (error: unknown) => Promise<R>);
  }

  // The reactions are made in methods of their own, not in `run`: a function that makes a
  // closure gets a context at every entry (V8 allocates a function's context, holding the
  // variables its closures use, when it is entered), also when it makes none.

  #makeOk(onSuccess: Handler, bucket: Bucket): (value: unknown) => unknown {
    this.#okBucket = bucket;
    this.#okCounts = onSuccess;
    return (this.#ok = (value: unknown): unknown => {
      onSuccess(value);
      bucket.release();
      return value;
    });
  }

  #makeFail(onFailure: Handler, bucket: Bucket, fn: Attempt<unknown>): (error: unknown) => unknown {
    const retry = this.retry;
    const chain = this.chain;
    const fail = (error: unknown): unknown => {
      onFailure(error);
      bucket.release();
      return retry.recover(chain, 1, fn, NEVER, error);
    };
    this.#fail.remember(onFailure, bucket, fn, fail);
    return fail;
  }
}

/**
 * `pipeline(retry, timeout cooperative, breaker)` for a function that takes no signal, called
 * without a caller's signal: the timeout has nothing to abort (see {@link TimeoutPolicy}), so
 * the call is the retry around the breaker. The stages would attach two reactions (the
 * breaker's counting, then the retry's failure handler, a closure per call) and the caller
 * would resume a microtask after the second; here ONE reaction counts the outcome and either
 * returns the value or starts the retry's further attempts (through the stages, as usual). Its
 * handlers are made once per breaker generation (success) and once per function per tick
 * (failure), not per call. @internal
 */
export class PlainExecutor extends Executor {
  /** The success reaction for the breaker handler it was made with. */
  #ok: (value: unknown) => unknown = (value) => value;
  #okCounts: Handler | undefined;
  readonly #fail = new FailureMemo();

  run<R>(fn: Attempt<R>): Promise<R> {
    // Read before the call starts, as the breaker does: the outcome counts for the generation
    // the call was admitted under.
    const onSuccess = hotPathHandler(this.breaker, false);
    const onFailure = hotPathHandler(this.breaker, true);
    if (onSuccess === undefined || onFailure === undefined) return this.chain.step(0, fn, NEVER);
    this.retry.begin();
    const promise = invoke(fn, NEVER);
    const ok = onSuccess === this.#okCounts ? this.#ok : this.#makeOk(onSuccess);
    const fail = this.#fail.holds(onFailure, undefined, fn)
      ? this.#fail.reaction
      : this.#makeFail(onFailure, fn);
    return promise.then(ok as (value: R) => R, fail as (error: unknown) => Promise<R>);
  }

  // Made apart from `run`, as in CooperativeExecutor (no context per call).

  #makeOk(onSuccess: Handler): (value: unknown) => unknown {
    this.#okCounts = onSuccess;
    return (this.#ok = (value: unknown): unknown => {
      onSuccess(value);
      return value;
    });
  }

  #makeFail(onFailure: Handler, fn: Attempt<unknown>): (error: unknown) => unknown {
    const retry = this.retry;
    const chain = this.chain;
    const fail = (error: unknown): unknown => {
      onFailure(error);
      return retry.recover(chain, 1, fn, NEVER, error);
    };
    this.#fail.remember(onFailure, undefined, fn, fail);
    return fail;
  }
}

/**
 * `pipeline(retry, timeout aggressive, breaker)`, called without a caller's signal. @internal
 */
export class AggressiveExecutor extends Executor {
  /**
   * At a bucket's deadline, or when its first attempt failed, for a call still running: its
   * promise follows the retry's next attempts. Bound once per executor.
   */
  readonly #onSettle: SlotDeadline = (settle, fn, error) => {
    (settle as (value: unknown) => void)(this.recover(fn as Attempt<unknown>, error));
  };

  run<R>(fn: Attempt<R>): Promise<R> {
    // Read before the call starts, as the breaker does: the outcome counts for the generation
    // the call was admitted under.
    const onSuccess = hotPathHandler(this.breaker, false);
    const onFailure = hotPathHandler(this.breaker, true);
    if (onSuccess === undefined || onFailure === undefined) return this.chain.step(0, fn, NEVER);
    this.retry.begin();
    const bucket = this.timeout.sharedBucket();
    // The call's promise settles once: with the first attempt's value, or (the attempt failed,
    // or its deadline came first) with the retry's further attempts. Its state lives in the
    // bucket's slot, and the reaction on the function's promise is the slot's (see
    // Bucket.follow): no object and no closure of its own. The breaker counts every outcome,
    // also one that comes after the deadline (it sits inside the timeout).
    const promise = new Promise<R>(bucket.capture as (resolve: (value: R) => void) => void);
    // The slot is the call's before fn runs: a call fn makes of this pipeline takes the next.
    const slot = bucket.captured;
    bucket.enter(slot, fn, this.#onSettle, onSuccess, onFailure);
    bucket.follow(slot, invoke(fn, bucket.signal));
    return promise;
  }

  /** After the first attempt failed (or timed out) with `error`: the retry's next attempts. */
  recover<R>(fn: Attempt<R>, error: unknown): Promise<R> {
    return this.retry.recover(this.chain, 1, fn, NEVER, error);
  }
}
