/**
 * The load balancer: an endpoint list that survives updates, in-flight and latency tracking
 * through leases, and the composition of a health layer shared by every strategy (outlier
 * ejection, panic threshold, slow start: `health.ts`) with a pluggable pick strategy.
 *
 * @packageDocumentation
 */
import {
  hasKeelCode,
  isRandomSource,
  ClosedError,
  InvalidOptionError,
  KeelError,
  guardedOption,
  integerOption,
  isAbortSignal,
  isClock,
  neverAbortingSignal,
  onAbort,
  nestedOption,
  numberOption,
  resolveOptions,
  stringOption,
  systemClock,
  wallTime,
  type Clock,
  type Subscription,
} from '../core/index.js';
import { pickChannel } from './channels.js';
import { forEachOf, resolveNode } from '../hashring/nodes.js';
import { Health } from './health.js';
import { EndpointState, NOT_EJECTED } from './state.js';
import type { PickContext, Strategy } from './strategy.js';
import type {
  Endpoint,
  EndpointSpec,
  EndpointStats,
  HealthChange,
  Lease,
  Outcome,
  PickOptions,
  RunOptions,
} from './types.js';

/** Node's `keel:balancer:pick` channel, read directly by the per-pick guard. */
const pickGuard = pickChannel.channel;

/** Outlier-ejection settings (passive health checking, as Envoy's outlier detection). */
export interface OutlierEjectionOptions {
  /** Consecutive failures that eject an endpoint; 0 turns ejection off. @defaultValue 5 */
  readonly consecutiveFailures?: number;
  /** First ejection length; the n-th ejection lasts n times this (capped). @defaultValue 30000 */
  readonly baseEjectionMs?: number;
  /** Longest ejection. @defaultValue 300000 */
  readonly maxEjectionMs?: number;
  /**
   * Most endpoints ejected at once, as a percentage of all (rounded down): with the default 50
   * and 3 endpoints, at most one is ejected. @defaultValue 50
   */
  readonly maxEjectionPercent?: number;
}

/** Slow-start settings: a new or returning endpoint's weight ramps up over a window. */
export interface SlowStartOptions {
  /** Length of the ramp; 0 turns slow start off. @defaultValue 0 */
  readonly windowMs?: number;
  /** Weight at the start of the ramp, as a percentage of the full weight. @defaultValue 10 */
  readonly minWeightPercent?: number;
  /**
   * Shape of the ramp: the weight factor is `progress^(1/aggression)`; 1 is linear, larger
   * values ramp faster at first (Envoy's `aggression`). @defaultValue 1
   */
  readonly aggression?: number;
}

/** Options of {@link LoadBalancer}. */
export interface LoadBalancerOptions<T = unknown> {
  /** The pick algorithm, e.g. `roundRobin()` or `leastRequest()`. */
  readonly strategy: Strategy<T>;
  /**
   * What the balancer balances over, usually the service name (a non-empty string): errors
   * such as {@link NoEndpointError} name it. A balancer made by {@link LoadBalancer.following}
   * takes its watch's service name unless this is given.
   * @defaultValue none
   */
  readonly name?: string | undefined;
  /**
   * Initial endpoints; their weights must sum to at most {@link MAX_TOTAL_WEIGHT}.
   * @defaultValue none
   */
  readonly endpoints?: Iterable<EndpointSpec<T>>;
  /** Passive outlier ejection. */
  readonly outlierEjection?: OutlierEjectionOptions;
  /**
   * When fewer than this percentage of endpoints are usable (not ejected), balance over all
   * of them anyway — better to spread load over sick endpoints than crush the few healthy
   * ones (Envoy's panic threshold). 0 turns panic mode off. @defaultValue 50
   */
  readonly panicThresholdPercent?: number;
  /** Slow start for new and returning endpoints. */
  readonly slowStart?: SlowStartOptions;
  /**
   * A lease not finished within this time is expired and counted as a failure, so a caller
   * that forgets `done()` cannot pin an in-flight count forever. @defaultValue 60000
   */
  readonly leaseTimeoutMs?: number;
  /**
   * Decay time of the latency EWMA used by latency-aware strategies (Finagle's `decayTime`).
   * @defaultValue 10000
   */
  readonly latencyDecayMs?: number;
  /** Clock for every time-based decision. @defaultValue `systemClock` */
  readonly clock?: Clock;
  /**
   * Random numbers in [0, 1), for deterministic tests or a seeded simulation. By default the
   * balancer uses its own xorshift generator (seeded from `Math.random`), whose integer draws
   * never allocate; an injected function returning fractions may cost a heap number per draw.
   * A draw outside [0, 1) (1, NaN, a negative number, a non-number) makes that pick throw an
   * {@link InvalidOptionError} naming `random`, before anything changes.
   * @defaultValue an internal xorshift32 generator
   */
  readonly random?: (() => number) | undefined;
}

const OWNER = 'LoadBalancer';

const isStrategy = (value: unknown): value is Strategy =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as Strategy).pick === 'function' &&
  typeof (value as Strategy).reset === 'function' &&
  typeof (value as Strategy).name === 'string';

const spec = {
  strategy: guardedOption(isStrategy, 'a strategy such as roundRobin()', { required: true }),
  name: stringOption({ optional: true, nonEmpty: true }),
  outlierEjection: nestedOption({
    consecutiveFailures: integerOption({ min: 0, max: 1_000_000, default: 5 }),
    baseEjectionMs: numberOption({ min: 1, max: 86_400_000, default: 30_000 }),
    maxEjectionMs: numberOption({ min: 1, max: 86_400_000, default: 300_000 }),
    maxEjectionPercent: numberOption({ min: 0, max: 100, default: 50 }),
  }),
  panicThresholdPercent: numberOption({ min: 0, max: 100, default: 50 }),
  slowStart: nestedOption({
    windowMs: numberOption({ min: 0, max: 86_400_000, default: 0 }),
    minWeightPercent: numberOption({ min: 0, minExclusive: true, max: 100, default: 10 }),
    aggression: numberOption({ min: 0, minExclusive: true, max: 100, default: 1 }),
  }),
  leaseTimeoutMs: numberOption({ min: 1, max: 86_400_000, default: 60_000 }),
  latencyDecayMs: numberOption({ min: 1, max: 86_400_000, default: 10_000 }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    optional: true,
  }),
};

/**
 * Largest sum of all endpoint weights a balancer accepts: 2³² − 1, the bound Envoy puts on the
 * weights of a locality ("the sum of the weights of all endpoints in the endpoint's locality
 * must not exceed uint32_t maximal value", `envoy.config.endpoint.v3.LbEndpoint`). It keeps
 * every weight sum the strategies form finite and exact enough: weights whose sum overflows to
 * `Infinity` would silently skew weighted random and smooth weighted round-robin.
 */
export const MAX_TOTAL_WEIGHT = 2 ** 32 - 1;

/** The signal `run()` hands a function when the caller gave none: it never aborts. */
const NEVER_SIGNAL = /* @__PURE__ */ neverAbortingSignal();

/** Error code of {@link NoEndpointError}. */
export const NO_ENDPOINT = 'KEEL_NO_ENDPOINT';

/**
 * Why a balancer had nothing to pick:
 * - `no-endpoints`: the endpoint list is empty (for a discovery balancer: no instance of the
 *   service matches its filter);
 * - `all-ejected`: outlier detection ejected every endpoint and panic mode is off
 *   (`panicThresholdPercent: 0`; any other threshold balances over ejected endpoints instead);
 * - `strategy-declined`: usable endpoints exist but the strategy picked none (only a custom
 *   strategy does this).
 *
 * Endpoints excluded by the caller (`exclude`) are never the reason: an exclusion that would
 * leave nothing is ignored.
 */
export type NoEndpointReason = 'no-endpoints' | 'all-ejected' | 'strategy-declined';

/** Thrown by {@link LoadBalancer.acquireOrThrow} when there is no endpoint to pick. */
export class NoEndpointError extends KeelError {
  override readonly name: string = 'NoEndpointError';
  declare readonly code: typeof NO_ENDPOINT;
  /** The balancer's `name` (a discovery balancer's service), if it has one. */
  readonly service: string | undefined;
  /** The strategy's name, e.g. `least-request`. */
  readonly strategy: string;
  /** Why there was nothing to pick. */
  readonly reason: NoEndpointReason;
  /** How many endpoints the balancer had. */
  readonly endpoints: number;
  /** How many of them were ejected by outlier detection. */
  readonly ejected: number;

  constructor(
    strategy: string,
    endpoints: number,
    details?: {
      readonly service?: string | undefined;
      readonly ejected?: number | undefined;
      /** Whether panic mode was on (ejected endpoints still usable). */
      readonly panicking?: boolean | undefined;
    },
  ) {
    const service = details?.service;
    const ejected = details?.ejected ?? 0;
    const panicking = details?.panicking === true;
    const reason: NoEndpointReason =
      endpoints === 0
        ? 'no-endpoints'
        : ejected >= endpoints && !panicking
          ? 'all-ejected'
          : 'strategy-declined';
    const why =
      reason === 'no-endpoints'
        ? 'the endpoint list is empty'
        : reason === 'all-ejected'
          ? `all ${endpoints} endpoints are ejected by outlier detection and panic mode is off`
          : `the strategy picked none of the ${endpoints} endpoints (${ejected} ejected` +
            `${panicking ? ', panic mode on' : ''})`;
    const whose = service === undefined ? '' : ` for ${JSON.stringify(service)}`;
    super(NO_ENDPOINT, `no endpoint to pick${whose} (${strategy}): ${why}`);
    this.service = service;
    this.strategy = strategy;
    this.reason = reason;
    this.endpoints = endpoints;
    this.ejected = ejected;
  }
}

/** One acquired call: a single small object per `acquire()`. */
class LeaseRecord<T> implements Lease<T> {
  readonly endpoint: Endpoint<T>;
  readonly state: EndpointState<T>;
  readonly startedAt: number;
  finished = false;
  readonly #finish: (record: LeaseRecord<T>, outcome: Outcome) => void;

  constructor(
    state: EndpointState<T>,
    startedAt: number,
    finish: (record: LeaseRecord<T>, outcome: Outcome) => void,
  ) {
    this.endpoint = state.endpoint;
    this.state = state;
    this.startedAt = startedAt;
    this.#finish = finish;
  }

  done(outcome: Outcome): void {
    this.#finish(this, outcome);
  }
}

/**
 * A client-side load balancer over a changing list of endpoints.
 *
 * - `pick()` returns an endpoint (or `undefined` when there is none) without allocating.
 * - `acquire()` also counts the call in flight and returns a {@link Lease}; its `done()`
 *   reports success and latency, which load-aware strategies and outlier ejection use.
 * - `update(endpoints)` replaces the list but keeps the state of endpoints that stay, so
 *   rotations, counters and latency estimates survive (no restart at the first endpoint).
 *
 * @example
 * ```ts
 * import { LoadBalancer, leastRequest } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({
 *   strategy: leastRequest(),
 *   endpoints: [
 *     { id: 'orders-1', data: 'http://10.0.0.1:8080' },
 *     { id: 'orders-2', data: 'http://10.0.0.2:8080' },
 *   ],
 *   outlierEjection: { consecutiveFailures: 5, baseEjectionMs: 30_000 },
 * });
 *
 * const lease = balancer.acquire();
 * if (lease) {
 *   const started = performance.now();
 *   try {
 *     // await fetch(lease.endpoint.data + '/orders', …)
 *     lease.done({ ok: true, latencyMs: performance.now() - started });
 *   } catch {
 *     lease.done({ ok: false });
 *   }
 * }
 * ```
 */
export class LoadBalancer<T = unknown> {
  readonly #strategy: Strategy<T>;
  readonly #clock: Clock;
  /** The injected RNG, or undefined to use the internal xorshift32 state below. */
  readonly #random: (() => number) | undefined;
  /** xorshift32 state (Marsaglia, "Xorshift RNGs", 2003); never 0. */
  #rng: number;
  /** Outlier ejection, its cap, panic mode and slow start; writes `available`/`effectiveWeight`. */
  readonly #health: Health<T>;
  readonly #name: string | undefined;
  readonly #leaseTimeoutMs: number;
  readonly #decayMs: number;

  #states: EndpointState<T>[] = [];
  readonly #byId = new Map<string, EndpointState<T>>();
  #version = 0;
  /** Clock reading cached for the current operation (NaN: not read yet). */
  #nowCache = Number.NaN;
  /**
   * The health layer's `nextChange` (earliest time an ejection ends or a ramp steps), copied
   * whenever it changes: a plain pick reads this field and nothing else of the health layer.
   */
  #nextChange = Infinity;
  /** Leases in start order, for expiry; `#leaseHead` is the first live index. */
  #leases: (LeaseRecord<T> | undefined)[] = [];
  #leaseHead = 0;
  #exclude: ReadonlySet<string> | undefined;
  readonly #finishBound = (record: LeaseRecord<T>, outcome: Outcome): void => {
    this.#finish(record, outcome);
  };
  /** The one pick context, mutated before each pick (never reallocated). */
  readonly #context: { -readonly [K in keyof PickContext<T>]: PickContext<T>[K] };

  constructor(options: LoadBalancerOptions<T>) {
    const input: unknown = options;
    const isObject = typeof input === 'object' && input !== null;
    const { endpoints, ...rest } = (isObject ? input : {}) as LoadBalancerOptions<T>;
    const resolved = resolveOptions(OWNER, isObject ? rest : input, spec);
    this.#strategy = resolved.strategy as Strategy<T>;
    this.#name = resolved.name;
    this.#clock = resolved.clock;
    this.#random = resolved.random;
    this.#rng = Math.floor(Math.random() * 0x7fffffff) | 1;
    const ejection = resolved.outlierEjection;
    if (ejection.maxEjectionMs < ejection.baseEjectionMs) {
      throw new InvalidOptionError(
        OWNER,
        'outlierEjection.maxEjectionMs',
        `a number >= outlierEjection.baseEjectionMs (${ejection.baseEjectionMs})`,
        ejection.maxEjectionMs,
      );
    }
    this.#health = new Health<T>(
      {
        outlierEjection: ejection,
        panicThresholdPercent: resolved.panicThresholdPercent,
        slowStart: resolved.slowStart,
      },
      (nextChange) => {
        this.#version++;
        this.#nextChange = nextChange;
      },
      resolved.name,
    );
    this.#leaseTimeoutMs = resolved.leaseTimeoutMs;
    this.#decayMs = resolved.latencyDecayMs;
    this.#context = {
      version: 0,
      key: undefined,
      random: () => this.#randomFraction(),
      randomIndex: (n) => this.#randomIndex(n),
      usable: (state) =>
        state.available &&
        (this.#exclude === undefined || !setHas.call(this.#exclude, state.endpoint.id)),
      weightOf: (state) => state.effectiveWeight,
      latencyOf: (state) =>
        state.ewmaAt === -Infinity ? undefined : this.latencyCost(state, this.#now()),
    };
    this.update(endpoints ?? []);
  }

  /**
   * A balancer whose endpoints follow a live list of instances — a `keel/discovery`
   * `ServiceWatch` (`registry.watch(service)`), or anything with the same shape
   * ({@link FollowedWatch}). After every settled batch of changes it re-reads
   * `watch.instances(filter)` and passes the result to `update()`, so per-endpoint state
   * (in-flight counts, latency, ejections) survives the changes. Endpoint ids are instance ids;
   * `endpoint.data` is the instance, typed as always present.
   *
   * The balancer owns the watch: its `close()` (or `using`) closes the watch, and it closes
   * itself when the watch closes (a closed registry closes its watches). If the options are
   * invalid, the watch is closed before the error is thrown.
   *
   * @example
   * ```ts
   * import { LoadBalancer, leastRequest } from 'keel/balancer';
   * import { Registry } from 'keel/discovery';
   *
   * const registry = new Registry();
   * const orders = LoadBalancer.following(registry.watch('orders'), { strategy: leastRequest() });
   * await orders.ready;
   * const lease = orders.acquire();
   * if (lease) {
   *   const { host, port } = lease.endpoint.data; // the Instance, never undefined
   *   console.log(`http://${host}:${port}/orders`);
   *   lease.done({ ok: true });
   * }
   * orders.close(); // closes the watch too
   * await registry.close();
   * ```
   */
  static following<W extends FollowedWatch<FollowedInstance, never>>(
    watch: W,
    options: FollowingBalancerOptions<WatchInstance<W>, WatchFilter<W>>,
  ): FollowingBalancer<W> {
    try {
      return makeFollowing(watch, options);
    } catch (error) {
      watch.close();
      throw error;
    }
  }

  /** The balancer's name (see {@link LoadBalancerOptions.name}), if it has one. */
  get name(): string | undefined {
    return this.#name;
  }

  /** The strategy's name, e.g. `round-robin`. */
  get strategy(): string {
    return this.#strategy.name;
  }

  /** Number of endpoints (ejected ones included). */
  get size(): number {
    return this.#states.length;
  }

  /** Whether panic mode is on: too few usable endpoints, so ejections are ignored. */
  get panicking(): boolean {
    this.#tick(this.#clock.now());
    return this.#health.panicking;
  }

  /** The current endpoints, in the order last given to `update`. */
  endpoints(): Endpoint<T>[] {
    return this.#states.map((state) => state.endpoint);
  }

  /**
   * Replaces the endpoint list. Endpoints that stay keep their state (in-flight counts, latency,
   * ejection, rotation position); new ones start fresh (and slow-start, when configured);
   * removed ones are dropped and never handed out again. A lease on a removed endpoint can still
   * be finished; it just no longer counts anywhere.
   *
   * The update is a transaction: every entry is validated and the strategy's new state is built
   * before anything is replaced, so when it throws (a malformed or duplicate entry, weights
   * summing past {@link MAX_TOTAL_WEIGHT}, a list too large for the strategy) the balancer is
   * exactly as it was. When the shorter list would leave more endpoints ejected than
   * `outlierEjection.maxEjectionPercent` allows, the ones whose ejection would end first return
   * early (with a `returned` health event), so the cap holds after every operation.
   */
  update(endpoints: Iterable<EndpointSpec<T>>): void {
    const input: unknown = endpoints;
    if (typeof input !== 'object' || input === null || !(Symbol.iterator in input)) {
      throw new InvalidOptionError(OWNER, 'endpoints', 'an iterable of endpoints', input);
    }
    // 1. Validate every entry; nothing is touched yet.
    const resolved: Endpoint<T>[] = [];
    const seen = new Set<string>();
    let total = 0;
    forEachOf(OWNER, 'endpoints', input, (spec) => {
      const where = `endpoints[${resolved.length}]`;
      const endpoint = resolveEndpoint<T>(spec, where);
      if (seen.has(endpoint.id)) throw new DuplicateEndpointError(endpoint.id);
      seen.add(endpoint.id);
      total += endpoint.weight;
      if (total > MAX_TOTAL_WEIGHT) {
        throw new InvalidOptionError(
          OWNER,
          `${where}.weight`,
          `a weight that keeps the sum of all endpoint weights <= MAX_TOTAL_WEIGHT (${MAX_TOTAL_WEIGHT})`,
          endpoint.weight,
          `endpoint ${JSON.stringify(endpoint.id)}`,
        );
      }
      resolved.push(endpoint);
    });
    // Time-based changes due by now (returns, expired leases) happen first, as any other
    // operation would apply them.
    const now = this.#clock.now();
    this.#tick(now);
    // 2. Stage the new list. Endpoints that stay get their new description and position, which
    // the strategy reads while it rebuilds; remember the old ones to put them back on failure.
    const next: EndpointState<T>[] = [];
    const undo: { state: EndpointState<T>; endpoint: Endpoint<T>; index: number }[] = [];
    for (const endpoint of resolved) {
      const existing = this.#byId.get(endpoint.id);
      let state: EndpointState<T>;
      if (existing === undefined) {
        state = new EndpointState(endpoint, now);
      } else {
        state = existing;
        undo.push({ state, endpoint: state.endpoint, index: state.index });
        if (!sameEndpoint(existing.endpoint, endpoint)) state.endpoint = endpoint;
      }
      state.index = next.length;
      next.push(state);
    }
    // 3. Let the strategy build its state for the new list; built-in strategies build into
    // locals and swap at the end, so a throw leaves them on the old list.
    try {
      this.#strategy.reset(next);
    } catch (error) {
      for (const { state, endpoint, index } of undo) {
        state.endpoint = endpoint;
        state.index = index;
      }
      throw error;
    }
    // 4. Swap.
    this.#byId.clear();
    for (const state of next) this.#byId.set(state.endpoint.id, state);
    this.#states = next;
    // The health layer recounts ejections on the new list and applies the cap to it.
    this.#health.reset(next, now);
  }

  /**
   * Picks an endpoint without tracking the call; `undefined` when there is none (an empty list,
   * or every endpoint excluded). Never allocates.
   */
  pick(options?: PickOptions): Endpoint<T> | undefined {
    this.#nowCache = Number.NaN;
    return this.#pickState(options)?.endpoint;
  }

  /**
   * Picks an endpoint and counts the call in flight until `lease.done()`; `undefined` when
   * there is none. Use it with load-aware strategies and to feed outlier ejection.
   */
  acquire(options?: PickOptions): Lease<T> | undefined {
    this.#nowCache = Number.NaN;
    // Returns first, then expiries (#tick's order), as every other operation applies them.
    this.#tick(this.#now());
    const state = this.#pickState(options);
    if (state === undefined) return undefined;
    state.inFlight++;
    this.#strategy.loadChanged?.(state);
    const record = new LeaseRecord(state, this.#now(), this.#finishBound);
    this.#leases.push(record);
    return record;
  }

  /** Like {@link LoadBalancer.acquire}, but throws {@link NoEndpointError} instead of `undefined`. */
  acquireOrThrow(options?: PickOptions): Lease<T> {
    const lease = this.acquire(options);
    if (lease === undefined) {
      // The error path only: acquire() just brought ejections up to date.
      let ejected = 0;
      for (const state of this.#states) if (state.ejectedUntil !== NOT_EJECTED) ejected++;
      throw new NoEndpointError(this.#strategy.name, this.#states.length, {
        service: this.#name,
        ejected,
        panicking: this.#health.panicking,
      });
    }
    return lease;
  }

  /**
   * Picks an endpoint, runs `fn(endpoint, signal)` on it and always finishes the lease: with
   * `{ ok: true }` and the latency when `fn` succeeds, `{ ok: false }` and the latency when it
   * fails, and as cancelled (counted neither way) when the caller's signal aborted. Rejects with
   * {@link NoEndpointError} when there is nothing to pick, and with `signal.reason` as soon as
   * the signal aborts (checked first; `fn` may run on, unobserved, if it ignores its signal).
   *
   * @example
   * ```ts
   * import { LoadBalancer, p2c } from 'keel/balancer';
   *
   * const balancer = new LoadBalancer({
   *   strategy: p2c(),
   *   endpoints: [{ id: 'a', data: 'http://10.0.0.1' }, { id: 'b', data: 'http://10.0.0.2' }],
   * });
   * const tried = new Set<string>();
   * const answer = await balancer.run(
   *   async (endpoint, signal) => {
   *     tried.add(endpoint.id);
   *     return signal.aborted ? 'aborted' : `called ${String(endpoint.data)}`;
   *   },
   *   { exclude: tried },
   * );
   * console.log(answer.startsWith('called')); // true
   * ```
   */
  run<R>(
    fn: (endpoint: Endpoint<T>, signal: AbortSignal) => R | PromiseLike<R>,
    options?: RunOptions,
  ): Promise<R> {
    let signal: AbortSignal | undefined;
    let lease: Lease<T>;
    try {
      if (typeof fn !== 'function') {
        throw new InvalidOptionError(OWNER, 'fn', 'a function', fn, 'run(fn, options)');
      }
      // The pick checks the options object, `key` and `exclude` (as acquire's do).
      signal = typeof options === 'object' ? (options as RunOptions | null)?.signal : undefined;
      if (signal !== undefined && !isAbortSignal(signal)) {
        throw new InvalidOptionError(OWNER, 'signal', 'an AbortSignal', signal, 'run');
      }
      if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
      lease = this.acquireOrThrow(options);
    } catch (error) {
      return Promise.reject(error);
    }
    const clock = this.#clock;
    const started = clock.now();
    return new Promise<R>((resolve, reject) => {
      let off: (() => void) | undefined;
      const settle = (ok: boolean, cancelled: boolean): void => {
        off?.();
        off = undefined;
        lease.done({ ok, latencyMs: Math.max(0, clock.now() - started), cancelled });
      };
      if (signal !== undefined) {
        const caller = signal;
        off = onAbort(caller, () => {
          off = undefined;
          settle(false, true);
          reject(caller.reason as Error);
        });
      }
      let result: R | PromiseLike<R>;
      try {
        result = fn(lease.endpoint, signal ?? NEVER_SIGNAL);
      } catch (error) {
        settle(false, signal?.aborted === true);
        reject(error);
        return;
      }
      Promise.resolve(result).then(
        (value) => {
          settle(true, false);
          resolve(value);
        },
        (error: unknown) => {
          settle(false, signal?.aborted === true);
          reject(error);
        },
      );
    });
  }

  /** Observable state of one endpoint, or `undefined` for an unknown id. */
  stats(id: string): EndpointStats | undefined {
    // Time first: what it changes may reach a listener that changes the list.
    const now = this.#clock.now();
    this.#tick(now);
    const state = this.#byId.get(id);
    return state === undefined ? undefined : this.#statsOf(state, now);
  }

  /** Stats of every endpoint, in list order. */
  allStats(): EndpointStats[] {
    // One tick, then the list as it is after it (not a tick per endpoint: a health listener
    // that updates the list would leave holes in the answer).
    const now = this.#clock.now();
    this.#tick(now);
    return this.#states.map((state) => this.#statsOf(state, now));
  }

  #statsOf(state: EndpointState<T>, now: number): EndpointStats {
    return {
      id: state.endpoint.id,
      weight: state.endpoint.weight,
      effectiveWeight: state.effectiveWeight,
      inFlight: state.inFlight,
      latencyEwmaMs: this.latencyCost(state, now),
      consecutiveFailures: state.consecutiveFailures,
      ejectedUntil: state.ejectedUntil === NOT_EJECTED ? undefined : state.ejectedUntil,
      ejectedUntilTime:
        state.ejectedUntil === NOT_EJECTED ? undefined : wallTime() + (state.ejectedUntil - now),
      timesEjected: state.timesEjected,
      picks: state.picks,
      successes: state.successes,
      failures: state.failures,
    };
  }

  /** Subscribes to ejections and returns; the subscription is a disposable. */
  onHealthChange(listener: (change: HealthChange) => void): Subscription {
    if (typeof listener !== 'function') {
      throw new InvalidOptionError(OWNER, 'listener', 'a function', listener, 'onHealthChange');
    }
    return this.#health.changes.subscribe(listener);
  }

  /**
   * The latency estimate of an endpoint at time `now`: the peak-sensitive EWMA, decayed toward
   * zero for the time since its last sample (Finagle's PeakEwma). Used by `peakEwma()`.
   * @internal
   */
  latencyCost(state: EndpointState<T>, now: number): number {
    if (state.ewmaAt === -Infinity) return 0;
    const elapsed = now - state.ewmaAt;
    return elapsed <= 0 ? state.ewmaMs : state.ewmaMs * Math.exp(-elapsed / this.#decayMs);
  }

  // -------------------------------------------------------------------------------------------

  #pickState(options: PickOptions | undefined): EndpointState<T> | undefined {
    let key: PickOptions['key'];
    let exclude: PickOptions['exclude'];
    if (options !== undefined) {
      const given: unknown = options;
      if (typeof given !== 'object' || given === null) {
        throw new InvalidOptionError(
          OWNER,
          'options',
          'an options object { key?, exclude? }',
          given,
        );
      }
      // Each property is read once, so a getter cannot answer differently after the check.
      key = options.key;
      exclude = options.exclude;
      checkPickOptions(key, exclude);
    }
    // The clock is read only when something time-based is pending (an ejection or a ramp to
    // end) or a strategy asks: a plain pick reads none. Forgotten leases are expired by
    // acquire(), where the clock is read anyway. Callers reset #nowCache first.
    if (this.#nextChange !== Infinity) this.#tick(this.#now());
    const ctx = this.#context;
    ctx.key = key;
    let state: EndpointState<T> | undefined;
    if (exclude !== undefined && setSize.call(exclude) > 0) {
      // An exclusion changes what is usable for this one pick: bump the version before it (so
      // table-building strategies do not bake the exclusion in) and after it (so the next pick
      // rebuilds without it) — also when the pick throws (a bad injected RNG), so no exclusion
      // outlives its pick.
      ctx.version = ++this.#version;
      this.#exclude = exclude;
      try {
        state = this.#strategy.pick(ctx);
      } finally {
        this.#exclude = undefined;
        ctx.version = ++this.#version;
      }
      // Everything left was excluded: better a repeat than nothing.
      state ??= this.#strategy.pick(ctx);
    } else {
      ctx.version = this.#version;
      state = this.#strategy.pick(ctx);
    }
    if (state !== undefined) {
      state.picks++;
      // One property read when nobody listens (bench/diagnostics.bench.ts measures it).
      if (pickGuard.hasSubscribers) this.#publishPick(state);
    }
    return state;
  }

  #publishPick(state: EndpointState<T>): void {
    pickChannel.publish({
      balancer: this.#name,
      strategy: this.#strategy.name,
      id: state.endpoint.id,
      inFlight: state.inFlight,
      time: wallTime(),
    });
  }

  /** Next 31 random bits as a non-negative integer (a small integer: never boxed). */
  #next31(): number {
    let x = this.#rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#rng = x;
    return x >>> 1;
  }

  #randomIndex(n: number): number {
    const injected = this.#random;
    if (injected !== undefined) return Math.floor(this.#injectedFraction(injected) * n);
    return Math.floor((this.#next31() * n) / 2147483648);
  }

  #randomFraction(): number {
    const injected = this.#random;
    return injected !== undefined ? this.#injectedFraction(injected) : this.#next31() / 2147483648;
  }

  /**
   * A draw from the injected RNG, checked: a value outside [0, 1) (1, NaN, a negative number, a
   * string) would index past the endpoint list and crash a strategy with a plain TypeError, or
   * skew it silently. Thrown before the strategy changes anything, so the pick has no effect.
   */
  #injectedFraction(injected: () => number): number {
    const value: unknown = injected();
    if (typeof value !== 'number' || !(value >= 0 && value < 1)) {
      throw new InvalidOptionError(
        OWNER,
        'random',
        'a function returning numbers in [0, 1)',
        value,
        'the injected random() returned it',
      );
    }
    return value;
  }

  /** The clock reading for the current operation, read at most once per operation. */
  #now(): number {
    if (Number.isNaN(this.#nowCache)) this.#nowCache = this.#clock.now();
    return this.#nowCache;
  }

  /** `lease.done(outcome)`: validates the outcome, applies what time changed, then settles. */
  #finish(record: LeaseRecord<T>, outcome: Outcome): void {
    if (record.finished) return;
    const given: unknown = outcome;
    if (typeof given !== 'object' || given === null || typeof (given as Outcome).ok !== 'boolean') {
      throw new InvalidOptionError(
        OWNER,
        'outcome',
        'an object { ok: boolean, latencyMs?: number }',
        outcome,
        'lease.done(outcome)',
      );
    }
    const latency = outcome.latencyMs;
    if (
      latency !== undefined &&
      (typeof latency !== 'number' || !Number.isFinite(latency) || latency < 0)
    ) {
      throw new InvalidOptionError(
        OWNER,
        'outcome.latencyMs',
        'a finite number >= 0',
        latency,
        'lease.done(outcome)',
      );
    }
    const cancelled: unknown = outcome.cancelled;
    if (cancelled !== undefined && typeof cancelled !== 'boolean') {
      throw new InvalidOptionError(
        OWNER,
        'outcome.cancelled',
        'a boolean',
        cancelled,
        'lease.done(outcome)',
      );
    }
    const now = this.#clock.now();
    // Returns and lease expiries due by now come first, so whether this outcome can eject does
    // not depend on whether something else looked at the balancer in between.
    this.#tick(now);
    // It may have expired just now (counted as a failure): #tick changed what TS narrowed.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (record.finished) return;
    this.#settle(record, outcome.ok, latency, now, cancelled === true);
  }

  /** Releases a lease's in-flight count and records its outcome. */
  #settle(
    record: LeaseRecord<T>,
    ok: boolean,
    latency: number | undefined,
    now: number,
    cancelled = false,
  ): void {
    record.finished = true;
    const state = record.state;
    state.inFlight--;
    if (this.#byId.get(state.endpoint.id) !== state) return; // removed meanwhile: nothing to count
    this.#strategy.loadChanged?.(state);
    if (cancelled) {
      // An abandoned call says nothing about the endpoint's health. How long it had run is a
      // lower bound on its latency: news only when above the estimate (a hedge's loser was
      // slower than believed). Without it, hedging away from a slow endpoint would hide its
      // slowness from the latency-aware strategies, which would keep picking it.
      if (latency !== undefined && latency > this.latencyCost(state, now))
        this.#observeLatency(state, latency, now);
      return;
    }
    if (latency !== undefined) this.#observeLatency(state, latency, now);
    this.#health.record(state, ok, now);
  }

  /** Peak-EWMA update (Finagle PeakEwma): jump up to a slower sample, decay toward faster ones. */
  #observeLatency(state: EndpointState<T>, latencyMs: number, now: number): void {
    if (state.ewmaAt === -Infinity) {
      state.ewmaMs = latencyMs;
    } else {
      const current = this.latencyCost(state, now);
      if (latencyMs > current) {
        state.ewmaMs = latencyMs;
      } else {
        const elapsed = Math.max(0, now - state.ewmaAt);
        const w = Math.exp(-elapsed / this.#decayMs);
        state.ewmaMs = current * w + latencyMs * (1 - w);
      }
    }
    state.ewmaAt = now;
  }

  /**
   * Applies everything time has changed since the last call: returns and ramp steps first (the
   * health layer), then lease expiries (which may eject, so the cap must already count the
   * returns).
   */
  #tick(now: number): void {
    if (now >= this.#nextChange) this.#health.advance(now);
    this.#expireLeases(now);
  }

  #expireLeases(now: number): void {
    const leases = this.#leases;
    const cutoff = now - this.#leaseTimeoutMs;
    let head = this.#leaseHead;
    while (head < leases.length) {
      const record = leases[head];
      if (record !== undefined && !record.finished) {
        if (record.startedAt > cutoff) break;
        // Never finished: release its in-flight count and count it as a failure.
        this.#settle(record, false, undefined, now);
      }
      leases[head] = undefined;
      head++;
    }
    // Compact once the dead prefix dominates, so the queue stays proportional to live leases.
    if (head > 1024 && head * 2 > leases.length) {
      this.#leases = leases.slice(head);
      head = 0;
    }
    this.#leaseHead = head;
  }
}

/** Error code of {@link DuplicateEndpointError}. */
export const DUPLICATE_ENDPOINT = 'KEEL_DUPLICATE_ENDPOINT';

/** Two endpoints in one update share an id. */
export class DuplicateEndpointError extends KeelError {
  override readonly name: string = 'DuplicateEndpointError';
  declare readonly code: typeof DUPLICATE_ENDPOINT;
  /** The id that appears twice. */
  readonly id: string;
  constructor(id: string) {
    super(
      DUPLICATE_ENDPOINT,
      `${OWNER}: endpoint id ${JSON.stringify(id)} appears twice; ids must be unique`,
    );
    this.id = id;
  }
}

/**
 * True when `value` is a {@link NoEndpointError} from any copy of Keel: the check to make
 * before counting a failure against an endpoint or a breaker — there was no endpoint to call.
 *
 * @example
 * ```ts
 * import { LoadBalancer, isNoEndpointError, roundRobin } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({ strategy: roundRobin(), name: 'payments' });
 * try {
 *   balancer.acquireOrThrow();
 * } catch (error) {
 *   if (isNoEndpointError(error)) console.log(error.reason, error.service); // no-endpoints payments
 * }
 * ```
 */
export const isNoEndpointError = (value: unknown): value is NoEndpointError =>
  hasKeelCode<NoEndpointError>(value, NO_ENDPOINT);

/** True when `value` is a {@link DuplicateEndpointError} from any copy of Keel. */
export const isDuplicateEndpointError = (value: unknown): value is DuplicateEndpointError =>
  hasKeelCode<DuplicateEndpointError>(value, DUPLICATE_ENDPOINT);

/**
 * `Set.prototype.has` and the `size` getter, called on `exclude` directly: a subclass or an
 * object merely shaped like a Set cannot then throw or change its answer halfway through a
 * pick, after a strategy has started updating its state.
 */
// Taken unbound on purpose (the rule below guards against forgetting `this`; these are only
// ever invoked through `.call` with the Set as `this`).
/* eslint-disable @typescript-eslint/unbound-method */
const setHas: (this: ReadonlySet<string>, id: string) => boolean = Set.prototype.has;
const setSize = Object.getOwnPropertyDescriptor(Set.prototype, 'size')?.get as (
  this: ReadonlySet<string>,
) => number;
/* eslint-enable @typescript-eslint/unbound-method */

/** Validates the options of `pick` / `acquire` (only when given: a plain pick checks nothing). */
function checkPickOptions(key: unknown, exclude: unknown): void {
  if (key !== undefined && typeof key !== 'string' && !(key instanceof Uint8Array)) {
    throw new InvalidOptionError(OWNER, 'key', 'a string or Uint8Array', key);
  }
  if (exclude !== undefined && !isSet(exclude)) {
    throw new InvalidOptionError(OWNER, 'exclude', 'a Set of endpoint ids', exclude);
  }
}

/** A real Set (brand check: the intrinsic `size` getter throws for anything else, Proxies too). */
function isSet(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  try {
    setSize.call(value as ReadonlySet<string>);
    return true;
  } catch {
    return false;
  }
}

function resolveEndpoint<T>(spec: unknown, where: string): Endpoint<T> {
  return resolveNode<T>(OWNER, spec, where, false);
}

function sameEndpoint<T>(a: Endpoint<T>, b: Endpoint<T>): boolean {
  return a.weight === b.weight && a.zone === b.zone && a.data === b.data;
}

/**
 * What {@link LoadBalancer.following} needs of each instance it follows (a `keel/discovery`
 * `Instance` has all of it).
 */
export interface FollowedInstance {
  /** Becomes the endpoint id. */
  readonly id: string;
  /** Becomes the endpoint weight. */
  readonly weight?: number | undefined;
  /** Becomes the endpoint zone. */
  readonly zone?: string | undefined;
}

/**
 * The live list {@link LoadBalancer.following} follows: what it uses of a `keel/discovery`
 * `ServiceWatch`, declared here so `keel/balancer` needs no code from `keel/discovery`.
 *
 * @typeParam I - The instances in the list.
 * @typeParam F - The filter `instances()` takes.
 */
export interface FollowedWatch<I extends FollowedInstance = FollowedInstance, F = object> {
  /** What the list is of (the service name); the balancer's default name. */
  readonly service: string;
  /** Resolves once the list is first known. */
  readonly ready: Promise<void>;
  /** Whether the watch is closed; the balancer is closed with it. */
  readonly closed: boolean;
  /** The current instances that match `filter`. */
  instances(filter?: F): Iterable<I>;
  /** Calls `listener` after each batch of changes has been applied. */
  onSettled(listener: () => void): Subscription;
  /** Stops the watch; the balancer calls it from its own `close()`. */
  close(): void;
}

/** The instance type of a {@link FollowedWatch}. */
export type WatchInstance<W> = W extends FollowedWatch<infer I, never> ? I : never;

/** The filter type a {@link FollowedWatch}'s `instances()` takes. */
export type WatchFilter<W> =
  W extends FollowedWatch<FollowedInstance, infer F> ? NonNullable<F> : never;

/**
 * Options of {@link LoadBalancer.following}: the {@link LoadBalancerOptions} (but `endpoints`,
 * which come from the watch) plus which instances to use.
 */
export type FollowingBalancerOptions<I = unknown, F = object> = Omit<
  LoadBalancerOptions<I>,
  'endpoints'
> & {
  /**
   * Which instances become endpoints: passed to `watch.instances()`, with `status: 'up'` unless
   * it names a status (draining and down instances get no new traffic). A `keel/discovery`
   * watch checks it and throws an `InvalidOptionError` for an unknown field or status.
   * @defaultValue `{ status: 'up' }`
   */
  readonly filter?: F | undefined;
};

/** An endpoint of a {@link FollowingBalancer}: its `data` is always the instance it stands for. */
export type FollowingEndpoint<I> = Endpoint<I> & {
  /** The instance behind the endpoint, as the watch last saw it. */
  readonly data: I;
};

/** A {@link FollowingBalancer}'s lease: its `endpoint.data` is always the instance. */
export type FollowingLease<I> = Lease<I> & {
  /** The endpoint picked for this call, with its instance. */
  readonly endpoint: FollowingEndpoint<I>;
};

/** An endpoint spec carrying its instance: what {@link FollowingBalancer.update} takes. */
export type FollowingEndpointSpec<I> = EndpointSpec<I> & {
  /** The instance the endpoint stands for. */
  readonly data: I;
};

/** Builds a {@link FollowingBalancer} (its constructor is private); set by its static block. */
let makeFollowing: <W extends FollowedWatch<FollowedInstance, never>>(
  watch: W,
  options: FollowingBalancerOptions<WatchInstance<W>, WatchFilter<W>>,
) => FollowingBalancer<W>;

/**
 * A {@link LoadBalancer} whose endpoints follow a watch's live list of instances: made by
 * {@link LoadBalancer.following}. Dispose it (or call `close()`) to stop following; that closes
 * the watch too.
 *
 * Its endpoints and leases are typed {@link FollowingEndpoint} / {@link FollowingLease}, so
 * `lease.endpoint.data` is the instance without an `undefined` check.
 *
 * @typeParam W - The watch followed (a `keel/discovery` `ServiceWatch`); its instances are
 * the endpoints' `data`.
 */
export class FollowingBalancer<W extends FollowedWatch<FollowedInstance, never> = FollowedWatch>
  extends LoadBalancer<WatchInstance<W>>
  implements Disposable, AsyncDisposable
{
  /** The watch the endpoint list follows (closed with the balancer). */
  readonly watch: W;
  readonly #filter: object;
  readonly #subscription: Subscription;
  #closed = false;

  static {
    makeFollowing = (watch, options) => new FollowingBalancer(watch, options);
  }

  private constructor(
    watch: W,
    options: FollowingBalancerOptions<WatchInstance<W>, WatchFilter<W>>,
  ) {
    const input: unknown = options;
    if (typeof input !== 'object' || input === null) {
      throw new InvalidOptionError('LoadBalancer.following', 'options', 'an object', input);
    }
    const { filter, ...rest } = options;
    const given: unknown = filter;
    if (given !== undefined && (typeof given !== 'object' || given === null)) {
      throw new InvalidOptionError(
        'LoadBalancer.following',
        'filter',
        'an object { status?, zone?, … }',
        filter,
      );
    }
    super({ name: watch.service, ...rest });
    this.watch = watch;
    this.#filter = { status: 'up', ...filter };
    this.#refresh();
    // Each applied batch (log entries, a resync) re-derives the endpoint list once; update()
    // keeps the state of endpoints that stay.
    this.#subscription = watch.onSettled(() => {
      this.#refresh();
    });
  }

  /** Resolves once the watch's first list is in. */
  get ready(): Promise<void> {
    return this.watch.ready;
  }

  /** Whether the balancer is closed (by {@link FollowingBalancer.close}, or its watch closed). */
  get closed(): boolean {
    return this.#closed || this.watch.closed;
  }

  /**
   * Stops following and closes the watch. Afterwards `pick()`, `acquire()`, `acquireOrThrow()`,
   * `run()` and `endpoints()` throw a `ClosedError` rather than pick from a list nobody updates;
   * leases already out can still report `done()`. Closing the watch (or the registry it came
   * from) closes the balancer too. Safe to call twice.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#subscription.dispose();
    this.watch.close();
  }

  /** Throws a `ClosedError` naming `operation` once closed. */
  #open(operation: string): void {
    if (this.#closed || this.watch.closed) {
      throw new ClosedError(`FollowingBalancer ${JSON.stringify(this.watch.service)}`, operation);
    }
  }

  /** {@link FollowingBalancer.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** {@link FollowingBalancer.close}, for `await using` (like every closable Keel object). */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  // The overrides below only narrow types: every endpoint comes from #refresh (or update(),
  // typed to require `data`), so `data` is always the instance.

  /** The current endpoints (in the watch's order); each `data` is the instance. */
  override endpoints(): FollowingEndpoint<WatchInstance<W>>[] {
    this.#open('endpoints');
    return super.endpoints() as FollowingEndpoint<WatchInstance<W>>[];
  }

  /** {@link LoadBalancer.pick}, with the instance as `data`. */
  override pick(options?: PickOptions): FollowingEndpoint<WatchInstance<W>> | undefined {
    this.#open('pick');
    return super.pick(options) as FollowingEndpoint<WatchInstance<W>> | undefined;
  }

  /** {@link LoadBalancer.acquire}, with the instance as `lease.endpoint.data`. */
  override acquire(options?: PickOptions): FollowingLease<WatchInstance<W>> | undefined {
    this.#open('acquire');
    return super.acquire(options) as FollowingLease<WatchInstance<W>> | undefined;
  }

  /** {@link LoadBalancer.acquireOrThrow}, with the instance as `lease.endpoint.data`. */
  override acquireOrThrow(options?: PickOptions): FollowingLease<WatchInstance<W>> {
    this.#open('acquireOrThrow');
    return super.acquireOrThrow(options) as FollowingLease<WatchInstance<W>>;
  }

  /**
   * Replaces the endpoint list. The balancer does this itself after every batch of changes in
   * the watch (and a later batch overwrites a list set by hand); each endpoint must carry its
   * instance as `data`.
   */
  override update(endpoints: Iterable<FollowingEndpointSpec<WatchInstance<W>>>): void {
    super.update(endpoints);
  }

  #refresh(): void {
    const endpoints: FollowingEndpointSpec<WatchInstance<W>>[] = [];
    const watch = this.watch as unknown as FollowedWatch<WatchInstance<W> & FollowedInstance>;
    for (const instance of watch.instances(this.#filter)) {
      endpoints.push({
        id: instance.id,
        weight: instance.weight,
        zone: instance.zone,
        data: instance,
      });
    }
    this.update(endpoints);
  }
}
