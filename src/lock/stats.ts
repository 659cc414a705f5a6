/**
 * The counters and duration histograms behind `Redlock.stats()`: fixed-size, so recording an
 * acquisition or a hold allocates nothing (issue 15: "from a small fixed-size histogram, no
 * per-call allocation").
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */

/** Why an acquisition failed, as `Redlock.stats()` counts it. */
export type AcquireFailure =
  'taken' | 'unavailable' | 'too-slow' | 'fencing-lost' | 'aborted' | 'invalid' | 'other';

/** Percentiles of a duration histogram, in milliseconds (0 while nothing was recorded). */
export interface DurationSummary {
  /** Durations recorded since the Redlock was made. */
  readonly count: number;
  /** The median (ms). */
  readonly p50: number;
  /** The 99th percentile (ms). */
  readonly p99: number;
  /** The longest recorded. */
  readonly max: number;
}

/** A snapshot of a Redlock's activity since it was made (see `Redlock.stats()`). */
export interface RedlockStats {
  /** When the snapshot was taken: wall-clock epoch milliseconds (`Date.now()`). */
  readonly time: number;
  /** The same moment on the Redlock's monotonic clock (the clock of `validUntil`). */
  readonly monotonicTime: number;
  /** Acquisitions that returned a lock. */
  readonly acquired: number;
  /** Acquisitions that failed, by reason. */
  readonly failed: Readonly<Record<AcquireFailure, number>>;
  /** Acquisitions that found the resource held (refused by a holder, or behind this process's own acquisitions) at least once. */
  readonly contended: number;
  /** Acquisitions waiting for a held resource now. */
  readonly waiting: number;
  /** Locks granted and not yet released or seen lost (a lock dropped without a release counts until its loss is seen). */
  readonly held: number;
  /** Successful extensions. */
  readonly extensions: number;
  /** Locks seen lost (validity ran out, an extension refused or too short, a release found it gone). */
  readonly lost: number;
  /** From `acquire()` being called to the lock being returned, for acquisitions that got one. */
  readonly waitMs: DurationSummary;
  /** From a lock being granted to its release or loss. */
  readonly holdMs: DurationSummary;
}

/**
 * Sub-buckets per power of two: a recorded duration is reported within 2^(1/8) − 1 ≈ 9 % of
 * itself (log-linear buckets, as HdrHistogram does with its sub-bucket count).
 */
const STEPS = 8;
/** The smallest duration told apart: 2^-10 ms, about 1 µs. */
const LOW_EXPONENT = -10;
/** The largest: 2^27 ms, about 37 hours (longer ones go to the last bucket). */
const HIGH_EXPONENT = 27;
const BUCKETS = (HIGH_EXPONENT - LOW_EXPONENT) * STEPS + 1;

/** A fixed-size log-scale histogram of durations in milliseconds. */
export class DurationHistogram {
  readonly #counts = new Float64Array(BUCKETS);
  #count = 0;
  #max = 0;

  /** Records one duration (ms); negative or non-finite values count as 0. */
  record(ms: number): void {
    const value = Number.isFinite(ms) && ms > 0 ? ms : 0;
    const index =
      value <= 2 ** LOW_EXPONENT
        ? 0
        : Math.min(BUCKETS - 1, Math.ceil((Math.log2(value) - LOW_EXPONENT) * STEPS));
    this.#counts[index] = (this.#counts[index] as number) + 1;
    this.#count++;
    if (value > this.#max) this.#max = value;
  }

  /**
   * The upper bound of the bucket holding the `q` quantile (0 < q ≤ 1), never above the
   * largest value recorded; 0 while empty.
   */
  quantile(q: number): number {
    if (this.#count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i] as number;
      if (seen >= rank) return Math.min(this.#max, 2 ** (LOW_EXPONENT + i / STEPS));
    }
    return this.#max;
  }

  summary(): DurationSummary {
    return {
      count: this.#count,
      p50: this.quantile(0.5),
      p99: this.quantile(0.99),
      max: this.#max,
    };
  }
}

/** The live counters of one Redlock. */
export class LockCounters {
  acquired = 0;
  contended = 0;
  waiting = 0;
  held = 0;
  extensions = 0;
  lost = 0;
  readonly failed: Record<AcquireFailure, number> = {
    taken: 0,
    unavailable: 0,
    'too-slow': 0,
    'fencing-lost': 0,
    aborted: 0,
    invalid: 0,
    other: 0,
  };
  readonly wait = new DurationHistogram();
  readonly hold = new DurationHistogram();

  snapshot(monotonicTime: number): RedlockStats {
    return {
      time: Date.now(),
      monotonicTime,
      acquired: this.acquired,
      failed: { ...this.failed },
      contended: this.contended,
      waiting: this.waiting,
      held: this.held,
      extensions: this.extensions,
      lost: this.lost,
      waitMs: this.wait.summary(),
      holdMs: this.hold.summary(),
    };
  }
}
