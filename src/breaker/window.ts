/**
 * Sliding windows of call outcomes, after Resilience4j's CircuitBreaker: count-based (the last
 * N calls, a ring buffer) or time-based (the last N seconds, N one-second buckets). Both keep
 * running totals, so recording an outcome and reading the rates are O(1) — and there is no
 * timer: time buckets roll forward when touched.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */

/** Bit flags of one outcome. */
export const FAILED = 1;
export const SLOW = 2;

/** What every window offers the breaker. */
export interface OutcomeWindow {
  /** Calls, failures and slow calls currently in the window (as of `now`). */
  totals(now: number): { readonly calls: number; readonly failures: number; readonly slow: number };
  /** Adds one outcome (`FAILED | SLOW` flags) at time `now`. */
  record(flags: number, now: number): void;
  /**
   * Adds one success that is not slow at time `now`; true when the window still holds a
   * failure or a slow call (otherwise no rate can have reached a threshold).
   */
  recordSuccess(now: number): boolean;
  /** Forgets everything. */
  reset(): void;
}

/** The last `size` outcomes. */
export class CountWindow implements OutcomeWindow {
  readonly #outcomes: Uint8Array;
  #next = 0;
  #filled = 0;
  #failures = 0;
  #slow = 0;
  readonly #totals = { calls: 0, failures: 0, slow: 0 };

  constructor(size: number) {
    this.#outcomes = new Uint8Array(size);
  }

  totals(): { readonly calls: number; readonly failures: number; readonly slow: number } {
    const t = this.#totals;
    t.calls = this.#filled;
    t.failures = this.#failures;
    t.slow = this.#slow;
    return t;
  }

  record(flags: number): void {
    const outcomes = this.#outcomes;
    const at = this.#next;
    if (this.#filled === outcomes.length) {
      // The oldest outcome leaves the window.
      const old = outcomes[at] as number;
      if ((old & FAILED) !== 0) this.#failures--;
      if ((old & SLOW) !== 0) this.#slow--;
    } else {
      this.#filled++;
    }
    outcomes[at] = flags;
    if ((flags & FAILED) !== 0) this.#failures++;
    if ((flags & SLOW) !== 0) this.#slow++;
    this.#next = at + 1 === outcomes.length ? 0 : at + 1;
  }

  recordSuccess(): boolean {
    const outcomes = this.#outcomes;
    const at = this.#next;
    if (this.#filled === outcomes.length) {
      const old = outcomes[at] as number;
      if (old !== 0) {
        if ((old & FAILED) !== 0) this.#failures--;
        if ((old & SLOW) !== 0) this.#slow--;
        outcomes[at] = 0;
      }
    } else {
      // Slots not yet filled since construction or reset hold 0 already.
      this.#filled++;
    }
    this.#next = at + 1 === outcomes.length ? 0 : at + 1;
    return (this.#failures | this.#slow) !== 0;
  }

  reset(): void {
    this.#outcomes.fill(0);
    this.#next = 0;
    this.#filled = 0;
    this.#failures = 0;
    this.#slow = 0;
  }
}

/** The outcomes of the last `seconds` seconds, in one bucket per `bucketMs`. */
export class TimeWindow implements OutcomeWindow {
  readonly #bucketMs: number;
  readonly #calls: Uint32Array;
  readonly #failures: Uint32Array;
  readonly #slow: Uint32Array;
  /** Absolute bucket number (floor(now / bucketMs)) of the newest bucket. */
  #head = Number.NEGATIVE_INFINITY;
  #totalCalls = 0;
  #totalFailures = 0;
  #totalSlow = 0;
  readonly #totals = { calls: 0, failures: 0, slow: 0 };

  constructor(buckets: number, bucketMs: number) {
    this.#bucketMs = bucketMs;
    this.#calls = new Uint32Array(buckets);
    this.#failures = new Uint32Array(buckets);
    this.#slow = new Uint32Array(buckets);
  }

  totals(now: number): {
    readonly calls: number;
    readonly failures: number;
    readonly slow: number;
  } {
    this.#roll(now);
    const t = this.#totals;
    t.calls = this.#totalCalls;
    t.failures = this.#totalFailures;
    t.slow = this.#totalSlow;
    return t;
  }

  record(flags: number, now: number): void {
    this.#roll(now);
    const at = this.#slot(this.#head);
    this.#calls[at] = (this.#calls[at] as number) + 1;
    this.#totalCalls++;
    if ((flags & FAILED) !== 0) {
      this.#failures[at] = (this.#failures[at] as number) + 1;
      this.#totalFailures++;
    }
    if ((flags & SLOW) !== 0) {
      this.#slow[at] = (this.#slow[at] as number) + 1;
      this.#totalSlow++;
    }
  }

  recordSuccess(now: number): boolean {
    this.record(0, now);
    return (this.#totalFailures | this.#totalSlow) !== 0;
  }

  reset(): void {
    this.#calls.fill(0);
    this.#failures.fill(0);
    this.#slow.fill(0);
    this.#totalCalls = 0;
    this.#totalFailures = 0;
    this.#totalSlow = 0;
    this.#head = Number.NEGATIVE_INFINITY;
  }

  #slot(bucket: number): number {
    const n = this.#calls.length;
    return ((bucket % n) + n) % n;
  }

  /** Advances to the bucket of `now`, emptying every bucket that fell out of the window. */
  #roll(now: number): void {
    const bucket = Math.floor(now / this.#bucketMs);
    if (bucket <= this.#head) return;
    const n = this.#calls.length;
    if (bucket - this.#head >= n) {
      // Idle for a whole window (or first use): everything expired.
      this.#calls.fill(0);
      this.#failures.fill(0);
      this.#slow.fill(0);
      this.#totalCalls = 0;
      this.#totalFailures = 0;
      this.#totalSlow = 0;
    } else {
      for (let b = this.#head + 1; b <= bucket; b++) {
        const at = this.#slot(b);
        this.#totalCalls -= this.#calls[at] as number;
        this.#totalFailures -= this.#failures[at] as number;
        this.#totalSlow -= this.#slow[at] as number;
        this.#calls[at] = 0;
        this.#failures[at] = 0;
        this.#slow[at] = 0;
      }
    }
    this.#head = bucket;
  }
}
