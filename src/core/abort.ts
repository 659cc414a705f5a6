/**
 * AbortSignal helpers. Every async public method in Keel takes an `AbortSignal`, checks it
 * first, rejects with `signal.reason`, and removes its listeners when it settles; these helpers
 * make that the easy path.
 *
 * @packageDocumentation
 */
import { setMaxListeners } from 'node:events';
import { systemClock, type Clock } from './clock.js';
import { InvalidOptionError } from './options.js';

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
  const offs: (() => void)[] = [];
  const detach = (): void => {
    for (const off of offs) off();
    offs.length = 0;
  };
  for (const source of sources) {
    if (source === undefined) continue;
    if (source.aborted) {
      detach();
      controller.abort(source.reason);
      break;
    }
    offs.push(
      onAbort(source, () => {
        detach();
        controller.abort(source.reason);
      }),
    );
  }
  return {
    signal: controller.signal,
    dispose: detach,
    [Symbol.dispose]: detach,
  };
}

interface Fanout {
  readonly listeners: Set<() => void>;
  readonly handler: () => void;
}

const fanouts = new WeakMap<AbortSignal, Fanout>();

/**
 * Calls `listener` once when `signal` aborts (check `signal.aborted` first: an aborted signal
 * fires no more); returns a function that removes it, safe to call more than once. All the
 * listeners Keel adds to one signal share a single `abort` listener on it, so a long-lived
 * signal handed to many concurrent calls (a process-wide shutdown signal passed to a hundred
 * `using()` calls) never trips Node's MaxListenersExceededWarning, and each call still removes
 * its own when it ends.
 *
 * @internal
 */
export function onAbort(signal: AbortSignal, listener: () => void): () => void {
  let fanout = fanouts.get(signal);
  if (fanout === undefined) {
    const listeners = new Set<() => void>();
    const handler = (): void => {
      fanouts.delete(signal);
      for (const fn of [...listeners]) fn();
    };
    fanout = { listeners, handler };
    fanouts.set(signal, fanout);
    signal.addEventListener('abort', handler, { once: true });
  }
  // A wrapper per registration: the same function registered twice is two registrations.
  const own = (): void => {
    listener();
  };
  const current = fanout;
  current.listeners.add(own);
  return () => {
    if (!current.listeners.delete(own) || current.listeners.size > 0) return;
    if (fanouts.get(signal) === current) {
      fanouts.delete(signal);
      signal.removeEventListener('abort', current.handler);
    }
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
 * Rejects with an `InvalidOptionError` (option `ms`) when `ms` is negative or not a number.
 * @internal
 */
export function sleep(ms: number, options: SleepOptions = {}): Promise<void> {
  if (typeof ms !== 'number' || Number.isNaN(ms) || ms < 0) {
    return Promise.reject(new InvalidOptionError('sleep', 'ms', 'a number >= 0', ms));
  }
  return wakeableSleep(ms, options).done;
}

/** A {@link wakeableSleep}: its promise, and a way to end it early. */
export interface WakeableSleep {
  /** Resolves after the delay or on `wake()`; rejects with `signal.reason` on abort. */
  readonly done: Promise<void>;
  /** Ends the sleep now (resolving `done`); does nothing once it has settled. */
  readonly wake: () => void;
}

/**
 * A {@link sleep} that something else may end early — a waiter woken by a release, by a turn
 * handed over, or by a message. Negative or non-finite delays count as 0. Either way its timer
 * and its abort listener are gone when it settles.
 *
 * @internal
 */
export function wakeableSleep(ms: number, options: SleepOptions = {}): WakeableSleep {
  const { signal, clock = systemClock, unref = false } = options;
  let wake = (): void => undefined;
  const done =
    signal?.aborted === true
      ? Promise.reject(signal.reason as unknown)
      : new Promise<void>((resolve, reject) => {
          let off: (() => void) | undefined;
          const settle = (error?: { reason: unknown }): void => {
            wake = () => undefined;
            timer.cancel();
            off?.();
            if (error === undefined) resolve();
            else reject(error.reason);
          };
          wake = () => {
            settle();
          };
          const timer = clock.setTimer(wake, Number.isFinite(ms) ? Math.max(0, ms) : 0);
          if (unref) timer.unref();
          if (signal !== undefined) {
            off = onAbort(signal, () => {
              settle({ reason: signal.reason });
            });
          }
        });
  return {
    done,
    wake: () => {
      wake();
    },
  };
}

/**
 * A signal that never aborts, for calls whose caller gave none: functions may still listen to
 * it (`fetch(url, { signal })` does), so it is shared by every such call — and many concurrent
 * calls each adding a listener must not trip Node's MaxListenersExceededWarning (a false leak
 * report: each call removes its own). Its listener limit is lifted.
 *
 * @internal
 */
export function neverAbortingSignal(): AbortSignal {
  const signal = new AbortController().signal;
  setMaxListeners(0, signal);
  return signal;
}

/**
 * Settles as `promise` does, or rejects with `signal.reason` as soon as `signal` aborts —
 * at once when it already has — whichever comes first (`promise` itself is not cancelled).
 * Without a signal, `promise` itself.
 *
 * @internal
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason as unknown);
  return new Promise<T>((resolve, reject) => {
    const off = onAbort(signal, () => {
      reject(signal.reason as unknown);
    });
    promise.then(
      (value) => {
        off();
        resolve(value);
      },
      (error: unknown) => {
        off();
        reject(error);
      },
    );
  });
}
