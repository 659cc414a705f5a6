/**
 * The retry budget: retries may add at most a fraction of the recent load, plus a small floor,
 * so a dependency that is down sees about `1 + percent` times its normal traffic instead of
 * `maxAttempts` times. Finagle's `RetryBudget` (finagle-core `com.twitter.finagle.service.
 * RetryBudget`, built on a leaky token bucket) is the model: every request deposits, every
 * retry withdraws `1 / percent` deposits' worth, deposits and withdrawals expire after `ttlMs`,
 * and a reserve of `minRetriesPerSecond × ttl seconds` retries is always there, so a client
 * with little traffic can still retry.
 *
 * @packageDocumentation
 */
import {
  guardedOption,
  integerOption,
  isClock,
  numberOption,
  resolveOptions,
  systemClock,
  type Clock,
} from '../core/index.js';

/** Options of {@link RetryBudget}. */
export interface RetryBudgetOptions {
  /** Retries allowed as a fraction of the requests in the last `ttlMs`, 0 … 10. @defaultValue 0.2 */
  readonly percent?: number;
  /** Retries always allowed per second of `ttlMs`, whatever the traffic, 0 … 10⁶. @defaultValue 10 */
  readonly minRetriesPerSecond?: number;
  /** How long a request counts (ms), 1 000 … 600 000. @defaultValue 10000 */
  readonly ttlMs?: number;
  /** Clock. @defaultValue `systemClock` */
  readonly clock?: Clock;
}

/** Slices the window is kept in: deposits leave it one slice (ttl / 10) at a time. */
const SLICES = 10;

const spec = {
  percent: numberOption({ min: 0, max: 10, default: 0.2 }),
  minRetriesPerSecond: integerOption({ min: 0, max: 1_000_000, default: 10 }),
  ttlMs: numberOption({ min: 1000, max: 600_000, default: 10_000 }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
};

/**
 * A retry budget shared by every call of one client (one per downstream service, not per
 * call). Retries (and hedges) `tryWithdraw()`; every original request `deposit()`s.
 *
 * @example
 * ```ts
 * import { RetryBudget, retry } from 'keel/resilience';
 *
 * const budget = new RetryBudget({ percent: 0.2, minRetriesPerSecond: 10 });
 * const policy = retry({ maxAttempts: 3, budget });
 * const answer = await policy.execute(async () => 42);
 * console.log(answer, budget.balance >= 0); // 42 true
 * ```
 */
export class RetryBudget {
  readonly #percent: number;
  readonly #reserve: number;
  readonly #sliceMs: number;
  readonly #clock: Clock;
  readonly #deposits = new Float64Array(SLICES);
  readonly #withdrawals = new Float64Array(SLICES);
  /** The slice number (time ÷ sliceMs) the arrays were last moved to. */
  #slice = Number.NEGATIVE_INFINITY;

  constructor(options: RetryBudgetOptions = {}) {
    const o = resolveOptions('RetryBudget', options, spec);
    this.#percent = o.percent;
    this.#reserve = o.minRetriesPerSecond * (o.ttlMs / 1000);
    this.#sliceMs = o.ttlMs / SLICES;
    this.#clock = o.clock;
  }

  /** Counts one request (an original call, not a retry). */
  deposit(): void {
    const at = this.#advance();
    this.#deposits[at] = (this.#deposits[at] as number) + 1;
  }

  /** Takes one retry from the budget: `true` if there was one, else `false` (and nothing changes). */
  tryWithdraw(): boolean {
    const at = this.#advance();
    if (this.#available() < 1) return false;
    this.#withdrawals[at] = (this.#withdrawals[at] as number) + 1;
    return true;
  }

  /** Retries the budget would allow now (whole retries). */
  get balance(): number {
    this.#advance();
    return Math.max(0, Math.floor(this.#available()));
  }

  #available(): number {
    let deposits = 0;
    let withdrawals = 0;
    for (let i = 0; i < SLICES; i++) {
      deposits += this.#deposits[i] as number;
      withdrawals += this.#withdrawals[i] as number;
    }
    // A small epsilon: 0.2 × 5 requests is 1.0000000000000002 or 0.9999999999999999 by luck.
    return this.#reserve + deposits * this.#percent - withdrawals + 1e-9;
  }

  /** Expires the slices time has left behind; returns the current slice's index. */
  #advance(): number {
    const slice = Math.floor(this.#clock.now() / this.#sliceMs);
    const last = this.#slice;
    if (slice !== last) {
      // Clear every slice between the last one written and now (all of them after a long gap).
      const gap = slice - last;
      const clear = gap >= SLICES || !Number.isFinite(gap) ? SLICES : gap;
      for (let k = 1; k <= clear; k++) {
        const i = (((slice - clear + k) % SLICES) + SLICES) % SLICES;
        this.#deposits[i] = 0;
        this.#withdrawals[i] = 0;
      }
      this.#slice = slice;
    }
    return ((slice % SLICES) + SLICES) % SLICES;
  }
}

/** True for a {@link RetryBudget} (of this copy of Keel). @internal */
export function isRetryBudget(value: unknown): value is RetryBudget {
  return value instanceof RetryBudget;
}
