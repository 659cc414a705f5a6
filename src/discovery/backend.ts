/**
 * The contract between the {@link Registry} client and a store (Redis, or in-process memory).
 *
 * The store keeps, per service: instance records with an expiry, a revision counter, an epoch
 * that changes when the store loses its data, and a capped change log in which every visible
 * change (and nothing else — heartbeats only move expiries) is entry number `revision`. That
 * makes change delivery checkable: a reader that has applied revision r expects r + 1 next; any
 * other number, or another epoch, means it missed something and must resync from an atomic
 * snapshot. The client logic (views, gaps, resyncs, quarantine) lives once, in the registry; a
 * backend only stores and delivers.
 *
 * @packageDocumentation
 */

/** Kinds of change-log entry. `expired` is a removal by the reaper (the ttl ran out). */
export type ChangeType = 'registered' | 'updated' | 'deregistered' | 'expired';

/** One change-log entry, as stored. */
export interface ChangeEntry {
  /** Epoch of the store that wrote it. */
  readonly epoch: string;
  /** The service revision this entry produced: exactly one more than the previous entry's. */
  readonly revision: number;
  /** What happened. */
  readonly type: ChangeType;
  /** The instance it happened to. */
  readonly id: string;
  /** The raw stored record for `registered` / `updated` (decoded and checked by the reader). */
  readonly data?: unknown;
  /**
   * Where the entry sits in the store's log, when that is not its revision (Redis: its stream
   * id): names it in reports, and lets a reader recognise an entry it has seen before.
   */
  readonly position?: string;
}

/** One stored record, raw: decoded and checked by the reader. */
export interface RawRecord {
  /** The id it is stored under. */
  readonly id: string;
  /** The stored value (a JSON string on Redis). */
  readonly data: unknown;
}

/** A consistent picture of one service: every record as of `revision`, read atomically. */
export interface Snapshot {
  /** The store's epoch; `''` when the service has never been written. */
  readonly epoch: string;
  /** The service's revision the records are as of. */
  readonly revision: number;
  /** Every stored record of the service. */
  readonly records: readonly RawRecord[];
  /** The log position of the entry of `revision`, when not derived from it: pass to `seek()`. */
  readonly position?: string;
  /**
   * Asked for with {@link SnapshotOptions.since}: the ids whose record a change-log entry after
   * that revision removed (`deregistered` or `expired`, and not registered again after it).
   * Present only when the snapshot is in `since`'s epoch and the log still held every entry
   * after it up to `revision`; absent otherwise (trimmed, another epoch, not asked, or a
   * backend that does not say). A reader's instance missing from `records` and not listed here
   * left the store without an entry: deleted or evicted behind the log.
   */
  readonly removedSince?: readonly string[];
}

/** A place in a service's history: a revision of an epoch. */
export interface LogPoint {
  /** The store's epoch. */
  readonly epoch: string;
  /** A revision of that epoch. */
  readonly revision: number;
}

/** Options of {@link DiscoveryBackend.snapshot}. */
export interface SnapshotOptions extends WriteOptions {
  /**
   * Where the reader's view is (its epoch and the revision it applied): the snapshot then also
   * says which records the log removed since ({@link Snapshot.removedSince}).
   */
  readonly since?: LogPoint | undefined;
}

/** Outcome of writing a registration. */
export type RegisterOutcome = 'created' | 'updated' | 'unchanged';

/** Outcome of a heartbeat: renewed, gone from the store (re-register), or owned by another registration. */
export type HeartbeatOutcome = 'ok' | 'missing' | 'replaced';

/** What a backend calls as it reads a service's change log. */
export interface FeedListener {
  /** Entries read, in log order (possibly repeating ones already seen; readers skip those). */
  entries(entries: readonly ChangeEntry[]): void;
  /**
   * The feed may have missed entries or lost contact (reconnect, error, timeout): the reader
   * should mark its view stale and resync. `error` is the cause when there is one.
   */
  interrupted(reason: string, error?: unknown): void;
  /** The feed read successfully again after an interruption. */
  healthy(): void;
  /**
   * The store is at `revision` of `epoch` — where the feed has read up to — and holds `records`
   * records of the service, read atomically with that revision. A reader that applied every
   * entry up to it accounts for exactly that many; another count means records vanished (or
   * appeared) without a log entry — deleted or evicted by someone else — and the reader should
   * resync. Optional: a backend whose records cannot change behind its log need not call it.
   */
  probed?(epoch: string, revision: number, records: number): void;
  /**
   * The log holds an entry the store's own writes did not produce (another program wrote to
   * it, or it is damaged): skipped, never applied. `position` names the entry; `id` is the
   * instance id it claims, if any. Reported once per entry.
   */
  foreign(position: string, reason: string, id?: string): void;
}

/** A subscription to one service's change log. */
export interface ChangeFeed extends Disposable {
  /**
   * Continue reading after this position (after a snapshot at `revision` of `epoch`, whose
   * {@link Snapshot.position} is `position` when the backend gave one).
   */
  seek(epoch: string, revision: number, position?: string): void;
  /** Stops reading. Safe to call more than once. */
  close(): void;
}

/** Options of a backend write. */
export interface WriteOptions {
  /** Aborts the call: it rejects with `signal.reason`. */
  readonly signal?: AbortSignal | undefined;
}

/**
 * A registry store. Implemented by {@link MemoryBackend} and {@link RedisBackend}; implement it
 * to put the registry on another store with the same guarantees (atomic writes that append to
 * the log, atomic snapshots, revision-numbered entries).
 */
export interface DiscoveryBackend {
  /** Short name for messages, e.g. `memory` or `redis`. */
  readonly kind: string;
  /**
   * Where the store is, for messages: `host:port` of the Redis server (or its Sentinel or
   * Cluster description), so an error can tell it apart from an instance's own host:port.
   */
  readonly address?: string | undefined;
  /**
   * Creates or replaces a record (`data` is the encoded instance) owned by `token`, expiring
   * `ttlMs` from now by the store's clock. A record equal to the stored one only refreshes the
   * expiry (and ownership) without a log entry.
   */
  register(
    service: string,
    id: string,
    data: string,
    token: string,
    ttlMs: number,
    options?: WriteOptions,
  ): Promise<RegisterOutcome>;
  /** Pushes the expiry of a record owned by `token` to `ttlMs` from now. Never logs. */
  heartbeat(
    service: string,
    id: string,
    token: string,
    ttlMs: number,
    options?: WriteOptions,
  ): Promise<HeartbeatOutcome>;
  /**
   * Removes a record owned by `token` (logged as `deregistered`, even when the record itself
   * vanished while its ownership stayed); `false` when it was not there (or owned by another).
   */
  deregister(service: string, id: string, token: string, options?: WriteOptions): Promise<boolean>;
  /**
   * Reads every record of a service with its revision and epoch, atomically (and, with
   * `options.since`, which records the log removed after that revision).
   */
  snapshot(service: string, options?: SnapshotOptions): Promise<Snapshot>;
  /** Removes expired records of a service (logged as `expired`); returns how many. Idempotent. */
  reap(service: string, options?: WriteOptions): Promise<number>;
  /** Starts reading a service's change log; `seek()` sets where from. */
  follow(service: string, listener: FeedListener): ChangeFeed;
  /** Releases what the backend opened itself. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * {@link Snapshot.removedSince} from the change-log entries a store holds after `since` (in log
 * order; entries of another epoch and those at or before `since` are skipped): the ids the last
 * entry of which is a removal, or `undefined` when the entries up to `upto` are not all there
 * (the log was trimmed past `since`).
 * @internal
 */
export function removalsSince(
  entries: Iterable<Pick<ChangeEntry, 'epoch' | 'revision' | 'type' | 'id'>>,
  since: LogPoint,
  upto: number,
): string[] | undefined {
  let next = since.revision + 1;
  const removed = new Set<string>();
  for (const e of entries) {
    if (next > upto) break;
    if (e.epoch !== since.epoch || e.revision < next) continue;
    if (e.revision !== next) return undefined; // a gap: what came between is gone
    next++;
    if (e.type === 'deregistered' || e.type === 'expired') removed.add(e.id);
    else removed.delete(e.id);
  }
  return next === upto + 1 ? [...removed] : undefined;
}
