/**
 * The circuit breaker (Nygard, "Release It!"; the state model and options follow
 * Resilience4j's CircuitBreaker): a sliding window of outcomes decides when to open; open
 * lasts `openDurationMs` (optionally growing with backoff); half-open lets a few trial calls
 * through and closes or re-opens on their outcome. Everything time-based is computed when the
 * breaker is touched — no background timer — except a wake-up for callers waiting on a
 * half-open trial, which exists only while someone waits.
 *
 * @packageDocumentation
 */
import {
  onAbort,
  neverAbortingSignal,
  isRandomSource,
  EventChannel,
  InvalidOptionError,
  booleanOption,
  functionOption,
  isAbortSignal,
  numberProblem,
  guardedOption,
  hasKeelCode,
  integerOption,
  isClock,
  nestedOption,
  numberOption,
  oneOfOption,
  resolveOptions,
  stringOption,
  systemClock,
  throwIfAborted,
  log,
  loggerOption,
  silentLogger,
  wallTime,
  type Clock,
  type Logger,
  type Subscription,
  type Timer,
} from '../core/index.js';
import { callRejectedChannel, executeChannel, stateChangeChannel } from './channels.js';
import { BREAKER_TIMEOUT, BreakerOpenError, BreakerTimeoutError } from './errors.js';
import type {
  BreakerMetrics,
  BreakerPermit,
  BreakerSnapshot,
  BreakerState,
  CallFinished,
  CallRejected,
  StateChange,
} from './types.js';
import { BreakerPolicy, type Transition, type Verdict } from './policy.js';
import { checkOpenRemaining, readSnapshot } from './snapshot.js';
import { Deadline, deadlineQueueFor, type DeadlineQueue } from './deadlines.js';
import { CountWindow, TimeWindow, type OutcomeWindow } from './window.js';

/** Options of {@link CircuitBreaker}. */
export interface CircuitBreakerOptions {
  /** Name used in errors, events and metrics. @defaultValue 'breaker' */
  readonly name?: string;
  /**
   * The sliding window: `count` keeps the last `size` calls; `time` keeps the last `size`
   * seconds (one bucket per second). @defaultValue `{ type: 'count', size: 20 }`
   */
  readonly window?: {
    /** `count`: the last `size` calls; `time`: the last `size` seconds. @defaultValue 'count' */
    readonly type?: 'count' | 'time';
    /** Calls (`count`) or seconds (`time`) the window holds, 1 … 10⁶. @defaultValue 20 */
    readonly size?: number;
  };
  /** Calls the window must hold before rates are judged. @defaultValue 10 */
  readonly minimumCalls?: number;
  /** Open when failures ÷ calls reaches this (0 < x ≤ 1). @defaultValue 0.5 */
  readonly failureRateThreshold?: number;
  /** Open when slow calls ÷ calls reaches this (0 < x ≤ 1). @defaultValue 1 */
  readonly slowCallRateThreshold?: number;
  /**
   * A call taking at least this long is slow, whether it succeeded or not. Off by default:
   * timing every call costs two clock reads, and a per-call `timeoutMs` is usually the better
   * defence against a slow dependency. Set it to count slow calls against
   * `slowCallRateThreshold`. @defaultValue Infinity (off)
   */
  readonly slowCallDurationMs?: number;
  /**
   * Also open after this many failures in a row, whatever the window says — the simple policy.
   * 0 turns it off. @defaultValue 0
   */
  readonly consecutiveFailures?: number;
  /** How long the breaker stays open before trying again. @defaultValue 30000 */
  readonly openDurationMs?: number;
  /** Growth of the open duration each time the breaker re-opens without closing in between. */
  readonly backoff?: {
    /** Factor per consecutive opening; 1 means no growth. @defaultValue 2 */
    readonly multiplier?: number;
    /** Longest open duration. @defaultValue 300000 */
    readonly maxOpenDurationMs?: number;
    /** Random spread, as a fraction of the duration (0–1), so many clients do not retry at once. @defaultValue 0.1 */
    readonly jitter?: number;
  };
  /** Trial calls half-open lets through. @defaultValue 1 */
  readonly halfOpenPermits?: number;
  /**
   * When half-open has no free trial: reject at once (`false`), or wait for the trials'
   * verdict (`true`), honouring each waiting call's AbortSignal. @defaultValue false
   */
  readonly halfOpenWait?: boolean;
  /** Half-open gives up and re-opens after this long, so a hung trial cannot keep it stuck. @defaultValue 60000 */
  readonly maxHalfOpenMs?: number;
  /**
   * Default per-call timeout for `execute` (aborts that call only, counts as a failure):
   * more than 0 and at most 86 400 000 ms (one day), or `Infinity` for none.
   * @defaultValue none
   */
  readonly timeoutMs?: number;
  /**
   * Which errors count as failures. If it throws, the call counts as a failure. Errors that
   * `ignore` matches (by default a `NoEndpointError`) never reach it.
   * @defaultValue every error
   */
  readonly isFailure?: (error: unknown) => boolean;
  /**
   * Errors that count neither way (e.g. a 404, a validation error). If it throws, the call
   * counts as a failure. Without it, a `NoEndpointError` from `keel/balancer` (code
   * `KEEL_NO_ENDPOINT`: the balancer had no endpoint to pick) is ignored, since it says nothing
   * about the downstream's health. Giving `ignore` replaces that default: to keep it, include
   * `isNoEndpointError(error)` (from `keel/balancer`) in yours.
   * @defaultValue errors with code `KEEL_NO_ENDPOINT`
   */
  readonly ignore?: (error: unknown) => boolean;
  /**
   * Reject with errors that carry no stack trace: much cheaper when an open breaker rejects
   * thousands of calls a second. @defaultValue false
   */
  readonly stacklessRejections?: boolean;
  /** Clock for windows and durations. @defaultValue `systemClock` */
  readonly clock?: Clock;
  /**
   * Random numbers in [0, 1) for backoff jitter. A value that is not a number in [0, 1], or a
   * throw, is read as 0.5 (no spread): a broken source cannot make an open time NaN or keep
   * the breaker from opening.
   * @defaultValue `Math.random`
   */
  readonly random?: () => number;
  /**
   * Publish every `execute()` on the `keel:breaker:execute` tracing channel
   * (`tracing:keel:breaker:execute:start` / `end` / `asyncStart` / `asyncEnd` / `error`) while
   * someone subscribes to it. Off by default: a traced call cannot take the allocation-free
   * hot path. State changes and rejections are published on their channels either way.
   * @defaultValue false
   */
  readonly traceExecute?: boolean;
  /**
   * Where the breaker logs its state changes (pino-style `{ debug, info, warn, error }`): an
   * opening at `warn`, every other change at `info`. Never a line per call.
   * @defaultValue a silent logger
   */
  readonly logger?: Logger;
}

/** Options of one {@link CircuitBreaker.execute} call. */
export interface ExecuteOptions<R> {
  /**
   * Aborts the call (and a wait for a half-open trial); the call rejects with `signal.reason`,
   * also when a `fallback` is given (you gave up: nobody waits for its answer). Your own abort
   * says nothing about the dependency: it counts neither as a success nor as a failure (an
   * ignored outcome), and a half-open trial it cancels gives its permit back. An abort whose
   * reason is a timeout — a `keel/resilience` `TimeoutError` (a timeout outside the breaker), a
   * {@link BreakerTimeoutError}, or the `TimeoutError` DOMException of `AbortSignal.timeout()`
   * — counts as a failure, as the breaker's own timeout does, and the `fallback` answers it.
   */
  readonly signal?: AbortSignal | undefined;
  /**
   * Timeout for this call; overrides the breaker's `timeoutMs`. More than 0 and at most
   * 86 400 000 ms, or `Infinity` for no timeout (even when the breaker has one).
   */
  readonly timeoutMs?: number | undefined;
  /**
   * Value (or promise) to return instead of failing: gets the rejection, the timeout or the
   * call's error — not the caller's own abort (see `signal`), which rejects with its reason.
   */
  readonly fallback?: ((error: unknown) => R | Promise<R>) | undefined;
}

const OWNER = 'CircuitBreaker';
/**
 * The stable code of `keel/balancer`'s `NoEndpointError` (its `NO_ENDPOINT`), ignored by
 * default. Spelled out rather than imported so `keel/breaker` does not bundle the balancer; a
 * test holds the two equal.
 */
const NO_ENDPOINT = 'KEEL_NO_ENDPOINT';
/**
 * The stable code of `keel/resilience`'s `TimeoutError` (its `TIMEOUT`): a caller's abort with
 * this reason is that layer's timeout, counted as a failure (breaker may not import it).
 */
const RESILIENCE_TIMEOUT = 'KEEL_TIMEOUT';
const EXECUTE = 'CircuitBreaker.execute';
const FROM_JSON = 'CircuitBreaker.fromJSON';
/** Longest timeout and open time: one day (well under `setTimeout`'s 2^31 − 1 ms ceiling). */
const MAX_MS = 86_400_000;
const TIMEOUT_BOUNDS = { min: 0, minExclusive: true, max: MAX_MS, allowInfinity: true } as const;
const EXECUTE_KEYS: readonly string[] = ['signal', 'timeoutMs', 'fallback'];

const spec = {
  name: stringOption({ nonEmpty: true, default: 'breaker' }),
  window: nestedOption({
    type: oneOfOption(['count', 'time'], { default: 'count' }),
    size: integerOption({ min: 1, max: 1_000_000, default: 20 }),
  }),
  minimumCalls: integerOption({ min: 1, max: 1_000_000, default: 10 }),
  failureRateThreshold: numberOption({ min: 0, minExclusive: true, max: 1, default: 0.5 }),
  slowCallRateThreshold: numberOption({ min: 0, minExclusive: true, max: 1, default: 1 }),
  slowCallDurationMs: numberOption({
    min: 0,
    minExclusive: true,
    max: 86_400_000,
    allowInfinity: true,
    default: Infinity,
  }),
  consecutiveFailures: integerOption({ min: 0, max: 1_000_000, default: 0 }),
  openDurationMs: numberOption({ min: 0, minExclusive: true, max: 86_400_000, default: 30_000 }),
  backoff: nestedOption({
    multiplier: numberOption({ min: 1, max: 100, default: 2 }),
    maxOpenDurationMs: numberOption({
      min: 0,
      minExclusive: true,
      max: 86_400_000,
      default: 300_000,
    }),
    jitter: numberOption({ min: 0, max: 1, default: 0.1 }),
  }),
  halfOpenPermits: integerOption({ min: 1, max: 1_000_000, default: 1 }),
  halfOpenWait: booleanOption({ default: false }),
  maxHalfOpenMs: numberOption({ min: 0, minExclusive: true, max: 86_400_000, default: 60_000 }),
  timeoutMs: numberOption({ ...TIMEOUT_BOUNDS, optional: true }),
  isFailure: functionOption<(error: unknown) => boolean>({ optional: true }),
  ignore: functionOption<(error: unknown) => boolean>({ optional: true }),
  stacklessRejections: booleanOption({ default: false }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
  traceExecute: booleanOption({ default: false }),
  logger: loggerOption(),
};

type Resolved = ReturnType<typeof resolveOptions<typeof spec>>;

/**
 * Everything a breaker reads from its options, validated and derived once. Breakers of a
 * {@link BreakerRegistry} made from its defaults share one (only the name is their own), so a
 * breaker carries no copy of its options. @internal
 */
export interface BreakerConfig {
  readonly o: Resolved;
  /** The default per-call timeout; `undefined` for none (an `Infinity` option). */
  readonly timeoutMs: number | undefined;
  /** Calls must be timed: slow-call detection is on, or the window is time-based. */
  readonly timed: boolean;
  /** Makes a breaker's sliding window, on its first outcome. */
  readonly makeWindow: () => OutcomeWindow;
}

/** Validates `options` into a {@link BreakerConfig} (errors name the option, as the constructor's). @internal */
export function breakerConfig(options: CircuitBreakerOptions | undefined): BreakerConfig {
  const r = resolveOptions(OWNER, options, spec);
  // resolveOptions builds its result key by key, and V8 keeps an object that grew past a dozen
  // properties that way in dictionary mode: about 1 KB here. The same values in one literal
  // make a compact object with its fields in place.
  const o: Resolved = Object.freeze({
    name: r.name,
    window: r.window,
    minimumCalls: r.minimumCalls,
    failureRateThreshold: r.failureRateThreshold,
    slowCallRateThreshold: r.slowCallRateThreshold,
    slowCallDurationMs: r.slowCallDurationMs,
    consecutiveFailures: r.consecutiveFailures,
    openDurationMs: r.openDurationMs,
    backoff: r.backoff,
    halfOpenPermits: r.halfOpenPermits,
    halfOpenWait: r.halfOpenWait,
    maxHalfOpenMs: r.maxHalfOpenMs,
    timeoutMs: r.timeoutMs,
    isFailure: r.isFailure,
    ignore: r.ignore,
    stacklessRejections: r.stacklessRejections,
    clock: r.clock,
    random: r.random,
    traceExecute: r.traceExecute,
    logger: r.logger,
  });
  if (o.minimumCalls > o.window.size && o.window.type === 'count') {
    throw new InvalidOptionError(
      OWNER,
      'minimumCalls',
      `at most window.size (${o.window.size}) for a count window, or the breaker could never open`,
      o.minimumCalls,
    );
  }
  if (o.backoff.maxOpenDurationMs < o.openDurationMs) {
    throw new InvalidOptionError(
      OWNER,
      'backoff.maxOpenDurationMs',
      `a duration >= openDurationMs (${o.openDurationMs})`,
      o.backoff.maxOpenDurationMs,
    );
  }
  const size = o.window.size;
  return Object.freeze({
    o,
    timeoutMs: o.timeoutMs === Infinity ? undefined : o.timeoutMs,
    timed: o.slowCallDurationMs !== Infinity || o.window.type === 'time',
    makeWindow:
      o.window.type === 'count'
        ? (): OutcomeWindow => new CountWindow(size)
        : (): OutcomeWindow => new TimeWindow(size, 1000),
  });
}

/** Set by {@link sharedBreaker} for the one constructor call it makes. */
let sharedConfig: BreakerConfig | undefined;

/**
 * A breaker named `name` on an already validated config that other breakers share (for
 * {@link BreakerRegistry}). @internal
 */
export function sharedBreaker(config: BreakerConfig, name: string): CircuitBreaker {
  sharedConfig = config;
  try {
    return new CircuitBreaker({ name });
  } finally {
    sharedConfig = undefined;
  }
}

function checkListener(method: string, listener: unknown): void {
  if (typeof listener !== 'function') {
    throw new InvalidOptionError(OWNER, 'listener', 'a function', listener, `${method}(listener)`);
  }
}

/** Refuses an unknown own key of execute's options unless its value is undefined. */
function refuseUnknown(options: object, key: string): void {
  if (!Object.hasOwn(options, key)) return; // inherited: Object.keys never saw those either
  const value: unknown = (options as Record<string, unknown>)[key];
  if (value !== undefined) {
    throw new InvalidOptionError(
      EXECUTE,
      key,
      `one of the known options (${EXECUTE_KEYS.join(', ')})`,
      value,
      'unknown option',
    );
  }
}

/**
 * A signal that never aborts, handed to calls that have neither a signal nor a timeout; shared,
 * so its listener limit is lifted (see neverAbortingSignal).
 */
const NEVER = /* @__PURE__ */ neverAbortingSignal();

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

class Permit implements BreakerPermit {
  #done = false;
  readonly #breaker: CircuitBreaker;
  readonly #generation: number;
  readonly #startedAt: number;

  constructor(breaker: CircuitBreaker, generation: number, startedAt: number) {
    this.#breaker = breaker;
    this.#generation = generation;
    this.#startedAt = startedAt;
  }

  success(): void {
    if (this.#done) return;
    this.#done = true;
    recordOutcome(this.#breaker, this.#generation, this.#startedAt, 'success', undefined);
  }

  failure(error?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    recordOutcome(this.#breaker, this.#generation, this.#startedAt, 'failure', error);
  }

  ignore(): void {
    if (this.#done) return;
    this.#done = true;
    recordOutcome(this.#breaker, this.#generation, this.#startedAt, 'ignored', undefined);
  }
}

/**
 * Calls through one breaker with the same timeout and the same deadline (to the millisecond):
 * one entry in the clock's deadline queue, one AbortSignal for all of them, aborted when the
 * deadline passes with any of them still running. Queued while it has calls pending.
 */
class CallBucket extends Deadline {
  readonly #queue: DeadlineQueue;
  readonly #breaker: string;
  readonly timeoutMs: number;
  readonly controller = new AbortController();
  /** Pending calls: a doubly linked list through TimedCall#prev/#next. */
  #head: TimedCall<unknown> | undefined;
  expired = false;

  constructor(queue: DeadlineQueue, breaker: string, timeoutMs: number, due: number) {
    super(due);
    this.#queue = queue;
    this.#breaker = breaker;
    this.timeoutMs = timeoutMs;
  }

  attach(call: TimedCall<unknown>): void {
    const head = this.#head;
    call.next = head;
    if (head !== undefined) head.prev = call;
    this.#head = call;
    if (this.index < 0) this.#queue.add(this);
  }

  detach(call: TimedCall<unknown>): void {
    const { prev, next } = call;
    if (prev !== undefined) prev.next = next;
    else if (this.#head === call) this.#head = next;
    else return; // not attached (already timed out)
    if (next !== undefined) next.prev = prev;
    call.prev = call.next = undefined;
    if (this.#head === undefined) this.#queue.remove(this);
  }

  expire(): void {
    this.expired = true;
    const error = new BreakerTimeoutError(this.#breaker, this.timeoutMs);
    let call = this.#head;
    this.#head = undefined;
    // The calls' functions hear of it first (their signal), then the callers (their promise).
    this.controller.abort(error);
    while (call !== undefined) {
      const next = call.next;
      call.prev = call.next = undefined;
      call.timedOut(error);
      call = next;
    }
  }
}

/** One call with a deadline: settles once, by its function, its deadline or its caller's abort. */
class TimedCall<R> {
  prev: TimedCall<unknown> | undefined;
  next: TimedCall<unknown> | undefined;
  offCaller: (() => void) | undefined;
  readonly promise: Promise<R>;
  #done = false;
  /** The deadline's bucket; `undefined` for a call that only has a caller's signal. */
  readonly #bucket: CallBucket | undefined;
  readonly #permit: BreakerPermit;
  readonly #fallback: ((error: unknown) => R | Promise<R>) | undefined;
  #resolve!: (value: R | Promise<R>) => void;
  #reject!: (error: unknown) => void;

  constructor(
    bucket: CallBucket | undefined,
    permit: BreakerPermit,
    fallback: ((error: unknown) => R | Promise<R>) | undefined,
  ) {
    this.#bucket = bucket;
    this.#permit = permit;
    this.#fallback = fallback;
    this.promise = new Promise<R>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  succeeded(value: R): void {
    if (this.#done) return;
    this.#end();
    this.#permit.success();
    this.#resolve(value);
  }

  failed(error: unknown): void {
    if (this.#done) return;
    this.#end();
    this.#fail(error);
  }

  /** The signal fn gets, when it is not the caller's own. */
  get signal(): AbortSignal | undefined {
    return this.#bucket?.controller.signal;
  }

  /**
   * The caller's signal aborted: this call's own signal aborts, and the call rejects with its
   * reason. The caller giving up says nothing about the dependency, so the outcome is ignored
   * (a half-open trial's permit goes back), and no fallback runs: nobody waits for its answer
   * (as a signal that had aborted before the call rejects at once). A timeout is the exception:
   * a keel/resilience timeout outside the breaker aborts the signal it passes in, and a
   * timeout is a failure, which the fallback answers.
   */
  abortedBy(reason: unknown): void {
    if (this.#done) return;
    this.#bucket?.controller.abort(reason);
    if (isTimeoutReason(reason)) {
      this.failed(reason);
      return;
    }
    this.#end();
    this.#permit.ignore();
    this.#reject(reason);
  }

  /** The deadline passed (the bucket has already let go of this call). */
  timedOut(error: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.offCaller?.();
    this.#fail(error);
  }

  #end(): void {
    this.#done = true;
    this.#bucket?.detach(this as TimedCall<unknown>);
    this.offCaller?.();
  }

  #fail(error: unknown): void {
    this.#permit.failure(error);
    this.#settleFailed(error);
  }

  /** Rejects with `error`, or resolves with the fallback's answer to it. */
  #settleFailed(error: unknown): void {
    const fallback = this.#fallback;
    if (fallback === undefined) {
      this.#reject(error);
      return;
    }
    try {
      this.#resolve(fallback(error));
    } catch (fallbackError) {
      this.#reject(fallbackError);
    }
  }
}

/** Bridge from a permit to the breaker's private bookkeeping. */
let recordOutcome: (
  breaker: CircuitBreaker,
  generation: number,
  startedAt: number,
  outcome: 'success' | 'failure' | 'ignored',
  error: unknown,
) => void;

/** Bridge to the hot path's handlers, for {@link hotPathHandler}. */
let hotHandler: (breaker: CircuitBreaker, failure: boolean) => ((x: unknown) => void) | undefined;

/**
 * Rejections that were their caller's abort, found by keel/resilience's breaker stage (which
 * runs the call itself and hands the breaker only the outcome): counted neither way, as
 * `execute` counts its caller's abort (see TimedCall#abortedBy).
 */
const callerAborts = /* @__PURE__ */ new WeakSet<object>();
/** The {@link CallerAbortMark}s made (see `callerAbortOutcome`): told apart without `instanceof`. */
const abortMarks = /* @__PURE__ */ new WeakSet<CallerAbortMark>();

/**
 * Whether an abort's reason is a timeout (this breaker's, keel/resilience's, or the platform's:
 * `AbortSignal.timeout()` aborts with a DOMException named `TimeoutError`): a failure. (Also
 * for keel/resilience's `fallback()`, which answers a timeout but not a caller's abort.)
 * @internal
 */
export function isTimeoutReason(reason: unknown): boolean {
  return (
    hasKeelCode(reason, RESILIENCE_TIMEOUT) ||
    hasKeelCode(reason, BREAKER_TIMEOUT) ||
    (reason instanceof DOMException && reason.name === 'TimeoutError')
  );
}

/**
 * A caller's abort whose reason is not an object (`abort('navigated away')`), as
 * keel/resilience's breaker stage hands it to the breaker: a WeakSet cannot hold the reason
 * itself. Counted neither way. @internal
 */
export class CallerAbortMark {
  readonly reason: unknown;
  constructor(reason: unknown) {
    this.reason = reason;
  }
}

/**
 * For keel/resilience's breaker stage, before it hands a rejection to the breaker: what to hand
 * it. If `error` is the reason `signal` (the call's) aborted with, and no timeout, the outcome
 * is to be ignored: an object reason is noted as such and returned; any other is returned in a
 * {@link CallerAbortMark} (which the stage unwraps before its caller sees it). Anything else is
 * `error` itself.
 * @internal
 */
export function callerAbortOutcome(signal: AbortSignal, error: unknown): unknown {
  if (!signal.aborted || error !== signal.reason || isTimeoutReason(error)) return error;
  // Marks are noted too, so that neither test needs `instanceof`: a user's rejection may be a
  // Proxy whose getPrototypeOf trap throws, and WeakSet.has runs no trap.
  if (typeof error === 'object' && error !== null) {
    callerAborts.add(error);
    return error;
  }
  const mark = new CallerAbortMark(error);
  callerAborts.add(mark);
  abortMarks.add(mark);
  return mark;
}

/**
 * `error` itself, or the reason a {@link CallerAbortMark} carries (see
 * {@link callerAbortOutcome}).
 * @internal
 */
export function unmarkCallerAbort(error: unknown): unknown {
  return abortMarks.has(error as CallerAbortMark) ? (error as CallerAbortMark).reason : error;
}

/**
 * The hot path's success (`failure` false) or failure handler of `breaker`'s current state
 * generation: what {@link CircuitBreaker.execute} attaches to the promise of a call without
 * options when the breaker is closed (or disabled, metrics-only), untimed and untraced.
 * `undefined` when the hot path does not apply now, or was not bound since the last transition
 * (a call through `execute` binds it). For keel/resilience's pipeline stage, which runs the
 * rest of its chain itself and only needs the outcome counted: attaching both handlers to the
 * call's promise, read before the call starts, is what `execute` does on that path, without the
 * closure a call of `execute` would need to carry the chain.
 * @internal
 */
export function hotPathHandler(
  breaker: CircuitBreaker,
  failure: boolean,
): ((x: unknown) => void) | undefined {
  return hotHandler(breaker, failure);
}

/**
 * A circuit breaker: stops calling a failing dependency for a while instead of tying up every
 * caller waiting on it.
 *
 * @example
 * ```ts
 * import { CircuitBreaker, isBreakerOpenError } from 'keel/breaker';
 *
 * const payments = new CircuitBreaker({
 *   name: 'payments',
 *   failureRateThreshold: 0.5,
 *   minimumCalls: 10,
 *   openDurationMs: 5_000,
 *   timeoutMs: 800,
 * });
 *
 * try {
 *   const receipt = await payments.execute(async (signal) => {
 *     // await fetch('http://payments/charge', { signal, method: 'POST', … })
 *     return { ok: !signal.aborted };
 *   });
 *   console.log(receipt.ok);
 * } catch (error) {
 *   if (isBreakerOpenError(error)) console.log(`payments unavailable, retry in ${error.retryAfterMs} ms`);
 * }
 * ```
 */
export class CircuitBreaker {
  static {
    recordOutcome = (breaker, generation, startedAt, outcome, error) => {
      breaker.#record(generation, startedAt, outcome, error);
    };
    hotHandler = (breaker, failure) => (failure ? breaker.#fastFailure : breaker.#fastSuccess);
  }

  // Memory per breaker matters (thousands of them, one per downstream key): options live in
  // a config shared by a registry's breakers; the window, the waiters, the hot path's handlers
  // and the event channels are made on first use.
  readonly #c: BreakerConfig;
  readonly #name: string;
  /** The decisions: state, window, trials, backoff (pure; this class is the shell around it). */
  readonly #policy: BreakerPolicy;
  #waiters: Waiter[] | undefined;
  /**
   * The hot path's success handler, bound to the current generation (see #bindFastPath);
   * `undefined` until the next hot-path call after a transition.
   */
  #fastSuccess: ((value: unknown) => void) | undefined;
  /** The hot path's failure handler, made with #fastSuccess. */
  #fastFailure: ((error: unknown) => void) | undefined;
  #wakeTimer: Timer | undefined;
  /** Changes made while one is being announced, told after it; undefined when none is. */
  #telling: Transition[] | undefined;
  /** The clock's deadline queue, looked up on the first call with a timeout. */
  #deadlines: DeadlineQueue | undefined;
  /** The bucket the latest calls with a timeout joined (see #executeTimed). */
  #bucket: CallBucket | undefined;
  // Totals.
  #successful = 0;
  #failed = 0;
  #ignored = 0;
  #rejected = 0;
  // Event channels are created on first subscription: most breakers are never observed, and
  // thousands of breakers (one per downstream key) should not carry four empty channels each.
  #stateChanged: EventChannel<StateChange> | undefined;
  #callRejected: EventChannel<CallRejected> | undefined;
  #callFinished: EventChannel<CallFinished> | undefined;
  #thresholdExceeded: EventChannel<string> | undefined;

  constructor(options: CircuitBreakerOptions = {}) {
    const shared = sharedConfig;
    sharedConfig = undefined;
    this.#c = shared ?? breakerConfig(options);
    const o = this.#c.o;
    this.#name = shared === undefined ? o.name : (options.name ?? o.name);
    this.#policy = new BreakerPolicy(o, this.#c.makeWindow, o.clock.now());
  }

  /** The validated options. */
  get #o(): Resolved {
    return this.#c.o;
  }

  /**
   * The hot path's handlers for the current generation (older calls' outcomes don't count):
   * made once per generation, not per call. They return nothing: the caller awaits fn's own
   * promise, not the promise their `then` makes.
   */
  #bindFastPath(): void {
    const generation = this.#policy.generation;
    const policy = this.#policy;
    const clock = this.#o.clock;
    this.#fastFailure = (error) => {
      this.#record(generation, NaN, 'failure', error);
    };
    this.#fastSuccess = () => {
      // What #record does for a success here, minus what cannot apply: the hot path runs only
      // untimed (count window, no slow-call timing, so no clock), and while the generation is
      // the one these handlers were made for, the state is still closed, disabled or
      // metrics-only. Anyone listening for finished calls gets the full path.
      if (this.#callFinished !== undefined || generation !== policy.generation) {
        this.#record(generation, NaN, 'success', undefined);
        return;
      }
      this.#successful++;
      const verdict = policy.untimedSuccess(clock);
      if (verdict !== undefined) this.#verdict(verdict);
    };
  }

  /** The breaker's name. */
  get name(): string {
    return this.#name;
  }

  /** The current state (an open breaker whose time is up reads as half-open). */
  get state(): BreakerState {
    this.#advance(this.#o.clock.now());
    return this.#policy.state;
  }

  /**
   * Whole milliseconds until a trial call will be let through (0 unless open or forced open),
   * rounded up: a caller that waits this long finds the breaker ready for a trial.
   */
  get retryAfterMs(): number {
    const now = this.#o.clock.now();
    this.#advance(now);
    return this.#retryAfter(now);
  }

  /**
   * Runs `fn` through the breaker. `fn` gets an AbortSignal that aborts when the caller's
   * signal does or when this call's timeout passes — never because another call timed out or
   * was aborted. Rejections are {@link BreakerOpenError}s; a timeout rejects with a
   * {@link BreakerTimeoutError}. With a `fallback`, its value is returned instead of either.
   * A timeout is a failure; the caller's own abort is not counted, and rejects with its reason
   * even with a `fallback` (see `signal`).
   *
   * A timeout costs no timer of its own: deadlines are rounded up to the millisecond (a call
   * times out at most 1 ms late, never early) and kept in one queue per clock with one timer.
   * A function that declares a parameter (`(signal) => …`) gets an AbortSignal of its own,
   * aborted only for its own call, never after it finished. Creating an AbortSignal costs
   * microseconds on Node 20 — more than the rest of the call — so a function that declares
   * none (`() => …`, `fn.length === 0`, which cannot name the signal) shares one with the
   * calls of this breaker whose deadlines fall in the same millisecond: only code that reads
   * `arguments` or a rest parameter could see it abort for another call.
   *
   * Always returns a promise, never throws: a synchronous throw from `fn` rejects it (and
   * counts as a failure). A non-function `fn` or bad options reject it with an
   * {@link InvalidOptionError} naming what was wrong; such a call is not admitted and counts
   * neither way.
   *
   * A call without options through a breaker that needs no clock (closed, disabled or
   * metrics-only; count window, no slow-call timing, no default timeout) costs no extra
   * microtask: the promise returned is `fn`'s own (when it returns a native promise), and the
   * outcome has been counted by the time an `await` of it resumes.
   */
  execute<R>(fn: (signal: AbortSignal) => R | Promise<R>, options?: ExecuteOptions<R>): Promise<R> {
    // The hot path's handlers exist only while it applies (#applied drops them on every
    // transition): closed, disabled or metrics-only, untimed, no default timeout. A call
    // without options then needs no other check. Kept this small so that V8 can inline it
    // (and #hot) into the caller: fn's call site is then the caller's own, not one shared by
    // every function run through every breaker.
    const onSuccess = this.#fastSuccess;
    if (onSuccess !== undefined && options === undefined && typeof fn === 'function') {
      try {
        return this.#hot(fn, onSuccess, this.#fastFailure as (error: unknown) => void);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return this.#execute(fn, options);
  }

  /**
   * {@link CircuitBreaker.execute} when the hot path's handlers are not at hand — always, for a
   * breaker with `traceExecute` (it never binds them), so tracing costs untraced breakers nothing.
   */
  #execute<R>(
    fn: (signal: AbortSignal) => R | Promise<R>,
    options: ExecuteOptions<R> | undefined,
  ): Promise<R> {
    if (this.#o.traceExecute && executeChannel.hasSubscribers) {
      const context = { name: this.#name, state: this.#policy.state, time: wallTime() };
      return executeChannel.tracePromise(() => this.#call(fn, options), context);
    }
    return this.#call(fn, options);
  }

  #call<R>(
    fn: (signal: AbortSignal) => R | Promise<R>,
    options: ExecuteOptions<R> | undefined,
  ): Promise<R> {
    try {
      if (typeof fn !== 'function') {
        throw new InvalidOptionError(EXECUTE, 'fn', 'a function', fn, 'execute(fn, options)');
      }
      let signal: AbortSignal | undefined;
      let timeoutMs = this.#c.timeoutMs;
      let fallback: ((error: unknown) => R | Promise<R>) | undefined;
      if (options !== undefined) {
        // Each field is read once: a getter cannot answer one way when checked, another when used.
        const given: unknown = options;
        if (typeof given !== 'object' || given === null || Array.isArray(given)) {
          throw new InvalidOptionError(EXECUTE, 'options', 'an options object', given);
        }
        // As at construction: an unknown key is refused (a misspelt `timeout: 5` silently
        // ignored would be worse), unless its value is undefined. A for-in over an ordinary
        // object literal walks V8's enum cache and allocates nothing, unlike Object.keys.
        for (const key in given) {
          if (key !== 'signal' && key !== 'timeoutMs' && key !== 'fallback') {
            refuseUnknown(given, key);
          }
        }
        signal = options.signal;
        if (signal !== undefined && !isAbortSignal(signal)) {
          throw new InvalidOptionError(EXECUTE, 'signal', 'an AbortSignal', signal);
        }
        const callTimeout: unknown = options.timeoutMs;
        if (callTimeout !== undefined) {
          // typeof and two comparisons; the message is only built for a bad value.
          if (typeof callTimeout === 'number' && callTimeout > 0 && callTimeout <= MAX_MS) {
            timeoutMs = callTimeout;
          } else if (callTimeout === Infinity) {
            timeoutMs = undefined;
          } else {
            throw new InvalidOptionError(
              EXECUTE,
              'timeoutMs',
              numberProblem(callTimeout, false, TIMEOUT_BOUNDS) ?? 'a number',
              callTimeout,
            );
          }
        }
        fallback = options.fallback;
        if (fallback !== undefined && typeof fallback !== 'function') {
          throw new InvalidOptionError(EXECUTE, 'fallback', 'a function', fallback);
        }
        if (signal?.aborted === true) return Promise.reject(signal.reason as unknown);
      }
      const state = this.#policy.state;
      if (
        !this.#c.timed &&
        (state === 'closed' || state === 'disabled' || state === 'metrics-only') &&
        fallback === undefined &&
        timeoutMs === undefined &&
        signal === undefined &&
        // Not when a call's `timeoutMs: Infinity` lifted a default timeout: the handlers made
        // here would let later calls without options skip it.
        this.#c.timeoutMs === undefined &&
        // A traced breaker never binds the hot path's handlers: every call comes through
        // #execute, where the tracing channel is checked.
        !this.#o.traceExecute
      ) {
        // The hot path — admitted, untimed, no timeout, no signal, no fallback: no async
        // function, no permit, no controller, no timer, no clock read, no closure: the handlers
        // are made once per state generation; a call allocates only the promise `then` returns.
        if (this.#fastSuccess === undefined) this.#bindFastPath();
        return this.#hot(
          fn,
          this.#fastSuccess as (value: unknown) => void,
          this.#fastFailure as (error: unknown) => void,
        );
      }
      const permit = this.#acquire();
      if (permit !== undefined && (timeoutMs !== undefined || signal !== undefined)) {
        return this.#executeTimed(fn, permit, timeoutMs, signal, fallback);
      }
      return this.#executeFull(fn, permit, signal, timeoutMs, fallback);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * Runs `fn` on the hot path with the handlers of the generation it was admitted under (taken
   * before `fn` runs: a transition `fn` makes itself does not move its outcome to the next).
   */
  #hot<R>(
    fn: (signal: AbortSignal) => R | Promise<R>,
    onSuccess: (value: unknown) => void,
    onFailure: (error: unknown) => void,
  ): Promise<R> {
    let result: R | Promise<R>;
    try {
      result = fn(NEVER);
    } catch (error) {
      // A synchronous throw is a failure like a rejection, and reaches the caller the same
      // way: as a rejected promise, never as a throw out of execute().
      onFailure(error);
      return Promise.reject(error);
    }
    const promise = Promise.resolve(result);
    // The outcome is recorded by a reaction of fn's own promise, and that promise is what
    // the caller gets: awaiting it costs the caller no extra microtask (a promise `then`
    // returned would settle one hop later, as each `await` of cockatiel's async execute
    // does). Reactions run in the order they were added (ECMA-262 PerformPromiseThen), so
    // this one, added before execute returns, has run when the caller's await resumes. Its
    // handlers return nothing, and #record survives a classifier or listener that throws,
    // so the promise `then` makes here fulfils unobserved (only an injected clock that
    // throws in a transition would reject it, as an unhandled rejection). A failure
    // reaches the caller as the very promise that failed — no rethrow, which would cost V8
    // a message object and a stack walk.
    void promise.then(onSuccess, onFailure);
    return promise;
  }

  async #executeFull<R>(
    fn: (signal: AbortSignal) => R | Promise<R>,
    admitted: Permit | undefined,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    fallback: ((error: unknown) => R | Promise<R>) | undefined,
  ): Promise<R> {
    let permit = admitted;
    while (permit === undefined) {
      if (this.#o.halfOpenWait && this.#policy.state === 'half-open') {
        await this.#waitForVerdict(signal);
        permit = this.#acquire();
        continue;
      }
      const rejection = this.#rejection();
      if (fallback !== undefined) return fallback(rejection);
      throw rejection;
    }
    if (timeoutMs === undefined && signal === undefined) {
      try {
        return await fn(NEVER);
      } catch (error) {
        return await this.#onError(permit, error, fallback);
      } finally {
        permit.success(); // no-op when #onError already reported a failure
      }
    }
    return this.#executeTimed(fn, permit, timeoutMs, signal, fallback);
  }

  /**
   * The two-step API: a permit when the breaker lets a call through now, `undefined` when it
   * rejects (then `retryAfterMs` says for how long). Report the outcome on the permit once.
   */
  tryAcquire(): BreakerPermit | undefined {
    const permit = this.#acquire();
    if (permit === undefined) this.#countRejection();
    return permit;
  }

  /** Isolates the dependency: every call is rejected until another manual transition. */
  forceOpen(): void {
    this.#applied(this.#policy.moveTo('forced-open', 'manual', this.#o.clock.now()));
  }

  /** Lets every call through and only counts; thresholds are not evaluated. */
  disable(): void {
    this.#applied(this.#policy.moveTo('disabled', 'manual', this.#o.clock.now()));
  }

  /** Lets every call through, evaluates thresholds and reports (onThresholdExceeded) without opening. */
  metricsOnly(): void {
    this.#applied(this.#policy.moveTo('metrics-only', 'manual', this.#o.clock.now()));
  }

  /** Back to closed with an empty window (and no backoff history). */
  reset(): void {
    this.#applied(this.#policy.reset(this.#o.clock.now()));
  }

  /** Opens now, as if the thresholds had been exceeded. */
  trip(): void {
    this.#applied(this.#policy.open(this.#o.clock.now(), 'manual'));
  }

  /** A snapshot of the numbers. */
  metrics(): BreakerMetrics {
    const now = this.#o.clock.now();
    this.#advance(now);
    const policy = this.#policy;
    const { calls, failures, slow } = policy.totals(now);
    return {
      state: policy.state,
      calls,
      failures,
      slowCalls: slow,
      failureRate: calls === 0 ? 0 : failures / calls,
      slowCallRate: calls === 0 ? 0 : slow / calls,
      successfulTotal: this.#successful,
      failedTotal: this.#failed,
      ignoredTotal: this.#ignored,
      rejectedTotal: this.#rejected,
      timeInStateMs: now - policy.stateSince,
      retryAfterMs: this.#retryAfter(now),
      time: wallTime(),
    };
  }

  /** A JSON-safe snapshot of the state, for carrying it across a restart. */
  toJSON(): BreakerSnapshot {
    const now = this.#o.clock.now();
    this.#advance(now);
    return {
      format: 'keel.breaker',
      version: 1,
      name: this.#name,
      state: this.#policy.state,
      openRemainingMs: this.#policy.retryAfter(now),
      consecutiveOpens: this.#policy.consecutiveOpens,
    };
  }

  /**
   * A breaker with `options`, put in the state a snapshot recorded: open for the remaining
   * time, forced open, disabled… A half-open snapshot restores as open with no time left (the
   * next call is a trial). The sliding window starts empty.
   *
   * Every field is checked against what a breaker with these options could have recorded —
   * `openRemainingMs` at most `backoff.maxOpenDurationMs × (1 + backoff.jitter)`,
   * `consecutiveOpens` a safe integer, `name` a non-empty string — and a bad one throws an
   * {@link InvalidOptionError} naming it (`snapshot.openRemainingMs`, …).
   */
  static fromJSON(snapshot: unknown, options?: CircuitBreakerOptions): CircuitBreaker {
    const given: unknown = options;
    if (
      given !== undefined &&
      (typeof given !== 'object' || given === null || Array.isArray(given))
    ) {
      throw new InvalidOptionError(FROM_JSON, 'options', 'an options object', given);
    }
    const { name, state, openRemainingMs, consecutiveOpens } = readSnapshot(snapshot);
    const breaker = new CircuitBreaker(
      name !== undefined && options?.name === undefined ? { ...options, name } : options,
    );
    checkOpenRemaining(openRemainingMs, breaker.#o.backoff);
    const now = breaker.#o.clock.now();
    breaker.#applied(breaker.#policy.restore(state, openRemainingMs, consecutiveOpens, now));
    return breaker;
  }

  /** Subscribes to state changes. */
  onStateChange(listener: (change: StateChange) => void): Subscription {
    checkListener('onStateChange', listener);
    return (this.#stateChanged ??= new EventChannel()).subscribe(listener);
  }

  /** Subscribes to rejected calls. */
  onCallRejected(listener: (event: CallRejected) => void): Subscription {
    checkListener('onCallRejected', listener);
    return (this.#callRejected ??= new EventChannel()).subscribe(listener);
  }

  /** Subscribes to finished calls. */
  onCallFinished(listener: (event: CallFinished) => void): Subscription {
    checkListener('onCallFinished', listener);
    return (this.#callFinished ??= new EventChannel()).subscribe(listener);
  }

  /** In `metrics-only` state: subscribes to the reasons the breaker would have opened. */
  onThresholdExceeded(listener: (reason: string) => void): Subscription {
    checkListener('onThresholdExceeded', listener);
    return (this.#thresholdExceeded ??= new EventChannel()).subscribe(listener);
  }

  // -------------------------------------------------------------------------------------------

  /**
   * A call with a deadline. No timer of its own: calls through this breaker with the same
   * timeout whose deadlines fall in the same millisecond share a {@link CallBucket} — one
   * entry in the clock's deadline queue and one AbortSignal (creating an AbortSignal costs
   * microseconds on Node 20, more than the rest of the call). A call with a caller's signal,
   * or whose function declares a parameter (so it may keep the signal, e.g. for a response
   * body read after it resolved), gets a bucket of its own: its signal must abort for it alone.
   */
  #executeTimed<R>(
    fn: (signal: AbortSignal) => R | Promise<R>,
    permit: BreakerPermit,
    timeoutMs: number | undefined,
    callerSignal: AbortSignal | undefined,
    fallback: ((error: unknown) => R | Promise<R>) | undefined,
  ): Promise<R> {
    if (timeoutMs === undefined) {
      // No deadline, only the caller's signal: fn gets that signal itself, and its abort
      // settles the call even if fn ignores it.
      return this.#runCall(fn, new TimedCall<R>(undefined, permit, fallback), callerSignal);
    }
    const clock = this.#o.clock;
    // Rounded up to the millisecond: a timeout fires no earlier than asked, at most 1 ms later
    // (timers have whole milliseconds anyway), and calls in one millisecond can share.
    const due = Math.ceil(clock.now() + timeoutMs);
    const queue = (this.#deadlines ??= deadlineQueueFor(clock));
    const shares = callerSignal === undefined && fn.length === 0;
    let bucket = shares ? this.#bucket : undefined;
    if (
      bucket === undefined ||
      bucket.due !== due ||
      bucket.timeoutMs !== timeoutMs ||
      bucket.expired
    ) {
      bucket = new CallBucket(queue, this.#name, timeoutMs, due);
      if (shares) this.#bucket = bucket;
    }
    const call = new TimedCall<R>(bucket, permit, fallback);
    bucket.attach(call as TimedCall<unknown>);
    return this.#runCall(fn, call, callerSignal);
  }

  /** Runs `fn` for `call`: the caller's abort, fn's outcome or the deadline settles it. */
  #runCall<R>(
    fn: (signal: AbortSignal) => R | Promise<R>,
    call: TimedCall<R>,
    callerSignal: AbortSignal | undefined,
  ): Promise<R> {
    if (callerSignal !== undefined) {
      if (callerSignal.aborted) {
        call.abortedBy(callerSignal.reason);
        return call.promise;
      }
      call.offCaller = onAbort(callerSignal, () => {
        call.abortedBy(callerSignal.reason);
      });
    }
    let result: R | Promise<R>;
    try {
      result = fn(call.signal ?? (callerSignal as AbortSignal));
    } catch (error) {
      call.failed(error);
      return call.promise;
    }
    // Inline arrows rather than bound methods or arrow fields: nothing named per call (a
    // keepNames build wraps every named function it creates).
    Promise.resolve(result).then(
      (value) => {
        call.succeeded(value);
      },
      (error: unknown) => {
        call.failed(error);
      },
    );
    return call.promise;
  }

  #onError<R>(
    permit: BreakerPermit,
    error: unknown,
    fallback: ((error: unknown) => R | Promise<R>) | undefined,
  ): R | Promise<R> {
    permit.failure(error);
    if (fallback !== undefined) return fallback(error);
    throw error;
  }

  /**
   * `retryAfterMs` as callers see it: whole milliseconds, rounded up (never down), so a caller
   * that waits that long finds the open duration over (the policy half-opens at `now >=
   * openUntil`). Snapshots keep the exact remainder (`toJSON`'s `openRemainingMs`).
   */
  #retryAfter(now: number): number {
    return Math.ceil(this.#policy.retryAfter(now));
  }

  #rejection(): BreakerOpenError {
    const now = this.#o.clock.now();
    const state = this.#policy.state;
    const retryAfter = this.#retryAfter(now);
    this.#countRejection();
    if (!this.#o.stacklessRejections) return new BreakerOpenError(this.#name, state, retryAfter);
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return new BreakerOpenError(this.#name, state, retryAfter);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }

  /** Counts a rejection and tells whoever listens: typed listeners and the channel, from here. */
  #countRejection(): void {
    this.#rejected++;
    const typed = this.#callRejected?.active === true;
    if (!typed && !callRejectedChannel.active) return;
    const state = this.#policy.state;
    const retryAfterMs = this.#retryAfter(this.#o.clock.now());
    const time = wallTime();
    if (typed) this.#callRejected?.emit({ state, retryAfterMs, time });
    callRejectedChannel.publish({ name: this.#name, state, retryAfterMs, time });
  }

  /** A permit if a call may go through now. Does not count rejections. */
  #acquire(): Permit | undefined {
    const policy = this.#policy;
    // Closed with a count window and no slow-call timing needs no clock at all.
    const state = policy.state;
    if (
      !this.#c.timed &&
      (state === 'closed' || state === 'disabled' || state === 'metrics-only')
    ) {
      return new Permit(this, policy.generation, NaN); // start not read
    }
    const now = this.#o.clock.now();
    this.#advance(now);
    return policy.admit() ? new Permit(this, policy.generation, now) : undefined;
  }

  /** Applies what time has changed (see BreakerPolicy#advance). */
  #advance(now: number): void {
    const moved = this.#policy.advance(now);
    if (moved !== undefined) this.#applied(moved);
  }

  #record(
    generation: number,
    startedAt: number,
    outcome: 'success' | 'failure' | 'ignored',
    error: unknown,
  ): void {
    const policy = this.#policy;
    const state = policy.state;
    // The clock is needed for slow-call timing, a time window, an open or half-open breaker
    // (whose deadlines may have passed) and listeners who want the duration. Otherwise `now`
    // stays NaN, "not read": a transition reads the clock itself (see BreakerPolicy#onOutcome).
    // `startedAt` is NaN when the start was not read (not 0: a clock's origin is arbitrary, so
    // a call may well start at 0).
    const timed = this.#c.timed || !Number.isNaN(startedAt);
    const now =
      timed ||
      (state !== 'closed' && state !== 'disabled' && state !== 'metrics-only') ||
      this.#callFinished?.active === true
        ? this.#o.clock.now()
        : Number.NaN;
    const durationMs = timed ? Math.max(0, now - startedAt) : 0;
    let kind = outcome;
    if (kind === 'failure' && error !== undefined) kind = this.#classify(error);
    const slow = kind !== 'ignored' && durationMs >= this.#o.slowCallDurationMs;
    if (kind === 'success') this.#successful++;
    else if (kind === 'failure') this.#failed++;
    else this.#ignored++;
    if (this.#callFinished?.active === true)
      this.#callFinished.emit({
        outcome: kind,
        durationMs,
        slow,
        counted: generation === policy.generation,
      });
    if (kind === 'ignored') {
      // A half-open trial that counts neither way frees its permit: a caller waiting for the
      // trials' verdict may take it (each waiter retries and waits again if it is gone).
      if (policy.ignored(generation)) this.#releaseWaiters();
      return;
    }
    if (generation !== policy.generation) return;
    this.#verdict(policy.onOutcome(generation, kind === 'failure', slow, now, this.#o.clock));
  }

  /** Carries out what an outcome decided: a transition, or (metrics-only) a threshold passed. */
  #verdict(verdict: Verdict): void {
    if (verdict === undefined) return;
    if (typeof verdict === 'string') {
      if (this.#thresholdExceeded?.active === true) this.#thresholdExceeded.emit(verdict);
      return;
    }
    this.#applied(verdict);
  }

  /** What a failed call's error counts as, by `ignore` and `isFailure`; a failure if they throw. */
  #classify(error: unknown): 'failure' | 'success' | 'ignored' {
    const o = this.#o;
    // (A WeakSet answers false for a value that is not an object.)
    if (callerAborts.has(error as object)) return 'ignored';
    try {
      // Without an `ignore` option, a NoEndpointError (nothing was called) is ignored. A user
      // predicate's answer counts only when it is `true`, as documented.
      const ignored: unknown =
        o.ignore === undefined ? hasKeelCode(error, NO_ENDPOINT) : o.ignore(error);
      if (ignored === true) return 'ignored';
      if (o.isFailure !== undefined && !o.isFailure(error)) return 'success';
    } catch {
      // A classifier that throws must not lose the outcome (a lost half-open trial would hold
      // the breaker half-open until maxHalfOpenMs): the conservative reading is a failure.
    }
    return 'failure';
  }

  /**
   * Carries out what a change of state means for the shell: the hot path's handlers belong to
   * the new generation, waiters of a finished half-open retry, waiters of a new one get a
   * wake-up, listeners hear of it.
   */
  #applied(transition: Transition | undefined): void {
    if (transition === undefined) return;
    const { from, to } = transition;
    // The hot path's handlers belong to the old generation: made again on its next call.
    this.#fastSuccess = undefined;
    this.#fastFailure = undefined;
    if (this.#waiters !== undefined && this.#waiters.length > 0) {
      if (from === 'half-open') this.#releaseWaiters();
      if (to === 'half-open') this.#armWake(this.#policy.stateSince);
    }
    if (from !== to) this.#announce(transition);
  }

  /**
   * A change of state, told once from here to everyone: typed listeners, the
   * `keel:breaker:state-change` channel and the logger. A change made while one is being told
   * (a listener or subscriber that calls `reset()`, …) waits until everyone has heard the
   * first, so every observer hears them in the order they happened and the last one heard is
   * the current state.
   */
  #announce(transition: Transition): void {
    const telling = this.#telling;
    if (telling !== undefined) {
      telling.push(transition);
      return;
    }
    // Nothing below throws (listeners' and subscribers' errors are rethrown on a later tick; a
    // throwing logger is ignored), so the queue is always emptied and dropped.
    const queue = (this.#telling = [transition]);
    for (let i = 0; i < queue.length; i++) this.#tell(queue[i] as Transition);
    this.#telling = undefined;
  }

  #tell({ from, to, reason }: Transition): void {
    const typed = this.#stateChanged?.active === true;
    const logger = this.#o.logger;
    const time = wallTime();
    if (typed) this.#stateChanged?.emit({ from, to, reason, time });
    if (stateChangeChannel.active) {
      stateChangeChannel.publish({ name: this.#name, from, to, reason, time });
    }
    if (logger === silentLogger) return;
    log(
      logger,
      to === 'open' || to === 'forced-open' ? 'warn' : 'info',
      { breaker: this.#name, from, to, reason, time },
      `breaker ${this.#name}: ${from} -> ${to} (${reason})`,
    );
  }

  /** Waits until half-open reaches a verdict (or the caller aborts). */
  #waitForVerdict(signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          this.#waiters = this.#waiters?.filter((w) => w !== waiter);
          if (this.#waiters?.length === 0) this.#disarmWake();
          reject(signal?.reason as unknown);
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      const waiters = (this.#waiters ??= []);
      waiters.push(waiter);
      if (waiters.length === 1) this.#armWake(this.#o.clock.now());
    });
  }

  /** Wakes waiters when half-open would give up, in case nothing else touches the breaker. */
  #armWake(now: number): void {
    this.#disarmWake();
    if (this.#policy.state !== 'half-open') return;
    const due = this.#policy.halfOpenDeadline() - now;
    // Whole milliseconds, at least 1: a timer cannot do better, and a zero delay would spin.
    const delay = due > 1 ? Math.ceil(due) : 1;
    this.#wakeTimer = this.#o.clock.setTimer(() => {
      this.#wakeTimer = undefined;
      const at = this.#o.clock.now();
      this.#advance(at);
      // Never trust a timer to be exact: Node's setTimeout counts from the event loop's cached
      // millisecond, so it can run a fraction of a millisecond before performance.now() says
      // the deadline has passed. Half-open then is "not over yet" — so arm again, or the
      // waiters would wait forever (issue 14).
      if (this.#policy.state === 'half-open' && (this.#waiters?.length ?? 0) > 0) {
        this.#armWake(at);
      }
    }, delay);
    this.#wakeTimer.unref();
  }

  #disarmWake(): void {
    this.#wakeTimer?.cancel();
    this.#wakeTimer = undefined;
  }

  /** The half-open verdict is in: waiters retry (and are admitted or rejected by the new state). */
  #releaseWaiters(): void {
    const waiters = this.#waiters ?? [];
    this.#waiters = undefined;
    this.#disarmWake();
    for (const waiter of waiters) {
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.resolve();
    }
  }
}
