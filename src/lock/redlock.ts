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
  guardedOption,
  booleanOption,
  integerOption,
  isClock,
  numberOption,
  resolveOptions,
  sleep,
  stringOption,
  systemClock,
  throwIfAborted,
  type Clock,
  type Timer,
} from '../core/index.js';
import {
  LockCrossSlotError,
  LockTakenError,
  QuorumUnavailableError,
  type NodeVote,
} from './errors.js';
import {
  ReleaseNotifier,
  canDuplicate,
  type DuplicableClient,
  type Subscription,
} from './notifier.js';
import { hashTag, keySlot } from './slot.js';
import { ACQUIRE, EXTEND, RELEASE, SYNC_FENCE, type Script } from './scripts.js';
import {
  Lock,
  holdWhile,
  resolveAcquire,
  type AcquireOptions,
  type LockBackend,
  type UsingOptions,
} from './lock.js';

/**
 * What the lock needs from a Redis client: EVALSHA and EVAL. An ioredis `Redis` fits as is;
 * no ioredis type appears in the lock's logic.
 */
export interface LockClient {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

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
  /** Per-node timeout of one script call. @defaultValue 100 */
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
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
};

type Resolved = ReturnType<typeof resolveOptions<typeof spec>>;

interface NodeResult {
  readonly node: number;
  readonly ok: boolean;
  readonly value?: unknown;
  readonly error?: string;
  /** Had not answered when the round was decided (not a failure of the node). */
  readonly pending?: true;
}

/** A node granted the attempt: the acquire script answered `{1, fence…}`. */
const isGrant = (r: NodeResult): boolean => Array.isArray(r.value) && r.value[0] === 1;

/** The remaining ttl a refusing node reported (`{0, index, pttl}`), or Infinity. */
const pttlOf = (r: NodeResult): number => {
  const pttl = Array.isArray(r.value) ? Number(r.value[2]) : NaN;
  return Number.isFinite(pttl) && pttl >= 0 ? pttl : Infinity;
};

/** An unguessable token: 128 random bits, hex. */
function newToken(): string {
  return (
    crypto.randomUUID().replaceAll('-', '') + crypto.randomUUID().replaceAll('-', '').slice(0, 8)
  );
}

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
export class Redlock implements LockBackend, AsyncDisposable {
  readonly #o: Resolved;
  readonly #quorum: number;
  readonly #cluster: boolean;
  readonly #notifier: ReleaseNotifier | undefined;

  constructor(options: RedlockOptions) {
    this.#o = resolveOptions(OWNER, options, spec);
    this.#quorum = Math.floor(this.#o.clients.length / 2) + 1;
    this.#cluster = this.#o.clients.some((c) => (c as { isCluster?: unknown }).isCluster === true);
    const clients = this.#o.clients;
    const duplicable = clients.filter((c): c is LockClient & DuplicableClient => canDuplicate(c));
    this.#notifier =
      this.#o.notifications && duplicable.length === clients.length
        ? new ReleaseNotifier(duplicable, this.#o.clock, this.#o.nodeTimeoutMs)
        : undefined;
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
    return this.#quorum;
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
    const { list, ttlMs, retryCount, signal } = resolveAcquire(
      'Redlock.acquire',
      resources,
      options,
      {
        ttlMs: this.#o.ttlMs,
        retryCount: this.#o.retryCount,
      },
    );
    throwIfAborted(signal);
    const lockKeys = list.map((r) => this.keyOf(r));
    if (this.#cluster && lockKeys.length > 1) {
      const slots = lockKeys.map(keySlot);
      if (slots.some((slot) => slot !== slots[0])) throw new LockCrossSlotError(list, slots);
    }
    const keys = [...lockKeys, ...lockKeys.map((k) => `${k}:fence`)];
    let lastVotes: NodeVote[] = [];
    let subscription: Subscription | undefined;
    try {
      let delay = 0;
      let seen = 0;
      for (let attempt = 0; attempt <= retryCount; attempt++) {
        if (attempt > 0 && delay > 0) {
          if (subscription === undefined) {
            await sleep(delay, { signal, clock: this.#o.clock });
          } else {
            await subscription.wait(seen, delay, signal);
          }
        }
        if (subscription !== undefined) seen = subscription.count;
        const token = newToken();
        const started = this.#o.clock.now();
        const results = await this.#round(ACQUIRE, keys, [token, ttlMs], isGrant);
        lastVotes = this.#votes(results, isGrant);
        const granted = results.filter((r) => r.ok && isGrant(r));
        if (granted.length >= this.#quorum) {
          const lock = await this.#settle(list, lockKeys, keys, token, ttlMs, started, granted);
          if (lock !== undefined) return lock;
        }
        // Failed attempt: undo wherever it may have landed (stragglers included), then retry.
        await this.#round(RELEASE, lockKeys, [token, '0'], () => false, true);
        // Only real failures count against availability, not nodes the round did not wait for.
        const errors = results.filter((r) => !r.ok && r.pending !== true).length;
        if (errors > this.#o.clients.length - this.#quorum) {
          throw new QuorumUnavailableError(list, lastVotes, this.#quorum);
        }
        delay = this.#o.retryDelayMs + this.#o.random() * this.#o.retryJitterMs;
        if (granted.length > 0) {
          // A split vote: nobody may hold a quorum, so no release will come; retry soon, at a
          // random moment so the contenders stop colliding.
          delay = this.#o.random() * this.#o.retryJitterMs;
        } else if (this.#notifier !== undefined && attempt < retryCount) {
          // Held by someone: wait for their release (pub/sub), or for the lock to expire on
          // the first node that reported it, whichever comes first — polling is the fallback.
          const expires = Math.min(
            ...results.map((r) => (r.ok && !isGrant(r) ? pttlOf(r) : Infinity)),
          );
          if (expires >= 0 && expires < delay) delay = expires + 1;
          if (subscription === undefined) {
            subscription = await this.#notifier.subscribe(lockKeys.map((k) => `${k}:released`));
            // The holder may have released between our attempt and the subscription: try
            // again at once rather than wait for a message that already went by.
            delay = 0;
          }
        }
      }
    } finally {
      subscription?.[Symbol.dispose]();
    }
    throw new LockTakenError(list, lastVotes, retryCount + 1);
  }

  /**
   * After a quorum granted: settle the fencing tokens (sync the counters when the granting
   * nodes disagree) and check the validity. The lock, or `undefined` when it must be undone.
   */
  async #settle(
    list: readonly string[],
    lockKeys: readonly string[],
    keys: readonly string[],
    token: string,
    ttlMs: number,
    started: number,
    granted: readonly NodeResult[],
  ): Promise<Lock | undefined> {
    // Fencing tokens: the maximum counter over the granting nodes, per resource.
    const fences = list.map((_, i) =>
      Math.max(...granted.map((r) => Number((r.value as unknown[])[i + 1]))),
    );
    const inSync = granted.every((r) =>
      list.every((_, i) => Number((r.value as unknown[])[i + 1]) === fences[i]),
    );
    let fenced = inSync;
    if (!inSync) {
      const synced = await this.#round(
        SYNC_FENCE,
        keys,
        [token, ...fences],
        (r) => Number(r.value) === list.length,
      );
      fenced = synced.filter((r) => r.ok && Number(r.value) === list.length).length >= this.#quorum;
    }
    const drift = ttlMs * this.#o.driftFactor + 2;
    const validity = ttlMs - (this.#o.clock.now() - started) - drift;
    if (!fenced || validity <= this.#o.minValidityMs) return undefined;
    return new Lock(this, list, lockKeys, token, started + ttlMs - drift, fences);
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
    const results = await this.#round(
      EXTEND,
      lockKeys,
      [token, ttlMs],
      (r) => Number(r.value) === 1,
    );
    const extended = results.filter((r) => r.ok && Number(r.value) === 1).length;
    if (extended < this.#quorum) return undefined;
    return started + ttlMs - (ttlMs * this.#o.driftFactor + 2);
  }

  /** @internal */
  async releaseKeys(lockKeys: readonly string[], token: string): Promise<boolean> {
    const results = await this.#round(RELEASE, lockKeys, [token, '1'], () => false, true);
    return (
      results.filter((r) => r.ok && Number(r.value) === lockKeys.length).length >= this.#quorum
    );
  }

  /** @internal */
  get clock(): Clock {
    return this.#o.clock;
  }

  /** @internal */
  get ttlMs(): number {
    return this.#o.ttlMs;
  }

  #votes(results: readonly NodeResult[], granted: (r: NodeResult) => boolean): NodeVote[] {
    return results.map((r) =>
      !r.ok
        ? { node: r.node, vote: 'error' as const, error: r.error ?? 'error' }
        : granted(r)
          ? { node: r.node, vote: 'granted' as const }
          : { node: r.node, vote: 'taken' as const },
    );
  }

  /**
   * Runs a script on every node at once, each with its own timeout, and settles as soon as
   * the outcome is known: a quorum answered "yes", or too few nodes are left to make one.
   * Nodes still pending then count as errors ("pending").
   */
  #round(
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
    yes: (r: NodeResult) => boolean,
    waitAll = false,
  ): Promise<NodeResult[]> {
    const clients = this.#o.clients;
    const n = clients.length;
    return new Promise((resolve) => {
      const results: (NodeResult | undefined)[] = new Array<NodeResult | undefined>(n);
      let settled = false;
      let answered = 0;
      let yeses = 0;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        // Array.from, not map: map skips the holes of nodes that have not answered.
        resolve(
          Array.from(
            { length: n },
            (_, node) =>
              results[node] ?? {
                node,
                ok: false,
                pending: true,
                error: 'pending (decided without it)',
              },
          ),
        );
      };
      clients.forEach((client, node) => {
        void this.#call(client, script, keys, args).then((result) => {
          const r: NodeResult = { node, ...result };
          results[node] = r;
          answered++;
          if (r.ok && yes(r)) yeses++;
          const noes = answered - yeses;
          if (answered === n || (!waitAll && (yeses >= this.#quorum || noes > n - this.#quorum)))
            finish();
        });
      });
    });
  }

  /** One script call on one node, bounded by the per-node timeout; never rejects. */
  async #call(
    client: LockClient,
    script: Script,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<{ ok: boolean; value?: unknown; error?: string }> {
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.#o.clock.setTimer(() => {
        reject(new Error(`timed out after ${this.#o.nodeTimeoutMs} ms`));
      }, this.#o.nodeTimeoutMs);
    });
    try {
      const run = async (): Promise<unknown> => {
        try {
          return await client.evalsha(script.sha, keys.length, ...keys, ...args);
        } catch (error) {
          if (error instanceof Error && error.message.includes('NOSCRIPT')) {
            return await client.eval(script.source, keys.length, ...keys, ...args);
          }
          throw error;
        }
      };
      const call = run();
      call.catch(() => undefined);
      const value = await Promise.race([call, timeout]);
      return { ok: true, value };
    } catch (error) {
      return { ok: false, error: error instanceof Error ? error.message : String(error) };
    } finally {
      timer?.cancel();
      timeout.catch(() => undefined);
    }
  }
}
