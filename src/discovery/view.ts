/**
 * One service's live view: the local cache behind `discover`, `watch` and `balancer`.
 *
 * The view holds the instances as of a store revision. It applies change-log entries only in
 * sequence — revision r + 1 after r, same epoch — skips repeats, and on anything else (a gap, a
 * trimmed log, another epoch, an interrupted feed) resyncs from an atomic snapshot, emitting the
 * difference as ordinary change events. Resyncs are single-flight (requests during one fold
 * into one more pass) and, after the first, start after a random delay so that many clients
 * interrupted together (a Redis restart) do not all snapshot at once; failures retry with
 * capped exponential backoff and full jitter ("Exponential Backoff And Jitter", AWS
 * Architecture Blog, 2015). A view never stops on its own: it recovers or reports an error and
 * keeps trying.
 *
 * Self-preservation (after Eureka's): while the store is unreachable the view keeps its last
 * instances and is flagged stale. When a resync finds the store's epoch changed — the store
 * lost its data, and instances are about to re-register — instances missing from the new
 * snapshot are kept for a grace period rather than dropped at once, so a Redis restart does
 * not empty every balancer.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { EventChannel, ioTimeout, sleep, wallTime, type Clock, type Timer } from '../core/index.js';
import { resyncChannel, traced } from './channels.js';
import type {
  ChangeEntry,
  ChangeFeed,
  DiscoveryBackend,
  FeedListener,
  LogPoint,
  Snapshot,
} from './backend.js';
import { RegistryUnavailableError, isRegistryUnavailableError } from './errors.js';
import { decodeInstance, sameInstance, type Instance } from './instance.js';
import { storeOf } from './ops.js';

/** Why an instance left a view. */
export type RemovalReason =
  /** It deregistered. */
  | 'deregistered'
  /** Its ttl ran out and the reaper removed it. */
  | 'expired'
  /** Its record changed into something that fails the schema. */
  | 'quarantined'
  /** A resync found it gone (the change itself was missed). */
  | 'resync'
  /**
   * The store lost its data — all of it, or this instance's record without a change-log entry
   * (deleted or evicted by someone else) — and it did not re-register within the grace period.
   */
  | 'lost';

/** How a view learnt about a change. */
export type ChangeSource = 'log' | 'resync' | 'grace';

interface ChangeBase {
  /** The watched service. */
  readonly service: string;
  /** The view's revision after this change. */
  readonly revision: number;
  /** `log`: read from the change log in sequence; `resync`: found by comparing a snapshot; `grace`: a data-loss grace period ended. */
  readonly source: ChangeSource;
}

/** An instance appeared. */
export interface InstanceAdded extends ChangeBase {
  /** Discriminant of {@link WatchChange}. */
  readonly type: 'added';
  /** The new instance. */
  readonly instance: Instance;
}

/** An instance's data changed (status, weight, metadata, …). */
export interface InstanceUpdated extends ChangeBase {
  /** Discriminant of {@link WatchChange}. */
  readonly type: 'updated';
  /** The instance as it is now. */
  readonly instance: Instance;
  /** The instance as it was. */
  readonly previous: Instance;
}

/** An instance left. */
export interface InstanceRemoved extends ChangeBase {
  /** Discriminant of {@link WatchChange}. */
  readonly type: 'removed';
  /** The instance as it was last seen. */
  readonly instance: Instance;
  /** Why it left. */
  readonly reason: RemovalReason;
}

/** One change of a view. */
export type WatchChange = InstanceAdded | InstanceUpdated | InstanceRemoved;

/**
 * A stored record that failed the schema, or a change-log entry the registry did not write
 * (another program appended to the log, or it is damaged): skipped, never trusted.
 */
export interface QuarantinedRecord {
  /** The service it was stored under. */
  readonly service: string;
  /** The id it was stored under (for a log entry: the instance id it names, else its position). */
  readonly id: string;
  /** What is wrong with it. */
  readonly reason: string;
  /** For a change-log entry: its position in the log (on Redis, its stream id). */
  readonly entry?: string | undefined;
}

/** A view's staleness changed. */
export interface StaleChange {
  /** The watched service. */
  readonly service: string;
  /** Whether the view is stale now. */
  readonly stale: boolean;
  /** Why it went stale (absent when it became fresh). */
  readonly reason?: string | undefined;
}

/** A background failure in a view (it keeps retrying). */
export interface WatchError {
  /** The watched service. */
  readonly service: string;
  /** The failure, a {@link RegistryUnavailableError} for store failures. */
  readonly error: Error;
}

/** Settings a view takes from its registry. */
export interface ViewSettings {
  readonly clock: Clock;
  readonly random: () => number;
  readonly resyncJitterMs: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly dataLossGraceMs: number;
  readonly operationTimeoutMs: number;
}

/** Resyncs in a row that change nothing before a view reports it cannot make progress. */
const FRUITLESS_LIMIT = 3;

/** @internal */
export class ServiceView implements FeedListener {
  readonly service: string;
  readonly #backend: DiscoveryBackend;
  readonly #s: ViewSettings;
  readonly #instances = new Map<string, Instance>();
  /**
   * The stored JSON each instance in the view was decoded from. Decoding is a pure function of
   * (JSON, service, id), so a snapshot record whose JSON is unchanged needs no parse, schema
   * check or comparison: a resync of an unchanged 10 000-instance view skips ~40 ms of work for
   * the memory of the strings.
   */
  readonly #raw = new Map<string, string>();
  /** Instances kept through a data loss, by id → deadline. */
  readonly #retained = new Map<string, number>();
  /**
   * Set when the store could not be read (a failed snapshot, an interrupted feed) and cleared by
   * the next snapshot, which restarts the retained instances' grace: an instance cannot
   * re-register while the store is unreachable, so the grace counts from its return.
   */
  #unreachable = false;
  /**
   * Set when a probe found the store holding another number of records than the view accounts
   * for at the same revision: records vanished without a log entry, so the next snapshot treats
   * the instances missing from it as lost data (kept for the grace period), not as removed.
   */
  #vanished = false;
  #graceTimer: Timer | undefined;
  readonly #quarantined = new Map<string, string>();
  /**
   * Log entries (by position) that did not fit the view's sequence, with the number of
   * snapshots taken when they were first seen; and those found not to be the registry's own.
   */
  readonly #suspects = new Map<string, number>();
  readonly #rejected = new Set<string>();
  #list: readonly Instance[] | undefined = [];
  #upList: readonly Instance[] | undefined = [];
  #epoch = '';
  #revision = 0;
  #feed: ChangeFeed | undefined;
  #ready = false;
  readonly ready: Promise<void>;
  #resolveReady: () => void = () => undefined;
  #stale = false;
  #resyncing = false;
  #again = false;
  #resyncs = 0;
  /**
   * Why the log last contradicted the view, while a resync it asked for is pending or done;
   * and how many such resyncs in a row found the store exactly where the previous one did.
   */
  #contradiction: string | undefined;
  #fruitless = 0;
  #closed = false;
  readonly #closing = new AbortController();

  readonly changed = new EventChannel<WatchChange>();
  readonly staleChanged = new EventChannel<StaleChange>();
  readonly errors = new EventChannel<WatchError>();
  readonly quarantined = new EventChannel<QuarantinedRecord>();
  /** Fires after every applied batch (a log batch, a resync, a grace expiry). */
  readonly settled = new EventChannel<ServiceView>();
  /** Fires once, when the view closes (its registry closed): watch iterators end on it. */
  readonly ended = new EventChannel<ServiceView>();

  constructor(service: string, backend: DiscoveryBackend, settings: ViewSettings) {
    this.service = service;
    this.#backend = backend;
    this.#s = settings;
    this.ready = new Promise<void>((resolve) => {
      this.#resolveReady = resolve;
    });
  }

  /** Starts following the log and takes the first snapshot. */
  start(): void {
    this.#feed = this.#backend.follow(this.service, this);
    this.#resync('initial snapshot', true);
  }

  get isReady(): boolean {
    return this.#ready;
  }

  get stale(): boolean {
    return this.#stale;
  }

  get epoch(): string {
    return this.#epoch;
  }

  get revision(): number {
    return this.#revision;
  }

  /** Snapshots taken so far (the first included). */
  get resyncs(): number {
    return this.#resyncs;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether a resync is in progress (a getter, so checks after awaits are not narrowed away). */
  get resyncing(): boolean {
    return this.#resyncing;
  }

  /** Every instance, in id order; the same array until the view changes. */
  list(): readonly Instance[] {
    if (this.#list === undefined) {
      this.#list = Object.freeze(
        [...this.#instances.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
      );
    }
    return this.#list;
  }

  /** The `up` instances, in id order; the same array until the view changes. */
  upList(): readonly Instance[] {
    if (this.#upList === undefined) {
      this.#upList = Object.freeze(this.list().filter((i) => i.status === 'up'));
    }
    return this.#upList;
  }

  get(id: string): Instance | undefined {
    return this.#instances.get(id);
  }

  /** Ids kept through a data loss that have not re-registered yet. */
  retainedIds(): string[] {
    return [...this.#retained.keys()];
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort(new Error('view closed'));
    this.#feed?.close();
    this.#graceTimer?.cancel();
    this.#resolveReady();
    this.ended.emit(this);
    this.ended.clear();
    this.changed.clear();
    this.staleChanged.clear();
    this.errors.clear();
    this.quarantined.clear();
    this.settled.clear();
  }

  /** Asks for a resync (tests, reconnects). */
  resync(reason: string): void {
    this.#resync(reason, false);
  }

  // --- FeedListener -------------------------------------------------------------------------

  entries(entries: readonly ChangeEntry[]): void {
    if (this.#closed || this.#resyncing || !this.#ready) return; // the resync's seek re-reads them
    let applied = false;
    let progressed = false; // an entry applied, or one found not to be the registry's and skipped
    for (const entry of entries) {
      const position = entry.position;
      if (position !== undefined && this.#rejected.has(position)) continue;
      let problem: string | undefined;
      if (entry.epoch !== this.#epoch) {
        // A service that did not exist at the snapshot: its first entry starts the epoch.
        if (this.#revision === 0 && this.#epoch === '' && entry.revision === 1) {
          if (position !== undefined && this.#notOurs(entry, position)) {
            progressed = true;
            continue;
          }
          this.#epoch = entry.epoch;
          // The service's data starts again after a loss this view saw: whoever it still keeps
          // gets the whole grace from now, as after a resync into a new epoch — the store may
          // have lost the data again since then, re-registrations included.
          this.#restartGrace();
        } else {
          problem = `epoch changed (${this.#epoch || 'none'} -> ${entry.epoch})`;
        }
      }
      if (problem === undefined) {
        if (entry.revision <= this.#revision) continue; // a repeat: already applied
        if (entry.revision !== this.#revision + 1)
          problem = `gap in the change log (at ${this.#revision}, next ${entry.revision})`;
      }
      if (problem !== undefined) {
        if (position !== undefined && this.#notOurs(entry, position)) {
          progressed = true;
          continue;
        }
        this.#contradiction = problem;
        this.#resync(problem, false);
        break;
      }
      this.#apply(entry);
      applied = true;
      progressed = true;
    }
    if (progressed) {
      // Progress: whatever the log said before, it is being followed again.
      if (this.#fruitless >= FRUITLESS_LIMIT) this.#setStale(false);
      this.#fruitless = 0;
    }
    if (applied && !this.resyncing) this.settled.emit(this);
  }

  foreign(position: string, reason: string, id?: string): void {
    if (this.#closed) return;
    this.quarantined.emit({ service: this.service, id: id ?? position, reason, entry: position });
  }

  /**
   * Whether an entry that does not fit the sequence is one the registry never wrote. The first
   * time, it cannot tell (a trimmed log, a data loss): it remembers the entry and resyncs. A
   * snapshot is atomic with the scripts that append, so once a snapshot taken after the entry
   * was first seen still does not account for it — the entry reappears out of sequence — it is
   * not the registry's: quarantined and skipped from then on, rather than resynced over forever.
   */
  #notOurs(entry: ChangeEntry, position: string): boolean {
    const seenAt = this.#suspects.get(position);
    if (seenAt === undefined || seenAt >= this.#resyncs) {
      if (seenAt === undefined) remember(this.#suspects, position, this.#resyncs);
      return false;
    }
    this.#suspects.delete(position);
    remember(this.#rejected, position);
    this.quarantined.emit({
      service: this.service,
      id: entry.id,
      reason: `change-log entry claims revision ${entry.revision} of epoch ${entry.epoch}, but a later snapshot is at revision ${this.#revision} of epoch ${this.#epoch || 'none'}: not written by a registry`,
      entry: position,
    });
    return true;
  }

  interrupted(reason: string, error?: unknown): void {
    if (this.#closed) return;
    this.#unreachable = true;
    this.#setStale(true, reason);
    if (error !== undefined) this.#reportError(error, reason);
    this.#resync(reason, false);
  }

  healthy(): void {
    // A good read says nothing about what was missed before it; the resync an interruption
    // started clears the stale flag once it has a snapshot.
  }

  /**
   * Every record change is logged, so at the revision the view has applied the store holds
   * exactly the records the view accounts for: its instances (less those it keeps through a
   * data loss, which the store no longer holds) and the records it quarantined. Another count
   * means records were deleted or evicted (or written) behind the log — by someone else, by an
   * operator, or by Redis under an `allkeys-*` policy — and no entry will ever tell: resync.
   * The instances missing from the snapshot are then kept for the data-loss grace, as after a
   * data loss: a records key evicted whole must not empty every balancer while the live
   * instances re-register at their next heartbeat.
   */
  probed(epoch: string, revision: number, records: number): void {
    if (this.#closed || this.#resyncing || !this.#ready) return;
    if (epoch !== this.#epoch || revision !== this.#revision) return; // not yet where the probe was
    const known = this.#instances.size - this.#retained.size + this.#quarantined.size;
    if (records === known) return;
    // In sequence up to here, so whatever the snapshot lacks left without an entry (even when
    // the count grew: records may have appeared and vanished both).
    this.#vanished = true;
    this.#resync(
      `the store holds ${records} records at revision ${revision}, the view accounts for ${known}: records changed without a change-log entry`,
      false,
    );
  }

  // --- internals -----------------------------------------------------------------------------

  #apply(entry: ChangeEntry): void {
    this.#revision = entry.revision;
    const previous = this.#instances.get(entry.id);
    this.#retained.delete(entry.id); // in the log again: no longer waiting out a grace period
    if (entry.type === 'deregistered' || entry.type === 'expired') {
      this.#quarantined.delete(entry.id);
      if (previous !== undefined) this.#remove(previous, entry.type, 'log');
      return;
    }
    const decoded = decodeInstance(entry.data, this.service, entry.id);
    if (!decoded.ok) {
      this.#quarantine(entry.id, decoded.reason);
      if (previous !== undefined) this.#remove(previous, 'quarantined', 'log');
      return;
    }
    this.#quarantined.delete(entry.id);
    // A retained instance re-registering with the same data is no change: #put emits nothing.
    this.#put(decoded.instance, previous, 'log', entry.data);
  }

  #put(
    instance: Instance,
    previous: Instance | undefined,
    source: ChangeSource,
    raw: unknown,
  ): void {
    if (typeof raw === 'string') this.#raw.set(instance.id, raw);
    else this.#raw.delete(instance.id);
    if (previous !== undefined && sameInstance(previous, instance)) return;
    this.#instances.set(instance.id, instance);
    this.#list = undefined;
    this.#upList = undefined;
    if (!this.changed.active) return;
    this.changed.emit(
      previous === undefined
        ? { type: 'added', service: this.service, instance, revision: this.#revision, source }
        : {
            type: 'updated',
            service: this.service,
            instance,
            previous,
            revision: this.#revision,
            source,
          },
    );
  }

  #remove(instance: Instance, reason: RemovalReason, source: ChangeSource): void {
    this.#instances.delete(instance.id);
    this.#raw.delete(instance.id);
    this.#list = undefined;
    this.#upList = undefined;
    if (this.changed.active) {
      this.changed.emit({
        type: 'removed',
        service: this.service,
        instance,
        reason,
        revision: this.#revision,
        source,
      });
    }
  }

  #quarantine(id: string, reason: string): void {
    if (this.#quarantined.get(id) === reason) return; // reported already
    this.#quarantined.set(id, reason);
    this.quarantined.emit({ service: this.service, id, reason });
  }

  #setStale(stale: boolean, reason?: string): void {
    if (this.#stale === stale) return;
    this.#stale = stale;
    this.staleChanged.emit(
      stale ? { service: this.service, stale, reason } : { service: this.service, stale },
    );
  }

  #reportError(error: unknown, what: string): void {
    const wrapped =
      isRegistryUnavailableError(error) || !(error instanceof Error)
        ? (error as Error)
        : new RegistryUnavailableError(`${what} ${this.service}`, error.message, {
            cause: error,
            store: storeOf(this.#backend),
          });
    this.errors.emit({ service: this.service, error: wrapped });
  }

  #resync(reason: string, immediate: boolean): void {
    if (this.#closed) return;
    if (this.#resyncing) {
      this.#again = true;
      return;
    }
    this.#resyncing = true;
    void this.#resyncLoop(reason, immediate);
  }

  async #resyncLoop(reason: string, immediate: boolean): Promise<void> {
    const s = this.#s;
    // A log that keeps contradicting the snapshots: back off as after failures.
    let failures = Math.max(0, this.#fruitless - FRUITLESS_LIMIT + 1);
    let first = immediate;
    try {
      for (;;) {
        const delay =
          failures > 0
            ? s.random() * Math.min(s.retryMaxMs, s.retryBaseMs * 2 ** Math.min(failures - 1, 20))
            : first
              ? 0
              : s.random() * s.resyncJitterMs;
        first = false;
        if (delay > 0)
          await sleep(delay, { clock: s.clock, signal: this.#closing.signal, unref: true });
        if (this.#isClosed()) return;
        this.#again = false;
        try {
          // Where the view is: the snapshot then says which records the log removed since, so
          // the view can tell them from records that vanished without an entry.
          const since =
            this.#ready && this.#epoch !== ''
              ? { epoch: this.#epoch, revision: this.#revision }
              : undefined;
          // Traced as keel:discovery:resync while someone subscribes (see channels.ts).
          const snapshot = await traced(
            resyncChannel,
            () => ({ service: this.service, reason, time: wallTime() }),
            () =>
              this.#withTimeout(
                this.#backend.snapshot(this.service, since === undefined ? undefined : { since }),
              ),
          );
          if (this.#isClosed()) return;
          this.#applySnapshot(snapshot, since);
          failures = 0;
        } catch (error) {
          if (this.#isClosed()) return;
          failures++;
          this.#unreachable = true;
          this.#setStale(true, `resync failed (${reason})`);
          this.#reportError(error, 'snapshot');
          continue;
        }
        if (!this.#againRequested()) break;
      }
    } catch {
      return; // closed while sleeping
    } finally {
      this.#resyncing = false;
    }
    if (this.#fruitless < FRUITLESS_LIMIT) this.#setStale(false);
    if (!this.#ready) {
      this.#ready = true;
      this.#resolveReady();
    }
    this.settled.emit(this);
  }

  #isClosed(): boolean {
    return this.#closed;
  }

  #againRequested(): boolean {
    return this.#again;
  }

  #withTimeout<T>(promise: Promise<T>): Promise<T> {
    const ms = this.#s.operationTimeoutMs;
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      // After the I/O ready by then (see core/io-timeout.ts), so lag does not fail a snapshot.
      timer = ioTimeout(
        this.#s.clock,
        () => {
          reject(
            new RegistryUnavailableError(`snapshot ${this.service}`, `no answer within ${ms} ms`, {
              store: storeOf(this.#backend),
            }),
          );
        },
        ms,
      );
      timer.unref();
    });
    promise.catch(() => undefined);
    return Promise.race([promise, timeout]).finally(() => timer?.cancel());
  }

  /**
   * A resync the log asked for that finds the store at the very epoch and revision of the view
   * changed nothing: the log will say the same again. After {@link FRUITLESS_LIMIT} in a row the
   * view cannot make progress — it turns stale, reports why, and backs off — rather than
   * resync silently forever.
   */
  #countFruitless(epoch: string, revision: number): void {
    const contradiction = this.#contradiction;
    this.#contradiction = undefined;
    if (contradiction === undefined) return;
    if (!this.#ready || epoch !== this.#epoch || revision !== this.#revision) {
      this.#fruitless = 0;
      return;
    }
    this.#fruitless++;
    if (this.#fruitless !== FRUITLESS_LIMIT) return;
    const why = `the change log keeps contradicting the snapshot at revision ${revision} of epoch ${epoch || 'none'} (${contradiction})`;
    this.#setStale(true, why);
    this.errors.emit({
      service: this.service,
      error: new RegistryUnavailableError(`follow ${this.service}`, why, {
        store: storeOf(this.#backend),
      }),
    });
  }

  #applySnapshot(snapshot: Snapshot, since: LogPoint | undefined): void {
    const { epoch, revision, records, position } = snapshot;
    this.#resyncs++;
    this.#countFruitless(epoch, revision);
    const lostData = this.#ready && this.#epoch !== '' && epoch !== this.#epoch;
    const vanished = this.#vanished;
    this.#vanished = false;
    // An instance the snapshot lacks left the store with a change-log entry the view missed
    // (it resynced over a gap, a dropped connection, …), or without one: deleted or evicted
    // behind the log, as the probe finds by counting records. When the view asked where it was
    // (`since`, the same epoch), the store says which left with an entry (`removedSince`, or
    // none at all at the view's own revision): the others vanished, and are kept through the
    // grace as after a data loss (chaos seed 924706933: a reconnect's resync removed 22 live
    // instances 38 ms after their records were deleted, before any probe ran). Without that
    // answer (the log trimmed past the view, a backend that does not say), missing means removed.
    const inPlace = since !== undefined && epoch === since.epoch;
    const logged: ReadonlySet<string> | undefined = !inPlace
      ? undefined
      : revision <= since.revision
        ? new Set()
        : snapshot.removedSince === undefined
          ? undefined
          : new Set(snapshot.removedSince);
    this.#epoch = epoch;
    this.#revision = revision;
    const seen = new Set<string>();
    for (const record of records) {
      seen.add(record.id);
      const previous = this.#instances.get(record.id);
      if (
        previous !== undefined &&
        typeof record.data === 'string' &&
        this.#raw.get(record.id) === record.data
      ) {
        this.#retained.delete(record.id); // it is back (or never left): nothing else changes
        continue;
      }
      const decoded = decodeInstance(record.data, this.service, record.id);
      if (!decoded.ok) {
        this.#quarantine(record.id, decoded.reason);
        this.#retained.delete(record.id);
        if (previous !== undefined) this.#remove(previous, 'quarantined', 'resync');
        continue;
      }
      this.#quarantined.delete(record.id);
      this.#retained.delete(record.id);
      this.#put(decoded.instance, previous, 'resync', record.data);
    }
    for (const id of this.#quarantined.keys()) if (!seen.has(id)) this.#quarantined.delete(id);
    const now = this.#s.clock.now();
    const grace = this.#s.dataLossGraceMs;
    // The store is readable again after an outage, or lost its data (again): every instance
    // still waiting gets the whole grace from now, since none could re-register before
    // (issue 13: with the grace counted from the first of several empty restarts, a watcher
    // evicted an instance that was alive and heartbeating).
    const restartGrace = this.#unreachable || lostData;
    this.#unreachable = false;
    for (const instance of [...this.#instances.values()]) {
      if (seen.has(instance.id)) continue;
      const deadline = this.#retained.get(instance.id);
      if (deadline !== undefined && !restartGrace && deadline <= now) {
        // Its grace ended, and this fresh snapshot confirms it did not re-register.
        this.#retained.delete(instance.id);
        this.#remove(instance, 'lost', 'grace');
        continue;
      }
      const unlogged = logged !== undefined && !logged.has(instance.id);
      if ((lostData || vanished || unlogged || deadline !== undefined) && grace > 0) {
        if (deadline === undefined || restartGrace)
          this.#retained.set(instance.id, Math.max(deadline ?? 0, now + grace));
        continue;
      }
      this.#remove(instance, 'resync', 'resync');
    }
    this.#scheduleGrace();
    this.#feed?.seek(epoch, revision, position);
  }

  /** Every retained instance gets the whole data-loss grace from now. */
  #restartGrace(): void {
    if (this.#retained.size === 0) return;
    const until = this.#s.clock.now() + this.#s.dataLossGraceMs;
    for (const [id, deadline] of this.#retained) this.#retained.set(id, Math.max(deadline, until));
    this.#scheduleGrace();
  }

  #scheduleGrace(): void {
    this.#graceTimer?.cancel();
    this.#graceTimer = undefined;
    if (this.#retained.size === 0 || this.#closed) return;
    const next = Math.min(...this.#retained.values());
    this.#graceTimer = this.#s.clock
      .setTimer(() => {
        this.#graceTimer = undefined;
        this.#expireRetained();
      }, next - this.#s.clock.now())
      .unref();
  }

  /**
   * A data-loss grace period ended. Instances are removed only once a snapshot taken now
   * confirms they are still missing (see `#applySnapshot`): this view may be behind the store
   * (a paused store, a slow read) and not yet have read an instance's re-registration, and
   * evicting a live instance on stale knowledge is the mass eviction the grace exists to
   * prevent. While the store cannot be read, the instances stay (the view is stale then).
   */
  #expireRetained(): void {
    if (this.#closed) return;
    const now = this.#s.clock.now();
    for (const deadline of this.#retained.values()) {
      if (deadline <= now) {
        this.#resync('a data-loss grace period ended', true);
        return;
      }
    }
    this.#scheduleGrace();
  }
}

/** Adds to a bounded memory of log positions, forgetting the oldest past 1000. */
function remember(memory: Set<string>, position: string): void;
function remember(memory: Map<string, number>, position: string, value: number): void;
function remember(
  memory: Set<string> | Map<string, number>,
  position: string,
  value?: number,
): void {
  if (memory.size >= 1000) {
    const oldest = memory.keys().next();
    if (oldest.done !== true) memory.delete(oldest.value);
  }
  if (memory instanceof Map) memory.set(position, value ?? 0);
  else memory.add(position);
}
