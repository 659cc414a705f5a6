/**
 * One breaker per downstream, by key, with shared defaults.
 *
 * @packageDocumentation
 */
import {
  ClosedError,
  InvalidOptionError,
  log,
  systemClock,
  wallTime,
  type Clock,
} from '../core/index.js';
import {
  CircuitBreaker,
  breakerConfig,
  sharedBreaker,
  type BreakerConfig,
  type CircuitBreakerOptions,
} from './breaker.js';
import type { BreakerMetrics, BreakerState } from './types.js';

/** A roll-up of every breaker of a {@link BreakerRegistry}, from `metrics()`. */
export interface BreakerRegistryMetrics {
  /** Wall-clock time of the snapshot (epoch ms). */
  readonly time: number;
  /** Number of breakers. */
  readonly breakers: number;
  /** How many breakers are in each state (every state present, 0 when none). */
  readonly byState: Readonly<Record<BreakerState, number>>;
  /** Names of the breakers that reject calls now (`open` or `forced-open`), sorted. */
  readonly open: readonly string[];
  /** Sums over all breakers, since each was created. */
  readonly successfulTotal: number;
  /** Failed calls, summed. */
  readonly failedTotal: number;
  /** Ignored calls, summed. */
  readonly ignoredTotal: number;
  /** Rejected calls, summed. */
  readonly rejectedTotal: number;
  /** Each breaker's own snapshot, by key. */
  readonly perBreaker: Readonly<Record<string, BreakerMetrics>>;
}

interface Entry {
  readonly breaker: CircuitBreaker;
  lastUsed: number;
}

/**
 * Breakers by key (`breakerFor('payments')`), created on first use with the registry's
 * defaults plus any per-key overrides. Keys that go unused can be collected with `sweep()`.
 *
 * @example
 * ```ts
 * import { BreakerRegistry } from 'keel/breaker';
 *
 * const breakers = new BreakerRegistry({ failureRateThreshold: 0.5, openDurationMs: 10_000 });
 * const payments = breakers.breakerFor('payments', { timeoutMs: 800 });
 * console.log(payments === breakers.breakerFor('payments')); // true
 * breakers.sweep(15 * 60_000); // forget breakers unused for 15 minutes
 * ```
 */
export class BreakerRegistry implements AsyncDisposable {
  readonly #defaults: CircuitBreakerOptions;
  /** The defaults, validated once and shared by every breaker made without overrides. */
  readonly #config: BreakerConfig;
  /** The name the defaults give every breaker, if they name one (then it wins over the key). */
  readonly #defaultName: boolean;
  readonly #entries = new Map<string, Entry>();
  readonly #clock: Clock;
  #closed = false;

  constructor(defaults: CircuitBreakerOptions = {}) {
    // Validate the defaults once, now, rather than at the first breakerFor().
    this.#config = breakerConfig(defaults);
    this.#defaults = { ...defaults };
    this.#defaultName = Object.hasOwn(this.#defaults, 'name');
    this.#clock = defaults.clock ?? systemClock;
  }

  /** The breaker for `key`, created with the defaults and `overrides` on first use. */
  breakerFor(key: string, overrides?: CircuitBreakerOptions): CircuitBreaker {
    this.#open('breakerFor');
    if (typeof key !== 'string' || key === '') {
      throw new InvalidOptionError(
        'BreakerRegistry',
        'key',
        'a non-empty string',
        key,
        'breakerFor(key)',
      );
    }
    const given: unknown = overrides;
    if (
      given !== undefined &&
      (typeof given !== 'object' || given === null || Array.isArray(given))
    ) {
      throw new InvalidOptionError(
        'BreakerRegistry',
        'overrides',
        'an options object',
        given,
        'breakerFor(key, overrides)',
      );
    }
    const now = this.#clock.now();
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = {
        breaker:
          overrides === undefined
            ? // The same as below without a copy of the options: `{ name: key, ...defaults }`.
              sharedBreaker(this.#config, this.#defaultName ? this.#config.o.name : key)
            : new CircuitBreaker({ name: key, ...this.#defaults, ...overrides }),
        lastUsed: now,
      };
      this.#entries.set(key, entry);
    }
    entry.lastUsed = now;
    return entry.breaker;
  }

  /** Whether a breaker exists for `key`. */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Forgets the breaker for `key`; `false` when there was none. */
  delete(key: string): boolean {
    return this.#entries.delete(key);
  }

  /** Keys with a breaker. */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  /** Number of breakers. */
  get size(): number {
    return this.#entries.size;
  }

  /** Forgets breakers not asked for in the last `idleMs` and returns how many went. */
  sweep(idleMs: number): number {
    this.#open('sweep');
    if (typeof idleMs !== 'number' || !(idleMs >= 0)) {
      throw new InvalidOptionError(
        'BreakerRegistry',
        'idleMs',
        'a number >= 0',
        idleMs,
        'sweep(idleMs)',
      );
    }
    const cutoff = this.#clock.now() - idleMs;
    let removed = 0;
    for (const [key, entry] of this.#entries) {
      if (entry.lastUsed < cutoff) {
        this.#entries.delete(key);
        removed++;
      }
    }
    if (removed > 0) {
      log(
        this.#config.o.logger,
        'debug',
        { removed, remaining: this.#entries.size, idleMs },
        `breaker registry: swept ${removed} idle breaker(s)`,
      );
    }
    return removed;
  }

  /**
   * Forgets every breaker; afterwards `breakerFor()` and `sweep()` throw a `ClosedError`. A
   * breaker owns no connection and no timer beyond the calls it is running, so breakers handed
   * out before keep working for whoever holds them. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#entries.clear();
    return Promise.resolve();
  }

  /** {@link BreakerRegistry.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Throws a `ClosedError` naming `operation` once the registry is closed. */
  #open(operation: string): void {
    if (this.#closed) throw new ClosedError('BreakerRegistry', operation);
  }

  /**
   * A roll-up of every breaker: how many are in each state, which reject calls now, the call
   * totals summed, and each breaker's own {@link BreakerMetrics} by key. Costs one `metrics()`
   * per breaker; meant for a metrics scrape, not for every call.
   */
  metrics(): BreakerRegistryMetrics {
    const byState: Record<BreakerState, number> = {
      closed: 0,
      open: 0,
      'half-open': 0,
      'forced-open': 0,
      disabled: 0,
      'metrics-only': 0,
    };
    const perBreaker: Record<string, BreakerMetrics> = Object.create(null) as Record<
      string,
      BreakerMetrics
    >;
    const open: string[] = [];
    let successfulTotal = 0;
    let failedTotal = 0;
    let ignoredTotal = 0;
    let rejectedTotal = 0;
    for (const [key, { breaker }] of this.#entries) {
      const m = breaker.metrics();
      perBreaker[key] = m;
      byState[m.state]++;
      if (m.state === 'open' || m.state === 'forced-open') open.push(key);
      successfulTotal += m.successfulTotal;
      failedTotal += m.failedTotal;
      ignoredTotal += m.ignoredTotal;
      rejectedTotal += m.rejectedTotal;
    }
    return {
      time: wallTime(),
      breakers: this.#entries.size,
      byState,
      open: open.sort(),
      successfulTotal,
      failedTotal,
      ignoredTotal,
      rejectedTotal,
      perBreaker,
    };
  }
}
