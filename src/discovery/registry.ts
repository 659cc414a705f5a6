/**
 * `Registry`: the one object a service uses to register itself and to see its peers.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import {
  ClosedError,
  EventChannel,
  InvalidOptionError,
  booleanOption,
  guardedOption,
  isClock,
  isRandomSource,
  numberOption,
  onShutdownSignals,
  signalsOption,
  resolveOptions,
  sleep,
  systemClock,
  throwIfAborted,
  log,
  loggerOption,
  wallTime,
  type Clock,
  type Logger,
  type Subscription,
  type Timer,
} from '../core/index.js';
import {
  epochChangedChannel,
  freshChannel,
  heartbeatFailedChannel,
  quarantinedChannel,
  registerChannel,
  reregisteredChannel,
  staleChannel,
  traced,
  viewChangedChannel,
} from './channels.js';
import type {
  FollowingEndpoint,
  FollowingEndpointSpec,
  FollowingLease,
} from '../balancer/index.js';
import type { DiscoveryBackend } from './backend.js';
import { UnknownServiceError } from './errors.js';
import { checkFilter, matchesFilter, type InstanceFilter } from './filter.js';
import {
  encodeInstance,
  isServiceName,
  parseInstance,
  type Instance,
  type InstanceSpec,
} from './instance.js';
import { MemoryBackend } from './memory.js';
import { bounded, callOptions } from './ops.js';
import { Registration, type RegistrationSettings } from './registration.js';
import {
  ServiceView,
  type QuarantinedRecord,
  type StaleChange,
  type ViewSettings,
  type WatchError,
} from './view.js';
import { ServiceWatch } from './watch.js';

/** Options of {@link Registry}. */
export interface RegistryOptions {
  /**
   * The store. A `RedisBackend` for services in several processes; by default a private
   * `MemoryBackend` (single-process apps, tests). @defaultValue a new `MemoryBackend`
   */
  readonly backend?: DiscoveryBackend | undefined;
  /** Default ttl of registrations. @defaultValue 10000 */
  readonly ttlMs?: number | undefined;
  /** Heartbeat interval as a fraction of the ttl. @defaultValue 1/3 */
  readonly heartbeatFraction?: number | undefined;
  /** Heartbeat jitter: each interval is scaled by a random factor in 1 ± this. @defaultValue 0.2 */
  readonly heartbeatJitter?: number | undefined;
  /**
   * How often this client runs the reaper over the services it watches or registers in (jittered
   * ± 20 %); 0 leaves reaping to other clients. Any client may reap: the script is idempotent.
   * @defaultValue 1000
   */
  readonly reapIntervalMs?: number | undefined;
  /** Resyncs after the first start after a random delay up to this, so clients interrupted together do not stampede. @defaultValue 500 */
  readonly resyncJitterMs?: number | undefined;
  /** First retry delay after a failed store call (full jitter, doubling). @defaultValue 100 */
  readonly retryBaseMs?: number | undefined;
  /** Longest retry delay. @defaultValue 5000 */
  readonly retryMaxMs?: number | undefined;
  /**
   * When a resync finds the store lost its data (a new epoch), instances missing from it stay in
   * views this long, to give them time to re-register, before they are removed. The time counts
   * from the last moment nobody could have re-registered: it starts again when the store loses
   * its data again, when the service's data starts again in a new epoch, and when the store is
   * readable again after an outage. 0 removes them at once. @defaultValue 15000
   */
  readonly dataLossGraceMs?: number | undefined;
  /** Timeout of each store call. @defaultValue 2000 */
  readonly operationTimeoutMs?: number | undefined;
  /** Services to watch from the start (and, with `strict`, the only ones allowed). @defaultValue [] */
  readonly services?: readonly string[] | undefined;
  /**
   * Reject service names not in `services` with {@link UnknownServiceError} (catches typos at
   * the call). Without it, any name is watched, and one the store has never had is reported
   * once through {@link Registry.onError} (an `UnknownServiceError`, reason
   * `never-registered`). @defaultValue false
   */
  readonly strict?: boolean | undefined;
  /** Clock for heartbeats, reaping and retries. @defaultValue `systemClock` */
  readonly clock?: Clock | undefined;
  /** Random numbers in [0, 1) for jitter. @defaultValue `Math.random` */
  readonly random?: (() => number) | undefined;
  /**
   * Where operational events are logged (pino-style `{ debug, info, warn, error }`, called as
   * `(obj, msg)`): a quarantined record, a view going stale or fresh, a resync, a store that
   * lost its data (a new epoch), a re-registration, a failed heartbeat or store call. Never a
   * line per `discover()` or per change. @defaultValue a silent logger
   */
  readonly logger?: Logger | undefined;
}

/** One watched service in {@link RegistryStats}. */
export interface ViewStats {
  /** The service. */
  readonly service: string;
  /** Whether its first snapshot is in. */
  readonly ready: boolean;
  /** Instances in the view (any status). */
  readonly instances: number;
  /** Instances `up`. */
  readonly up: number;
  /** Whether the view may be out of date now. */
  readonly stale: boolean;
  /** Since when it has been stale (epoch ms); `undefined` when fresh. */
  readonly staleSince: number | undefined;
  /** The store revision and epoch the view reflects. */
  readonly revision: number;
  /** The store epoch the view reflects. */
  readonly epoch: string;
  /** Snapshots it has taken (the first included). */
  readonly resyncs: number;
  /** Instances kept through a data loss that have not re-registered yet. */
  readonly retained: number;
  /** Open `watch()` handles (balancers following a watch included). */
  readonly watchers: number;
}

/** A snapshot of a registry's numbers, from {@link Registry.stats}. */
export interface RegistryStats {
  /** Wall-clock time of the snapshot (epoch ms). */
  readonly time: number;
  /** Every watched service, by name order. */
  readonly views: readonly ViewStats[];
  /** Views stale now. */
  readonly staleViews: number;
  /** Registrations made here and still open. */
  readonly registrations: number;
  /** Snapshots taken by every view so far, closed views included. */
  readonly resyncs: number;
  /** Records and log entries quarantined so far. */
  readonly quarantined: number;
  /** Background heartbeats that failed so far. */
  readonly heartbeatFailures: number;
  /** Registrations written again after the store lost them. */
  readonly reregistrations: number;
  /** Store data losses seen (a view's epoch changed). */
  readonly epochChanges: number;
  /** Background failures reported through `onError` so far. */
  readonly errors: number;
}

/** Options of {@link Registry.register}. */
export interface RegisterOptions {
  /** The registration's ttl. @defaultValue the registry's `ttlMs` */
  readonly ttlMs?: number | undefined;
  /** Aborts the registration: rejects with `signal.reason`. */
  readonly signal?: AbortSignal | undefined;
}

/** Options of {@link Registry.deregisterOnSignals}. */
export interface SignalOptions {
  /** @defaultValue `['SIGTERM', 'SIGINT']` */
  readonly signals?: readonly NodeJS.Signals[] | undefined;
  /**
   * Before deregistering, mark every registration `draining` and wait this long, so peers stop
   * sending new work while in-flight requests finish. @defaultValue 0
   */
  readonly drainMs?: number | undefined;
  /**
   * After cleanup, re-raise the signal so the process ends as it would have — unless other
   * listeners for it exist (they own the shutdown then). @defaultValue true
   */
  readonly exit?: boolean | undefined;
}

/** A background failure somewhere in the registry (a heartbeat, a reap, a view). */
export interface RegistryError {
  /** What failed, e.g. `reap orders` or `heartbeat orders/orders-1`. */
  readonly operation: string;
  /** The failure, usually a {@link RegistryUnavailableError}. */
  readonly error: Error;
}

const OWNER = 'Registry';

const isBackend = (value: unknown): value is DiscoveryBackend =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as DiscoveryBackend).register === 'function' &&
  typeof (value as DiscoveryBackend).snapshot === 'function' &&
  typeof (value as DiscoveryBackend).follow === 'function';

const isServiceList = (value: unknown): value is readonly string[] =>
  Array.isArray(value) && value.every(isServiceName);

const spec = {
  backend: guardedOption(isBackend, 'a DiscoveryBackend (MemoryBackend or RedisBackend)', {
    optional: true,
  }),
  ttlMs: numberOption({ min: 10, max: 86_400_000, default: 10_000 }),
  heartbeatFraction: numberOption({ min: 0.01, max: 0.9, default: 1 / 3 }),
  heartbeatJitter: numberOption({ min: 0, max: 0.5, default: 0.2 }),
  reapIntervalMs: numberOption({ min: 0, max: 3_600_000, default: 1000 }),
  resyncJitterMs: numberOption({ min: 0, max: 600_000, default: 500 }),
  retryBaseMs: numberOption({ min: 1, max: 600_000, default: 100 }),
  retryMaxMs: numberOption({ min: 1, max: 3_600_000, default: 5000 }),
  dataLossGraceMs: numberOption({ min: 0, max: 86_400_000, default: 15_000 }),
  operationTimeoutMs: numberOption({ min: 1, max: 600_000, default: 2000 }),
  services: guardedOption(isServiceList, 'an array of service names', { default: [] }),
  strict: booleanOption({ default: false }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  logger: loggerOption(),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
};

type Resolved = ReturnType<typeof resolveOptions<typeof spec>>;

interface ViewEntry {
  readonly view: ServiceView;
  /** Open watch handles. */
  refs: number;
  /** Kept open for the registry's life (discover(), `services`). */
  pinned: boolean;
  /** Wall-clock time the view went stale, or undefined while fresh. */
  staleSince: number | undefined;
  /** The epoch and snapshot count at the last settled batch, to tell epoch changes and resyncs. */
  epoch: string;
  resyncs: number;
}

/**
 * The service-registry client: `register` an instance (a self-heartbeating
 * {@link Registration}), `discover` instances from a local cache, `watch` a service's live view,
 * and follow a watch with a `keel/balancer` balancer (`LoadBalancer.following(watch, …)`).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { LoadBalancer, leastRequest } from 'keel/balancer';
 * import { RedisBackend, Registry } from 'keel/discovery';
 *
 * const backend = new RedisBackend({ client: new Redis({ lazyConnect: true }) });
 * const registry = new Registry({ backend });
 * await using me = await registry.register({ service: 'orders', host: '10.0.0.5', port: 8080 });
 * const payments = LoadBalancer.following(registry.watch('payments'), { strategy: leastRequest() });
 * await payments.ready;
 * const lease = payments.acquire(); // lease?.endpoint.data is the payments Instance
 * lease?.done({ ok: true, latencyMs: 12 });
 * payments.close();
 * await registry.close();
 * await backend.close();
 * ```
 */
export class Registry implements AsyncDisposable {
  readonly #o: Resolved;
  readonly #backend: DiscoveryBackend;
  readonly #ownsBackend: boolean;
  readonly #views = new Map<string, ViewEntry>();
  readonly #registrations = new Set<Registration>();
  readonly #known: Set<string>;
  readonly #errors = new EventChannel<RegistryError>();
  readonly #quarantined = new EventChannel<QuarantinedRecord>();
  readonly #viewSettings: ViewSettings;
  readonly #registrationSettings: RegistrationSettings;
  #reapTimer: Timer | undefined;
  #reaping = false;
  // Totals for stats(), counted where the events are told.
  #resyncsOfClosedViews = 0;
  #quarantinedTotal = 0;
  #heartbeatFailures = 0;
  #reregistrations = 0;
  #epochChanges = 0;
  #errorsTotal = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Removers of the handlers `deregisterOnSignals()` installed (close removes them). */
  readonly #signalHandlers = new Set<() => void>();

  /**
   * Validates `options` (throwing `InvalidOptionError` naming a bad one) and starts watching
   * the services listed in `services`. Nothing is registered until {@link Registry.register}.
   */
  constructor(options: RegistryOptions = {}) {
    const o = resolveOptions(OWNER, options, spec);
    if (o.retryMaxMs < o.retryBaseMs) {
      throw new InvalidOptionError(
        OWNER,
        'retryMaxMs',
        `a number >= retryBaseMs (${o.retryBaseMs})`,
        o.retryMaxMs,
      );
    }
    this.#o = o;
    this.#ownsBackend = o.backend === undefined;
    this.#backend = o.backend ?? new MemoryBackend({ clock: o.clock });
    this.#known = new Set(o.services);
    this.#viewSettings = {
      clock: o.clock,
      random: o.random,
      resyncJitterMs: o.resyncJitterMs,
      retryBaseMs: o.retryBaseMs,
      retryMaxMs: o.retryMaxMs,
      dataLossGraceMs: o.dataLossGraceMs,
      operationTimeoutMs: o.operationTimeoutMs,
    };
    this.#registrationSettings = {
      backend: this.#backend,
      clock: o.clock,
      random: o.random,
      heartbeatFraction: o.heartbeatFraction,
      heartbeatJitter: o.heartbeatJitter,
      operationTimeoutMs: o.operationTimeoutMs,
      retryBaseMs: o.retryBaseMs,
      reportError: (error) => {
        this.#reportError('heartbeat', error);
      },
      reregistered: (r) => {
        this.#reregistrations++;
        const time = wallTime();
        reregisteredChannel.publish({ service: r.service, id: r.id, time });
        log(
          this.#o.logger,
          'warn',
          { service: r.service, id: r.id, time },
          `discovery: ${r.service}/${r.id} was lost by the store and registered again`,
        );
      },
      heartbeatFailed: (r, error, failures) => {
        this.#heartbeatFailures++;
        if (heartbeatFailedChannel.active) {
          heartbeatFailedChannel.publish({
            service: r.service,
            id: r.id,
            failures,
            error,
            time: wallTime(),
          });
        }
      },
    };
    for (const service of o.services) this.#entry(service).pinned = true;
  }

  /** The store. */
  get backend(): DiscoveryBackend {
    return this.#backend;
  }

  /** Whether {@link Registry.close} has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Registrations made through this registry and still open. */
  registrations(): Registration[] {
    return [...this.#registrations];
  }

  /**
   * Registers an instance and returns its self-maintaining {@link Registration}. Throws
   * {@link InvalidInstanceError} for bad data (naming the field) and
   * {@link RegistryUnavailableError} when the store cannot be reached.
   */
  async register(instance: InstanceSpec, options?: RegisterOptions): Promise<Registration> {
    this.#open('register');
    const { ttlMs = this.#o.ttlMs, signal } = callOptions('Registry.register', options);
    throwIfAborted(signal);
    const parsed = parseInstance(instance, 'Registry.register');
    if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 10) {
      throw new InvalidOptionError(OWNER, 'ttlMs', 'a finite number >= 10', ttlMs, 'register()');
    }
    this.#checkKnown(parsed.service, true);
    const token = randomUUID();
    const o = this.#o;
    await traced(
      registerChannel,
      () => ({ service: parsed.service, id: parsed.id, ttlMs, time: wallTime() }),
      () =>
        bounded(
          `register ${parsed.service}/${parsed.id}`,
          o.clock,
          o.operationTimeoutMs,
          signal,
          (s) =>
            this.#backend.register(
              parsed.service,
              parsed.id,
              encodeInstance(parsed),
              token,
              ttlMs,
              { signal: s },
            ),
          // The id is often the instance's host:port: say which address is the store's.
          this.#backend,
        ),
    );
    this.#open('register');
    const registration = Registration.started(
      this.#registrationSettings,
      parsed,
      token,
      ttlMs,
      (r) => this.#registrations.delete(r),
    );
    this.#registrations.add(registration);
    this.#known.add(parsed.service);
    this.#startReaper();
    return registration;
  }

  /**
   * The instances of `service` from the local cache — only those `up` unless `filter.status`
   * says otherwise (`'any'` for all). Never waits
   * and never throws for an unreachable store: during an outage it returns the last known
   * instances (see `watch(service).stale`). The first call for a service starts watching it
   * (until the registry closes) and returns `[]` until the first snapshot is in; `await
   * registry.ready(service)` first when that matters.
   */
  discover(service: string, filter?: InstanceFilter): readonly Instance[] {
    this.#open('discover');
    let entry = this.#views.get(service);
    if (entry === undefined || !entry.pinned) {
      this.#checkService(service);
      entry = this.#entry(service);
      entry.pinned = true;
    }
    // The common call — no filter — returns the view's cached, frozen list of `up` instances.
    if (filter === undefined) return entry.view.upList();
    const checked = checkFilter('Registry.discover', filter) ?? {};
    return entry.view.list().filter((i) => matchesFilter(i, { status: 'up', ...checked }));
  }

  /** Starts watching `service` (kept until close) and resolves once its first snapshot is in. */
  async ready(
    service: string,
    options?: { readonly signal?: AbortSignal | undefined },
  ): Promise<void> {
    this.#open('ready');
    const checked = callOptions('Registry.ready', options);
    this.#checkService(service);
    const entry = this.#entry(service);
    entry.pinned = true;
    const watch = ServiceWatch.of(entry.view, () => undefined);
    await watch.whenReady(checked);
  }

  /** A live view of `service`. Close it when done (or `using`). */
  watch(service: string): ServiceWatch {
    this.#open('watch');
    this.#checkService(service);
    const entry = this.#entry(service);
    entry.refs++;
    let released = false;
    return ServiceWatch.of(entry.view, () => {
      if (released) return;
      released = true;
      entry.refs--;
      this.#maybeDrop(service, entry);
    });
  }

  /**
   * Background failures: heartbeats, reaps and views that failed (all keep retrying) — and, on
   * a registry that is not `strict`, a service asked about that the store has never had (an
   * {@link UnknownServiceError}, reason `never-registered`, once per service: a misspelt name?).
   */
  onError(listener: (error: RegistryError) => void): Subscription {
    return this.#errors.subscribe(listener);
  }

  /** Malformed records found in any view of this registry. */
  onQuarantined(listener: (record: QuarantinedRecord) => void): Subscription {
    return this.#quarantined.subscribe(listener);
  }

  /**
   * A snapshot of the registry's numbers: every watched view (size, staleness and since when,
   * revision, epoch, resyncs, instances retained through a data loss) and the totals of what
   * happened in the background (resyncs, quarantined records, failed heartbeats,
   * re-registrations, data losses, errors). Cheap enough for every metrics scrape.
   */
  stats(): RegistryStats {
    const views: ViewStats[] = [];
    let resyncs = this.#resyncsOfClosedViews;
    let staleViews = 0;
    for (const [service, entry] of this.#views) {
      const view = entry.view;
      resyncs += view.resyncs;
      if (view.stale) staleViews++;
      views.push({
        service,
        ready: view.isReady,
        instances: view.list().length,
        up: view.upList().length,
        stale: view.stale,
        staleSince: view.stale ? entry.staleSince : undefined,
        revision: view.revision,
        epoch: view.epoch,
        resyncs: view.resyncs,
        retained: view.retainedIds().length,
        watchers: entry.refs,
      });
    }
    views.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
    return {
      time: wallTime(),
      views,
      staleViews,
      registrations: this.#registrations.size,
      resyncs,
      quarantined: this.#quarantinedTotal,
      heartbeatFailures: this.#heartbeatFailures,
      reregistrations: this.#reregistrations,
      epochChanges: this.#epochChanges,
      errors: this.#errorsTotal,
    };
  }

  /** Runs the reaper once over every service of interest now; resolves how many it removed. */
  async reap(options?: { readonly signal?: AbortSignal | undefined }): Promise<number> {
    this.#open('reap');
    const { signal } = callOptions('Registry.reap', options);
    let removed = 0;
    for (const service of this.#interest()) {
      removed += await bounded(
        `reap ${service}`,
        this.#o.clock,
        this.#o.operationTimeoutMs,
        signal,
        (s) => this.#backend.reap(service, { signal: s }),
        this.#backend,
      );
    }
    return removed;
  }

  /**
   * On SIGTERM/SIGINT: optionally drain (mark every registration `draining` and wait), then
   * deregister everything and close the registry; then let the signal end the process as it
   * would have. Opt-in; dispose the returned subscription to remove the handlers.
   */
  deregisterOnSignals(options: SignalOptions = {}): Subscription {
    this.#open('deregisterOnSignals');
    const o = resolveOptions('Registry.deregisterOnSignals', options, {
      signals: signalsOption,
      drainMs: numberOption({ min: 0, max: 3_600_000, default: 0 }),
      exit: booleanOption({ default: true }),
    });
    const shutdown = async (): Promise<void> => {
      if (o.drainMs > 0) {
        await Promise.allSettled(this.registrations().map((r) => r.drain()));
        await sleep(o.drainMs, { clock: this.#o.clock });
      }
      await this.close();
    };
    return onShutdownSignals(o.signals, o.exit, shutdown, this.#signalHandlers);
  }

  /**
   * Deregisters every registration made here (best effort; failures go to `onError`), closes
   * every view — and so every watch made here, and the balancers following them —, stops the reaper and removes the
   * handlers of {@link Registry.deregisterOnSignals}. Closes the backend only if the registry
   * created it (a backend you passed is yours to close, after the registry). Afterwards its
   * methods throw a `ClosedError`. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** {@link Registry.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ------------------------------------------------------------------------------------------

  async #close(): Promise<void> {
    this.#closed = true;
    for (const remove of [...this.#signalHandlers]) remove();
    this.#reapTimer?.cancel();
    this.#reapTimer = undefined;
    await Promise.allSettled(
      [...this.#registrations].map(async (r) => {
        try {
          await r.deregister();
        } catch (error) {
          this.#reportError(`deregister ${r.service}/${r.id}`, error as Error);
        }
      }),
    );
    for (const entry of this.#views.values()) entry.view.close();
    this.#views.clear();
    if (this.#ownsBackend) await this.#backend.close();
  }

  /** Throws a `ClosedError` naming `operation` once the registry is closed. */
  #open(operation: string): void {
    if (this.#closed) throw new ClosedError(OWNER, operation);
  }

  #checkService(service: unknown): void {
    if (!isServiceName(service)) {
      throw new InvalidOptionError(
        OWNER,
        'service',
        'a service name (letters, digits, ".", "_", "-")',
        service,
      );
    }
    this.#checkKnown(service, false);
  }

  #checkKnown(service: string, registering: boolean): void {
    if (!this.#o.strict || this.#known.has(service)) return;
    if (registering && this.#o.services.length === 0) return;
    throw new UnknownServiceError(service, [...this.#known].sort());
  }

  #entry(service: string): ViewEntry {
    let entry = this.#views.get(service);
    if (entry === undefined) {
      const view = new ServiceView(service, this.#backend, this.#viewSettings);
      view.errors.subscribe((e: WatchError) => {
        this.#reportError(`watch ${e.service}`, e.error);
      });
      const created: ViewEntry = {
        view,
        refs: 0,
        pinned: false,
        staleSince: undefined,
        epoch: '',
        resyncs: 0,
      };
      // The view's events, told from here to the registry's typed events, the diagnostics
      // channels and the logger (view.ts keeps to the view; see channels.ts for the names).
      view.quarantined.subscribe((record) => {
        this.#onQuarantined(record);
      });
      view.staleChanged.subscribe((change) => {
        this.#onStaleChange(created, change);
      });
      view.settled.subscribe(() => {
        this.#onSettled(created);
      });
      entry = created;
      this.#views.set(service, entry);
      if (!this.#o.strict) {
        void view.ready.then(() => {
          this.#checkExists(view);
        });
      }
      view.start();
      this.#startReaper();
    }
    return entry;
  }

  /**
   * A non-strict registry watches any name it is given, so a misspelt one would stay `[]` in
   * silence: once its first snapshot is in, a service the store has never had (no epoch: not
   * one write since the store began or lost its data) that this registry neither declared nor
   * registered is reported, once per view, through `onError`.
   */
  #checkExists(view: ServiceView): void {
    const service = view.service;
    if (this.#closed || view.closed || view.epoch !== '' || view.list().length > 0) return;
    if (this.#known.has(service)) return;
    this.#errors.emit({
      operation: `watch ${service}`,
      error: new UnknownServiceError(service, [...this.#known].sort(), 'never-registered'),
    });
  }

  #maybeDrop(service: string, entry: ViewEntry): void {
    if (entry.refs > 0 || entry.pinned || this.#views.get(service) !== entry) return;
    this.#views.delete(service);
    this.#resyncsOfClosedViews += entry.view.resyncs;
    entry.view.close();
  }

  /** A background failure: counted, logged, told to `onError` listeners. */
  #reportError(operation: string, error: Error): void {
    this.#errorsTotal++;
    log(
      this.#o.logger,
      'warn',
      { operation, err: error },
      `discovery: ${operation} failed: ${error.message}`,
    );
    this.#errors.emit({ operation, error });
  }

  #onQuarantined(record: QuarantinedRecord): void {
    this.#quarantinedTotal++;
    const time = wallTime();
    if (quarantinedChannel.active) quarantinedChannel.publish({ ...record, time });
    log(
      this.#o.logger,
      'warn',
      { ...record, time },
      `discovery: quarantined ${record.service}/${record.id}: ${record.reason}`,
    );
    this.#quarantined.emit(record);
  }

  #onStaleChange(entry: ViewEntry, change: StaleChange): void {
    const time = wallTime();
    const service = change.service;
    if (change.stale) {
      entry.staleSince = time;
      if (staleChannel.active) staleChannel.publish({ service, reason: change.reason, time });
      log(
        this.#o.logger,
        'warn',
        { service, reason: change.reason, time },
        `discovery: view of ${service} is stale (${change.reason ?? 'unknown'})`,
      );
      return;
    }
    const staleMs = entry.staleSince === undefined ? 0 : time - entry.staleSince;
    entry.staleSince = undefined;
    if (freshChannel.active) freshChannel.publish({ service, staleMs, time });
    log(
      this.#o.logger,
      'info',
      { service, staleMs, time },
      `discovery: view of ${service} is fresh again`,
    );
  }

  /** After every applied batch: epoch changes, resyncs and the view-changed channel. */
  #onSettled(entry: ViewEntry): void {
    const view = entry.view;
    const service = view.service;
    const logger = this.#o.logger;
    if (view.epoch !== entry.epoch) {
      const from = entry.epoch;
      entry.epoch = view.epoch;
      // The first epoch a view sees is no change; any later one means the store lost its data.
      if (from !== '') {
        this.#epochChanges++;
        const time = wallTime();
        epochChangedChannel.publish({ service, from, to: view.epoch, time });
        log(
          logger,
          'warn',
          { service, from, to: view.epoch, retained: view.retainedIds().length, time },
          `discovery: the store lost the data of ${service} (epoch ${from} -> ${view.epoch})`,
        );
      }
    }
    if (view.resyncs !== entry.resyncs) {
      entry.resyncs = view.resyncs;
      log(
        logger,
        'debug',
        { service, resyncs: view.resyncs, revision: view.revision, epoch: view.epoch },
        `discovery: resynced ${service} at revision ${view.revision}`,
      );
    }
    if (viewChangedChannel.active) {
      viewChangedChannel.publish({
        service,
        revision: view.revision,
        epoch: view.epoch,
        instances: view.list().length,
        up: view.upList().length,
        resyncs: view.resyncs,
        time: wallTime(),
      });
    }
  }

  #interest(): string[] {
    const services = new Set(this.#views.keys());
    for (const r of this.#registrations) services.add(r.service);
    return [...services];
  }

  #startReaper(): void {
    if (this.#reapTimer !== undefined || this.#closed || this.#o.reapIntervalMs === 0) return;
    const delay = this.#o.reapIntervalMs * (0.8 + 0.4 * this.#o.random());
    this.#reapTimer = this.#o.clock
      .setTimer(() => {
        this.#reapTimer = undefined;
        void this.#reapOnce().finally(() => {
          if (this.#interest().length > 0) this.#startReaper();
        });
      }, delay)
      .unref();
  }

  async #reapOnce(): Promise<void> {
    if (this.#reaping || this.#closed) return;
    this.#reaping = true;
    try {
      await Promise.all(
        this.#interest().map(async (service) => {
          try {
            await bounded(
              `reap ${service}`,
              this.#o.clock,
              this.#o.operationTimeoutMs,
              undefined,
              () => this.#backend.reap(service),
              this.#backend,
            );
          } catch (error) {
            if (!this.#closed) this.#reportError(`reap ${service}`, error as Error);
          }
        }),
      );
    } finally {
      this.#reaping = false;
    }
  }
}

/**
 * An endpoint of a balancer that follows a watch ({@link keel/balancer!LoadBalancer.following}):
 * its `data` is always the {@link Instance} it stands for.
 */
export type InstanceEndpoint = FollowingEndpoint<Instance>;

/** A lease from a balancer that follows a watch: its `endpoint.data` is always the {@link Instance}. */
export type InstanceLease = FollowingLease<Instance>;

/** An endpoint spec carrying its instance (what a following balancer's `update()` takes). */
export type InstanceEndpointSpec = FollowingEndpointSpec<Instance>;
