/**
 * The lock handle and what it needs from a lock service — shared by `Redlock` (Redis) and
 * `MemoryLock` (in-process) — plus `holdWhile`, the engine of their `using()`.
 *
 * @packageDocumentation
 */
import { createHash, randomFillSync } from 'node:crypto';
import {
  InvalidOptionError,
  KeelError,
  guardedOption,
  isAbortSignal,
  integerOption,
  linkSignals,
  numberOption,
  resolveOptions,
  type Clock,
  type Timer,
} from '../core/index.js';
import { extendChannel, releaseChannel } from './diagnostics.js';
import type { LockExtendMessage, LockReleaseMessage } from './diagnostics.js';
import { LockLostError, LockReleasedError } from './errors.js';
import type { NodeResult } from './quorum.js';

/** Options of one `acquire()`. */
export interface AcquireOptions {
  /**
   * Time-to-live of this lock (ms), 1 … 86 400 000: how long it stays valid unless extended.
   * @defaultValue the service's `ttlMs` (for a semaphore, its Redlock's)
   */
  readonly ttlMs?: number;
  /**
   * Further attempts after the first while the lock is taken (0: try once). Without it, a
   * given `waitMs` bounds the wait instead of a count.
   * @defaultValue the service's `retryCount` (for a semaphore, its Redlock's)
   */
  readonly retryCount?: number;
  /**
   * Longest time to wait for the lock, over all attempts: once it has passed, the acquisition
   * gives up with a {@link LockTakenError} (no more attempts are started). With `waitMs` and
   * no `retryCount`, attempts are not counted — the time bounds the wait. Unlike `signal`, it
   * bounds only the wait: in `using()`, the routine then runs as long as it needs.
   */
  readonly waitMs?: number;
  /**
   * Stops retrying (and rejects with `signal.reason`). A round under way when it aborts runs to
   * its end; if it wins, the lock (or permit) is released at once and the acquisition rejects
   * with the reason all the same — `using()` then never starts its routine.
   */
  readonly signal?: AbortSignal | undefined;
}

/** What a lock service offers: `Redlock` and `MemoryLock` both are one. */
export interface LockService {
  /** Locks one resource or several (all or none), retrying while taken. */
  acquire(resources: string | readonly string[], options?: AcquireOptions): Promise<Lock>;
  /**
   * Runs `routine` while holding the lock with the default {@link UsingOptions}: acquire,
   * extend automatically, always release.
   */
  using<R>(
    resources: string | readonly string[],
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R>;
  /** Runs `routine` while holding the lock: acquire, extend automatically, always release. */
  using<R>(
    resources: string | readonly string[],
    options: UsingOptions,
    routine: (signal: AbortSignal, lock: Lock) => Promise<R>,
  ): Promise<R>;
}

/** Options of `using()`. */
export interface UsingOptions extends AcquireOptions {
  /** Longest total hold, extensions included. @defaultValue 300000 */
  readonly maxHoldMs?: number;
  /** Most automatic extensions. @defaultValue 1000 */
  readonly maxExtensions?: number;
}

/**
 * What {@link Lock.release} found. Neither released nor expired: the release round could not
 * reach enough nodes to tell (errors, timeouts) — the keys then expire by their ttl.
 */
export interface ReleaseResult {
  /** A quorum of nodes deleted the lock's keys. */
  readonly released: boolean;
  /**
   * The lock was lost before this release (its signal aborted with a `LockLostError`: the loss
   * moment passed, an extension failed), or the release found too few nodes still holding it
   * for a quorum — then the signal aborts with a `LockLostError` of kind `not-held`.
   */
  readonly expired: boolean;
}

/**
 * What a release round found: `released` (a quorum deleted every key), `not-held` (too many
 * nodes no longer held the lock for a quorum to), or `unknown` (too few answers to tell).
 *
 * @internal
 */
export type ReleaseOutcome = 'released' | 'not-held' | 'unknown';

/**
 * What a release round over a quorum of `size` found: `released` when a quorum said `yes`
 * (deleted everything), `not-held` when more nodes answered "not (all) mine" than a quorum
 * could spare, else `unknown` (errors, timeouts and nodes not waited for say nothing).
 *
 * @internal
 */
export function releaseOutcome(
  results: readonly NodeResult[],
  yes: (r: NodeResult) => boolean,
  size: number,
): ReleaseOutcome {
  let released = 0;
  let notHeld = 0;
  for (const r of results) {
    if (!r.ok) continue;
    if (yes(r)) released++;
    else notHeld++;
  }
  if (released >= size) return 'released';
  return notHeld > results.length - size ? 'not-held' : 'unknown';
}

/** Random bytes are drawn from the CSPRNG in blocks, 20 per token. */
const TOKEN_BYTES = 20;
const pool = Buffer.alloc(TOKEN_BYTES * 256);
let poolOffset = pool.length;

/**
 * An unguessable token: 160 random bits from `crypto.randomFillSync`, as 40 hex digits
 * (shared by every lock service).
 *
 * @internal
 */
export function newToken(): string {
  if (poolOffset + TOKEN_BYTES > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const token = pool.toString('hex', poolOffset, poolOffset + TOKEN_BYTES);
  poolOffset += TOKEN_BYTES;
  return token;
}

/**
 * The public id of a holder: 16 hex digits of the SHA-1 of its token, which reveal nothing of
 * the token. A release publishes it, and a node that refuses an attempt names the holder by it
 * (computed there from the value it holds), so a waiter can tell the release it was woken by
 * from a holder that still holds.
 *
 * @internal
 */
export const holderId = (token: string): string =>
  createHash('sha1').update(token).digest('hex').slice(0, 16);

/**
 * Most resources one lock may hold. Every acquire, extend and release runs one script over all
 * of them on each node, and Redis runs nothing else meanwhile: at 10 000 resources (20 000
 * keys with the fencing counters) that is already tens of milliseconds per node per call.
 */
export const MAX_RESOURCES = 10_000;

/**
 * Longest ttl a lock may be acquired or extended for (ms): one day. Beyond 2^31 − 1 ms Node's
 * timers overflow (a loss timer so armed fires at once), and Redis refuses a PEXPIRE whose
 * expiry overflows.
 */
export const MAX_TTL_MS = 86_400_000;

/** The retry count that stands for "not counted" (`waitMs` bounds the wait instead). */
const UNCOUNTED = 1_000_000;

/**
 * How long before `validUntil` a handle counts its lock as lost (ms): its signal aborts, and
 * `extend()` refuses, from `validUntil − LOSS_MARGIN_MS` on. Node runs a timer on whole
 * milliseconds of a loop time cached at the start of each turn, so a timer due at the deadline
 * fires up to a millisecond or two after it even on an idle event loop (measured: up to
 * ~1.3 ms idle, 2.5 ms reported under I/O); firing 5 ms early absorbs that. A loop blocked
 * for longer at that moment (synchronous work, a long GC pause, a starved process) delays the
 * abort until it turns again — no timer can pre-empt running JavaScript — which is why a read
 * of `lock.signal` also checks the clock itself.
 */
export const LOSS_MARGIN_MS = 5;

/**
 * The waiting deadline of an acquisition with `waitMs` (clock time), or `undefined`.
 *
 * @internal
 */
export function waitDeadline(clock: Clock, waitMs: number | undefined): number | undefined {
  return waitMs === undefined ? undefined : clock.now() + waitMs;
}

/**
 * The option rules of `acquire()` over a service's defaults (a semaphore adds `permits`).
 *
 * @internal
 */
export function acquireRules(defaults: { readonly ttlMs: number; readonly retryCount: number }) {
  return {
    ttlMs: integerOption({ min: 1, max: MAX_TTL_MS, default: defaults.ttlMs }),
    retryCount: integerOption({ min: 0, max: UNCOUNTED, default: defaults.retryCount }),
    waitMs: numberOption({ min: 0, max: 86_400_000, optional: true }),
    signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
  };
}

/**
 * The retries an acquisition may make: `retryCount`, except that with `waitMs` and no
 * `retryCount` of the caller's, attempts are not counted — the time bounds the wait.
 *
 * @internal
 */
export function retriesOf(
  resolved: { readonly retryCount: number; readonly waitMs: number | undefined },
  options: { readonly retryCount?: number },
): number {
  return resolved.waitMs !== undefined && options.retryCount === undefined
    ? UNCOUNTED
    : resolved.retryCount;
}

const acquireSpecs = new WeakMap<object, ReturnType<typeof acquireRules>>();

/** The option rules of `acquire()` over one service's defaults, made once per service. */
function acquireSpec(defaults: {
  readonly ttlMs: number;
  readonly retryCount: number;
}): ReturnType<typeof acquireRules> {
  let spec = acquireSpecs.get(defaults);
  if (spec === undefined) {
    spec = acquireRules(defaults);
    acquireSpecs.set(defaults, spec);
  }
  return spec;
}

/** The options of `acquire()` called without any, resolved once per service's defaults. */
const noOptions = new WeakMap<
  object,
  ReturnType<typeof resolveOptions<ReturnType<typeof acquireRules>>>
>();

/** A plain object with no own properties (`{}`, as `acquire()`'s default options are). */
function isEmptyObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (Object.getPrototypeOf(value) !== Object.prototype) return false;
  for (const key in value) if (Object.hasOwn(value, key)) return false;
  return true;
}

/**
 * Whether `acquire(resources, options)` is the common call — one resource name, no options —
 * which needs no other check: the service's defaults ({@link acquireDefaults}) apply.
 *
 * @internal
 */
export function isPlainAcquire(
  resources: string | readonly string[],
  options: AcquireOptions | undefined,
): resources is string {
  return (
    typeof resources === 'string' &&
    resources !== '' &&
    (options === undefined || isEmptyObject(options))
  );
}

/**
 * The options of `acquire()` called without any, over a service's defaults: resolved once per
 * `defaults` object (pass the same one every time).
 *
 * @internal
 */
export function acquireDefaults(
  owner: string,
  defaults: { readonly ttlMs: number; readonly retryCount: number },
): { readonly ttlMs: number; readonly retryCount: number } {
  let base = noOptions.get(defaults);
  if (base === undefined) {
    base = resolveOptions(owner, {}, acquireSpec(defaults));
    noOptions.set(defaults, base);
  }
  return base;
}

/**
 * Checks the arguments of `acquire(resources, options)`, shared by every lock service: one
 * resource name or a non-empty list of distinct ones, and the per-call options over the
 * service's defaults (pass the same `defaults` object every time: its rules are cached).
 *
 * @internal
 */
export function resolveAcquire(
  owner: string,
  resources: string | readonly string[],
  options: AcquireOptions | undefined,
  defaults: { readonly ttlMs: number; readonly retryCount: number },
): {
  list: string[];
  ttlMs: number;
  retryCount: number;
  waitMs: number | undefined;
  signal: AbortSignal | undefined;
} {
  // The common call — one resource name, no options — checks nothing else and reuses the
  // defaults resolved once per service (this is the hot path of every uncontended acquire).
  if (isPlainAcquire(resources, options)) {
    const base = acquireDefaults(owner, defaults);
    return {
      list: [resources],
      ttlMs: base.ttlMs,
      retryCount: base.retryCount,
      waitMs: undefined,
      signal: undefined,
    };
  }
  const input: unknown = resources;
  const list: unknown[] =
    typeof input === 'string' ? [input] : Array.isArray(input) ? (input as unknown[]) : [];
  if (list.length > MAX_RESOURCES) {
    throw new InvalidOptionError(
      owner,
      'resources',
      `at most ${MAX_RESOURCES} resource names per lock`,
      input,
      'each call runs one script over every key on each node, which blocks the node meanwhile',
    );
  }
  if (list.length === 0 || list.some((r) => typeof r !== 'string' || r === '')) {
    throw new InvalidOptionError(
      owner,
      'resources',
      'a non-empty string or a non-empty array of them',
      input,
    );
  }
  if (new Set(list).size !== list.length) {
    throw new InvalidOptionError(owner, 'resources', 'distinct resource names', input);
  }
  // `null` is not "no options": refused, naming options, as `using()` and every other call do.
  const given = options === undefined ? {} : options;
  const resolved = resolveOptions(owner, given, acquireSpec(defaults));
  return { list: list as string[], ...resolved, retryCount: retriesOf(resolved, given) };
}

/**
 * What a {@link Lock} needs from the service that granted it.
 *
 * @internal
 */
export interface LockBackend {
  readonly clock: Clock;
  /** Default ttl, for `extend()` without an argument. */
  readonly ttlMs: number;
  /** An extension must leave more validity than this (ms) to count. */
  readonly minValidityMs: number;
  /** Extends every key still holding `token`; the new validity deadline, or `undefined` if refused. */
  extendKeys(
    keys: readonly string[],
    token: string,
    ttlMs: number,
    resources?: readonly string[],
  ): Promise<number | undefined>;
  /**
   * Deletes the keys still holding `token`, and says what it found. `now`: the service's clock,
   * read by the caller just before (saves the release a clock read).
   */
  releaseKeys(
    keys: readonly string[],
    token: string,
    resources?: readonly string[],
    now?: number,
  ): Promise<ReleaseOutcome>;
  /**
   * {@link LockBackend.releaseKeys} for a backend that knows the answer at once (MemoryLock):
   * when present, an untraced release runs without an async function or an awaited round.
   */
  readonly releaseKeysNow?: (keys: readonly string[], token: string, now: number) => ReleaseOutcome;
  /** Told how the service's locks fare (Redlock: its stats and diagnostics channels). */
  readonly observer?: LockObserver | undefined;
}

/**
 * What a lock service learns from its {@link Lock}s: successful extensions, and the end of each
 * hold — a release, or the loss being seen — exactly once per lock. Also names the nodes and
 * quorum for the `keel:lock:extend` and `keel:lock:release` traces, which a Lock publishes only
 * when its service has an observer (Redlock's locks).
 *
 * @internal
 */
export interface LockObserver {
  readonly nodes: readonly string[];
  readonly quorum: number;
  extended(lock: Lock): void;
  /** The hold ended after `heldMs`: released (`lost` undefined) or lost. */
  ended(lock: Lock, lost: LockLostError | undefined, heldMs: number): void;
}

/**
 * The four results a release can give, shared and frozen: a release allocates none (the lock's
 * hot path — an in-process acquire + release otherwise made one per cycle).
 */
const RELEASE_RESULTS: readonly ReleaseResult[] = [
  Object.freeze({ released: false, expired: false }),
  Object.freeze({ released: false, expired: true }),
  Object.freeze({ released: true, expired: false }),
  Object.freeze({ released: true, expired: true }),
];

function releaseResult(released: boolean, expired: boolean): ReleaseResult {
  return RELEASE_RESULTS[(released ? 2 : 0) + (expired ? 1 : 0)] as ReleaseResult;
}

/**
 * The engine of `using()`: acquire, extend at half the validity while the routine runs (within
 * `maxHoldMs` and `maxExtensions`), abort the routine's signal when the lock is lost or the
 * caller aborts, and always release — keeping the routine's own error.
 *
 * @internal
 */
export async function holdWhile<R, L extends Lock = Lock>(
  owner: string,
  backend: LockBackend,
  acquire: (options: AcquireOptions) => Promise<L>,
  optionsOrRoutine: UsingOptions | ((signal: AbortSignal, lock: L) => Promise<R>),
  maybeRoutine?: (signal: AbortSignal, lock: L) => Promise<R>,
): Promise<R> {
  // `using(resources, routine)`: a function where the options go, and no routine after it,
  // is the routine with the default options. (With a routine after it, a function there is
  // refused below as options that are not an object.)
  const short = maybeRoutine === undefined && typeof optionsOrRoutine === 'function';
  const given: unknown = short ? undefined : optionsOrRoutine;
  const routine = short ? optionsOrRoutine : maybeRoutine;
  if (
    given !== undefined &&
    (typeof given !== 'object' || given === null || Array.isArray(given))
  ) {
    throw new InvalidOptionError(
      owner,
      'options',
      'an options object',
      given,
      'or leave it out: using(resources, routine)',
    );
  }
  const { maxHoldMs, maxExtensions, ...acquireOptions } = (given ?? {}) as UsingOptions;
  const limits = resolveOptions(
    owner,
    { maxHoldMs, maxExtensions },
    {
      maxHoldMs: numberOption({ min: 1, max: 86_400_000, default: 300_000 }),
      maxExtensions: integerOption({ min: 0, max: 1_000_000, default: 1000 }),
    },
  );
  if (typeof routine !== 'function') {
    throw new InvalidOptionError(owner, 'routine', 'a function (signal, lock) => Promise', routine);
  }
  const lock = await acquire(acquireOptions);
  const ttlMs = acquireOptions.ttlMs ?? backend.ttlMs;
  const clock = backend.clock;
  const heldSince = clock.now();
  using link = linkSignals(acquireOptions.signal, lock.signal);
  let extensions = 0;
  let timer: Timer | undefined;
  const schedule = (): void => {
    const now = clock.now();
    // Half-way to the loss moment (the signal aborts LOSS_MARGIN_MS before the deadline).
    const delay = Math.max(0, (lock.validUntil - LOSS_MARGIN_MS - now) / 2);
    // Stop extending once the next extension — run `delay` from now, valid for ttlMs from
    // then — would carry the hold past maxHoldMs: the lock then expires at its deadline and
    // the routine's signal aborts.
    if (extensions >= limits.maxExtensions || now + delay + ttlMs - heldSince > limits.maxHoldMs)
      return;
    timer = clock.setTimer(() => {
      timer = undefined;
      extensions++;
      lock.extend(ttlMs).then(schedule, () => undefined); // a failed extension aborts lock.signal
    }, delay);
    timer.unref();
  };
  schedule();
  try {
    return await routine(link.signal, lock);
  } finally {
    timer?.cancel();
    timer = undefined;
    extensions = limits.maxExtensions; // an extension in flight must not reschedule
    await lock.release();
  }
}

/**
 * A held lock. `signal` aborts with a {@link LockLostError} a loss margin (5 ms)
 * before the validity deadline unless the lock is extended first, and as soon as an extension
 * fails; with a {@link LockReleasedError} when its holder releases it (a release is not a loss).
 *
 * The signal (its AbortController and the validity timer behind it) is created the first time
 * someone reads `signal` — `using()` always does — so a plain acquire + release pays for
 * neither; a deadline that passed before the first read aborts the signal at once.
 */
export class Lock implements AsyncDisposable {
  /** The locked resources, in the order given to `acquire()`. */
  readonly resources: readonly string[];
  /** Fencing token of the first resource (see `fencingTokens` for all). */
  readonly fencingToken: number;
  readonly #fences: readonly number[];
  #fencingTokens: Readonly<Record<string, number>> | undefined;
  readonly #backend: LockBackend;
  /** When the lock was granted (the service's clock), for hold times. */
  readonly #since: number;
  /** The hold ended (released, or seen lost) and the observer was told. */
  #ended = false;
  readonly #keys: readonly string[];
  readonly #token: string;
  #controller: AbortController | undefined;
  /** Why the lock was lost, once it is (a release afterwards does not change it). */
  #lostWith: LockLostError | undefined;
  #validUntil: number;
  #timer: Timer | undefined;
  #released = false;

  /**
   * Locks come from `acquire()` and `using()` (of a `Redlock` or `MemoryLock`); they cannot be
   * made any other way.
   */
  protected constructor();
  /** @internal */
  protected constructor(
    backend: LockBackend,
    resources: readonly string[],
    keys: readonly string[],
    token: string,
    validUntil: number,
    fences: readonly number[],
    since?: number,
  );
  protected constructor(
    backend?: LockBackend,
    resources?: readonly string[],
    keys?: readonly string[],
    token?: string,
    validUntil?: number,
    fences?: readonly number[],
    since?: number,
  ) {
    // The declarations show only the argument-less form, so no caller outside Keel can make a
    // handle; a subclass that calls it gets this error instead of a handle that holds nothing.
    if (backend === undefined || resources === undefined) {
      throw new KeelError('KEEL_NOT_CONSTRUCTIBLE', 'a Lock is made by acquire() or using()');
    }
    this.#backend = backend;
    this.resources = resources;
    this.#keys = keys as readonly string[];
    this.#token = token as string;
    this.#validUntil = validUntil as number;
    this.#fences = fences as readonly number[];
    this.fencingToken = this.#fences[0] ?? 0;
    this.#since = since ?? backend.clock.now();
  }

  /**
   * A held lock's handle (Keel's lock services make their locks through this). `since`: when
   * it was granted on the service's clock, if the caller just read it (a clock read less on
   * the hot path); else read here.
   *
   * @internal
   */
  static made(
    backend: LockBackend,
    resources: readonly string[],
    keys: readonly string[],
    token: string,
    validUntil: number,
    fences: readonly number[],
    since?: number,
  ): Lock {
    return new Lock(backend, resources, keys, token, validUntil, fences, since);
  }

  /**
   * Fencing token per resource. Built on first read (most callers read only `fencingToken`;
   * a frozen object per acquisition was a cost of every uncontended cycle).
   */
  get fencingTokens(): Readonly<Record<string, number>> {
    let tokens = this.#fencingTokens;
    if (tokens === undefined) {
      const made: Record<string, number> = {};
      const fences = this.#fences;
      for (let i = 0; i < this.resources.length; i++) {
        made[this.resources[i] as string] = fences[i] ?? 0;
      }
      tokens = this.#fencingTokens = Object.freeze(made);
    }
    return tokens;
  }

  /**
   * Milliseconds of validity left: `validUntil` minus now on the service's clock, 0 once the
   * lock is released or lost (its loss moment, 5 ms before `validUntil`, counts as lost, as for
   * `signal`).
   */
  remainingMs(): number {
    if (!this.#released) this.#checkDeadline();
    if (this.#released || this.#lostWith !== undefined) return 0;
    return Math.max(0, this.#validUntil - this.#backend.clock.now());
  }

  /** Clock time (ms, the lock service's clock) until which the lock is valid. */
  get validUntil(): number {
    return this.#validUntil;
  }

  /**
   * Aborts with a {@link LockLostError} when the lock is lost — by a timer due
   * the loss margin (5 ms) before `validUntil`, so at or before the deadline whenever the event
   * loop is not blocked at that moment — and with a {@link LockReleasedError} when it is
   * released. Each read of `lock.signal` also checks the clock, so `lock.signal.aborted` is
   * exact even while a late timer has not fired yet (a signal kept in a variable, or the one
   * `using()` passes, learns of the loss by the timer).
   */
  get signal(): AbortSignal {
    let controller = this.#controller;
    if (controller === undefined) {
      controller = this.#controller = new AbortController();
      this.#checkDeadline();
      const reason =
        this.#lostWith ?? (this.#released ? new LockReleasedError(this.resources) : undefined);
      if (reason !== undefined) controller.abort(reason);
      else this.#armLoss();
    } else if (!controller.signal.aborted) {
      this.#checkDeadline();
    }
    return controller.signal;
  }

  /**
   * Extends the lock to `ttlMs` (1 … 86 400 000, as `acquire()` takes) from the start of the
   * extend round (quorum rules again). Throws an `InvalidOptionError` for a ttl out of that
   * range (the lock is untouched); {@link LockLostError} (and aborts `signal`) when a quorum
   * no longer holds it, or when the round leaves no more than `minValidityMs` (nor more than the 5 ms loss margin) of
   * validity — kind `extension-too-short`: the lock is then lost, and `validUntil` is the
   * earlier of the two deadlines —, and {@link LockReleasedError} on a released handle.
   */
  extend(ttlMs = this.#backend.ttlMs): Promise<void> {
    const observer = this.#backend.observer;
    if (observer === undefined || !extendChannel.hasSubscribers) return this.#extend(ttlMs);
    const message: LockExtendMessage = {
      resources: this.resources,
      nodes: observer.nodes,
      quorum: observer.quorum,
      fencingToken: this.fencingToken,
      ttlMs,
      time: Date.now(),
      holdMs: this.#backend.clock.now() - this.#since,
    };
    return extendChannel.tracePromise(this.#extend, message, this, ttlMs, message);
  }

  async #extend(ttlMs: number, message?: LockExtendMessage): Promise<void> {
    // The range acquire() takes: a longer ttl overflowed the loss timer (the lock was reported
    // lost at once) or, far longer, every node's PEXPIRE (reported lost, "refused").
    if (!Number.isInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_TTL_MS) {
      throw new InvalidOptionError(
        'Lock.extend',
        'ttlMs',
        `an integer >= 1 and <= ${MAX_TTL_MS}`,
        ttlMs,
      );
    }
    this.#throwIfGone();
    const validUntil = await this.#backend.extendKeys(
      this.#keys,
      this.#token,
      ttlMs,
      this.resources,
    );
    // Released or lost while the round was in flight (the deadline passed mid-round): the
    // handle stays lost, whatever the nodes answered (a yes only means the keys outlive the
    // handle until its release or their expiry).
    this.#throwIfGone();
    if (validUntil === undefined) {
      const error = new LockLostError(
        this.resources,
        'extension refused by a quorum of nodes',
        'extension-refused',
      );
      this.#lose(error);
      throw error;
    }
    const left = validUntil - this.#backend.clock.now();
    const needed = Math.max(this.#backend.minValidityMs, LOSS_MARGIN_MS);
    if (left <= needed) {
      // Too little to count on — and the nodes that ran it now expire the keys by the new,
      // short ttl, so the old deadline no longer holds either: the lock is lost.
      this.#validUntil = Math.min(this.#validUntil, validUntil);
      const error = new LockLostError(
        this.resources,
        `the extension left ${Math.max(0, Math.floor(left))} ms of validity; more than ` +
          `${needed} ms is needed (minValidityMs ${this.#backend.minValidityMs}, loss margin ` +
          `${LOSS_MARGIN_MS} ms)`,
        'extension-too-short',
      );
      this.#lose(error);
      throw error;
    }
    this.#validUntil = validUntil;
    if (message !== undefined) message.validUntil = validUntil;
    if (this.#controller !== undefined) this.#armLoss();
    this.#backend.observer?.extended(this);
  }

  /**
   * Releases the lock on every node in one round. Never throws because the lock already
   * expired: it reports it. Releasing twice is harmless: a second call, or one made while the
   * first is under way, sends nothing and answers `{ released: false, expired }` at once (only
   * the first call's answer says what the nodes did). The signal aborts with a
   * {@link LockReleasedError} — unless the lock was lost before, then it keeps its
   * {@link LockLostError} and `expired` is true.
   */
  release(): Promise<ReleaseResult> {
    const observer = this.#backend.observer;
    if (observer === undefined || !releaseChannel.hasSubscribers || this.#released) {
      const releaseNow = this.#backend.releaseKeysNow;
      return releaseNow === undefined ? this.#release() : this.#releaseNow(releaseNow);
    }
    const message: LockReleaseMessage = {
      resources: this.resources,
      nodes: observer.nodes,
      quorum: observer.quorum,
      fencingToken: this.fencingToken,
      time: Date.now(),
      holdMs: this.#backend.clock.now() - this.#since,
    };
    return releaseChannel.tracePromise(this.#release, message, this);
  }

  async #release(): Promise<ReleaseResult> {
    // One clock read (this is the hot path): lost at the loss moment, as everywhere.
    const now = this.#backend.clock.now();
    const expiredByTime = this.#startRelease(now);
    if (this.#released) return releaseResult(false, expiredByTime);
    this.#released = true;
    const outcome = await this.#backend.releaseKeys(this.#keys, this.#token, this.resources, now);
    return this.#finishRelease(outcome, expiredByTime);
  }

  /**
   * {@link Lock.release} on a backend that answers at once: the same steps as `#release`, done
   * before `release()` returns (the signal aborts then, not a microtask later), with no async
   * function and no awaited round — the hot path of an in-process acquire + release.
   */
  #releaseNow(
    releaseNow: (keys: readonly string[], token: string, now: number) => ReleaseOutcome,
  ): Promise<ReleaseResult> {
    try {
      const now = this.#backend.clock.now();
      const expiredByTime = this.#startRelease(now);
      if (this.#released) return Promise.resolve(releaseResult(false, expiredByTime));
      this.#released = true;
      const outcome = releaseNow.call(this.#backend, this.#keys, this.#token, now);
      return Promise.resolve(this.#finishRelease(outcome, expiredByTime));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * A release's first half: loses a lock whose loss moment has come, stops the loss timer and
   * says whether the lock had expired by time at `now` (the service's clock, just read).
   */
  #startRelease(now: number): boolean {
    if (!this.#released && this.#lostWith === undefined && now >= this.#validUntil - LOSS_MARGIN_MS)
      this.#lose(this.#deadlineLoss());
    // Lost (its loss moment passed, or an extension failed) or past the deadline: expired,
    // even if some nodes still had the keys.
    const expiredByTime = this.#lostWith !== undefined || now >= this.#validUntil;
    this.#disarm();
    return expiredByTime;
  }

  /** A release's second half, once the backend said what it found. */
  #finishRelease(outcome: ReleaseOutcome, expiredByTime: boolean): ReleaseResult {
    if (outcome === 'not-held' && this.#lostWith === undefined) {
      // Lost behind the handle's back (keys expired, deleted, or a node restarted empty).
      this.#lose(
        new LockLostError(
          this.resources,
          'the release found too few nodes still holding it for a quorum',
          'not-held',
        ),
      );
    }
    // The reason is made only for a signal someone reads (a stack capture per release adds up).
    if (this.#lostWith === undefined && this.#controller !== undefined) {
      this.#controller.abort(new LockReleasedError(this.resources));
    }
    this.#end(this.#lostWith);
    return releaseResult(outcome === 'released', expiredByTime || outcome === 'not-held');
  }

  /** Releases the lock (see {@link Lock.release}): what `await using` calls. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** Throws if the handle is lost (its loss moment passed counts) or released. */
  #throwIfGone(): void {
    if (!this.#released) this.#checkDeadline();
    if (this.#lostWith !== undefined) throw this.#lostWith;
    if (this.#released) throw new LockReleasedError(this.resources);
  }

  /** Loses a held lock whose loss moment (`validUntil − LOSS_MARGIN_MS`) has come. */
  #checkDeadline(): void {
    if (
      this.#lostWith === undefined &&
      !this.#released &&
      this.#backend.clock.now() >= this.#validUntil - LOSS_MARGIN_MS
    ) {
      this.#lose(this.#deadlineLoss());
    }
  }

  #deadlineLoss(): LockLostError {
    return new LockLostError(
      this.resources,
      `validity ran out before an extension (lost ${LOSS_MARGIN_MS} ms before validUntil)`,
    );
  }

  #armLoss(): void {
    this.#disarm();
    const delay = this.#validUntil - LOSS_MARGIN_MS - this.#backend.clock.now();
    this.#timer = this.#backend.clock.setTimer(
      () => {
        this.#timer = undefined;
        if (!this.#released) this.#lose(this.#deadlineLoss());
      },
      Math.max(0, delay),
    );
    this.#timer.unref();
  }

  #disarm(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  #lose(error: LockLostError): void {
    this.#disarm();
    if (this.#lostWith !== undefined) return;
    this.#lostWith = error;
    this.#controller?.abort(error);
    this.#end(error);
  }

  /** The hold ended (released, or lost): tells the service's observer, once. */
  #end(lost: LockLostError | undefined): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#backend.observer?.ended(this, lost, this.#backend.clock.now() - this.#since);
  }
}
