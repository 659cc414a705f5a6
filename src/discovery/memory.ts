/**
 * The in-process registry store: the same semantics as the Redis backend — records with ttls
 * on the injected clock, per-service revisions, an epoch, a capped change log read by cursor,
 * an idempotent reaper — for tests, single-process apps and the embedded demo.
 *
 * @packageDocumentation
 */
import {
  ClosedError,
  guardedOption,
  integerOption,
  isClock,
  resolveOptions,
  systemClock,
  throwIfAborted,
  type Clock,
} from '../core/index.js';
import type {
  ChangeEntry,
  ChangeFeed,
  ChangeType,
  DiscoveryBackend,
  FeedListener,
  HeartbeatOutcome,
  RegisterOutcome,
  Snapshot,
  SnapshotOptions,
  WriteOptions,
} from './backend.js';
import { removalsSince } from './backend.js';
import { RegistryUnavailableError } from './errors.js';

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /** Clock for expiries. Use a `ManualClock` in tests. @defaultValue `systemClock` */
  readonly clock?: Clock | undefined;
  /** Change-log entries kept per service; a reader further behind resyncs. @defaultValue 1000 */
  readonly maxLogLength?: number | undefined;
}

interface StoredRecord {
  data: unknown;
  token: string;
  expiresAt: number;
}

interface ServiceState {
  readonly epoch: string;
  revision: number;
  readonly records: Map<string, StoredRecord>;
  log: ChangeEntry[];
}

const spec = {
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  maxLogLength: integerOption({ min: 1, max: 10_000_000, default: 1000 }),
};

let epochCounter = 0;
function newEpoch(): string {
  epochCounter++;
  return `m${Date.now().toString(36)}.${epochCounter}.${Math.floor(Math.random() * 1e9).toString(36)}`;
}

const OWNER = 'MemoryBackend';

/**
 * An in-memory {@link DiscoveryBackend}. Several registries sharing one `MemoryBackend` see
 * each other, as processes sharing one Redis do. Writes apply at once; change-log entries reach
 * readers in a later microtask, as they would over a connection.
 *
 * Besides the backend contract it offers fault injection for tests: {@link simulateDataLoss},
 * {@link interruptFeeds}, {@link pauseFeeds} / {@link resumeFeeds} and {@link putRaw}.
 *
 * @example
 * ```ts
 * import { MemoryBackend, Registry } from 'keel/discovery';
 *
 * const backend = new MemoryBackend();
 * const a = new Registry({ backend });
 * const b = new Registry({ backend });
 * await using registration = await a.register({ service: 'orders', host: '127.0.0.1', port: 8080 });
 * const watch = b.watch('orders');
 * await watch.ready;
 * console.log(watch.instances().map((i) => i.id)); // ['127.0.0.1:8080']
 * watch.close();
 * await b.close();
 * await a.close();
 * ```
 */
export class MemoryBackend implements DiscoveryBackend, AsyncDisposable {
  /** `memory`. */
  readonly kind = 'memory';
  readonly #clock: Clock;
  readonly #maxLog: number;
  #epoch = newEpoch();
  readonly #services = new Map<string, ServiceState>();
  readonly #feeds = new Set<MemoryFeed>();
  #paused = false;
  #outage: string | undefined;
  #closed = false;

  /** Validates `options`; throws `InvalidOptionError` naming a bad one. */
  constructor(options: MemoryBackendOptions = {}) {
    const o = resolveOptions(OWNER, options, spec);
    this.#clock = o.clock;
    this.#maxLog = o.maxLogLength;
  }

  /** The clock expiries are measured on. */
  get clock(): Clock {
    return this.#clock;
  }

  /** {@inheritDoc DiscoveryBackend.register} */
  register(
    service: string,
    id: string,
    data: string,
    token: string,
    ttlMs: number,
    options?: WriteOptions,
  ): Promise<RegisterOutcome> {
    return this.#run('register', options, () => {
      const state = this.#state(service);
      const expiresAt = this.#clock.now() + ttlMs;
      const existing = state.records.get(id);
      if (existing !== undefined && existing.data === data) {
        existing.token = token;
        existing.expiresAt = expiresAt;
        return 'unchanged';
      }
      state.records.set(id, { data, token, expiresAt });
      this.#append(state, service, existing === undefined ? 'registered' : 'updated', id, data);
      return existing === undefined ? 'created' : 'updated';
    });
  }

  /** {@inheritDoc DiscoveryBackend.heartbeat} */
  heartbeat(
    service: string,
    id: string,
    token: string,
    ttlMs: number,
    options?: WriteOptions,
  ): Promise<HeartbeatOutcome> {
    return this.#run('heartbeat', options, (): HeartbeatOutcome => {
      const record = this.#services.get(service)?.records.get(id);
      if (record === undefined) return 'missing';
      if (record.token !== token) return 'replaced';
      record.expiresAt = this.#clock.now() + ttlMs;
      return 'ok';
    });
  }

  /** {@inheritDoc DiscoveryBackend.deregister} */
  deregister(service: string, id: string, token: string, options?: WriteOptions): Promise<boolean> {
    return this.#run('deregister', options, () => {
      const state = this.#services.get(service);
      const record = state?.records.get(id);
      if (state === undefined || record === undefined || record.token !== token) return false;
      state.records.delete(id);
      this.#append(state, service, 'deregistered', id, undefined);
      return true;
    });
  }

  /** {@inheritDoc DiscoveryBackend.snapshot} */
  snapshot(service: string, options?: SnapshotOptions): Promise<Snapshot> {
    return this.#run('snapshot', options, (): Snapshot => {
      const state = this.#services.get(service);
      if (state === undefined) return { epoch: '', revision: 0, records: [] };
      const snapshot = {
        epoch: state.epoch,
        revision: state.revision,
        records: [...state.records].map(([id, r]) => ({ id, data: r.data })),
      };
      const since = options?.since;
      if (since === undefined || since.epoch !== state.epoch) return snapshot;
      const removedSince = removalsSince(state.log, since, state.revision);
      return removedSince === undefined ? snapshot : { ...snapshot, removedSince };
    });
  }

  /** {@inheritDoc DiscoveryBackend.reap} */
  reap(service: string, options?: WriteOptions): Promise<number> {
    return this.#run('reap', options, () => {
      const state = this.#services.get(service);
      if (state === undefined) return 0;
      const now = this.#clock.now();
      let removed = 0;
      for (const [id, record] of state.records) {
        if (record.expiresAt <= now) {
          state.records.delete(id);
          this.#append(state, service, 'expired', id, undefined);
          removed++;
        }
      }
      return removed;
    });
  }

  /** {@inheritDoc DiscoveryBackend.follow} */
  follow(service: string, listener: FeedListener): ChangeFeed {
    if (this.#closed) throw new ClosedError(OWNER, 'follow');
    const feed = new MemoryFeed(this, service, listener, () => this.#feeds.delete(feed));
    this.#feeds.add(feed);
    return feed;
  }

  /**
   * Stops every reader (their pending deliveries too). Afterwards every method rejects (or
   * throws) a `ClosedError`. Close a shared backend after the registries that use it. Safe to
   * call twice.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const feed of [...this.#feeds]) feed.close();
    await Promise.resolve();
  }

  /** {@link MemoryBackend.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- fault injection -----------------------------------------------------------------------

  /**
   * Forgets every record, revision and log entry and starts a new epoch, as a Redis restarted
   * without persistence (or flushed) would. Readers notice the new epoch and resync.
   */
  simulateDataLoss(): void {
    this.#services.clear();
    this.#epoch = newEpoch();
    // As the Redis reader's idle epoch check would, let readers notice a store that lost its
    // data even if nobody writes to it again.
    for (const feed of this.#feeds) feed.schedule();
  }

  /** Tells every reader its feed was interrupted (as a reconnect would); they resync. */
  interruptFeeds(reason = 'reconnect'): void {
    for (const feed of [...this.#feeds]) feed.interrupt(reason);
  }

  /**
   * Makes the store unreachable, as a stopped or partitioned Redis would, until
   * {@link endOutage}: every call rejects with a `RegistryUnavailableError`, and every reader's
   * feed is interrupted and delivers nothing. The data stays (use {@link simulateDataLoss} for a
   * store that comes back empty).
   */
  simulateOutage(reason = 'simulated outage'): void {
    this.#outage = reason;
    for (const feed of [...this.#feeds]) feed.interrupt(reason);
  }

  /** Ends {@link simulateOutage}: calls work again and readers catch up. */
  endOutage(): void {
    this.#outage = undefined;
    for (const feed of this.#feeds) feed.schedule();
  }

  /** Whether {@link simulateOutage} is in effect. */
  get inOutage(): boolean {
    return this.#outage !== undefined;
  }

  /** Stops delivering log entries (a slow reader) until {@link resumeFeeds}. */
  pauseFeeds(): void {
    this.#paused = true;
  }

  /** Delivers everything held back by {@link pauseFeeds}. */
  resumeFeeds(): void {
    this.#paused = false;
    for (const feed of this.#feeds) feed.schedule();
  }

  /**
   * Stores `data` as the record of `service`/`id` unchecked, with `ttlMs`, and logs it as
   * registered — for testing how readers handle malformed records.
   */
  putRaw(service: string, id: string, data: unknown, ttlMs = 60_000): void {
    const state = this.#state(service);
    const existed = state.records.has(id);
    state.records.set(id, { data, token: '', expiresAt: this.#clock.now() + ttlMs });
    this.#append(state, service, existed ? 'updated' : 'registered', id, data);
  }

  /** Ids with a live record in the store (for tests comparing views with the truth). */
  ids(service: string): string[] {
    return [...(this.#services.get(service)?.records.keys() ?? [])].sort();
  }

  // --- internals used by MemoryFeed ----------------------------------------------------------

  /** @internal */
  get feedsPaused(): boolean {
    return this.#paused;
  }

  /** @internal */
  serviceState(service: string): ServiceState | undefined {
    return this.#services.get(service);
  }

  #state(service: string): ServiceState {
    let state = this.#services.get(service);
    if (state === undefined) {
      state = { epoch: this.#epoch, revision: 0, records: new Map(), log: [] };
      this.#services.set(service, state);
    }
    return state;
  }

  #append(state: ServiceState, service: string, type: ChangeType, id: string, data: unknown): void {
    state.revision++;
    const entry: ChangeEntry =
      data === undefined
        ? { epoch: state.epoch, revision: state.revision, type, id }
        : { epoch: state.epoch, revision: state.revision, type, id, data };
    state.log.push(entry);
    // Trim in chunks, as Redis's approximate MAXLEN does, so trimming is amortised.
    if (state.log.length > this.#maxLog + Math.ceil(this.#maxLog / 10)) {
      state.log = state.log.slice(state.log.length - this.#maxLog);
    }
    for (const feed of this.#feeds) if (feed.service === service) feed.schedule();
  }

  #run<T>(operation: string, options: WriteOptions | undefined, fn: () => T): Promise<T> {
    try {
      if (this.#closed) throw new ClosedError(OWNER, operation);
      throwIfAborted(options?.signal);
      if (this.#outage !== undefined) {
        throw new RegistryUnavailableError(operation, this.#outage, {
          store: 'memory',
        });
      }
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(error);
    }
  }
}

/** A reader's cursor over one service's log in a {@link MemoryBackend}. */
class MemoryFeed implements ChangeFeed {
  readonly service: string;
  readonly #backend: MemoryBackend;
  readonly #listener: FeedListener;
  readonly #onClose: () => void;
  #epoch = '';
  #revision = 0;
  #positioned = false;
  #scheduled = false;
  #closed = false;

  constructor(
    backend: MemoryBackend,
    service: string,
    listener: FeedListener,
    onClose: () => void,
  ) {
    this.#backend = backend;
    this.service = service;
    this.#listener = listener;
    this.#onClose = onClose;
  }

  seek(epoch: string, revision: number): void {
    this.#epoch = epoch;
    this.#revision = revision;
    this.#positioned = true;
    this.schedule();
  }

  schedule(): void {
    if (this.#scheduled || this.#closed || !this.#positioned) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  interrupt(reason: string): void {
    if (this.#closed) return;
    queueMicrotask(() => {
      if (!this.#closed) this.#listener.interrupted(reason);
    });
  }

  #pump(): void {
    if (this.#closed || this.#backend.feedsPaused || this.#backend.inOutage) return;
    const state = this.#backend.serviceState(this.service);
    if (state === undefined) {
      // The service's data is gone (or never was): a reader positioned in an epoch must resync.
      if (this.#epoch !== '') this.#listener.interrupted('store epoch changed');
      return;
    }
    if (state.log.length === 0) return;
    // Same epoch: what follows the cursor. Another epoch (the store lost its data, or the
    // reader positioned on a service that did not exist yet): everything kept, and the reader
    // decides whether it can adopt it or must resync.
    const entries =
      state.epoch === this.#epoch
        ? state.log.filter((e) => e.revision > this.#revision)
        : state.log.slice();
    if (entries.length === 0) return;
    const last = entries[entries.length - 1] as ChangeEntry;
    this.#epoch = last.epoch;
    this.#revision = last.revision;
    this.#listener.entries(entries);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
