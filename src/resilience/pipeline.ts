/**
 * `pipeline()`: policies composed in order, outermost first (Polly v8's resilience pipeline;
 * cockatiel's `wrap`). The composition costs nothing per call: see {@link Chain}.
 *
 * @packageDocumentation
 */
import { InvalidOptionError } from '../core/index.js';
import { CircuitBreaker } from '../breaker/index.js';
import { callerAbortOutcome, hotPathHandler, unmarkCallerAbort } from '../breaker/breaker.js';
import {
  Chain,
  NEVER,
  SinglePolicy,
  callSignal,
  type Attempt,
  type Policy,
  type PolicyCallOptions,
  type Stage,
} from './policy.js';
import { RetryPolicy } from './retry.js';
import { TimeoutPolicy } from './timeout.js';
import { AggressiveExecutor, CooperativeExecutor, PlainExecutor } from './fused.js';

/** What a pipeline is made of: policies, other pipelines, and circuit breakers. */
export type PolicyLike = Policy | CircuitBreaker;

const OWNER = 'pipeline';

/**
 * A circuit breaker as a pipeline stage. The breaker only counts outcomes: the signal reaches
 * `fn` and the stages inside through the chain, not through the breaker, and cancellation stays
 * with them (a timeout stage, the function).
 *
 * While the breaker's hot path applies (closed, untimed, untraced: see {@link hotPathHandler})
 * the stage runs the rest of the chain itself and attaches the breaker's two handlers to the
 * promise — what `execute` does on that path, minus the closure a call of `execute` would need
 * to carry the chain: a call through this stage allocates nothing of its own.
 */
class BreakerStage implements Stage {
  readonly observesSignal = false;
  readonly #breaker: CircuitBreaker;
  /**
   * The failure reaction for a call with a caller's signal (see {@link BreakerStage.run}), for
   * the signal and breaker handler the last such call had: made once per signal and breaker
   * generation, not per call (callers often pass one signal to many calls: a request's, a
   * shutdown signal). Forgotten at the end of the tick it was made in, so the stage holds on to
   * no caller's signal after its calls.
   */
  #abortable: ((error: unknown) => void) | undefined;
  #abortableSignal: AbortSignal | undefined;
  #abortableFailure: ((error: unknown) => void) | undefined;
  #forgetQueued = false;
  readonly #forget = (): void => {
    this.#forgetQueued = false;
    this.#abortable = this.#abortableSignal = this.#abortableFailure = undefined;
  };

  constructor(breaker: CircuitBreaker) {
    this.#breaker = breaker;
  }

  /** The breaker. */
  get breaker(): CircuitBreaker {
    return this.#breaker;
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    const breaker = this.#breaker;
    // Both handlers are read before the call starts, as `execute` does: an outcome counts for
    // the generation the call was admitted under, even when the call itself moves the breaker.
    const onSuccess = hotPathHandler(breaker, false);
    const onFailure = hotPathHandler(breaker, true);
    if (onSuccess === undefined || onFailure === undefined)
      return this.#execute(chain, next, fn, signal);
    let promise: Promise<R>;
    try {
      promise = chain.step(next, fn, signal);
    } catch (error) {
      // (Stages return rejected promises rather than throw; counted all the same if one does.)
      onFailure(error);
      return Promise.reject(error);
    }
    // Reactions run in the order they were added: the outcome is counted before the stage
    // outside (or the caller's await) sees it. The promise `then` makes is not observed (the
    // handlers return nothing and do not throw), as in `execute`.
    // A call that can be aborted: its caller's abort is no failure (see callerAbortOutcome).
    void promise.then(
      onSuccess,
      signal === NEVER
        ? onFailure
        : signal === this.#abortableSignal && onFailure === this.#abortableFailure
          ? this.#abortable
          : this.#makeAbortable(signal, onFailure),
    );
    return promise;
  }

  // Made apart from `run`: a function that makes a closure gets a context at every entry (V8
  // allocates a function's context when it is entered), also when it makes none.
  #makeAbortable(
    signal: AbortSignal,
    onFailure: (error: unknown) => void,
  ): (error: unknown) => void {
    const reaction = (error: unknown): void => {
      onFailure(callerAbortOutcome(signal, error));
    };
    this.#abortable = reaction;
    this.#abortableSignal = signal;
    this.#abortableFailure = onFailure;
    if (!this.#forgetQueued) {
      this.#forgetQueued = true;
      process.nextTick(this.#forget);
    }
    return reaction;
  }

  /** Through `execute`: the breaker admits (or rejects) the call, and binds its hot path. */
  #execute<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    if (chain.innermost(next) && (signal === NEVER || fn.length === 0)) {
      // fn would get the never-aborting signal the breaker's hot path hands it anyway, or
      // cannot see one: hand it over as it is (no closure).
      return this.#breaker.execute(fn as (signal: AbortSignal) => R | Promise<R>);
    }
    if (signal === NEVER) return this.#breaker.execute(() => chain.step(next, fn, signal));
    // The breaker sees a caller's abort as one (see callerAbortOutcome); the caller gets its
    // reason as it was.
    return this.#breaker
      .execute(() =>
        chain.step(next, fn, signal).catch((error: unknown) => {
          throw callerAbortOutcome(signal, error);
        }),
      )
      .catch(unmark);
  }
}

/** Rethrows a rejection, a caller's abort in a `CallerAbortMark` as its own reason. */
function unmark(error: unknown): never {
  throw unmarkCallerAbort(error);
}

/** A composed policy. */
class Pipeline implements Policy {
  readonly chain: Chain;

  constructor(stages: readonly Stage[]) {
    this.chain = new Chain(stages);
  }

  execute<R>(fn: Attempt<R>, options?: PolicyCallOptions): Promise<R> {
    try {
      if (typeof fn !== 'function') {
        throw new InvalidOptionError(`${OWNER}.execute`, 'fn', 'a function', fn);
      }
      if (options === undefined) return this.chain.step(0, fn, NEVER);
      const signal = callSignal(`${OWNER}.execute`, options);
      if (signal.aborted) return Promise.reject(signal.reason as Error);
      return this.chain.step(0, fn, signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

/**
 * `pipeline(retry, timeout cooperative, breaker)`: a call without a caller's signal runs on an
 * executor of its own (see fused.ts) — one for a function that takes the signal, one for a
 * function that takes none (untimed: nothing could see the deadline); any other call, through
 * the stages.
 */
class CooperativePipeline extends Pipeline {
  readonly #executor: CooperativeExecutor;
  readonly #plain: PlainExecutor;

  constructor(
    stages: readonly Stage[],
    executor: (chain: Chain) => CooperativeExecutor,
    plain: (chain: Chain) => PlainExecutor,
  ) {
    super(stages);
    this.#executor = executor(this.chain);
    this.#plain = plain(this.chain);
  }

  override execute<R>(fn: Attempt<R>, options?: PolicyCallOptions): Promise<R> {
    try {
      if (typeof fn !== 'function') {
        throw new InvalidOptionError(`${OWNER}.execute`, 'fn', 'a function', fn);
      }
      if (options === undefined) {
        // Stage 2, the breaker, observes no signal: whether fn takes one.
        return this.chain.observed(2, fn) ? this.#executor.run(fn) : this.#plain.run(fn);
      }
      const signal = callSignal(`${OWNER}.execute`, options);
      if (signal.aborted) return Promise.reject(signal.reason as Error);
      return this.chain.step(0, fn, signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

/**
 * `pipeline(retry, timeout aggressive, breaker)`: a call without a caller's signal runs on its
 * own executor (see fused.ts); one with a signal, through the stages.
 */
class AggressivePipeline extends Pipeline {
  readonly #executor: AggressiveExecutor;

  constructor(stages: readonly Stage[], executor: (chain: Chain) => AggressiveExecutor) {
    super(stages);
    this.#executor = executor(this.chain);
  }

  override execute<R>(fn: Attempt<R>, options?: PolicyCallOptions): Promise<R> {
    try {
      if (typeof fn !== 'function') {
        throw new InvalidOptionError(`${OWNER}.execute`, 'fn', 'a function', fn);
      }
      if (options === undefined) return this.#executor.run(fn);
      const signal = callSignal(`${OWNER}.execute`, options);
      if (signal.aborted) return Promise.reject(signal.reason as Error);
      return this.chain.step(0, fn, signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

/**
 * The pipeline for `stages`: `retry` (retrying errors only), `timeout`, breaker — in that order
 * and nothing else — gets a specialised executor for the calls that need the deadline.
 */
function build(stages: readonly Stage[]): Pipeline {
  const [retry, timeout, breaker] = stages;
  if (
    stages.length === 3 &&
    retry instanceof RetryPolicy &&
    retry.errorsOnly &&
    timeout instanceof TimeoutPolicy &&
    breaker instanceof BreakerStage
  ) {
    return timeout.aggressive
      ? new AggressivePipeline(
          stages,
          (chain) => new AggressiveExecutor(chain, retry, timeout, breaker.breaker),
        )
      : new CooperativePipeline(
          stages,
          (chain) => new CooperativeExecutor(chain, retry, timeout, breaker.breaker),
          (chain) => new PlainExecutor(chain, retry, timeout, breaker.breaker),
        );
  }
  return new Pipeline(stages);
}

/**
 * Composes policies (and circuit breakers) into one, the first outermost: in
 * `pipeline(fallback(x), retry(), breaker, timeout({ ms: 500 }))` the timeout bounds each
 * attempt, the breaker sees every attempt, the retry repeats them and the fallback answers
 * when all failed. Nested pipelines are flattened.
 *
 * @example
 * ```ts
 * import { CircuitBreaker } from 'keel/breaker';
 * import { pipeline, retry, timeout } from 'keel/resilience';
 *
 * const breaker = new CircuitBreaker({ name: 'quotes' });
 * const policy = pipeline(retry({ maxAttempts: 3 }), breaker, timeout({ ms: 200 }));
 * const quote = await policy.execute(async (signal) => (signal.aborted ? 0 : 101));
 * console.log(quote); // 101
 * ```
 */
export function pipeline(...policies: PolicyLike[]): Policy {
  const stages: Stage[] = [];
  policies.forEach((policy, index) => {
    if (policy instanceof SinglePolicy) stages.push(policy);
    else if (policy instanceof Pipeline) stages.push(...policy.chain.stages);
    else if (policy instanceof CircuitBreaker) stages.push(new BreakerStage(policy));
    else {
      throw new InvalidOptionError(
        OWNER,
        `policies[${index}]`,
        'a policy (retry(), timeout(), …) or a CircuitBreaker',
        policy,
      );
    }
  });
  return build(stages);
}
