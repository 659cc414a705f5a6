/**
 * Redlock (the algorithm on the Redis documentation's "Distributed Locks with Redis" page) over
 * N independent Redis masters, with fencing tokens.
 *
 * One Lua script per node per attempt, sent to every node at once, each with its own timeout;
 * an attempt is decided as soon as a quorum (⌊N/2⌋ + 1) has granted or a quorum has become
 * impossible, so hung nodes never hold it up. Validity = ttl − elapsed − drift, measured on a
 * monotonic clock; a lock whose validity is not above `minValidityMs` is released and retried,
 * never returned.
 *
 * Fencing tokens. Each node keeps, per resource, a counter that the acquire script INCRs. The
 * client takes F = the maximum over the nodes that granted it. Claim: a lock granted later on
 * the same resource gets a token > F. Proof sketch: before returning, the client makes sure a
 * quorum of nodes holds a counter ≥ F — either all granting nodes already returned F, or a
 * sync round raises the counters (only where its lock key still holds its token) on a quorum.
 * A later lock needs a quorum too; two quorums of the same N nodes intersect in at least one
 * node, whose counter is ≥ F, and that lock's INCR there yields > F; its token is the maximum
 * over its quorum, so > F. It breaks when that intersecting node loses its counter — a restart
 * without persistence before the older lock's keys expired elsewhere — which is exactly
 * Redlock's own requirement (restart nodes only after a delay ≥ the max ttl, or persist with
 * fsync=always).
 *
 * @packageDocumentation
 */
import {
  isRandomSource,
  booleanOption,
  guardedOption,
  integerOption,
  isClock,
  numberOption,
  resolveOptions,
  stringOption,
  systemClock,
  throwIfAborted,
  type Clock,
} from '../core/index.js';
import { LockCrossSlotError, LockTakenError } from './errors.js';
import { Turns } from './turns.js';
import { ReleaseNotifier, canDuplicate, type DuplicableClient } from './notifier.js';
import { Quorum, type LockClient, type NodeResult } from './quorum.js';
import { ACQUIRE, EXTEND, RELEASE, SYNC_FENCE } from './scripts.js';
import { Semaphore, type SemaphoreOptions } from './semaphore.js';
import { hashTag, keySlot } from './slot.js';
import {
  Lock,
  holdWhile,
  holderId,
  resolveAcquire,
  waitDeadline,
  type AcquireOptions,
  type LockBackend,
  type LockService,
  type ReleaseOutcome,
  releaseOutcome,
  type UsingOptions,
} from './lock.js';

export type { LockClient } from './quorum.js';

/** Options of {@link Redlock}. */
export interface RedlockOptions {
  /** One client per independent Redis master (1 for a single-instance lock, 5 usually). */
  readonly clients: readonly LockClient[];
  /** Lock time-to-live. @defaultValue 10000 */
  readonly ttlMs?: number;
  /** Clock drift allowance as a fraction of the ttl (plus 2 ms). @defaultValue 0.01 */
  readonly driftFactor?: number;
  /** A lock is returned only if its remaining validity exceeds this. @defaultValue 10 */
  readonly minValidityMs?: number;
  /**
   * Per-node timeout of one script call, plus 0.1 ms per key and argument it passes (a
   * 10 000-resource lock, 20 000 keys: +2 s). @defaultValue 100
   */
  readonly nodeTimeoutMs?: number;
  /** Further attempts after the first when the lock is taken. @defaultValue 10 */
  readonly retryCount?: number;
  /** Base delay between attempts. @defaultValue 200 */
  readonly retryDelayMs?: number;
  /** Random extra delay, 0 … this, so contenders do not retry in lockstep. @defaultValue 100 */
  readonly retryJitterMs?: number;
  /**
   * Prefix of lock keys. A resource `r` is stored at `<prefix>{r}` (its fencing counter at
   * `<prefix>{r}:fence`), unless the key already has a hash tag — then at `<prefix>r`.
   * @defaultValue 'keel:lock:'
   */
  readonly keyPrefix?: string;
  /**
   * Wake waiters through pub/sub when a lock is released, instead of waiting for the next
   * retry. Needs clients that can `duplicate()` (ioredis can): the Redlock then opens one
   * subscriber connection per node while someone waits, and closes them a second after the
   * last waiter is done, or on `close()`. Retries by timer remain the fallback.
   * @defaultValue true
   */
  readonly notifications?: boolean;
  /**
   * Send the script calls issued to a node in the same tick as one command (a batch script
   * that runs each call's own script and answers each separately; see the README). Not used
   * with Redis Cluster clients.
   * @defaultValue true
   */
  readonly batching?: boolean;
  /**
   * Line up this Redlock's acquisitions of one resource (with retries) in the process, oldest
   * first, so only one of them at a time contends in Redis; the turn passes on release. Waiting
   * in line spends the retry budget as polling would.
   * @defaultValue true
   */
  readonly localTurns?: boolean;
  readonly clock?: Clock;
  readonly random?: () => number;
}

const OWNER = 'Redlock';

const isClientList = (value: unknown): value is readonly LockClient[] =>
  Array.isArray(value) &&
  value.length > 0 &&
  value.every(
    (c: unknown) =>
      typeof c === 'object' &&
      c !== null &&
      typeof (c as LockClient).evalsha === 'function' &&
      typeof (c as LockClient).eval === 'function',
  );

const spec = {
  clients: guardedOption(
    isClientList,
    'a non-empty array of Redis clients (with evalsha and eval)',
    { required: true },
  ),
  ttlMs: integerOption({ min: 1, max: 86_400_000, default: 10_000 }),
  driftFactor: numberOption({ min: 0, max: 0.5, default: 0.01 }),
  minValidityMs: numberOption({ min: 0, max: 86_400_000, default: 10 }),
  nodeTimeoutMs: numberOption({ min: 1, max: 60_000, default: 100 }),
  retryCount: integerOption({ min: 0, max: 1_000_000, default: 10 }),
  retryDelayMs: numberOption({ min: 0, max: 600_000, default: 200 }),
  retryJitterMs: numberOption({ min: 0, max: 600_000, default: 100 }),
  keyPrefix: stringOption({ default: 'keel:lock:' }),
  notifications: booleanOption({ default: true }),
  batching: booleanOption({ default: true }),
  localTurns: booleanOption({ default: true }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
};

type Resolved = ReturnType<typeof resolveOptions<typeof spec>>;

/** A node granted the attempt: the acquire script answered its fence, or `{1, fence…}`. */
const isGrant = (r: NodeResult): boolean =>
  typeof r.value === 'number' || (Array.isArray(r.value) && r.value[0] === 1);

/** The fencing counter of resource `i` a granting node returned (`fence` or `{1, fence…}`). */
const fenceOf = (r: NodeResult, i: number): number =>
  typeof r.value === 'number' ? r.value : Number((r.value as unknown[])[i + 1]);

/**
 * Who holds the lock on a refusing node (`{0, index, pttl, holder}`): the holder's id (see
 * `holderId`), or `undefined` when the node did not say.
 */
const holderOf = (r: NodeResult): string | undefined => {
  if (!Array.isArray(r.value) || r.value[0] !== 0) return undefined;
  const holder: unknown = r.value[3];
  return typeof holder === 'string' && holder !== '' ? holder : undefined;
};

/** The remaining ttl a refusing node reported (`{0, index, pttl, holder}`), or Infinity. */
const pttlOf = (r: NodeResult): number => {
  const pttl = Array.isArray(r.value) ? Number(r.value[2]) : NaN;
  return Number.isFinite(pttl) && pttl >= 0 ? pttl : Infinity;
};

/**
 * Redlock over several independent Redis masters.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { Redlock } from 'keel/lock';
 *
 * const redlock = new Redlock({
 *   clients: [6379, 6380, 6381].map((port) => new Redis({ port, lazyConnect: true })),
 *   ttlMs: 5_000,
 * });
 * const lock = await redlock.acquire('sku:1234');
 * try {
 *   // write stock for sku:1234, passing lock.fencingToken to the store
 *   console.log(lock.fencingToken, lock.validUntil);
 * } finally {
 *   await lock.release();
 * }
 * ```
 */
export class Redlock implements LockService, LockBackend, AsyncDisposable {
  readonly #o: Resolved;
  readonly #q: Quorum;
  readonly #cluster: boolean;
  readonly #notifier: ReleaseNotifier | undefined;
  readonly #turns: Turns;

  constructor(options: RedlockOptions) {
    this.#o = resolveOptions(OWNER, options, spec);
    this.#cluster = this.#o.clients.some((c) => (c as { isCluster?: unknown }).isCluster === true);
    const clients = this.#o.clients;
    const duplicable = clients.filter((c): c is LockClient & DuplicableClient => canDuplicate(c));
    this.#notifier =
      this.#o.notifications && duplicable.length === clients.length
        ? new ReleaseNotifier(duplicable, this.#o.clock, this.#o.nodeTimeoutMs)
        : undefined;
    this.#turns = new Turns(this.#o.clock);
    this.#q = new Quorum(
      { ...this.#o, batching: this.#o.batching && !this.#cluster },
      this.#notifier,
    );
  }

  /** The Redis key of a resource's lock (its fencing counter adds `:fence`). */
  keyOf(resource: string): string {
    const key = this.#o.keyPrefix + resource;
    return hashTag(key) === undefined ? `${this.#o.keyPrefix}{${resource}}` : key;
  }

  /**
   * Closes the connections this Redlock opened itself (the subscriber connections behind
   * release notifications). Your clients stay yours to quit. Safe to call twice; the Redlock
   * still works afterwards, re-opening what it needs.
   */
  close(): Promise<void> {
    this.#notifier?.close();
    return Promise.resolve();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Nodes that must agree: ⌊N/2⌋ + 1. */
  get quorum(): number {
    return this.#q.size;
  }

  /**
   * A counting semaphore named `name` with `permits` permits, on this Redlock's nodes and
   * quorum rules. Expiry is computed from Redis server time inside the scripts.
   */
  semaphore(name: string, options: SemaphoreOptions): Semaphore {
    return new Semaphore(name, options, {
      quorum: this.#q,
      key: `${this.keyOf(name)}:semaphore`,
      ttlMs: this.#o.ttlMs,
      retryCount: this.#o.retryCount,
      minValidityMs: this.#o.minValidityMs,
      random: this.#o.random,
    });
  }

  /**
   * Locks one resource or several (all or none). Retries while the lock is taken, up to
   * `retryCount` times or until `signal` aborts. Rejects with {@link LockTakenError} when it
   * stays taken, {@link QuorumUnavailableError} when too many nodes fail.
   */
  async acquire(
    resources: string | readonly string[],
    options: AcquireOptions = {},
  ): Promise<Lock> {
    const { list, ttlMs, retryCount, waitMs, signal } = resolveAcquire(
      'Redlock.acquire',
      resources,
      options,
      this.#o,
    );
    throwIfAborted(signal);
    const deadline = waitDeadline(this.#o.clock, waitMs);
    const lockKeys = list.map((r) => this.keyOf(r));
    if (this.#cluster && lockKeys.length > 1) {
      const slots = lockKeys.map(keySlot);
      if (slots.some((slot) => slot !== slots[0])) throw new LockCrossSlotError(list, slots);
    }
    const keys = [...lockKeys, ...lockKeys.map((k) => `${k}:fence`)];
    // One resource with retries: line up behind this process's other acquisitions of it.
    const line =
      this.#o.localTurns && list.length === 1 && retryCount > 0 ? lockKeys[0] : undefined;
    let remaining = retryCount;
    let channels: string[] | undefined;
    if (line !== undefined) {
      const entered = this.#turns.enter(
        line,
        retryCount,
        () => this.#q.retryDelay(),
        signal,
        deadline,
      );
      const used = typeof entered === 'number' ? entered : await entered;
      if (used === undefined) {
        throw new LockTakenError(
          list,
          [],
          retryCount + 1,
          `lock on ${list.join(', ')} is held by another holder in this process`,
        );
      }
      remaining = retryCount - used;
    }
    try {
      return await this.#q.acquire(
        {
          resources: list,
          script: ACQUIRE,
          keys,
          args: (token) => [token, ttlMs],
          granted: isGrant,
          freesIn: pttlOf,
          heldBy: holderOf,
          settle: (token, started, granted) => {
            const lock = this.#settle(list, lockKeys, keys, token, ttlMs, started, granted);
            return lock instanceof Promise
              ? lock.then((settled) => this.#holdTurn(line, token, settled))
              : this.#holdTurn(line, token, lock);
          },
          undo: (token, nodes) =>
            this.#q.round(RELEASE, lockKeys, [token, '0'], () => false, { waitAll: true, nodes }),
          // Built on first use: an acquisition that nobody makes wait never needs them.
          get channels() {
            return (channels ??= lockKeys.map((k) => `${k}:released`));
          },
        },
        remaining,
        signal,
        deadline,
      );
    } catch (error) {
      if (line !== undefined) this.#turns.leave(line);
      throw error;
    }
  }

  /**
   * After a quorum granted: settle the fencing tokens (sync the counters when the granting
   * nodes disagree) and check the validity. The lock, or `undefined` when it must be undone.
   */
  #settle(
    list: readonly string[],
    lockKeys: readonly string[],
    keys: readonly string[],
    token: string,
    ttlMs: number,
    started: number,
    granted: readonly NodeResult[],
  ): Lock | undefined | Promise<Lock | undefined> {
    // Fencing tokens: the maximum counter over the granting nodes, per resource; in sync when
    // every granting node returned that maximum (then settled without a further await: this is
    // the path of every uncontended acquisition).
    const fences: number[] = [];
    let inSync = true;
    for (let i = 0; i < list.length; i++) {
      let max = -Infinity;
      let min = Infinity;
      for (const r of granted) {
        const fence = fenceOf(r, i);
        if (fence > max) max = fence;
        if (fence < min) min = fence;
      }
      fences.push(max);
      if (min !== max) inSync = false;
    }
    if (inSync) return this.#made(list, lockKeys, token, ttlMs, started, fences);
    const covered = (r: NodeResult): boolean => Number(r.value) === list.length;
    return this.#q
      .round(SYNC_FENCE, keys, [token, ...fences], covered)
      .then((synced) =>
        this.#q.count(synced, covered) >= this.#q.size
          ? this.#made(list, lockKeys, token, ttlMs, started, fences)
          : undefined,
      );
  }

  /** The lock, when its validity (measured from `started`) is still above the minimum. */
  #made(
    list: readonly string[],
    lockKeys: readonly string[],
    token: string,
    ttlMs: number,
    started: number,
    fences: readonly number[],
  ): Lock | undefined {
    const validUntil = this.#q.deadline(started, ttlMs);
    if (validUntil - this.#o.clock.now() <= this.#o.minValidityMs) return undefined;
    return new Lock(this, list, lockKeys, token, validUntil, fences);
  }

  /** A lock won through the local turn of `line` holds that turn until it is released. */
  #holdTurn(line: string | undefined, token: string, lock: Lock | undefined): Lock | undefined {
    if (lock !== undefined && line !== undefined) {
      this.#turns.hold(line, token, () => lock.validUntil);
    }
    return lock;
  }

  /**
   * Runs `routine` while holding the lock: acquires, extends automatically while the routine
   * runs (each time half the validity is used up, as long as the total hold stays within
   * `maxHoldMs` and `maxExtensions`), aborts the routine's signal if the lock is lost or the
   * caller's signal aborts, and always releases in `finally` — keeping the routine's own error
   * rather than masking it. Leaves no timer behind.
   */
  using<R>(
    resources: string | readonly string[],
    options: UsingOptions,
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R> {
    return holdWhile('Redlock.using', this, (o) => this.acquire(resources, o), options, routine);
  }

  /** @internal */
  async extendKeys(
    lockKeys: readonly string[],
    token: string,
    ttlMs: number,
  ): Promise<number | undefined> {
    const started = this.#o.clock.now();
    const yes = (r: NodeResult): boolean => Number(r.value) === 1;
    const results = await this.#q.round(EXTEND, lockKeys, [token, ttlMs], yes);
    return this.#q.count(results, yes) >= this.#q.size
      ? this.#q.deadline(started, ttlMs)
      : undefined;
  }

  /** @internal */
  async releaseKeys(lockKeys: readonly string[], token: string): Promise<ReleaseOutcome> {
    // Decided like an acquire: as soon as a quorum deleted every key, or cannot. Stragglers
    // finish on their own (each within the per-node timeout).
    const yes = (r: NodeResult): boolean => Number(r.value) === lockKeys.length;
    const results = await this.#q.round(RELEASE, lockKeys, [token, holderId(token)], yes);
    // The next acquisition of this process in line goes now: its attempt follows this release
    // on every connection.
    if (lockKeys.length === 1) this.#turns.leave(lockKeys[0] as string, token);
    return releaseOutcome(results, yes, this.#q.size);
  }

  /** @internal */
  get clock(): Clock {
    return this.#o.clock;
  }

  /** @internal */
  get ttlMs(): number {
    return this.#o.ttlMs;
  }

  /** @internal */
  get minValidityMs(): number {
    return this.#o.minValidityMs;
  }
}
