/**
 * Local turns: the acquisitions of one resource made through one Redlock line up in this
 * process, oldest first, and only the one whose turn it is talks to Redis.
 *
 * Without it, fifty requests of one service contending for one hot SKU all run quorum rounds
 * against each other: each release wakes a waiter whose attempt loses to the next caller's,
 * and every lost attempt costs a round and an undo on every node. With it, the process sends
 * one contender per resource; the others wait for the turn, which passes when the lock is
 * released (or the attempt gives up), in the order they came. Waiting in line spends the retry
 * budget as polling would — one attempt per retry delay — so `retryCount` bounds the wait the
 * same way, and the Redis-side algorithm is untouched: the turn holder still needs a quorum.
 * A turn whose lock expired without a release is taken over by the next waiter that notices.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { wakeableSleep, type Clock } from '../core/index.js';

interface Waiter {
  handed: boolean;
  wake: (() => void) | undefined;
}

interface Line {
  /** The current turn's lock token and validity, once it holds the lock. */
  token: string | undefined;
  validUntil: (() => number) | undefined;
  readonly waiters: Waiter[];
}

export class Turns {
  readonly #lines = new Map<string, Line>();
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /**
   * Takes the turn for `key`, waiting behind earlier acquisitions of this process. Each
   * `delay()` spent waiting counts as one attempt; resolves with the attempts used, or
   * `undefined` when more than `attempts` were used or the `deadline` (clock time) passed
   * (a plain 0 when the line is free). Rejects when `signal` aborts.
   */
  enter(
    key: string,
    attempts: number,
    delay: () => number,
    signal: AbortSignal | undefined,
    deadline?: number,
  ): number | Promise<number | undefined> {
    const line = this.#lines.get(key);
    if (line === undefined) {
      // A free line: the turn is taken at once, without a promise (every uncontended acquire).
      this.#lines.set(key, { token: undefined, validUntil: undefined, waiters: [] });
      return 0;
    }
    return this.#wait(key, line, attempts, delay, signal, deadline);
  }

  async #wait(
    key: string,
    line: Line,
    attempts: number,
    delay: () => number,
    signal: AbortSignal | undefined,
    deadline: number | undefined,
  ): Promise<number | undefined> {
    const waiter: Waiter = { handed: false, wake: undefined };
    line.waiters.push(waiter);
    let used = 0;
    try {
      for (;;) {
        const left = deadline === undefined ? Infinity : deadline - this.#clock.now();
        if (left < 0) {
          this.#giveUp(key, line, waiter);
          return undefined;
        }
        await this.#pause(waiter, Math.min(delay(), left), signal);
        if (waiter.handed) return used;
        const validUntil = line.validUntil;
        if (validUntil !== undefined && validUntil() <= this.#clock.now()) {
          // The turn's lock expired and nobody released it: take the turn over.
          this.#drop(line, waiter);
          line.token = undefined;
          line.validUntil = undefined;
          return used;
        }
        if (++used > attempts) {
          this.#giveUp(key, line, waiter);
          return undefined;
        }
      }
    } catch (error) {
      this.#giveUp(key, line, waiter);
      throw error;
    }
  }

  /** The turn for `key` now holds the lock with `token` (valid until `validUntil()`). */
  hold(key: string, token: string, validUntil: () => number): void {
    const line = this.#lines.get(key);
    if (line === undefined) return;
    line.token = token;
    line.validUntil = validUntil;
  }

  /**
   * Ends the turn for `key` and hands it to the next waiter: after a failed acquisition (no
   * token), or on the release of the lock with `token` (ignored if the turn moved on since).
   */
  leave(key: string, token?: string): void {
    const line = this.#lines.get(key);
    if (line === undefined) return;
    if (token !== undefined && line.token !== token) return;
    line.token = undefined;
    line.validUntil = undefined;
    const next = line.waiters.shift();
    if (next === undefined) {
      this.#lines.delete(key);
      return;
    }
    next.handed = true;
    next.wake?.();
  }

  #pause(waiter: Waiter, ms: number, signal: AbortSignal | undefined): Promise<void> {
    const sleeping = wakeableSleep(ms, { signal, clock: this.#clock });
    waiter.wake = sleeping.wake;
    return sleeping.done.finally(() => {
      waiter.wake = undefined;
    });
  }

  #drop(line: Line, waiter: Waiter): void {
    const at = line.waiters.indexOf(waiter);
    if (at >= 0) line.waiters.splice(at, 1);
  }

  /** A waiter leaves the line; a turn handed to it meanwhile goes to the next one. */
  #giveUp(key: string, line: Line, waiter: Waiter): void {
    this.#drop(line, waiter);
    if (waiter.handed) this.leave(key);
  }
}
