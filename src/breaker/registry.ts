/**
 * One breaker per downstream, by key, with shared defaults.
 *
 * @packageDocumentation
 */
import { ClosedError, InvalidOptionError, systemClock, type Clock } from '../core/index.js';
import {
  CircuitBreaker,
  breakerConfig,
  sharedBreaker,
  type BreakerConfig,
  type CircuitBreakerOptions,
} from './breaker.js';

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
}
