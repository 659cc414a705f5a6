/**
 * `fallback()`: a value (or a function of the error) instead of a failure.
 *
 * @packageDocumentation
 */
import { InvalidOptionError } from '../core/index.js';
import { isTimeoutReason } from '../breaker/breaker.js';
import { matches, type ErrorFilter } from './retry.js';
import { NEVER, SinglePolicy, type Attempt, type Chain, type Policy } from './policy.js';

/** Options of {@link fallback}. */
export interface FallbackOptions {
  /**
   * Which errors the fallback replaces: a predicate or error classes. An error it does not
   * match is passed through. @defaultValue every error
   */
  readonly on?: ErrorFilter;
}

const OWNER = 'fallback';

class FallbackPolicy<F> extends SinglePolicy {
  readonly observesSignal = false;
  protected readonly owner = OWNER;
  readonly #handle: (error: unknown) => unknown;

  constructor(
    handler: F | ((error: unknown) => F | Promise<F>),
    options: FallbackOptions | undefined,
  ) {
    super();
    const given: unknown = options;
    if (
      given !== undefined &&
      (typeof given !== 'object' || given === null || Array.isArray(given))
    ) {
      throw new InvalidOptionError(OWNER, 'options', 'an options object', given);
    }
    for (const key in given) {
      if (key !== 'on') {
        throw new InvalidOptionError(
          OWNER,
          key,
          'one of the known options (on)',
          (given as Record<string, unknown>)[key],
          'unknown option',
        );
      }
    }
    const on = options?.on;
    if (
      on !== undefined &&
      typeof on !== 'function' &&
      !(Array.isArray(on) && on.every((c) => typeof c === 'function'))
    ) {
      throw new InvalidOptionError(OWNER, 'on', 'a predicate or an array of error classes', on);
    }
    const produce =
      typeof handler === 'function'
        ? (handler as (error: unknown) => unknown)
        : (): unknown => handler;
    this.#handle =
      on === undefined
        ? produce
        : (error) => {
            if (!matches(on, error)) throw error;
            return produce(error);
          };
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    const promise = chain.step(next, fn, signal);
    if (signal === NEVER) return promise.catch(this.#handle) as Promise<R>;
    return promise.catch((error: unknown) => {
      // The call's own abort (its caller gave up, or a hedge it lost) is no failure: nobody
      // waits for an answer, so the call rejects with the reason, as an abort that came before
      // it does. A timeout's abort is a failure, and answered.
      if (signal.aborted && error === signal.reason && !isTimeoutReason(error)) throw error;
      return this.#handle(error);
    }) as Promise<R>;
  }
}

/**
 * A policy that answers with `value` — or `handler(error)`, when given a function — instead
 * of failing. With `on`, only matching errors are replaced. To fall back to a function
 * *value*, return it from a handler: `fallback(() => myFunction)`. The call's own abort is not
 * a failure: a call whose signal aborted rejects with `signal.reason` — unless the reason is a
 * timeout (a `TimeoutError`, a `BreakerTimeoutError`, `AbortSignal.timeout()`'s), which is
 * answered like any failure.
 *
 * @example
 * ```ts
 * import { fallback } from 'keel/resilience';
 *
 * const cached = fallback({ price: 100, stale: true });
 * const quote = await cached.execute(async (): Promise<{ price: number; stale: boolean }> => {
 *   throw new Error('pricing is down');
 * });
 * console.log(quote.stale); // true
 * ```
 */
export function fallback<F>(
  handler: F | ((error: unknown) => F | Promise<F>),
  options?: FallbackOptions,
): Policy {
  return new FallbackPolicy(handler, options);
}
