/**
 * Endpoint-aware resilient calls: a balancer picks, a breaker per endpoint guards, a retry
 * goes to a *different* endpoint within a shared budget, a hedge races a second endpoint, and
 * the caller learns which endpoints were tried. Finagle's client stack (retry budget,
 * requeues on another host, backup requests) and Envoy's router (retry host predicate
 * `previous_hosts`, hedging on per-try timeout) are the models.
 *
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  guardedOption,
  isAbortSignal,
  isClock,
  numberOption,
  onAbort,
  resolveOptions,
  systemClock,
  type Clock,
  type Timer,
} from '../core/index.js';
import {
  BreakerRegistry,
  BreakerOpenError,
  type BreakerPermit,
  type CircuitBreaker,
  type CircuitBreakerOptions,
} from '../breaker/index.js';
import type { Endpoint, Lease, LoadBalancer } from '../balancer/index.js';
import type { BackoffOptions } from './backoff.js';
import { RetryBudget } from './budget.js';
import { HedgeLostError, ResilientCallError, TimeoutError, type TriedEndpoint } from './errors.js';
import { hedgeRules, type HedgeDelay, type HedgeOptions } from './hedge.js';
import { RetryRules, publishRetry, type Decision, type RetryOptions } from './retry.js';

/** Options of {@link resilientCall}. */
export interface ResilientCallOptions {
  /**
   * The breakers, one per endpoint id: a registry (shared with other code), or the options
   * every endpoint's breaker is made with.
   * @defaultValue `new BreakerRegistry({ failureRateThreshold: 0.5, minimumCalls: 10, openDurationMs: 5000 })`
   */
  readonly breakers?: BreakerRegistry | CircuitBreakerOptions;
  /**
   * Retries of idempotent calls, each on an endpoint not tried yet while one is left. The
   * backoff defaults to `none` here: a retry goes to another endpoint, so waiting gains
   * nothing, and the budget bounds the extra load. Without `budget`, the caller makes its own
   * {@link RetryBudget} with the defaults (20 % of requests + 10 per second), shared by hedges.
   * @defaultValue `{ maxAttempts: 3, backoff: { type: 'none' } }`
   */
  readonly retry?: RetryOptions;
  /** Hedged requests of idempotent calls, to another endpoint. @defaultValue off */
  readonly hedge?: HedgeOptions;
  /**
   * Per-attempt timeout (ms): the attempt's signal aborts with a {@link TimeoutError} and the
   * attempt counts as failed at once. @defaultValue none
   */
  readonly attemptTimeoutMs?: number;
  /** Clock for latencies, timeouts and waits. @defaultValue `systemClock` */
  readonly clock?: Clock;
}

/** Options of one {@link ResilientCaller.call}. */
export interface ResilientCallCallOptions {
  /**
   * The call may safely run more than once (a read, or a write with an idempotency key):
   * retries and hedges are allowed. Off by default: a non-idempotent call makes one attempt
   * (only a local rejection, where nothing was sent, is followed by another endpoint).
   * @defaultValue false
   */
  readonly idempotent?: boolean | undefined;
  /** Request key for sticky strategies (consistent hashing). */
  readonly key?: string | Uint8Array | undefined;
  /** Aborts the call and every attempt in flight; rejects with `signal.reason`. */
  readonly signal?: AbortSignal | undefined;
}

/** What {@link ResilientCaller.callWithReport} answers. */
export interface CallReport<R> {
  /** The winning attempt's value. */
  readonly value: R;
  /** Every attempt, in the order they started (the winner's outcome is `success`). */
  readonly tried: readonly TriedEndpoint[];
}

const OWNER = 'resilientCall';
const CALL = 'ResilientCaller.call';

const DEFAULT_BREAKER: CircuitBreakerOptions = Object.freeze({
  failureRateThreshold: 0.5,
  minimumCalls: 10,
  openDurationMs: 5000,
});
const NO_BACKOFF: BackoffOptions = Object.freeze({ type: 'none' });

const spec = {
  breakers: { parse: (value: unknown): unknown => value },
  retry: { parse: (value: unknown): unknown => value },
  hedge: { parse: (value: unknown): unknown => value },
  attemptTimeoutMs: numberOption({ min: 0, minExclusive: true, max: 86_400_000, optional: true }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
};

interface Running<T> {
  readonly record: { -readonly [K in keyof TriedEndpoint]: TriedEndpoint[K] };
  readonly lease: Lease<T>;
  readonly permit: BreakerPermit;
  readonly controller: AbortController;
  readonly began: number;
  /** Which attempt of the call it is (1 = the first), for `keel:resilience:retry`. */
  readonly number: number;
  timer: Timer | undefined;
  done: boolean;
}

/**
 * Calls over a balancer, resilient per endpoint. Made by {@link resilientCall}; one per
 * downstream service, shared by its callers (the budget and the breakers are per caller).
 */
export class ResilientCaller<T = unknown> {
  readonly #balancer: LoadBalancer<T>;
  readonly #breakers: BreakerRegistry;
  readonly #rules: RetryRules;
  readonly #budget: RetryBudget;
  readonly #hedgeDelay: HedgeDelay | undefined;
  readonly #maxHedges: number;
  readonly #attemptTimeoutMs: number | undefined;
  readonly #clock: Clock;
  /** Endpoints whose breaker was last seen open: left out of picks until it is not. */
  readonly #open = new Set<string>();

  /** @internal Use {@link resilientCall}. */
  constructor(balancer: LoadBalancer<T>, options: ResilientCallOptions = {}) {
    const given: unknown = balancer;
    if (
      typeof given !== 'object' ||
      given === null ||
      typeof (balancer as { acquire?: unknown }).acquire !== 'function' ||
      typeof (balancer as { acquireOrThrow?: unknown }).acquireOrThrow !== 'function'
    ) {
      throw new InvalidOptionError(
        OWNER,
        'balancer',
        'a LoadBalancer from keel/balancer',
        balancer,
      );
    }
    const o = resolveOptions(OWNER, options, spec);
    this.#balancer = balancer;
    this.#clock = o.clock;
    const breakers = o.breakers;
    if (breakers instanceof BreakerRegistry) this.#breakers = breakers;
    else if (breakers === undefined)
      this.#breakers = new BreakerRegistry({ ...DEFAULT_BREAKER, clock: o.clock });
    else if (typeof breakers === 'object' && breakers !== null && !Array.isArray(breakers)) {
      this.#breakers = new BreakerRegistry({
        clock: o.clock,
        ...(breakers as CircuitBreakerOptions),
      });
    } else {
      throw new InvalidOptionError(
        OWNER,
        'breakers',
        'a BreakerRegistry or breaker options',
        breakers,
      );
    }
    const retryGiven: unknown = o.retry;
    if (retryGiven !== undefined && (typeof retryGiven !== 'object' || retryGiven === null)) {
      throw new InvalidOptionError(OWNER, 'retry', 'retry options', retryGiven);
    }
    const retryOptions = (retryGiven ?? {}) as RetryOptions;
    const budget = retryOptions.budget ?? new RetryBudget({ clock: o.clock });
    this.#rules = new RetryRules(
      `${OWNER} retry`,
      { clock: o.clock, ...retryOptions, budget },
      NO_BACKOFF,
    );
    this.#budget = budget;
    if (o.hedge === undefined) {
      this.#hedgeDelay = undefined;
      this.#maxHedges = 0;
    } else {
      const rules = hedgeRules(OWNER, { clock: o.clock, ...(o.hedge as HedgeOptions) }, 'hedge');
      this.#hedgeDelay = rules.delay;
      this.#maxHedges = rules.maxHedges;
    }
    this.#attemptTimeoutMs = o.attemptTimeoutMs;
  }

  /** The retry budget retries and hedges draw on. */
  get budget(): RetryBudget {
    return this.#budget;
  }

  /** The breakers, by endpoint id. */
  get breakers(): BreakerRegistry {
    return this.#breakers;
  }

  /**
   * Runs `fn(endpoint, signal)` on an endpoint the balancer picks, resiliently; resolves with
   * the first successful attempt's value, rejects with a {@link ResilientCallError} (its
   * `tried` lists every attempt, its `cause` the last error), or with `signal.reason`.
   */
  async call<R>(
    fn: (endpoint: Endpoint<T>, signal: AbortSignal) => R | PromiseLike<R>,
    options?: ResilientCallCallOptions,
  ): Promise<R> {
    return (await this.callWithReport(fn, options)).value;
  }

  /** Like {@link ResilientCaller.call}, and also says which endpoints were tried and how. */
  callWithReport<R>(
    fn: (endpoint: Endpoint<T>, signal: AbortSignal) => R | PromiseLike<R>,
    options?: ResilientCallCallOptions,
  ): Promise<CallReport<R>> {
    let idempotent = false;
    let key: ResilientCallCallOptions['key'];
    let signal: AbortSignal | undefined;
    try {
      if (typeof fn !== 'function') throw new InvalidOptionError(CALL, 'fn', 'a function', fn);
      if (options !== undefined) {
        const o = resolveOptions(CALL, options, callSpec);
        idempotent = o.idempotent;
        key = o.key as ResilientCallCallOptions['key'];
        signal = o.signal;
      }
      if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#run(fn, idempotent, key, signal);
  }

  #run<R>(
    fn: (endpoint: Endpoint<T>, signal: AbortSignal) => R | PromiseLike<R>,
    idempotent: boolean,
    key: ResilientCallCallOptions['key'],
    signal: AbortSignal | undefined,
  ): Promise<CallReport<R>> {
    const clock = this.#clock;
    const rules = this.#rules;
    const budget = this.#budget;
    const hedgeDelay = idempotent ? this.#hedgeDelay : undefined;
    const maxAttempts = idempotent ? rules.maxAttempts : 1;
    const callerSignal = signal ?? NEVER;
    budget.deposit();
    return new Promise<CallReport<R>>((resolve, reject) => {
      const tried: Running<T>['record'][] = [];
      const triedIds = new Set<string>();
      const live: Running<T>[] = [];
      let attempts = 0;
      let settled = false;
      let previousDelay = 0;
      let waitTimer: Timer | undefined;
      /** When the scheduled retry (`waitTimer`) is due, on `clock`. */
      let retryAt = 0;
      let hedgeTimer: Timer | undefined;
      let off: (() => void) | undefined;
      let stopped: ResilientCallError['stoppedBy'] | undefined;
      let lastError: unknown;

      const end = (reason: unknown): void => {
        settled = true;
        waitTimer?.cancel();
        hedgeTimer?.cancel();
        off?.();
        // Every attempt still running lost: aborted through its signal, its lease released as
        // cancelled and its breaker permit returned uncounted.
        for (const attempt of live.splice(0)) {
          finishAttempt(attempt, 'aborted', undefined);
          attempt.controller.abort(reason ?? new HedgeLostError());
        }
      };
      const fail = (stoppedBy: ResilientCallError['stoppedBy'], cause: unknown): void => {
        end(undefined);
        reject(new ResilientCallError(tried.slice(), stoppedBy, cause));
      };
      const finishAttempt = (
        attempt: Running<T>,
        outcome: TriedEndpoint['outcome'],
        error: unknown,
      ): void => {
        attempt.done = true;
        attempt.timer?.cancel();
        const latency = Math.max(0, clock.now() - attempt.began);
        attempt.record.outcome = outcome;
        attempt.record.latencyMs = latency;
        if (outcome === 'aborted') {
          // How long it ran is a lower bound on its latency (it never answered): the balancer
          // learns that the endpoint a hedge raced away from is slow.
          attempt.lease.done({ ok: false, cancelled: true, latencyMs: latency });
          attempt.permit.ignore();
          return;
        }
        attempt.lease.done({ ok: outcome === 'success', latencyMs: latency });
        if (outcome === 'success') attempt.permit.success();
        else attempt.permit.failure(error);
        const id = attempt.record.id;
        const state = this.#breakers.breakerFor(id).state;
        if (state === 'open' || state === 'forced-open') this.#open.add(id);
      };

      /** Starts an attempt; false when there was nothing to start it on (the call may have ended). */
      const start = (hedge: boolean): boolean => {
        waitTimer = undefined;
        if (settled) return false;
        let lease: Lease<T>;
        let permit: BreakerPermit | undefined;
        for (;;) {
          try {
            lease = this.#balancer.acquireOrThrow({ key, exclude: this.#exclusions(triedIds) });
          } catch (error) {
            if (live.length === 0) fail('no-endpoint', error);
            return false;
          }
          const picked = lease.endpoint.id;
          const breaker = this.#breakers.breakerFor(picked);
          permit = breaker.tryAcquire();
          if (permit !== undefined) break;
          // Nothing was sent: its breaker is open. It is left out of the picks from now on; a
          // local rejection is no attempt (even a call that is not idempotent may go elsewhere)
          // and is never waited on.
          lease.done({ ok: false, cancelled: true });
          this.#open.add(picked);
          const again = triedIds.has(picked);
          triedIds.add(picked);
          if (!again) tried.push({ id: picked, outcome: 'rejected', hedge, latencyMs: 0 });
          lastError = rejection(breaker);
          // The balancer offers an excluded endpoint only when nothing else is usable: every
          // endpoint left has an open breaker or was tried.
          if (again) {
            if (live.length === 0) fail('breakers-open', lastError);
            return false;
          }
        }
        const id = lease.endpoint.id;
        attempts++;
        triedIds.add(id);
        const record = { id, outcome: 'failure' as TriedEndpoint['outcome'], hedge, latencyMs: 0 };
        tried.push(record);
        const attempt: Running<T> = {
          record,
          lease,
          permit,
          controller: new AbortController(),
          began: clock.now(),
          number: attempts,
          timer: undefined,
          done: false,
        };
        live.push(attempt);
        const timeoutMs = this.#attemptTimeoutMs;
        if (timeoutMs !== undefined) {
          attempt.timer = clock.setTimer(() => {
            attempt.timer = undefined;
            const error = new TimeoutError(timeoutMs, 'aggressive');
            attempt.controller.abort(error);
            failed(attempt, error);
          }, timeoutMs);
        }
        let result: R | PromiseLike<R>;
        try {
          result = fn(lease.endpoint, attempt.controller.signal);
        } catch (error) {
          failed(attempt, error);
          return true;
        }
        Promise.resolve(result).then(
          (value) => {
            if (attempt.done) return;
            live.splice(live.indexOf(attempt), 1);
            finishAttempt(attempt, 'success', undefined);
            hedgeDelay?.record(attempt.record.latencyMs);
            end(undefined);
            resolve({ value, tried: tried.slice() });
          },
          (error: unknown) => {
            failed(attempt, error);
          },
        );
        armHedge();
        return true;
      };

      const armHedge = (): void => {
        hedgeTimer?.cancel();
        hedgeTimer = undefined;
        if (settled || hedgeDelay === undefined || attempts >= maxAttempts) return;
        if (attempts > this.#maxHedges) return;
        const wait = hedgeDelay.delay();
        if (wait === Infinity) return;
        hedgeTimer = clock.setTimer(() => {
          hedgeTimer = undefined;
          if (settled || attempts >= maxAttempts || live.length === 0) return;
          // A hedge is extra load like a retry: it needs the budget.
          if (!budget.tryWithdraw()) return;
          start(true);
        }, wait);
      };

      const failed = (attempt: Running<T>, error: unknown): void => {
        if (attempt.done) return;
        live.splice(live.indexOf(attempt), 1);
        finishAttempt(attempt, 'failure', error);
        lastError = error;
        if (settled) return;
        // Every failed attempt is told once on keel:resilience:retry, numbered by itself.
        if (callerSignal.aborted) {
          // The caller's abort listener settles the call.
          publishRetry(attempt.number, 'aborted', error);
          return;
        }
        // A retry already scheduled (after another attempt of this call failed) answers this
        // failure too: deciding again would take a second token from the budget for it.
        if (waitTimer !== undefined) {
          publishRetry(
            attempt.number,
            'retry-scheduled',
            error,
            Math.max(0, retryAt - clock.now()),
          );
          return;
        }
        if (stopped !== undefined) {
          // An earlier failure stopped the retries; this one (a hedge still running) stops too.
          // (`stopped` is only ever set below, from a decision.)
          const stop = stopped as Exclude<Decision, number> | 'not-idempotent';
          publishRetry(attempt.number, stop === 'not-idempotent' ? 'not-retryable' : stop, error);
        } else {
          const decision: ReturnType<RetryRules['decide']> | 'not-idempotent' = idempotent
            ? rules.decide(attempts, error, false, previousDelay, callerSignal)
            : 'not-idempotent';
          publishRetry(
            attempt.number,
            decision === 'not-idempotent' ? 'not-retryable' : decision,
            error,
          );
          // A subscriber may have ended the call (aborted its signal): schedule nothing then.
          // (TypeScript cannot see the publish change `settled`.)
          // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
          if (settled) return;
          if (typeof decision === 'number') {
            previousDelay = decision;
            retryAt = clock.now() + decision;
            hedgeTimer?.cancel();
            hedgeTimer = undefined;
            if (decision > 0) {
              waitTimer = clock.setTimer(() => {
                if (!start(false) && !settled && live.length === 0) {
                  fail(stopped ?? 'no-endpoint', lastError);
                }
              }, decision);
            } else start(false);
            return;
          }
          stopped = decision as ResilientCallError['stoppedBy'];
        }
        if (live.length === 0) fail(stopped, error);
      };

      if (callerSignal !== NEVER) {
        off = onAbort(callerSignal, () => {
          if (settled) return;
          end(callerSignal.reason);
          reject(callerSignal.reason as Error);
        });
      }
      start(false);
    });
  }

  /** Ids to leave out of the next pick: endpoints tried, and those whose breaker is open. */
  #exclusions(tried: ReadonlySet<string>): ReadonlySet<string> | undefined {
    const open = this.#open;
    for (const id of open) {
      const state = this.#breakers.breakerFor(id).state;
      if (state !== 'open' && state !== 'forced-open') open.delete(id);
    }
    if (tried.size === 0) return open.size === 0 ? undefined : open;
    if (open.size === 0) return tried;
    const both = new Set(tried);
    for (const id of open) both.add(id);
    return both;
  }
}

/** The signal of a call without one. */
const NEVER = /* @__PURE__ */ new AbortController().signal;

const callSpec = {
  idempotent: { parse: booleanOrUndefined },
  key: {
    parse(value: unknown, owner: string, option: string): unknown {
      if (value === undefined || typeof value === 'string' || value instanceof Uint8Array)
        return value;
      throw new InvalidOptionError(owner, option, 'a string or Uint8Array', value);
    },
  },
  signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
};

function booleanOrUndefined(value: unknown, owner: string, option: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new InvalidOptionError(owner, option, 'a boolean', value);
  return value;
}

/** The open breaker's rejection, as its `execute` would have made it (tryAcquire counted it). */
function rejection(breaker: CircuitBreaker): BreakerOpenError {
  return new BreakerOpenError(breaker.name, breaker.state, breaker.retryAfterMs);
}

/**
 * An endpoint-aware caller over `balancer`: each call picks an endpoint (leaving out those
 * whose breaker is open), runs through that endpoint's breaker, records the lease's outcome
 * and latency; an idempotent call is retried on a *different* endpoint within the retry
 * budget and, with `hedge`, races a second endpoint after a delay. Calls not marked
 * `idempotent` are never retried or hedged.
 *
 * @example
 * ```ts
 * import { LoadBalancer, p2c } from 'keel/balancer';
 * import { resilientCall, isResilientCallError } from 'keel/resilience';
 *
 * const balancer = new LoadBalancer({
 *   strategy: p2c(),
 *   endpoints: [{ id: 'quotes-1' }, { id: 'quotes-2' }, { id: 'quotes-3' }],
 * });
 * const quotes = resilientCall(balancer, { retry: { maxAttempts: 3 }, hedge: { afterMs: 50 } });
 *
 * try {
 *   const { value, tried } = await quotes.callWithReport(
 *     async (endpoint, signal) => {
 *       // await fetch(`http://${endpoint.id}/quote`, { signal })
 *       if (signal.aborted) throw signal.reason;
 *       return endpoint.id === 'quotes-2' ? 101.5 : 101.4;
 *     },
 *     { idempotent: true },
 *   );
 *   console.log(value, tried.map((t) => t.id));
 * } catch (error) {
 *   if (isResilientCallError(error)) console.log(error.stoppedBy, error.tried);
 * }
 * ```
 */
export function resilientCall<T>(
  balancer: LoadBalancer<T>,
  options?: ResilientCallOptions,
): ResilientCaller<T> {
  return new ResilientCaller(balancer, options);
}
