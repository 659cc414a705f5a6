/**
 * `timeout()`: bounds how long a call may take. Deadlines share the breaker's deadline queue
 * (one heap and one unref'd timer per clock), so a call that finishes in time costs no timer;
 * and calls without a caller's signal share one AbortController per millisecond of deadline.
 *
 * @packageDocumentation
 */
import { setMaxListeners } from 'node:events';
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
import {
  NEVER,
  SinglePolicy,
  type Attempt,
  type Chain,
  type OutcomeHandler,
  type Policy,
  type Recovery,
} from './policy.js';

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

/** What a {@link RacingCall}'s resolving functions are until its promise's executor ran. */
const noop = (): void => undefined;

/**
 * A call waiting on an aggressive deadline: settles once, by its outcome or the deadline. It
 * also carries what its one reaction needs — the breaker handlers it took over (see
 * `Stage.outcomeHandler`) and the retry it recovers to (see `Recovery`).
 */
class RacingCall<R> {
  prev: RacingCall<unknown> | undefined;
  next: RacingCall<unknown> | undefined;
  done = false;
  readonly promise: Promise<R>;
  resolve: (value: R | Promise<R>) => void = noop;
  reject: (error: unknown) => void = noop;

  constructor(
    readonly bucket: Bucket,
    readonly onSuccess: OutcomeHandler | undefined,
    readonly onFailure: OutcomeHandler | undefined,
    readonly recovery: Recovery | undefined,
    readonly chain: Chain,
    readonly recoverAt: number,
    readonly fn: Attempt<R>,
    readonly signal: AbortSignal,
  ) {
    this.promise = new Promise<R>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** The function's value: counted (by the breaker taken over), then the call's, if in time. */
  fulfilled(value: R): void {
    this.onSuccess?.(value);
    if (this.done) return;
    this.done = true;
    this.bucket.detach(this as RacingCall<unknown>);
    this.resolve(value);
  }

  /** The function's error: counted, then the call's (or the retry's to handle), if in time. */
  rejected(error: unknown): void {
    this.onFailure?.(error);
    if (this.done) return;
    this.done = true;
    this.bucket.detach(this as RacingCall<unknown>);
    this.fail(error);
  }

  /** Ends the call with `error`, or hands `error` to the retry outside. */
  fail(error: unknown): void {
    const recovery = this.recovery;
    if (recovery === undefined) this.reject(error);
    else this.resolve(recovery.recover(this.chain, this.recoverAt, this.fn, this.signal, error));
  }
}

/**
 * Calls with the same deadline (to the millisecond) and no caller's signal: one entry in the
 * clock's deadline queue and one controller. Queued while it has calls pending.
 */
class Bucket extends Deadline {
  readonly controller = new AbortController();
  readonly #queue: DeadlineQueue;
  readonly #ms: number;
  readonly #strategy: 'cooperative' | 'aggressive';
  /** Cooperative calls still running. */
  #pending = 0;
  /** Aggressive calls still running: a doubly linked list. */
  #head: RacingCall<unknown> | undefined;
  expired = false;
  /** Removes the caller-signal link of a bucket made for one call. */
  off: (() => void) | undefined;
  /** A cooperative call ended (either way): bound once per bucket, not per call. */
  readonly release = (): void => {
    this.off?.();
    if (--this.#pending === 0 && this.#head === undefined) this.#idle();
  };
  /** Whether calls without a caller's signal share it (else it is one call's own). */
  readonly #shared: boolean;
  #idleCheckQueued = false;
  /** End of the tick the bucket went idle in: out of the queue if it still has no call. */
  readonly #idleCheck = (): void => {
    this.#idleCheckQueued = false;
    if (this.#pending === 0 && this.#head === undefined) this.#queue.remove(this);
  };
  /** The breaker success handler {@link Bucket.settled} last wrapped, and the wrapper. */
  #okFor: OutcomeHandler | undefined;
  #ok: ((value: unknown) => unknown) | undefined;
  /** The same for failures. */
  #failFor: OutcomeHandler | undefined;
  #fail: ((error: unknown) => void) | undefined;

  constructor(
    queue: DeadlineQueue,
    ms: number,
    strategy: 'cooperative' | 'aggressive',
    due: number,
    shared: boolean,
  ) {
    super(due);
    this.#queue = queue;
    this.#ms = ms;
    this.#strategy = strategy;
    this.#shared = shared;
  }

  /**
   * No call pending. A call's own bucket leaves the queue now. A shared one stays queued until
   * the end of the tick: the next call of the same millisecond, often a few microtasks away,
   * would queue it again (a heap insertion and removal per call). Either way the deadline
   * aborts nothing while the bucket has no call (see {@link Bucket.expire}), and the queue's
   * timer goes at the end of the tick, as before.
   */
  #idle(): void {
    if (!this.#shared) this.#queue.remove(this);
    else if (!this.#idleCheckQueued) {
      this.#idleCheckQueued = true;
      process.nextTick(this.#idleCheck);
    }
  }

  /**
   * The reaction of a cooperative call that succeeded: releases the call, counts its value
   * with `onSuccess` (a breaker's, taken over) and passes the value on. Made once per bucket
   * and breaker generation, not per call.
   */
  settled(onSuccess: OutcomeHandler | undefined): (value: unknown) => unknown {
    let ok = this.#ok;
    if (ok === undefined || this.#okFor !== onSuccess) {
      this.#okFor = onSuccess;
      ok = this.#ok =
        onSuccess === undefined
          ? (value: unknown): unknown => {
              this.release();
              return value;
            }
          : (value: unknown): unknown => {
              this.release();
              onSuccess(value);
              return value;
            };
    }
    return ok;
  }

  /** The same for a cooperative call that failed (its error counted with `onFailure`). */
  failed(onFailure: OutcomeHandler | undefined): (error: unknown) => void {
    let fail = this.#fail;
    if (fail === undefined || this.#failFor !== onFailure) {
      this.#failFor = onFailure;
      fail = this.#fail =
        onFailure === undefined
          ? this.release
          : (error: unknown): void => {
              this.release();
              onFailure(error);
            };
    }
    return fail;
  }

  join(): void {
    this.#pending++;
    if (this.index < 0) this.#queue.add(this);
  }

  attach(call: RacingCall<unknown>): void {
    call.next = this.#head;
    if (this.#head !== undefined) this.#head.prev = call;
    this.#head = call;
    if (this.index < 0) this.#queue.add(this);
  }

  /** The call settled: out of the list (no-op when the deadline already took it). */
  detach(call: RacingCall<unknown>): void {
    const { prev, next } = call;
    if (prev !== undefined) prev.next = next;
    else if (this.#head === call) this.#head = next;
    else return;
    if (next !== undefined) next.prev = prev;
    call.prev = call.next = undefined;
    if (this.#head === undefined && this.#pending === 0) this.#idle();
    if (this.off !== undefined && this.#head === undefined) this.off();
  }

  expire(): void {
    // Idle (its calls all ended in time, within the tick): nothing to abort.
    if (this.#pending === 0 && this.#head === undefined) this.expired = true;
    else this.#end(new TimeoutError(this.#ms, this.#strategy));
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
        if (call.recovery === undefined) call.reject(error);
        else {
          // The retry outside carries on in a job of its own, as it did when it reacted to
          // the rejection itself: not inside the deadline queue's loop.
          const failed = call;
          queueMicrotask(() => {
            failed.fail(error);
          });
        }
      }
      call = next;
    }
  }
}

class TimeoutPolicy extends SinglePolicy {
  readonly observesSignal: boolean;
  protected readonly owner = OWNER;
  readonly #ms: number;
  readonly #aggressive: boolean;
  readonly #clock: Clock;
  #queue: DeadlineQueue | undefined;
  /** The bucket the latest sharing calls joined. */
  #shared: Bucket | undefined;
  /** The breaker success handler {@link TimeoutPolicy.#passing} last wrapped, and the wrapper. */
  #passFor: OutcomeHandler | undefined;
  #pass: ((value: unknown) => unknown) | undefined;

  constructor(options: TimeoutOptions) {
    super();
    const o = resolveOptions(OWNER, options, spec);
    this.#ms = o.ms;
    this.#aggressive = o.strategy === 'aggressive';
    this.#clock = o.clock;
    // An aggressive timeout ends the call itself; a cooperative one only passes a signal on.
    this.observesSignal = this.#aggressive;
  }

  run<R>(chain: Chain, next: number, fn: Attempt<R>, signal: AbortSignal): Promise<R> {
    return this.#run(chain, next, fn, signal, undefined, 0);
  }

  runRecovering<R>(
    chain: Chain,
    next: number,
    fn: Attempt<R>,
    signal: AbortSignal,
    recovery: Recovery,
    recoverAt: number,
  ): Promise<R> {
    return this.#run(chain, next, fn, signal, recovery, recoverAt);
  }

  /**
   * Runs a call. Each path attaches ONE reaction to the promise of the stages inside: when the
   * stage just inside is a circuit breaker on its hot path, this reaction counts the outcome for
   * it (the breaker's own handlers, read before the call starts, called first thing); when a
   * retry is just outside (`recovery`), this reaction carries on with the retry's next attempt
   * on a failure. The outcome is the same as with a reaction per stage, one job sooner.
   */
  #run<R>(
    chain: Chain,
    next: number,
    fn: Attempt<R>,
    signal: AbortSignal,
    recovery: Recovery | undefined,
    recoverAt: number,
  ): Promise<R> {
    const aggressive = this.#aggressive;
    const passing = !aggressive && !chain.observed(next, fn);
    if (passing && recovery === undefined) {
      // Nothing inside can see a signal, so a cooperative timeout has nothing to abort.
      return chain.step(next, fn, signal);
    }
    // A breaker just inside, on its hot path: its outcome is counted here.
    const inner = chain.stages[next];
    const onSuccess = inner?.outcomeHandler?.(false);
    const onFailure = onSuccess === undefined ? undefined : inner?.outcomeHandler?.(true);
    const from = onFailure === undefined ? next : next + 1;
    if (passing) {
      const promise = this.#step(chain, from, fn, signal, onFailure);
      const failed = (error: unknown): Promise<R> => {
        onFailure?.(error);
        return (recovery as Recovery).recover(chain, recoverAt, fn, signal, error);
      };
      return onFailure === undefined
        ? promise.then(undefined, failed)
        : promise.then(this.#passing(onSuccess) as (value: R) => R, failed);
    }
    const bucket = this.#bucket(signal);
    if (bucket === undefined) {
      const reason: unknown = signal.reason;
      return recovery === undefined
        ? Promise.reject(reason)
        : recovery.recover(chain, recoverAt, fn, signal, reason);
    }
    if (!aggressive) {
      bucket.join();
      const promise = this.#step(chain, from, fn, bucket.controller.signal, onFailure);
      const ok = bucket.settled(onFailure === undefined ? undefined : onSuccess);
      if (recovery === undefined) {
        void promise.then(ok, bucket.failed(onFailure));
        return promise;
      }
      const fail = bucket.failed(onFailure);
      return promise.then(ok as (value: R) => R, (error: unknown) => {
        fail(error);
        return recovery.recover(chain, recoverAt, fn, signal, error);
      });
    }
    const call = new RacingCall<R>(
      bucket,
      onFailure === undefined ? undefined : onSuccess,
      onFailure,
      recovery,
      chain,
      recoverAt,
      fn,
      signal,
    );
    bucket.attach(call as RacingCall<unknown>);
    this.#step(chain, from, fn, bucket.controller.signal, onFailure).then(
      (value) => {
        call.fulfilled(value);
      },
      (error: unknown) => {
        call.rejected(error);
      },
    );
    return call.promise;
  }

  /** `chain.step`; a throw (stages reject rather than throw) counted by the breaker taken over. */
  #step<R>(
    chain: Chain,
    from: number,
    fn: Attempt<R>,
    signal: AbortSignal,
    onFailure: OutcomeHandler | undefined,
  ): Promise<R> {
    try {
      return chain.step(from, fn, signal);
    } catch (error) {
      onFailure?.(error);
      return Promise.reject(error);
    }
  }

  /** Counts a value with a breaker's `onSuccess` and passes it on: made once per generation. */
  #passing(onSuccess: OutcomeHandler | undefined): (value: unknown) => unknown {
    let pass = this.#pass;
    if (pass === undefined || this.#passFor !== onSuccess) {
      this.#passFor = onSuccess;
      const count = onSuccess as OutcomeHandler;
      pass = this.#pass = (value: unknown): unknown => {
        count(value);
        return value;
      };
    }
    return pass;
  }

  /**
   * The bucket for a call due `ms` from now. Calls without a caller's signal share one per
   * millisecond of deadline: its signal aborts at exactly the deadline each of them has, so a
   * call still running then sees what its own controller would have shown it. (A function that
   * keeps using its signal after its call ended — a body read later — may see it abort at that
   * call's deadline while another call of the same millisecond is still running, as it would
   * with `AbortSignal.timeout(ms)`.) A call with a caller's signal gets its own bucket, linked
   * to that signal. `undefined` when the caller's signal has aborted.
   */
  #bucket(signal: AbortSignal): Bucket | undefined {
    const due = Math.ceil(this.#clock.now() + this.#ms);
    const queue = (this.#queue ??= deadlineQueueFor(this.#clock));
    const strategy = this.#aggressive ? 'aggressive' : 'cooperative';
    if (signal === NEVER) {
      let shared = this.#shared;
      if (shared === undefined || shared.due !== due || shared.expired) {
        shared = this.#shared = new Bucket(queue, this.#ms, strategy, due, true);
        // Every function of the millisecond may listen to it (fetch does, until it answers).
        setMaxListeners(0, shared.controller.signal);
      }
      return shared;
    }
    if (signal.aborted) return undefined;
    const own = new Bucket(queue, this.#ms, strategy, due, false);
    if (signal !== NEVER) {
      own.off = onAbort(signal, () => {
        own.off = undefined;
        own.cancel(signal.reason);
      });
    }
    return own;
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
