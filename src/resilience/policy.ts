/**
 * What every resilience policy is: something that runs a function of an `AbortSignal` under a
 * rule (retry it, bound its time, limit its concurrency…). Policies compose without a closure
 * per call: a {@link Chain} holds the stages of a pipeline, and each stage runs "the rest of
 * the chain" by index, so a call through five policies allocates what the policies need and
 * nothing for the composition itself.
 *
 * @packageDocumentation
 */
import { InvalidOptionError, isAbortSignal, neverAbortingSignal } from '../core/index.js';

/** A function a policy runs: it gets the call's signal and returns a value or a promise. */
export type Attempt<R> = (signal: AbortSignal) => R | PromiseLike<R>;

/** Options of one {@link Policy.execute} call. */
export interface PolicyCallOptions {
  /**
   * Aborts the call: it rejects with `signal.reason`, a retry waits no more, a queued
   * bulkhead call leaves the queue, and the function's own signal aborts. (A `fallback()`
   * answers only an abort whose reason is a timeout, as it answers any timeout.)
   */
  readonly signal?: AbortSignal | undefined;
}

/** A resilience policy: `retry()`, `timeout()`, `bulkhead()`, `hedge()`, `fallback()`, `pipeline()`. */
export interface Policy {
  /**
   * Runs `fn` under the policy. Always returns a promise, never throws; `fn` throwing
   * synchronously is a rejection like any other.
   */
  execute<R>(fn: Attempt<R>, options?: PolicyCallOptions): Promise<R>;
}

/** A signal that never aborts: what `fn` gets when neither the caller nor a policy needs one. */
export const NEVER: AbortSignal = /* @__PURE__ */ neverAbortingSignal();

/** Runs `fn(signal)` and returns a native promise of its outcome (a throw becomes a rejection). */
export function invoke<R>(fn: Attempt<R>, signal: AbortSignal): Promise<R> {
  try {
    const result = fn(signal);
    // A native promise is passed through as it is: no extra promise, no extra microtask.
    return result instanceof Promise ? (result as Promise<R>) : Promise.resolve(result);
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * One policy's part in a chain. `run` carries out the policy around "the rest of the chain",
 * which it starts with `chain.step(next, fn, signal)` as often as it needs to. @internal
 */
export interface Stage {
  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R>;
  /**
   * Whether this stage acts on the signal it is given while a call runs (waits it cuts short,
   * attempts it aborts) — so a cooperative timeout outside it has something to abort even when
   * `fn` takes no signal.
   */
  readonly observesSignal: boolean;
}

/** The stages of a pipeline, outermost first. @internal */
export class Chain {
  readonly stages: readonly Stage[];
  /** `observedFrom[i]`: some stage at index ≥ i observes the signal. */
  readonly #observedFrom: boolean[];
  /**
   * The function {@link Chain.observed} last read the `length` of, and whether it was > 0.
   * Forgotten at the end of the tick it was set in, so a pipeline holds on to no call's
   * function (nor what its closure holds) after the call.
   */
  #lastFn: Attempt<unknown> | undefined;
  #lastTakesSignal = false;
  #forgetQueued = false;
  readonly #forget = (): void => {
    this.#forgetQueued = false;
    this.#lastFn = undefined;
  };

  constructor(stages: readonly Stage[]) {
    this.stages = stages;
    this.#observedFrom = new Array<boolean>(stages.length + 1).fill(false);
    for (let i = stages.length - 1; i >= 0; i--) {
      this.#observedFrom[i] =
        (stages[i] as Stage).observesSignal || (this.#observedFrom[i + 1] as boolean);
    }
  }

  /** Runs the chain from stage `at` (past the last stage: `fn` itself). */
  step<R>(at: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    const stage = this.stages[at];
    return stage === undefined ? invoke(fn, signal) : stage.run(this, at + 1, fn, signal);
  }

  /**
   * Whether anything from stage `at` inward can see a signal: a stage that observes one, or
   * `fn` itself when it declares a parameter (`(signal) => …`; `fn.length` is 0 for `() => …`,
   * which cannot name it).
   */
  observed(at: number, fn: Attempt<unknown>): boolean {
    // The stages' flag first. Reading a function's `length` calls into the runtime (an
    // accessor implemented in C++: ~140 instructions under callgrind, a sixth of a bare
    // `await Promise.resolve()`), so the answer for the function asked about last is kept:
    // a caller passing the same function call after call reads it once.
    if (this.#observedFrom[at] === true) return true;
    if (fn === this.#lastFn) return this.#lastTakesSignal;
    const takesSignal = fn.length > 0;
    this.#lastFn = fn;
    this.#lastTakesSignal = takesSignal;
    if (!this.#forgetQueued) {
      this.#forgetQueued = true;
      process.nextTick(this.#forget);
    }
    return takesSignal;
  }

  /** Whether stage `at` is the last before `fn`. */
  innermost(at: number): boolean {
    return at === this.stages.length;
  }
}

/**
 * Reads and checks `execute`'s options; returns the signal (NEVER when none). Throws an
 * {@link InvalidOptionError}; callers turn it into a rejection.
 * @internal
 */
export function callSignal(owner: string, options: PolicyCallOptions | undefined): AbortSignal {
  if (options === undefined) return NEVER;
  const given: unknown = options;
  if (typeof given !== 'object' || given === null || Array.isArray(given)) {
    throw new InvalidOptionError(owner, 'options', 'an options object', given);
  }
  for (const key in given) {
    if (key !== 'signal' && (given as Record<string, unknown>)[key] !== undefined) {
      throw new InvalidOptionError(
        owner,
        key,
        'one of the known options (signal)',
        (given as Record<string, unknown>)[key],
        'unknown option',
      );
    }
  }
  const signal = options.signal;
  if (signal === undefined) return NEVER;
  if (!isAbortSignal(signal))
    throw new InvalidOptionError(owner, 'signal', 'an AbortSignal', signal);
  return signal;
}

/**
 * Base of the single policies: `execute` runs a chain of this one stage.
 * @internal
 */
export abstract class SinglePolicy implements Policy, Stage {
  abstract readonly observesSignal: boolean;
  /** Name used in option errors, e.g. `retry`. */
  protected abstract readonly owner: string;
  #chain: Chain | undefined;

  abstract run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R>;

  execute<R>(fn: Attempt<R>, options?: PolicyCallOptions): Promise<R> {
    try {
      if (typeof fn !== 'function') {
        throw new InvalidOptionError(`${this.owner}.execute`, 'fn', 'a function', fn);
      }
      const chain = (this.#chain ??= new Chain([this]));
      // No options: the never-aborting signal, whose `aborted` getter need not be asked.
      if (options === undefined) return this.run(chain, 1, fn, NEVER);
      const signal = callSignal(`${this.owner}.execute`, options);
      if (signal.aborted) return Promise.reject(signal.reason as Error);
      return this.run(chain, 1, fn, signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
