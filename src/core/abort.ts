/**
 * AbortSignal helpers. Every async public method in Keel takes an `AbortSignal`, checks it
 * first, rejects with `signal.reason`, and removes its listeners when it settles; these helpers
 * make that the easy path.
 *
 * @packageDocumentation
 */
import { systemClock, type Clock } from './clock.js';

/**
 * Throws `signal.reason` when the signal has already aborted; does nothing for `undefined`.
 * Use it first thing in every async method that accepts a signal.
 *
 * @internal
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw signal.reason;
}

/** A signal that follows several others, and releases them when disposed. */
export interface LinkedSignal extends Disposable {
  /** Aborts, with the same reason, as soon as any source signal aborts. */
  readonly signal: AbortSignal;
  /** Removes the listeners this link added to its sources. Safe to call more than once. */
  dispose(): void;
}

/**
 * Links several signals into one that aborts when the first of them aborts, with its reason.
 * Unlike `AbortSignal.any()`, the link is torn down explicitly (use `using`), so a long-lived
 * source signal never accumulates listeners from short-lived calls — the leak Node's
 * `AbortSignal.any` suffered in versions 20–22 (nodejs/node#48951, #54614).
 *
 * @internal
 */
export function linkSignals(...sources: readonly (AbortSignal | undefined)[]): LinkedSignal {
  const controller = new AbortController();
  const attached: AbortSignal[] = [];
  const detach = (): void => {
    for (const source of attached) source.removeEventListener('abort', onAbort);
    attached.length = 0;
  };
  function onAbort(this: AbortSignal): void {
    detach();
    controller.abort(this.reason);
  }
  for (const source of sources) {
    if (source === undefined) continue;
    if (source.aborted) {
      detach();
      controller.abort(source.reason);
      break;
    }
    source.addEventListener('abort', onAbort);
    attached.push(source);
  }
  return {
    signal: controller.signal,
    dispose: detach,
    [Symbol.dispose]: detach,
  };
}

/** Options of {@link sleep}. */
export interface SleepOptions {
  /** Rejects the sleep with `signal.reason` when aborted; the timer is cleared at once. */
  readonly signal?: AbortSignal | undefined;
  /** Clock whose timer to use. @defaultValue `systemClock` */
  readonly clock?: Clock | undefined;
  /** Let the process exit while sleeping (for background loops). @defaultValue `false` */
  readonly unref?: boolean | undefined;
}

/**
 * Resolves after `ms` milliseconds, or rejects with `signal.reason` as soon as the signal
 * aborts. Either way its timer and its abort listener are gone when it settles.
 *
 * @throws RangeError when `ms` is negative or not a number
 * @internal
 */
export function sleep(ms: number, options: SleepOptions = {}): Promise<void> {
  if (typeof ms !== 'number' || Number.isNaN(ms) || ms < 0) {
    return Promise.reject(new RangeError(`sleep: ms must be a number >= 0, got ${String(ms)}`));
  }
  const { signal, clock = systemClock, unref = false } = options;
  if (signal?.aborted === true) return Promise.reject(signal.reason as unknown);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      timer.cancel();
      reject(signal?.reason as unknown);
    };
    const timer = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    if (unref) timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
