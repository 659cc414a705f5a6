/**
 * `bulkhead()`: at most `maxConcurrent` calls at once, a bounded queue behind them, and a typed
 * rejection for what does not fit — so one slow dependency cannot take every socket, worker or
 * byte of memory of the caller (Nygard, "Release It!", Bulkheads).
 *
 * @packageDocumentation
 */
import {
  guardedOption,
  integerOption,
  isClock,
  numberOption,
  onAbort,
  resolveOptions,
  systemClock,
  type Clock,
  type Timer,
} from '../core/index.js';
import { BulkheadRejectedError } from './errors.js';
import { NEVER, SinglePolicy, type Attempt, type Chain, type Policy } from './policy.js';

/** Options of {@link bulkhead}. */
export interface BulkheadOptions {
  /** Calls allowed to run at once, 1 … 10⁶. */
  readonly maxConcurrent: number;
  /** Calls allowed to wait for a slot, 0 … 10⁶; more are rejected (`full`). @defaultValue 0 */
  readonly maxQueue?: number;
  /**
   * Longest wait in the queue (ms), or `Infinity`; a call that waits longer is rejected
   * (`queue-timeout`). @defaultValue Infinity
   */
  readonly queueTimeoutMs?: number;
  /** Clock for the queue timeout. @defaultValue `systemClock` */
  readonly clock?: Clock;
}

/** A bulkhead policy, with its occupancy. */
export interface BulkheadPolicy extends Policy {
  /** Calls running now. */
  readonly running: number;
  /** Calls waiting for a slot now. */
  readonly queued: number;
}

const OWNER = 'bulkhead';

const spec = {
  maxConcurrent: integerOption({ min: 1, max: 1_000_000, required: true }),
  maxQueue: integerOption({ min: 0, max: 1_000_000, default: 0 }),
  queueTimeoutMs: numberOption({
    min: 0,
    minExclusive: true,
    max: 86_400_000,
    allowInfinity: true,
    default: Infinity,
  }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
};

interface Waiter {
  readonly grant: () => void;
  readonly reject: (reason: unknown) => void;
  timer: Timer | undefined;
  off: (() => void) | undefined;
}

class Bulkhead extends SinglePolicy implements BulkheadPolicy {
  readonly observesSignal = true;
  protected readonly owner = OWNER;
  readonly #max: number;
  readonly #maxQueue: number;
  readonly #queueTimeoutMs: number;
  readonly #clock: Clock;
  #running = 0;
  readonly #waiters: Waiter[] = [];
  /** A call ended: bound once, not per call. */
  readonly #release = (): void => {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) {
      this.#running--;
      return;
    }
    // The slot passes straight to the first waiter: #running stays the same.
    waiter.timer?.cancel();
    waiter.off?.();
    waiter.grant();
  };

  constructor(options: BulkheadOptions) {
    super();
    const o = resolveOptions(OWNER, options, spec);
    this.#max = o.maxConcurrent;
    this.#maxQueue = o.maxQueue;
    this.#queueTimeoutMs = o.queueTimeoutMs;
    this.#clock = o.clock;
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#waiters.length;
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    if (this.#running < this.#max) {
      this.#running++;
      return this.#track(chain.step(next, fn, signal));
    }
    if (this.#waiters.length >= this.#maxQueue) {
      return Promise.reject(new BulkheadRejectedError('full', this.#max, this.#maxQueue));
    }
    return this.#wait(signal).then(() => {
      // Granted a slot, the call starts in a later reaction: its caller may have given up in
      // between (its abort listener was already removed). It then does not start, and the slot
      // goes on to the next waiter.
      if (signal.aborted) {
        this.#release();
        return Promise.reject(signal.reason as Error);
      }
      return this.#track(chain.step(next, fn, signal));
    });
  }

  #track<R>(promise: Promise<R>): Promise<R> {
    void promise.then(this.#release, this.#release);
    return promise;
  }

  #wait(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { grant: resolve, reject, timer: undefined, off: undefined };
      const leave = (reason: unknown): void => {
        const at = this.#waiters.indexOf(waiter);
        if (at < 0) return;
        this.#waiters.splice(at, 1);
        waiter.timer?.cancel();
        waiter.off?.();
        reject(reason);
      };
      if (this.#queueTimeoutMs !== Infinity) {
        waiter.timer = this.#clock.setTimer(() => {
          leave(new BulkheadRejectedError('queue-timeout', this.#max, this.#maxQueue));
        }, this.#queueTimeoutMs);
      }
      if (signal !== NEVER) {
        waiter.off = onAbort(signal, () => {
          leave(signal.reason);
        });
      }
      this.#waiters.push(waiter);
    });
  }
}

/**
 * A policy that runs at most `maxConcurrent` calls at once and queues up to `maxQueue` more;
 * anything beyond is rejected at once with a {@link BulkheadRejectedError} (`full`), and a
 * call that waits longer than `queueTimeoutMs` with one saying `queue-timeout`. A queued call
 * whose signal aborts leaves the queue.
 *
 * @example
 * ```ts
 * import { bulkhead, isBulkheadRejectedError } from 'keel/resilience';
 *
 * const pool = bulkhead({ maxConcurrent: 1, maxQueue: 0 });
 * const slow = pool.execute(() => new Promise((resolve) => setTimeout(resolve, 20)));
 * try {
 *   await pool.execute(async () => 'second');
 * } catch (error) {
 *   console.log(isBulkheadRejectedError(error) && error.reason); // full
 * }
 * await slow;
 * ```
 */
export function bulkhead(options: BulkheadOptions): BulkheadPolicy {
  return new Bulkhead(options);
}
