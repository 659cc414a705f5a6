/**
 * `MemoryLock`: the lock's interface in one process, without Redis — for single-process
 * services, tests and embedded demos. Same handle, ttl, validity signal, fencing tokens
 * (strictly increasing per resource) and `using()`; no network, so no quorum and no drift.
 * A waiter is woken by the release of its resource or by the holder's expiry, polling being
 * the fallback.
 *
 * @packageDocumentation
 */
import {
  ClosedError,
  isRandomSource,
  guardedOption,
  integerOption,
  isClock,
  numberOption,
  resolveOptions,
  systemClock,
  throwIfAborted,
  wakeableSleep,
  type Clock,
} from '../core/index.js';
import { acquireChannel, contendedChannel, type LockAcquireMessage } from './diagnostics.js';
import { LockTakenError, type NodeVote } from './errors.js';
import {
  Lock,
  acquireDefaults,
  holdWhile,
  isPlainAcquire,
  newToken,
  resolveAcquire,
  waitDeadline,
  type AcquireOptions,
  type LockService,
  type ReleaseOutcome,
  type UsingOptions,
} from './lock.js';

/** Options of {@link MemoryLock}. */
export interface MemoryLockOptions {
  /** Lock time-to-live. @defaultValue 10000 */
  readonly ttlMs?: number;
  /** Further attempts after the first when the lock is taken. @defaultValue 10 */
  readonly retryCount?: number;
  /** Delay between attempts. @defaultValue 50 */
  readonly retryDelayMs?: number;
  /** Random extra delay, 0 … this. @defaultValue 25 */
  readonly retryJitterMs?: number;
  /** Clock for validity, deadlines and retry delays. @defaultValue `systemClock` */
  readonly clock?: Clock;
  /** Random numbers in [0, 1) for retry jitter. @defaultValue `Math.random` */
  readonly random?: () => number;
}

const OWNER = 'MemoryLock';

const spec = {
  ttlMs: integerOption({ min: 1, max: 86_400_000, default: 10_000 }),
  retryCount: integerOption({ min: 0, max: 1_000_000, default: 10 }),
  retryDelayMs: numberOption({ min: 0, max: 600_000, default: 50 }),
  retryJitterMs: numberOption({ min: 0, max: 600_000, default: 25 }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
};

/**
 * One resource's state: its last fencing token and, while held, the holder's token and
 * deadline. Kept (and reused) after a release — the fencing token must outlive the hold anyway —
 * so an acquire + release allocates no record and never shrinks or regrows a map.
 */
interface Slot {
  /** The last fencing token given out (0: never held). */
  fence: number;
  /** The holder's token; `undefined` when released. */
  token: string | undefined;
  /** When the hold expires (clock time); meaningful while `token` is set. */
  expiresAt: number;
}

/**
 * An in-process lock with the same interface as {@link Redlock}.
 *
 * @example
 * ```ts
 * import { MemoryLock } from 'keel/lock';
 *
 * const locks = new MemoryLock({ ttlMs: 2_000 });
 * const total = await locks.using('sku:1', async (signal, lock) => {
 *   return signal.aborted ? 0 : lock.fencingToken;
 * });
 * console.log(total);
 * ```
 */
/** The one "node" a MemoryLock names in its diagnostics messages. */
const MEMORY_NODES: readonly string[] = ['memory'];
/** The vote of that node when the resource is held. */
const TAKEN_VOTE: NodeVote = { node: 0, address: 'memory', vote: 'taken', kind: 'held-by-another' };

export class MemoryLock implements LockService, AsyncDisposable {
  // Also the LockBackend of its Locks (checked where it passes `this` to `Lock.made`), but
  // not declared with `implements`: that interface is internal, and the .d.ts build strips it.
  readonly #o: ReturnType<typeof resolveOptions<typeof spec>>;
  /** Resource → its slot, from its first acquisition on (as fencing tokens must be). */
  readonly #slots = new Map<string, Slot>();
  /** Resource → wake-ups of the acquisitions waiting for it, longest-waiting first. */
  readonly #waiters = new Map<string, Set<() => void>>();

  /** Set by {@link MemoryLock.close}. */
  #closed = false;

  constructor(options: MemoryLockOptions = {}) {
    this.#o = resolveOptions(OWNER, options, spec);
  }

  /**
   * Closes the lock service: acquisitions still waiting end with a `ClosedError` (their retry
   * timers cleared), and so do later `acquire()` and `using()` calls. Locks already held can
   * still be released. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closed = true;
    for (const set of [...this.#waiters.values()]) for (const wake of [...set]) wake();
    return Promise.resolve();
  }

  /** Read through a method: TypeScript keeps a field narrowed across an `await`. */
  #isClosed(): boolean {
    return this.#closed;
  }

  /** {@link MemoryLock.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal */
  get clock(): Clock {
    return this.#o.clock;
  }

  /** @internal */
  get ttlMs(): number {
    return this.#o.ttlMs;
  }

  /** @internal No network, so no minimum beyond the handle's loss margin. */
  get minValidityMs(): number {
    return 0;
  }

  /**
   * Locks one resource or several (all or none), retrying while taken.
   *
   * Traced on `keel:lock:acquire` (and `keel:lock:contended` when the resource is held) like
   * Redlock's, with the one node named `memory`; without a subscriber that costs one property read.
   */
  acquire(resources: string | readonly string[], options?: AcquireOptions): Promise<Lock> {
    if (!acquireChannel.hasSubscribers) {
      // Untraced, the common call (one name, no options: nothing else to check) that finds the
      // resource free completes here, before acquire() returns — no async function (its
      // promise and frame) on the uncontended path. The caller sees what it saw before: a
      // promise resolved with the lock.
      if (isPlainAcquire(resources, options) && !this.#closed) {
        const now = this.#o.clock.now();
        const slot = this.#slots.get(resources);
        if (slot?.token === undefined || slot.expiresAt <= now) {
          const ttlMs = acquireDefaults('MemoryLock.acquire', this.#o).ttlMs;
          return Promise.resolve(this.#take([resources], ttlMs, now));
        }
      }
      return this.#acquire(resources, options, undefined);
    }
    const message: LockAcquireMessage = {
      resources: typeof resources === 'string' ? [resources] : resources,
      nodes: MEMORY_NODES,
      quorum: 1,
      time: Date.now(),
      attempts: 0,
      waitMs: 0,
    };
    return acquireChannel.tracePromise(this.#acquire, message, this, resources, options, message);
  }

  /** How long until every one of `resources` is free (ms): `Infinity` when all are now. */
  #freesIn(resources: readonly string[], now: number): number {
    let freesIn = Infinity;
    for (const r of resources) {
      const slot = this.#slots.get(r);
      if (slot?.token !== undefined && slot.expiresAt > now) {
        freesIn = Math.min(freesIn, slot.expiresAt - now);
      }
    }
    return freesIn;
  }

  /** Takes every one of `resources` (all free at `now`) for `ttlMs`: the lock. */
  #take(resources: string[], ttlMs: number, now: number): Lock {
    const token = newToken();
    const expiresAt = now + ttlMs;
    const fences = new Array<number>(resources.length);
    for (let i = 0; i < resources.length; i++) {
      const r = resources[i] as string;
      let slot = this.#slots.get(r);
      if (slot === undefined) this.#slots.set(r, (slot = { fence: 0, token, expiresAt }));
      slot.fence++;
      slot.token = token;
      slot.expiresAt = expiresAt;
      fences[i] = slot.fence;
    }
    return Lock.made(this, resources, resources, token, expiresAt, fences, now);
  }

  /** {@link MemoryLock.acquire}'s attempts, filling the trace context `message` when traced. */
  async #acquire(
    resources: string | readonly string[],
    options: AcquireOptions | undefined,
    message: LockAcquireMessage | undefined,
  ): Promise<Lock> {
    if (this.#closed) throw new ClosedError(OWNER, 'acquire');
    const { list, ttlMs, retryCount, waitMs, signal } = resolveAcquire(
      'MemoryLock.acquire',
      resources,
      options,
      this.#o,
    );
    throwIfAborted(signal);
    if (message !== undefined) message.resources = list;
    // Read only when traced: without a subscriber acquire costs what it did before tracing.
    const called = message === undefined ? 0 : this.#o.clock.now();
    const deadline = waitDeadline(this.#o.clock, waitMs);
    let freesIn = Infinity;
    let attempt = 0;
    for (; attempt <= retryCount; attempt++) {
      if (attempt > 0) {
        // Woken by a release of one of the resources, or when the holder's ttl runs out, or
        // after the retry delay, whichever comes first — and never past the waitMs deadline.
        const left = deadline === undefined ? Infinity : deadline - this.#o.clock.now();
        if (left < 0) break;
        const delay = this.#o.retryDelayMs + this.#o.random() * this.#o.retryJitterMs;
        await this.#wait(list, Math.min(delay, freesIn, left), signal);
        if (this.#isClosed()) throw new ClosedError(OWNER, 'acquire');
      }
      const now = this.#o.clock.now();
      freesIn = this.#freesIn(list, now);
      if (freesIn !== Infinity) {
        if (attempt === 0 && contendedChannel.active) {
          contendedChannel.publish({
            resources: list,
            nodes: MEMORY_NODES,
            attempt: 1,
            takenBy: 'another',
            freesInMs: freesIn,
            votes: [TAKEN_VOTE],
            time: Date.now(),
          });
        }
        if (message !== undefined) {
          message.attempts = attempt + 1;
          message.waitMs = this.#o.clock.now() - called;
        }
        continue;
      }
      const lock = this.#take(list, ttlMs, now);
      if (message !== undefined) {
        message.attempts = attempt + 1;
        message.waitMs = now - called;
        message.fencingToken = lock.fencingToken;
      }
      return lock;
    }
    if (message !== undefined) message.votes = [TAKEN_VOTE];
    throw new LockTakenError(list, [TAKEN_VOTE], retryCount + 1);
  }

  /** Waits for a release of one of `resources`, `ms`, or `signal` (then rejects). */
  #wait(resources: readonly string[], ms: number, signal: AbortSignal | undefined): Promise<void> {
    const sleeping = wakeableSleep(ms, { signal, clock: this.#o.clock });
    for (const r of resources) {
      let set = this.#waiters.get(r);
      if (set === undefined) this.#waiters.set(r, (set = new Set()));
      set.add(sleeping.wake);
    }
    return sleeping.done.finally(() => {
      for (const r of resources) {
        const set = this.#waiters.get(r);
        set?.delete(sleeping.wake);
        if (set?.size === 0) this.#waiters.delete(r);
      }
    });
  }

  /** Runs `routine` while holding the lock, with the default options; see `Redlock.using`. */
  using<R>(
    resources: string | readonly string[],
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R>;
  /** Runs `routine` while holding the lock; see `Redlock.using`. */
  using<R>(
    resources: string | readonly string[],
    options: UsingOptions,
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R>;
  using<R>(
    resources: string | readonly string[],
    optionsOrRoutine: UsingOptions | ((signal: AbortSignal, lock: Lock) => Promise<R>),
    routine?: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R> {
    if (this.#closed) return Promise.reject(new ClosedError(OWNER, 'using'));
    return holdWhile(
      'MemoryLock.using',
      this,
      (o) => this.acquire(resources, o),
      optionsOrRoutine,
      routine,
    );
  }

  /** @internal */
  extendKeys(keys: readonly string[], token: string, ttlMs: number): Promise<number | undefined> {
    const now = this.#o.clock.now();
    const mine = keys.every((k) => {
      const slot = this.#slots.get(k);
      return slot?.token === token && slot.expiresAt > now;
    });
    if (!mine) return Promise.resolve(undefined);
    for (const k of keys) (this.#slots.get(k) as Slot).expiresAt = now + ttlMs;
    return Promise.resolve(now + ttlMs);
  }

  /** @internal */
  releaseKeys(keys: readonly string[], token: string): Promise<ReleaseOutcome> {
    return Promise.resolve(this.releaseKeysNow(keys, token, this.#o.clock.now()));
  }

  /**
   * {@link MemoryLock.releaseKeys}, answered at once: what a lock's release calls, with the
   * time it just read on this service's clock.
   *
   * @internal
   */
  releaseKeysNow(keys: readonly string[], token: string, now: number): ReleaseOutcome {
    let released = true;
    for (const k of keys) {
      const slot = this.#slots.get(k);
      if (slot?.token !== token) {
        released = false;
        continue;
      }
      if (slot.expiresAt <= now) released = false;
      slot.token = undefined;
    }
    // Wake every waiter of the released resources: in one process that costs nothing, and they
    // run in the order they started waiting, so the longest waiter gets the lock.
    for (const k of keys) {
      const set = this.#waiters.get(k);
      if (set !== undefined) for (const wake of [...set]) wake();
    }
    return released ? 'released' : 'not-held';
  }
}
