/**
 * `timeout()`: bounds how long a call may take. Deadlines share the breaker's deadline queue
 * (one heap and one unref'd timer per clock), so a call that finishes in time costs no timer;
 * and calls without a caller's signal share one AbortController per millisecond of deadline.
 *
 * @packageDocumentation
 */
import { setMaxListeners } from 'node:events';
import { hrtime } from 'node:process';
import {
  guardedOption,
  isClock,
  numberOption,
  onAbort,
  oneOfOption,
  resolveOptions,
  systemClock,
  type Clock,
} from '../core/index.js';
import { Deadline, deadlineQueueFor, type DeadlineQueue } from '../breaker/deadlines.js';
import { TimeoutError } from './errors.js';
import { NEVER, SinglePolicy, type Attempt, type Chain, type Policy } from './policy.js';

/** Options of {@link timeout}. */
export interface TimeoutOptions {
  /** The longest a call may take (ms), more than 0 and at most 86 400 000. */
  readonly ms: number;
  /**
   * `cooperative`: at the deadline the call's signal aborts with a {@link TimeoutError}, and
   * the call ends when its function (or a policy inside) stops — the function must honour its
   * signal; one that takes no signal (`() => …`) with no policy inside cannot be stopped, so
   * nothing is timed. `aggressive`: the signal aborts and the call also rejects with the
   * {@link TimeoutError} at once, whether or not the function stops (it runs on unobserved).
   * @defaultValue 'cooperative'
   */
  readonly strategy?: 'cooperative' | 'aggressive';
  /** Clock. @defaultValue `systemClock` */
  readonly clock?: Clock;
}

const OWNER = 'timeout';

const spec = {
  ms: numberOption({ min: 0, minExclusive: true, max: 86_400_000, required: true }),
  strategy: oneOfOption(['cooperative', 'aggressive'], { default: 'cooperative' }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
};

/**
 * `hrtime()` (ms) minus this is the system clock's reading. Node computes `performance.now()`
 * from the same monotonic source as `process.hrtime()` (libuv's `uv_hrtime`) minus the process's
 * time origin; reading `hrtime()` directly costs about a third of `performance.now()` (under
 * callgrind ~160 instructions against ~580), and a timeout reads the clock on every call.
 * Calibrated once, `hrtime()` first and `performance.now()` after, so the offset is at most the
 * true origin: this clock never reads earlier than `performance.now()` (a deadline from it is
 * never early), only later by about a microsecond.
 */
let hrOffset = Number.NaN;

/**
 * `performance.now` as the process started. Fake timers (vitest's, Jest's, sinon's) replace it,
 * and the deadline queue then runs on the replacement: while it is replaced, deadlines are
 * computed on it too, never on `hrtime()` calibrated against the original.
 */
// eslint-disable-next-line @typescript-eslint/unbound-method -- compared, never called
const nativeNow = performance.now;

/** The system clock's `now()`, read through `process.hrtime()` (see {@link hrOffset}). */
function systemNow(): number {
  if (performance.now !== nativeNow) return performance.now();
  if (Number.isNaN(hrOffset)) calibrate();
  const t = hrtime();
  return t[0] * 1e3 + t[1] / 1e6 - hrOffset;
}

function calibrate(): void {
  if (!Number.isNaN(hrOffset) || performance.now !== nativeNow) return;
  // Each pair gives an offset at most the true one; the largest of a few is the closest (one
  // pair split by a context switch would be off by the switch, milliseconds on a busy host).
  let offset = -Infinity;
  for (let i = 0; i < 20; i++) {
    const t = hrtime();
    offset = Math.max(offset, t[0] * 1e3 + t[1] / 1e6 - performance.now());
  }
  hrOffset = offset;
}

/** The resolving functions {@link capture} was last handed. */
let capturedResolve: (value: unknown) => void = () => undefined;
let capturedReject: (error: unknown) => void = () => undefined;
/**
 * One executor for every {@link RacingCall}'s promise: it hands the resolving functions over
 * through the two variables above, which the constructor reads at once (the executor runs
 * synchronously inside `new Promise`, ECMA-262 Promise ( executor ) step 9) — instead of a
 * closure and its context made for every call.
 */
function capture(resolve: (value: unknown) => void, reject: (error: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/**
 * A call waiting on an aggressive deadline, as a {@link Bucket} lists it: `done` once it
 * settled; `reject` is what the deadline (or the caller's abort) does to a call not yet done,
 * after setting `done`. @internal
 */
export interface Racer {
  prev: Racer | undefined;
  next: Racer | undefined;
  done: boolean;
  reject(error: unknown): void;
}

/**
 * What a bucket does for a call of a pipeline's aggressive executor still running when its
 * deadline comes (`error` the {@link TimeoutError}) or its function fails first (`error` the
 * failure): `settle` settles the call's promise, `fn` is the call's function. @internal
 */
export type SlotDeadline = (settle: (value: never) => void, fn: unknown, error: unknown) => void;

/** Counts an outcome (a breaker's hot-path handler). @internal */
export type SlotCounts = (outcome: unknown) => void;

/**
 * Entries per call in {@link Bucket}'s slot array: the call's settle function, its function,
 * its {@link SlotDeadline}, and the two functions that count its success and its failure.
 */
const SLOT = 5;

/** A call waiting on an aggressive deadline: settles once, by its outcome or the deadline. */
class RacingCall<R> implements Racer {
  prev: Racer | undefined;
  next: Racer | undefined;
  done = false;
  readonly promise: Promise<R>;
  readonly resolve: (value: R) => void;
  readonly reject: (error: unknown) => void;

  constructor() {
    this.promise = new Promise<R>(capture as (resolve: (value: R) => void) => void);
    this.resolve = capturedResolve;
    this.reject = capturedReject;
  }
}

/**
 * Calls with the same deadline (to the millisecond) and no caller's signal: one entry in the
 * clock's deadline queue and one controller. Queued while it has calls pending. @internal
 */
export class Bucket extends Deadline {
  readonly controller = new AbortController();
  /** The controller's signal, read once (its getter checks its receiver on every read). */
  readonly signal: AbortSignal = this.controller.signal;
  readonly #queue: DeadlineQueue;
  readonly #ms: number;
  readonly #strategy: 'cooperative' | 'aggressive';
  /** Cooperative calls still running. */
  #pending = 0;
  /** Aggressive calls still running: a doubly linked list. */
  #head: Racer | undefined;
  /**
   * Calls of a pipeline's aggressive executor still running, {@link SLOT} entries each (see
   * {@link Bucket.follow}); a settled call's entries are cleared at once, and the array is
   * reused from its start whenever no call is left in it. No object per call.
   */
  readonly #slots: unknown[] = [];
  /**
   * The reactions a call in each slot attaches to its function's promise, two per slot (success,
   * failure), made by the first call that takes the slot: a bucket's calls reuse them, so calls
   * one after another make none. A slot is taken again only after every call before it in the
   * bucket left it, by its own reaction (a slot the deadline took is never taken again: an
   * expired bucket takes no calls), so a slot's reactions wait on one promise at a time.
   */
  readonly #reactions: ((outcome: unknown) => void)[] = [];
  /** Where the next call's entries go: reset (not the array's length) when no call is left. */
  #top = 0;
  #capture: ((resolve: (value: never) => void) => void) | undefined;
  /** Calls in {@link Bucket.#slots} still running. */
  #live = 0;
  expired = false;
  /** Removes the caller-signal link of a bucket made for one call. */
  off: (() => void) | undefined;
  /** A cooperative call ended (either way): bound once per bucket, not per call. */
  readonly release = (): void => {
    this.off?.();
    if (--this.#pending === 0 && this.#head === undefined && this.#live === 0) this.#idle();
  };
  /** Shared by the calls without a caller's signal (see {@link TimeoutPolicy}). */
  shared = false;
  #idleCheckQueued = false;
  /** Made with the first idle check a shared bucket needs: once per bucket, not per call. */
  #idleCheck: (() => void) | undefined;

  constructor(
    queue: DeadlineQueue,
    ms: number,
    strategy: 'cooperative' | 'aggressive',
    due: number,
  ) {
    super(due);
    this.#queue = queue;
    this.#ms = ms;
    this.#strategy = strategy;
  }

  join(): void {
    this.#pending++;
    if (this.index < 0) this.#queue.add(this);
  }

  attach(call: Racer): void {
    call.next = this.#head;
    if (this.#head !== undefined) this.#head.prev = call;
    this.#head = call;
    if (this.index < 0) this.#queue.add(this);
  }

  /**
   * A call of a pipeline's aggressive executor starts: `new Promise(bucket.capture)` makes its
   * promise and puts the promise's resolve function (which settles the call) in the bucket's
   * next slot, which it takes; read {@link Bucket.captured} at once for the slot, then
   * {@link Bucket.follow}. The resolve function goes straight into the slot array, not through
   * a variable first: each store of a new object into an older one costs a write barrier.
   */
  get capture(): (resolve: (value: never) => void) => void {
    return this.#capture ?? this.#makeCapture();
  }

  /** The slot {@link Bucket.capture} took last. */
  captured = 0;

  /** Apart from {@link Bucket.capture}'s getter: see {@link Bucket.#react}. */
  #makeCapture(): (resolve: (value: never) => void) => void {
    return (this.#capture = (resolve) => {
      const slot = this.#top;
      this.#slots[slot] = resolve;
      this.captured = slot;
      this.#top = slot + SLOT;
      this.#live++;
      if (this.index < 0) this.#queue.add(this);
    });
  }

  /**
   * The call that took `slot` (see {@link Bucket.capture}) is about to run `fn`: its entries
   * are written before `fn` runs, so a deadline that fires while it runs (a clock whose timers
   * fire synchronously, e.g. `ManualClock.advance` called by `fn`) finds the slot whole. When
   * the promise `fn` returned settles (see {@link Bucket.follow}), `onSuccess` or `onFailure`
   * counts the outcome (also one that comes after the deadline); then, if the call is still
   * running, a value settles it and a failure runs `onSettle(settle, fn, error)`. At the
   * deadline `onSettle(settle, fn, timeoutError)` runs for it unless it left first.
   */
  enter(
    slot: number,
    fn: unknown,
    onSettle: SlotDeadline,
    onSuccess: SlotCounts,
    onFailure: SlotCounts,
  ): void {
    const slots = this.#slots;
    slots[slot + 1] = fn;
    slots[slot + 2] = onSettle;
    slots[slot + 3] = onSuccess;
    slots[slot + 4] = onFailure;
  }

  /** The call in `slot` (see {@link Bucket.enter}) ran its function, which returned `promise`. */
  follow(slot: number, promise: Promise<unknown>): void {
    const reactions = this.#reactions;
    const at = (slot / SLOT) * 2;
    // (Not necessarily the next slot to get its reactions: a call its function makes of the
    // same pipeline takes a later slot, and follows, before it does.)
    if (reactions[at] === undefined) this.#react(slot, at);
    void promise.then(reactions[at], reactions[at + 1]);
  }

  /**
   * Makes the reactions of `slot`. A method of its own: a function that makes a closure over
   * `this` gets a context at every entry (V8 allocates a function's context when it is
   * entered), so {@link Bucket.follow} makes none.
   */
  #react(slot: number, at: number): void {
    const reactions = this.#reactions;
    reactions[at] = (value) => {
      this.#outcome(slot, value, false);
    };
    reactions[at + 1] = (error) => {
      this.#outcome(slot, error, true);
    };
  }

  /** The function of the call in `slot` settled with `outcome`. */
  #outcome(slot: number, outcome: unknown, failed: boolean): void {
    const slots = this.#slots;
    // Counted first, as the breaker (inside the timeout) would, whether the call still runs.
    const counts = slots[failed ? slot + 4 : slot + 3] as SlotCounts;
    slots[slot + 3] = slots[slot + 4] = undefined;
    counts(outcome);
    // Read after counting: a breaker listener may have fired this bucket's deadline meanwhile
    // (a clock whose timers fire synchronously), which settled the call.
    const settle = slots[slot] as ((value: unknown) => void) | undefined;
    const fn = slots[slot + 1];
    const onSettle = slots[slot + 2] as SlotDeadline;
    // Taken by the deadline: its outcome is ignored.
    if (settle === undefined) return;
    slots[slot] = slots[slot + 1] = slots[slot + 2] = undefined;
    if (--this.#live === 0) {
      // Cleared entries only: the array keeps its room for the next calls.
      this.#top = 0;
      if (this.#pending === 0 && this.#head === undefined) this.#idle();
    }
    if (failed) onSettle(settle, fn, outcome);
    else settle(outcome);
  }

  /** The call settled: out of the list (no-op when the deadline already took it). */
  detach(call: Racer): void {
    const { prev, next } = call;
    if (prev !== undefined) prev.next = next;
    else if (this.#head === call) this.#head = next;
    else return;
    if (next !== undefined) next.prev = prev;
    call.prev = call.next = undefined;
    if (this.#head === undefined && this.#pending === 0 && this.#live === 0) this.#idle();
    if (this.off !== undefined && this.#head === undefined) this.off();
  }

  expire(): void {
    if (this.#pending === 0 && this.#head === undefined && this.#live === 0) {
      // Due while idle (its calls all ended earlier in this tick): nobody to time out, and
      // the signal the ended calls were given must not abort.
      this.expired = true;
      return;
    }
    this.#end(new TimeoutError(this.#ms, this.#strategy));
  }

  /**
   * No call left. A bucket of one call leaves the queue at once. A shared one stays queued
   * until the end of the tick, and leaves then if it is still idle: calls in a row (each ends
   * before the next starts) would otherwise insert it into the deadline heap and take it out
   * again once per call.
   */
  #idle(): void {
    if (!this.shared) {
      this.#queue.remove(this);
      return;
    }
    if (this.#idleCheckQueued) return;
    this.#idleCheckQueued = true;
    process.nextTick(this.#idleCheck ?? this.#makeIdleCheck());
  }

  /** Apart from {@link Bucket.#idle}, which runs per call: see {@link Bucket.#react}. */
  #makeIdleCheck(): () => void {
    return (this.#idleCheck = (): void => {
      this.#idleCheckQueued = false;
      if (this.#pending === 0 && this.#head === undefined && this.#live === 0) {
        this.#queue.remove(this);
      }
    });
  }

  /** The caller's signal aborted (a bucket of one call): it ends now, with the caller's reason. */
  cancel(reason: unknown): void {
    this.#queue.remove(this);
    this.#end(reason);
  }

  #end(error: unknown): void {
    this.expired = true;
    // Functions hear of it first (their signal), then callers (their promise).
    this.controller.abort(error);
    let call = this.#head;
    this.#head = undefined;
    this.off?.();
    while (call !== undefined) {
      const next = call.next;
      call.prev = call.next = undefined;
      if (!call.done) {
        call.done = true;
        call.reject(error);
      }
      call = next;
    }
    const slots = this.#slots;
    const top = this.#top;
    // The bucket takes no call after this: the slots stay as they are, but for the entries
    // each running call's end would clear. Its counting functions stay, for its late outcome;
    // its empty settle entry tells its reaction the deadline took it.
    this.#top = this.#live = 0;
    for (let at = 0; at < top; at += SLOT) {
      const settle = slots[at];
      if (settle === undefined) continue;
      const fn = slots[at + 1];
      const onSettle = slots[at + 2] as SlotDeadline;
      slots[at] = slots[at + 1] = slots[at + 2] = undefined;
      onSettle(settle as (value: never) => void, fn, error);
    }
  }
}

/**
 * `bucket`, made for one call with the caller's `signal`, linked to it. Apart from
 * `TimeoutPolicy.#bucket`, which every call runs: a closure over its `signal` there would give
 * it a context at every entry (see {@link Bucket.#react}).
 */
function ownBucket(bucket: Bucket, signal: AbortSignal): Bucket {
  bucket.off = onAbort(signal, () => {
    bucket.off = undefined;
    bucket.cancel(signal.reason);
  });
  return bucket;
}

/** @internal */
export class TimeoutPolicy extends SinglePolicy {
  readonly observesSignal: boolean;
  protected readonly owner = OWNER;
  readonly #ms: number;
  readonly #aggressive: boolean;
  /** Whether the strategy is `aggressive`. @internal */
  get aggressive(): boolean {
    return this.#aggressive;
  }
  readonly #clock: Clock;
  /** The clock is the system clock: read it through {@link systemNow}. */
  readonly #systemTime: boolean;
  #queue: DeadlineQueue | undefined;
  /** The bucket the latest sharing calls joined. */
  #shared: Bucket | undefined;
  /**
   * On the system clock: the shared bucket this tick's first sharing call chose by reading the
   * clock. The tick's later sharing calls join it without a read (a clock read costs about
   * 100 ns on a virtual machine whose clock source is not the vDSO's: as much as a bare call);
   * {@link TimeoutPolicy.#endTick} then moves its deadline to `ms` after the tick's end if that
   * is later, so no call of the tick is due before `ms` after it started. Sound because the
   * deadline queue's timer cannot run before that: Node runs the `process.nextTick` queue at the
   * end of every callback, and between two timers' callbacks.
   */
  #tickShared: Bucket | undefined;
  /** Bound once per policy: the end-of-tick hook {@link TimeoutPolicy.#tickShared} queues. */
  readonly #endTick = (): void => {
    const bucket = this.#tickShared;
    this.#tickShared = undefined;
    if (bucket === undefined || bucket.expired) return;
    const due = Math.ceil(systemNow() + this.#ms);
    if (due > bucket.due) {
      (this.#queue as DeadlineQueue).postpone(bucket, due);
      // A bucket is moved at most once: the next tick's first call starts a new one instead of
      // joining (and moving) it again. Joining it would let a busy loop, whose every tick ends
      // past a millisecond, carry the calls already in it later and later without bound.
      if (this.#shared === bucket) this.#shared = undefined;
    }
  };

  constructor(options: TimeoutOptions) {
    super();
    const o = resolveOptions(OWNER, options, spec);
    this.#ms = o.ms;
    this.#aggressive = o.strategy === 'aggressive';
    this.#clock = o.clock;
    this.#systemTime = o.clock === systemClock;
    if (this.#systemTime) calibrate();
    // An aggressive timeout ends the call itself; a cooperative one only passes a signal on.
    this.observesSignal = this.#aggressive;
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    if (!this.#aggressive && !chain.observed(next, fn)) {
      // Nothing inside can see a signal, so a cooperative timeout has nothing to abort.
      return chain.step(next, fn, signal);
    }
    const bucket = this.#bucket(signal);
    if (bucket === undefined) return Promise.reject(signal.reason as Error);
    if (!this.#aggressive) {
      bucket.join();
      const promise = chain.step(next, fn, bucket.signal);
      void promise.then(bucket.release, bucket.release);
      return promise;
    }
    const call = new RacingCall<R>();
    bucket.attach(call);
    chain.step(next, fn, bucket.signal).then(
      (value) => {
        if (call.done) return;
        call.done = true;
        bucket.detach(call);
        call.resolve(value);
      },
      (error: unknown) => {
        if (call.done) return;
        call.done = true;
        bucket.detach(call);
        call.reject(error);
      },
    );
    return call.promise;
  }

  /**
   * The bucket shared by calls without a caller's signal due `ms` from now (for a pipeline's
   * specialised executors, which join or attach to it themselves). @internal
   */
  sharedBucket(): Bucket {
    return this.#bucket(NEVER) as Bucket;
  }

  /**
   * The bucket for a call due `ms` from now. Calls without a caller's signal share one per
   * millisecond of deadline: its signal aborts at exactly the deadline each of them has, so a
   * call still running then sees what its own controller would have shown it. (A function that
   * keeps using its signal after its call ended — a body read later — may see it abort at that
   * call's deadline while another call of the same millisecond is still running, as it would
   * with `AbortSignal.timeout(ms)`.) On the system clock, the sharing calls of one tick join
   * the bucket its first one chose, due `ms` after the tick's end if that is later (see
   * {@link TimeoutPolicy.#tickShared}). A call with a caller's signal gets its own bucket, linked
   * to that signal. `undefined` when the caller's signal has aborted.
   */
  #bucket(signal: AbortSignal): Bucket | undefined {
    if (signal === NEVER) {
      // Chosen by an earlier call of this tick: no clock read (see #endTick).
      const current = this.#tickShared;
      if (current !== undefined && !current.expired) return current;
    }
    const due = Math.ceil((this.#systemTime ? systemNow() : this.#clock.now()) + this.#ms);
    const queue = (this.#queue ??= deadlineQueueFor(this.#clock));
    const strategy = this.#aggressive ? 'aggressive' : 'cooperative';
    if (signal === NEVER) {
      let shared = this.#shared;
      if (shared === undefined || shared.due !== due || shared.expired) {
        shared = this.#shared = new Bucket(queue, this.#ms, strategy, due);
        shared.shared = true;
        // Every function of the millisecond may listen to it (fetch does, until it answers).
        setMaxListeners(0, shared.signal);
      }
      if (this.#systemTime && performance.now === nativeNow) {
        this.#tickShared = shared;
        process.nextTick(this.#endTick);
      }
      return shared;
    }
    if (signal.aborted) return undefined;
    return ownBucket(new Bucket(queue, this.#ms, strategy, due), signal);
  }
}

/**
 * A policy that bounds a call's time: at `ms` its signal aborts with a {@link TimeoutError}
 * (`cooperative`), and with `strategy: 'aggressive'` the call also rejects then, whether or
 * not its function stops. Calls that finish in time cost no timer, and calls without a caller's
 * signal no AbortController of their own: those due in the same millisecond share one.
 *
 * @example
 * ```ts
 * import { timeout, isTimeoutError } from 'keel/resilience';
 *
 * const policy = timeout({ ms: 50, strategy: 'aggressive' });
 * try {
 *   await policy.execute(() => new Promise((resolve) => setTimeout(resolve, 1_000).unref()));
 * } catch (error) {
 *   console.log(isTimeoutError(error)); // true
 * }
 * ```
 */
export function timeout(options: TimeoutOptions): Policy {
  return new TimeoutPolicy(options);
}
