/**
 * A counting semaphore on Redlock's quorum machinery: `limit` permits shared by every holder,
 * a holder may take several at once. One sorted set per node holds the live permits, scored
 * with their expiry in Redis server time (computed inside the scripts), so clients with skewed
 * clocks still agree on what expired. A permit counts as held when a quorum of nodes admitted
 * it, as for a lock: with all holders going through the same quorum rules, two quorums share a
 * node, and that node's count bounds the permits out at once.
 *
 * @packageDocumentation
 */
import {
  EventChannel,
  InvalidOptionError,
  guardedOption,
  integerOption,
  isAbortSignal,
  resolveOptions,
  throwIfAborted,
  type Clock,
  type Listener,
  type Subscription,
} from '../core/index.js';
import {
  Lock,
  holdWhile,
  type AcquireOptions,
  type LockBackend,
  type UsingOptions,
} from './lock.js';
import type { NodeResult, Quorum } from './quorum.js';
import { SEM_ACQUIRE, SEM_EXTEND, SEM_RELEASE } from './scripts.js';

/** Options of a semaphore. */
export interface SemaphoreOptions {
  /** How many permits exist in all. Every user of one semaphore must agree on it. */
  readonly permits: number;
}

/** Options of one `Semaphore.acquire()`. */
export interface PermitOptions extends AcquireOptions {
  /** Permits to take at once. @defaultValue 1 */
  readonly permits?: number;
}

/** Options of `Semaphore.using()`. */
export interface PermitUsingOptions extends UsingOptions {
  /** Permits to take at once. @defaultValue 1 */
  readonly permits?: number;
}

/** Reported when a node held semaphore entries that do not parse (moved aside, not counted). */
export interface QuarantineEvent {
  readonly semaphore: string;
  readonly node: number;
  /** How many entries this round moved to the quarantine set. */
  readonly entries: number;
  /** The Redis key of the quarantine set, for inspection. */
  readonly key: string;
}

/**
 * Held permits: a {@link Lock} handle (extend, release, `signal`, `await using`) plus how many
 * permits it holds. Permits carry no fencing token (`fencingToken` is 0): several holders
 * share a semaphore at once, so no order among them could fence a store.
 */
export class Permit extends Lock {
  /** Permits this handle holds. */
  readonly permits: number;

  /** @internal */
  constructor(
    backend: LockBackend,
    name: string,
    keys: readonly string[],
    member: string,
    validUntil: number,
    permits: number,
  ) {
    super(backend, [name], keys, member, validUntil, []);
    this.permits = permits;
  }
}

/** @internal What a semaphore takes from the Redlock that made it. */
export interface SemaphoreContext {
  readonly quorum: Quorum;
  readonly key: string;
  readonly ttlMs: number;
  readonly retryCount: number;
  readonly minValidityMs: number;
}

const isGrant = (r: NodeResult): boolean => Array.isArray(r.value) && r.value[0] === 1;
const freesIn = (r: NodeResult): number => {
  const ms = Array.isArray(r.value) ? Number(r.value[2]) : NaN;
  return Number.isFinite(ms) && ms >= 0 ? ms : Infinity;
};

/**
 * A counting semaphore over Redis (made by `Redlock.semaphore(name, { permits })`).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { Redlock } from 'keel/lock';
 *
 * const redlock = new Redlock({ clients: [new Redis({ lazyConnect: true })] });
 * // At most 10 concurrent calls to the card processor, across every service instance.
 * const processor = redlock.semaphore('card-processor', { permits: 10 });
 * await processor.using({ permits: 1, ttlMs: 5_000 }, async (signal) => {
 *   if (!signal.aborted) console.log('charging');
 * });
 * ```
 */
export class Semaphore implements LockBackend {
  /** The semaphore's name. */
  readonly name: string;
  /** Permits in all. */
  readonly limit: number;
  readonly #c: SemaphoreContext;
  readonly #keys: readonly string[];
  readonly #quarantined = new EventChannel<QuarantineEvent>();

  /** @internal */
  constructor(name: string, options: SemaphoreOptions, context: SemaphoreContext) {
    if (typeof name !== 'string' || name === '') {
      throw new InvalidOptionError('Redlock.semaphore', 'name', 'a non-empty string', name);
    }
    const { permits } = resolveOptions('Redlock.semaphore', options, {
      permits: integerOption({ min: 1, max: 1_000_000_000, required: true }),
    });
    this.name = name;
    this.limit = permits;
    this.#c = context;
    this.#keys = [context.key, `${context.key}:quarantine`];
  }

  /** @internal */
  get clock(): Clock {
    return this.#c.quorum.clock;
  }

  /** @internal */
  get ttlMs(): number {
    return this.#c.ttlMs;
  }

  /**
   * Malformed entries found in a node's set: moved to a quarantine set, not counted as
   * permits, and reported here.
   */
  onQuarantine(listener: Listener<QuarantineEvent>): Subscription {
    return this.#quarantined.subscribe(listener);
  }

  /**
   * Takes `permits` permits (default 1), retrying while too few are free. Rejects with
   * `LockTakenError` when they stay taken, `QuorumUnavailableError` when too many nodes fail.
   */
  async acquire(options: PermitOptions = {}): Promise<Permit> {
    const { permits, ttlMs, retryCount, signal } = resolveOptions('Semaphore.acquire', options, {
      permits: integerOption({ min: 1, max: this.limit, default: 1 }),
      ttlMs: integerOption({ min: 1, max: 86_400_000, default: this.#c.ttlMs }),
      retryCount: integerOption({ min: 0, max: 1_000_000, default: this.#c.retryCount }),
      signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
    });
    throwIfAborted(signal);
    const q = this.#c.quorum;
    let member = '';
    return q.acquire(
      {
        resources: [this.name],
        script: SEM_ACQUIRE,
        keys: this.#keys,
        args: (token) => {
          member = `${permits}:${token}`;
          return [member, permits, ttlMs, this.limit];
        },
        granted: isGrant,
        observe: (results) => {
          for (const r of results) this.#report(r);
        },
        freesIn,
        settle: (_token, started) => {
          const validUntil = q.deadline(started, ttlMs);
          if (validUntil - q.clock.now() <= this.#c.minValidityMs) {
            return Promise.resolve(undefined);
          }
          return Promise.resolve(
            new Permit(this, this.name, this.#keys, member, validUntil, permits),
          );
        },
        undo: (_token, nodes) =>
          q.round(SEM_RELEASE, this.#keys, [member, '0'], () => false, { waitAll: true, nodes }),
        channels: [`${this.#c.key}:released`],
        takenDetail: `semaphore ${this.name} has fewer than ${permits} of ${this.limit} permits free`,
      },
      retryCount,
      signal,
    );
  }

  /** Runs `routine` while holding permits; see `Redlock.using`. */
  using<R>(
    options: PermitUsingOptions,
    routine: (signal: AbortSignal, permit: Permit) => Promise<R>,
  ): Promise<R> {
    const { permits, ...rest } = options;
    return holdWhile(
      'Semaphore.using',
      this,
      (o) => this.acquire({ ...o, ...(permits === undefined ? {} : { permits }) }),
      rest,
      routine,
    );
  }

  /** @internal */
  async extendKeys(
    keys: readonly string[],
    member: string,
    ttlMs: number,
  ): Promise<number | undefined> {
    const q = this.#c.quorum;
    const started = q.clock.now();
    const yes = (r: NodeResult): boolean => Number(r.value) === 1;
    const results = await q.round(SEM_EXTEND, keys, [member, ttlMs], yes);
    return q.count(results, yes) >= q.size ? q.deadline(started, ttlMs) : undefined;
  }

  /** @internal */
  async releaseKeys(keys: readonly string[], member: string): Promise<boolean> {
    const q = this.#c.quorum;
    const yes = (r: NodeResult): boolean => Number(r.value) === 1;
    const results = await q.round(SEM_RELEASE, keys, [member, '1'], yes);
    return q.count(results, yes) >= q.size;
  }

  #report(r: NodeResult): void {
    if (!r.ok || !Array.isArray(r.value)) return;
    const entries = Number(r.value[3]);
    if (entries > 0 && this.#quarantined.active) {
      this.#quarantined.emit({
        semaphore: this.name,
        node: r.node,
        entries,
        key: this.#keys[1] ?? '',
      });
    }
  }
}
