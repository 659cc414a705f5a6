/**
 * A counting semaphore on Redlock's quorum machinery: `limit` permits shared by every holder,
 * a holder may take several at once. The permits are numbered slots; taking permits means
 * locking that many slots, all or none, by Redlock's rules — so each slot has at most one
 * holder (two quorums share a node, which refuses a slot it holds), and at most `limit`
 * permits are out. (Counting holders per node would not be safe: with five nodes, four holders
 * granted by different quorums of three can each fit under a per-node count of three.) One
 * sorted set per node holds the live slots, scored with their expiry in Redis server time
 * (computed inside the scripts), so clients with skewed clocks still agree on what expired.
 * Clients pick the slots free on the most nodes by the last answers, at random among equals.
 *
 * @packageDocumentation
 */
import { shortestTtl, ttlExpectation } from './plan.js';
import {
  ClosedError,
  EventChannel,
  InvalidOptionError,
  integerOption,
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
  type ReleaseOutcome,
  releaseOutcome,
  acquireRules,
  retriesOf,
  waitDeadline,
  type UsingOptions,
} from './lock.js';
import { TOO_SLOW, type NodeResult, type Quorum } from './quorum.js';
import { SEM_ACQUIRE, SEM_EXTEND, SEM_RELEASE } from './scripts.js';

/** Most permits a semaphore may have (each is a slot the scripts track by number). */
const MAX_PERMITS = 10_000;

/** Options of a semaphore. */
export interface SemaphoreOptions {
  /**
   * How many permits exist in all, 1 … 10000. Every user of one semaphore must agree on it
   * (entries for slots beyond it are quarantined).
   */
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
  /** The semaphore's name. */
  readonly semaphore: string;
  /** Index of the node in the Redlock's client list. */
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

  private constructor(
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

  /**
   * Held permits (permits come from `Semaphore.acquire()` and `using()` only).
   *
   * @internal
   */
  static granted(
    backend: LockBackend,
    name: string,
    keys: readonly string[],
    member: string,
    validUntil: number,
    permits: number,
  ): Permit {
    return new Permit(backend, name, keys, member, validUntil, permits);
  }
}

/** @internal What a semaphore takes from the Redlock that made it. */
export interface SemaphoreContext {
  /** Whether the Redlock is closed (its semaphores close with it). */
  readonly closed: () => boolean;
  readonly quorum: Quorum;
  readonly key: string;
  readonly ttlMs: number;
  readonly retryCount: number;
  readonly minValidityMs: number;
  readonly driftFactor: number;
  readonly random: () => number;
}

const isGrant = (r: NodeResult): boolean => Array.isArray(r.value) && r.value[0] === 1;
const freesIn = (r: NodeResult): number => {
  const ms = Array.isArray(r.value) ? Number(r.value[2]) : NaN;
  return Number.isFinite(ms) && ms >= 0 ? ms : Infinity;
};

/** The option rules of `Semaphore.acquire()`: a lock's, and how many permits. */
function permitSpec(limit: number, context: SemaphoreContext) {
  return { ...acquireRules(context), permits: integerOption({ min: 1, max: limit, default: 1 }) };
}

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
export class Semaphore implements AsyncDisposable {
  // Also the LockBackend of its Permits (checked where it passes `this` to `Permit.granted`), but
  // not declared with `implements`: that interface is internal, and the .d.ts build strips it.
  /** The semaphore's name. */
  readonly name: string;
  /** Permits in all. */
  readonly limit: number;
  readonly #c: SemaphoreContext;
  readonly #keys: readonly string[];
  readonly #quarantined = new EventChannel<QuarantineEvent>();
  /** The option rules of `acquire()`, made once. */
  readonly #spec: ReturnType<typeof permitSpec>;
  /** The shortest ttl that can leave more than `minValidityMs` of validity. */
  readonly #minTtlMs: number;
  /** Node → the slots it last said were taken. */
  readonly #taken = new Map<number, number[]>();

  /** Set by {@link Semaphore.close}. */
  #closed = false;
  /** Releases of overtaken late grants still in flight (see `#lateGrant`); `close()` waits. */
  readonly #releasing = new Set<Promise<unknown>>();

  private constructor(name: string, options: SemaphoreOptions, context: SemaphoreContext) {
    if (typeof name !== 'string' || name === '') {
      throw new InvalidOptionError('Redlock.semaphore', 'name', 'a non-empty string', name);
    }
    const { permits } = resolveOptions('Redlock.semaphore', options, {
      permits: integerOption({ min: 1, max: MAX_PERMITS, required: true }),
    });
    this.name = name;
    this.limit = permits;
    this.#c = context;
    this.#keys = [context.key, `${context.key}:quarantine`];
    this.#spec = permitSpec(permits, context);
    this.#minTtlMs = shortestTtl(context.minValidityMs, context.driftFactor);
  }

  /**
   * A semaphore on a Redlock's nodes (semaphores come from `Redlock.semaphore()` only).
   *
   * @internal
   */
  static made(name: string, options: SemaphoreOptions, context: SemaphoreContext): Semaphore {
    return new Semaphore(name, options, context);
  }

  /**
   * Closes this semaphore: afterwards `acquire()` and `using()` fail with a `ClosedError`
   * (permits already held can still be released). It owns no connection or timer of its own —
   * those are its Redlock's, and closing the Redlock closes its semaphores too. Resolves once
   * the releases of late grants it sent (see `acquire()`) have been answered. Safe to call
   * twice.
   */
  async close(): Promise<void> {
    this.#closed = true;
    while (this.#releasing.size > 0) await Promise.all(this.#releasing);
  }

  /** {@link Semaphore.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Throws a `ClosedError` naming `operation` once this semaphore or its Redlock is closed. */
  #open(operation: string): void {
    if (this.#closed || this.#c.closed()) {
      throw new ClosedError(`Semaphore ${JSON.stringify(this.name)}`, operation);
    }
  }

  /** @internal */
  get clock(): Clock {
    return this.#c.quorum.clock;
  }

  /** @internal */
  get ttlMs(): number {
    return this.#c.ttlMs;
  }

  /** @internal */
  get minValidityMs(): number {
    return this.#c.minValidityMs;
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
    this.#open('acquire');
    const { permits, ttlMs, retryCount, waitMs, signal } = resolveOptions(
      'Semaphore.acquire',
      options,
      this.#spec,
    );
    throwIfAborted(signal);
    if (ttlMs < this.#minTtlMs) {
      const { minValidityMs, driftFactor } = this.#c;
      throw new InvalidOptionError(
        'Semaphore.acquire',
        'ttlMs',
        ttlExpectation(this.#minTtlMs, minValidityMs, driftFactor),
        ttlMs,
      );
    }
    const deadline = waitDeadline(this.#c.quorum.clock, waitMs);
    const attempts = retriesOf({ retryCount, waitMs }, options);
    const q = this.#c.quorum;
    // The slots of the attempt made last (`slotsOf`), and of earlier ones — kept only when an
    // acquisition makes more than one attempt — for their late answers (see `late`).
    let slots: number[] = [];
    let slotsOf = '';
    let earlier: Map<string, number[]> | undefined;
    let permit: Permit | undefined;
    let wonWith = '';
    const won = await q.acquire(
      {
        resources: [this.name],
        ttlMs,
        minValidityMs: this.#c.minValidityMs,
        script: SEM_ACQUIRE,
        keys: this.#keys,
        args: (token) => {
          if (slotsOf !== '') (earlier ??= new Map()).set(slotsOf, slots);
          slots = this.#choose(permits);
          slotsOf = token;
          return [token, ttlMs, this.limit, ...slots];
        },
        granted: isGrant,
        observe: (results) => {
          for (const r of results) {
            this.#report(r);
            this.#learn(r);
          }
        },
        freesIn,
        settle: (token, started) => {
          const validUntil = q.deadline(started, ttlMs);
          if (validUntil - q.clock.now() <= this.#c.minValidityMs) return TOO_SLOW;
          const handle = `${slots.join(',')}/${token}`;
          permit = Permit.granted(this, this.name, this.#keys, handle, validUntil, permits);
          wonWith = token;
          return permit;
        },
        // A grant that ran on a node after calls sent behind it (its EVAL after NOSCRIPT, or a
        // copy ioredis sent again; see NodeChannel) may have landed after this attempt's undo or the permit's release there,
        // and would keep its slots until the ttl: released on that node unless the permit is
        // still held (its release, sent later, lands after). In doubt it is released: a late
        // grant never counted in the permit's quorum. As Redlock's LockAttempt.late does.
        late: (token, r) => {
          if (r.overtaken !== true || !isGrant(r)) return;
          if (token === wonWith && permit !== undefined && permit.remainingMs() > 0) return;
          const taken = token === slotsOf ? slots : earlier?.get(token);
          if (taken !== undefined) this.#releaseLate(token, taken, r.node, ttlMs);
        },
        undo: (token, nodes) =>
          q.undo(SEM_RELEASE, this.#keys, [token, '0', ...slots], nodes, ttlMs),
        retryAtOnce: () => this.#freeOnQuorum(permits),
        channels: [`${this.#c.key}:released`],
        takenDetail: `semaphore ${this.name} has fewer than ${permits} of ${this.limit} permits free`,
      },
      attempts,
      signal,
      deadline,
    );
    if (signal?.aborted === true) {
      // Aborted while the round that won was under way: the caller has stopped waiting, so the
      // permit goes back at once (as Redlock.acquire does with a lock).
      await won.release();
      throwIfAborted(signal);
    }
    return won;
  }

  /** Releases on `node` the `slots` a late grant to `token` took there (see `acquire`'s `late`). */
  #releaseLate(token: string, slots: readonly number[], node: number, ttlMs: number): void {
    const q = this.#c.quorum;
    const release = q
      .undo(SEM_RELEASE, this.#keys, [token, '0', ...slots], [node], ttlMs)
      .catch(() => undefined)
      .finally(() => this.#releasing.delete(release));
    this.#releasing.add(release);
  }

  /**
   * The slots to ask for: those taken on the fewest nodes by what the last answers said (ties
   * broken at random, so contenders spread out), or random ones when nothing is known.
   */
  #choose(permits: number): number[] {
    const random = this.#c.random;
    if (this.#taken.size === 0) {
      const picked = new Set<number>();
      while (picked.size < permits) picked.add(Math.floor(random() * this.limit));
      return [...picked];
    }
    const score = new Float64Array(this.limit);
    for (let i = 0; i < this.limit; i++) score[i] = random(); // tie-break within a count
    for (const taken of this.#taken.values()) {
      for (const slot of taken) score[slot] = (score[slot] as number) + 1;
    }
    const order = Array.from({ length: this.limit }, (_, i) => i);
    order.sort((a, b) => (score[a] as number) - (score[b] as number));
    return order.slice(0, permits);
  }

  /** Are there `permits` slots that no node known to a quorum has taken, by the last answers? */
  #freeOnQuorum(permits: number): boolean {
    const chosen = this.#choose(permits);
    const n = this.#c.quorum.nodes;
    let free = 0;
    for (let node = 0; node < n; node++) {
      const taken = this.#taken.get(node);
      if (taken === undefined || !chosen.some((slot) => taken.includes(slot))) free++;
    }
    return free >= this.#c.quorum.size;
  }

  /** Remembers which slots a node said are taken (a node that granted: nothing known). */
  #learn(r: NodeResult): void {
    if (!r.ok || !Array.isArray(r.value)) return;
    const taken: unknown = r.value[1];
    if (r.value[0] === 0 && Array.isArray(taken)) {
      this.#taken.set(
        r.node,
        taken.map(Number).filter((n) => Number.isInteger(n) && n >= 0 && n < this.limit),
      );
    } else this.#taken.delete(r.node);
  }

  /** Splits a permit's handle (`<slots>/<token>`) for the scripts. */
  #parse(handle: string): { token: string; slots: string[] } {
    const at = handle.indexOf('/');
    return { token: handle.slice(at + 1), slots: handle.slice(0, at).split(',') };
  }

  /**
   * Runs `routine` while holding one permit, with the default options: `using(routine)` is
   * `using({}, routine)`. See `Redlock.using`.
   */
  using<R>(routine: (signal: AbortSignal, permit: Permit) => Promise<R>): Promise<R>;
  /** Runs `routine` while holding permits; see `Redlock.using`. */
  using<R>(
    options: PermitUsingOptions,
    routine: (signal: AbortSignal, permit: Permit) => Promise<R>,
  ): Promise<R>;
  using<R>(
    optionsOrRoutine: PermitUsingOptions | ((signal: AbortSignal, permit: Permit) => Promise<R>),
    routine?: (signal: AbortSignal, permit: Permit) => Promise<R>,
  ): Promise<R> {
    try {
      this.#open('using');
    } catch (error) {
      return Promise.reject(error);
    }
    // `using(routine)`: a function where the options go, and nothing after it. Anything else
    // that is not an options object is left for holdWhile to refuse, naming it.
    if (typeof optionsOrRoutine === 'function' && routine === undefined) {
      return holdWhile('Semaphore.using', this, (o) => this.acquire(o), optionsOrRoutine);
    }
    const given: unknown = optionsOrRoutine;
    const { permits, ...rest } =
      typeof given === 'object' && given !== null && !Array.isArray(given)
        ? (given as PermitUsingOptions)
        : { permits: undefined };
    return holdWhile(
      'Semaphore.using',
      this,
      (o) => this.acquire({ ...o, ...(permits === undefined ? {} : { permits }) }),
      typeof given === 'object' && given !== null && !Array.isArray(given)
        ? rest
        : (given as PermitUsingOptions),
      routine,
    );
  }

  /** @internal */
  async extendKeys(
    keys: readonly string[],
    handle: string,
    ttlMs: number,
  ): Promise<number | undefined> {
    const q = this.#c.quorum;
    const started = q.clock.now();
    const { token, slots } = this.#parse(handle);
    const yes = (r: NodeResult): boolean => Number(r.value) === 1;
    q.heldFor(ttlMs);
    const results = await q.round(SEM_EXTEND, keys.slice(0, 1), [token, ttlMs, ...slots], yes);
    return q.count(results, yes) >= q.size ? q.deadline(started, ttlMs) : undefined;
  }

  /** @internal */
  async releaseKeys(keys: readonly string[], handle: string): Promise<ReleaseOutcome> {
    const q = this.#c.quorum;
    const { token, slots } = this.#parse(handle);
    // A copy sent again after a dropped connection says nothing against the release (see
    // `releasedOne` in redlock.ts): its first copy may have removed the slots.
    const yes = (r: NodeResult): boolean => Number(r.value) === 1 || r.resent === true;
    // A node whose client fails the call gets it again when that client is next ready, as a
    // lock's release does (see `Redlock.releaseKeys`).
    const resendUntil = q.clock.now() + q.longestTtlMs;
    const results = await q.round(SEM_RELEASE, keys.slice(0, 1), [token, '1', ...slots], yes, {
      resendUntil,
    });
    return releaseOutcome(results, yes, q.size);
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
