/**
 * Time, injected. Every time-based part of Keel reads time and schedules timers through a
 * {@link Clock}, so tests can drive it with a {@link ManualClock} instead of waiting.
 *
 * @packageDocumentation
 */
import { InvalidOptionError } from './options.js';

/** A scheduled callback. */
export interface Timer {
  /** Cancels the callback if it has not run yet. Safe to call more than once. */
  cancel(): void;
  /**
   * Lets the process exit while this timer is pending, as Node's `timeout.unref()` does. For
   * background work (heartbeats, sweeps); a caller awaiting a delay keeps the timer ref'd.
   * Returns the same timer.
   */
  unref(): Timer;
}

/**
 * A monotonic clock with timers.
 *
 * `now()` is in milliseconds from an arbitrary origin and never goes backwards (it is
 * `performance.now()` on the {@link systemClock}), so it measures durations and deadlines;
 * it is not a wall-clock date.
 */
export interface Clock {
  /** Milliseconds since an arbitrary, fixed origin; never decreases. */
  now(): number;
  /**
   * Runs `callback` once, `delayMs` milliseconds from now (negative or non-finite delays count
   * as 0). Like `setTimeout`, the timer keeps the process alive until it runs or is cancelled,
   * unless it is {@link Timer.unref | unref()}ed.
   */
  setTimer(callback: () => void, delayMs: number): Timer;
}

class SystemTimer implements Timer {
  readonly #handle: ReturnType<typeof setTimeout>;
  constructor(callback: () => void, delayMs: number) {
    this.#handle = setTimeout(callback, Number.isFinite(delayMs) ? Math.max(0, delayMs) : 0);
  }
  cancel(): void {
    clearTimeout(this.#handle);
  }
  unref(): Timer {
    this.#handle.unref();
    return this;
  }
}

/**
 * The real clock: `performance.now()` and `setTimeout`.
 *
 * @example
 * ```ts
 * import { systemClock } from 'keel';
 *
 * const started = systemClock.now();
 * // ... work ...
 * const elapsedMs = systemClock.now() - started;
 * console.log(elapsedMs >= 0); // true: monotonic
 * ```
 */
export const systemClock: Clock = /* @__PURE__ */ Object.freeze({
  now: () => performance.now(),
  setTimer: (callback: () => void, delayMs: number): Timer => new SystemTimer(callback, delayMs),
});

interface PendingTimer {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
  cancelled: boolean;
}

/** `ms` if it is a finite number >= 0 (a step of time), else an error naming `owner`'s `ms`. */
function checkStep(owner: string, ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new InvalidOptionError(owner, 'ms', 'a finite number >= 0', ms);
  }
  return ms;
}

/**
 * A clock that moves only when told to, for deterministic tests of time-based behaviour.
 * Timers run in due order (ties in scheduling order) as time is advanced past them; a timer
 * scheduled while advancing runs in the same advance if it falls due within it.
 *
 * @example
 * ```ts
 * import { ManualClock } from 'keel';
 *
 * const clock = new ManualClock();
 * let fired = false;
 * clock.setTimer(() => (fired = true), 100);
 * clock.advance(99);
 * console.log(fired); // false
 * clock.advance(1);
 * console.log(fired); // true
 * ```
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: PendingTimer[] = [];

  /** @param startMs - the initial reading of `now()`; defaults to 0 */
  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) {
      throw new InvalidOptionError('ManualClock', 'startMs', 'a finite number', startMs);
    }
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimer(callback: () => void, delayMs: number): Timer {
    const timer: PendingTimer = {
      due: this.#now + Math.max(0, Number.isFinite(delayMs) ? delayMs : 0),
      seq: this.#seq++,
      callback,
      cancelled: false,
    };
    this.#timers.push(timer);
    const handle: Timer = {
      cancel: () => {
        timer.cancelled = true;
        this.#timers = this.#timers.filter((t) => t !== timer);
      },
      unref: () => handle,
    };
    return handle;
  }

  /** Number of timers scheduled and not yet run or cancelled. */
  get pendingTimers(): number {
    return this.#timers.length;
  }

  /** Moves time forward by `ms` (>= 0), running every timer that falls due, in order. */
  advance(ms: number): void {
    this.advanceTo(this.#now + checkStep('ManualClock.advance', ms));
  }

  /** Moves time forward to `timeMs` (which must not be in the past), running due timers. */
  advanceTo(timeMs: number): void {
    // Number.isFinite is false for a non-number too: a string that compares as later is no time.
    if (!Number.isFinite(timeMs) || timeMs < this.#now) {
      throw new InvalidOptionError(
        'ManualClock.advanceTo',
        'timeMs',
        `a finite time >= now (${this.#now})`,
        timeMs,
      );
    }
    for (let next = this.#nextDue(timeMs); next !== undefined; next = this.#nextDue(timeMs)) {
      this.#now = next.due;
      this.#timers = this.#timers.filter((t) => t !== next);
      next.callback();
    }
    this.#now = timeMs;
  }

  /**
   * Like {@link ManualClock.advance}, but lets promise callbacks run after each timer, so code
   * that awaits between timers (an abortable sleep inside a retry loop) progresses as it would
   * in real time.
   */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.#now + checkStep('ManualClock.advanceAsync', ms);
    await flushMicrotasks();
    for (let next = this.#nextDue(target); next !== undefined; next = this.#nextDue(target)) {
      this.#now = next.due;
      this.#timers = this.#timers.filter((t) => t !== next);
      next.callback();
      await flushMicrotasks();
    }
    this.#now = target;
    await flushMicrotasks();
  }

  #nextDue(limit: number): PendingTimer | undefined {
    let best: PendingTimer | undefined;
    for (const timer of this.#timers) {
      if (timer.cancelled || timer.due > limit) continue;
      if (
        best === undefined ||
        timer.due < best.due ||
        (timer.due === best.due && timer.seq < best.seq)
      ) {
        best = timer;
      }
    }
    return best;
  }
}

/** Lets queued promise reactions (and reactions they queue) run. */
async function flushMicrotasks(): Promise<void> {
  // A macrotask boundary drains the whole microtask queue, however deep the promise chains are.
  await new Promise<void>((resolve) => setImmediate(resolve));
}

/** True for anything shaped like a {@link Clock}. @internal */
export function isClock(value: unknown): value is Clock {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Clock).now === 'function' &&
    typeof (value as Clock).setTimer === 'function'
  );
}
