/**
 * The Redis backend: records, expiry index, revision, epoch and change log per service, all
 * under one hash tag, changed only by the Lua scripts in `scripts.ts`; change-log readers of
 * every watched service share one blocking connection per backend.
 *
 * Reading: one `XREAD BLOCK` over every followed service's log, each from its reader's cursor
 * `<epoch>-<revision>`. The loop never trusts a quiet connection: a read that outlives its block
 * time by more than the command timeout counts as lost (a paused or unreachable server), the
 * connection is replaced and every reader is told to resync; a dropped connection is replaced
 * at once (not left to ioredis to reconnect and silently re-send the read) and handled the same
 * way;
 * and each idle timeout (and, when reads are never idle, every `blockMs`) probes every service
 * whose reads brought nothing: its epoch, its revision and whether the log holds anything past
 * the reader's position, read atomically — so a store that lost its data while nobody wrote, and
 * a change whose entry vanished from the log (trimmed, deleted, evicted), are noticed too.
 *
 * The log is read as data from outside: entries Keel's scripts did not write are reported
 * through {@link FeedListener.foreign} and skipped, never applied; readers resume after
 * stream positions, not after revisions, so a foreign entry cannot make them re-read it forever.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import {
  ClosedError,
  guardedOption,
  integerOption,
  ioTimeout,
  isClock,
  isRandomSource,
  numberOption,
  redisAddress,
  resolveOptions,
  runScript,
  sleep,
  stringOption,
  systemClock,
  throwIfAborted,
  type Clock,
  type Timer,
} from '../core/index.js';
import type {
  ChangeEntry,
  ChangeFeed,
  ChangeType,
  DiscoveryBackend,
  FeedListener,
  HeartbeatOutcome,
  RawRecord,
  RegisterOutcome,
  Snapshot,
  SnapshotOptions,
  WriteOptions,
} from './backend.js';
import { removalsSince } from './backend.js';
import { DEREGISTER, HEARTBEAT, PROBE, REAP, REGISTER, SNAPSHOT, type Script } from './scripts.js';

/**
 * What the Redis backend needs from a client. An ioredis `Redis` fits as is; no ioredis type
 * appears in the backend's logic.
 */
export interface DiscoveryRedisClient {
  /** Runs a loaded script by SHA-1 (`EVALSHA`). */
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  /** Runs a script from source (`EVAL`), after a `NOSCRIPT`. */
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  /** Any command: used for `XREAD`, `HMGET` and `CLIENT ID` / `CLIENT UNBLOCK`. */
  call(command: string, ...args: (string | number)[]): Promise<unknown>;
  /** A new connection with the same settings (for the blocking reader). */
  duplicate(): DiscoveryRedisClient;
  /** Closes the connection at once. */
  disconnect(): void;
  /** Connection events: `close` (lost), `ready` (connected), `error`. */
  on(event: 'close' | 'ready' | 'error', listener: (...args: unknown[]) => void): unknown;
  /**
   * `true` for a Redis Cluster client (ioredis `Cluster`): each followed service then gets its
   * own reader connection, since one blocking read cannot span hash slots.
   */
  readonly isCluster?: boolean | undefined;
}

/** Options of {@link RedisBackend}. */
export interface RedisBackendOptions {
  /** The client for scripts; the backend duplicates it once for its blocking reader. */
  readonly client: DiscoveryRedisClient;
  /** Prefix of every key. @defaultValue 'keel:discovery:' */
  readonly keyPrefix?: string | undefined;
  /**
   * Change-log entries kept per service (trimmed approximately, `MAXLEN ~`); a reader further
   * behind than this resyncs from a snapshot. @defaultValue 1000
   */
  readonly maxLogLength?: number | undefined;
  /**
   * Bytes of change-log entries kept per service, counted as the bytes of each entry's fields
   * (the record's JSON, its id, epoch and revision) plus 64: the log is trimmed to
   * `maxLogBytes / s` entries, where `s` is the largest entry logged in the last
   * `2 × maxLogLength + 100` writes, so it holds at most about this much (plus one stream macro
   * node, i.e. one entry when entries are larger than `stream-node-max-bytes`). The largest
   * valid record (64 × 4 KiB of metadata) makes ~260 KB entries: 64 of them with the default.
   * A reader further behind than the log resyncs from a snapshot. @defaultValue 16 MiB
   */
  readonly maxLogBytes?: number | undefined;
  /**
   * How long one blocking read waits; also the period of the probe for a lost epoch or vanished
   * log entries (so such a change shows within about this long). @defaultValue 2000
   */
  readonly blockMs?: number | undefined;
  /**
   * How long past `blockMs` a read may take before the connection counts as lost and is
   * replaced. @defaultValue 2000
   */
  readonly readTimeoutMs?: number | undefined;
  /**
   * Server-side self-preservation: a service untouched by any client for longer than this is
   * taken to have been through an outage. Keep it well above the reap interval, and well below
   * the shortest registration ttl minus its longest heartbeat interval (10 s − 10 s × 1/3 × 1.2
   * = 6 s with the registry defaults): an outage shorter than this gives no grace, so an
   * instance whose ttl can run out within it (or just after, before its next heartbeat gets
   * through) may be reaped when Redis answers again. @defaultValue 5000
   */
  readonly outageThresholdMs?: number | undefined;
  /** After such an outage, how long instances get to heartbeat before they can be reaped. @defaultValue 15000 */
  readonly outageGraceMs?: number | undefined;
  /** Most records one reap call removes. @defaultValue 1000 */
  readonly reapBatch?: number | undefined;
  /** Entries per blocking read. @defaultValue 1000 */
  readonly readBatch?: number | undefined;
  /** First reader retry delay after a failure (full jitter, doubling). @defaultValue 100 */
  readonly retryBaseMs?: number | undefined;
  /** Longest reader retry delay. @defaultValue 5000 */
  readonly retryMaxMs?: number | undefined;
  /** Clock for read timeouts and retries. @defaultValue `systemClock` */
  readonly clock?: Clock | undefined;
  /** Random numbers in [0, 1) for jitter. @defaultValue `Math.random` */
  readonly random?: (() => number) | undefined;
}

/** The keys of one service (all in one Redis Cluster slot). */
export interface ServiceKeys {
  /** Hash: instance id → instance JSON. */
  readonly records: string;
  /**
   * Hash: instance id → owner token of its registration (for a minute after a deregistration:
   * `deregistered <call>`, with no record, so a copy of that call sent again is recognised).
   */
  readonly leases: string;
  /** Sorted set: instance id → expiry, in Redis server milliseconds. */
  readonly expiry: string;
  /**
   * Hash: `epoch`, `rev` (revision), `seen` (server time of the last write or reap), `lid`
   * (stream id of the entry of `rev`), `lw`/`lm`/`lp` (the log's byte budget window), `reg` and
   * `reap` (`<call> <answer>` of the last register that changed a record, and of the last reap
   * that removed one: a copy of the call sent again answers the same).
   */
  readonly meta: string;
  /** Stream: the capped change log, entry ids `<epoch>-<revision>` while the stream takes them. */
  readonly log: string;
  /** Set: ids given an outage grace period that have not heartbeated since. */
  readonly graced: string;
}

const isClient = (value: unknown): value is DiscoveryRedisClient =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as DiscoveryRedisClient).evalsha === 'function' &&
  typeof (value as DiscoveryRedisClient).eval === 'function' &&
  typeof (value as DiscoveryRedisClient).call === 'function' &&
  typeof (value as DiscoveryRedisClient).duplicate === 'function';

const spec = {
  client: guardedOption(isClient, 'an ioredis client (evalsha, eval, call, duplicate)', {
    required: true,
  }),
  keyPrefix: stringOption({ default: 'keel:discovery:' }),
  maxLogLength: integerOption({ min: 1, max: 100_000_000, default: 1000 }),
  maxLogBytes: integerOption({ min: 1024, max: 2 ** 40, default: 16 * 1024 * 1024 }),
  blockMs: integerOption({ min: 1, max: 600_000, default: 2000 }),
  readTimeoutMs: numberOption({ min: 1, max: 600_000, default: 2000 }),
  outageThresholdMs: numberOption({ min: 1, max: 86_400_000, default: 5000 }),
  outageGraceMs: numberOption({ min: 0, max: 86_400_000, default: 15_000 }),
  reapBatch: integerOption({ min: 1, max: 1_000_000, default: 1000 }),
  readBatch: integerOption({ min: 1, max: 1_000_000, default: 1000 }),
  retryBaseMs: numberOption({ min: 1, max: 600_000, default: 100 }),
  retryMaxMs: numberOption({ min: 1, max: 3_600_000, default: 5000 }),
  clock: guardedOption(isClock, 'a Clock', { default: systemClock }),
  random: guardedOption(isRandomSource, 'a function returning numbers in [0, 1)', {
    default: Math.random,
  }),
};

type Resolved = ReturnType<typeof resolveOptions<typeof spec>>;

const TYPES: Readonly<Record<string, ChangeType>> = {
  r: 'registered',
  u: 'updated',
  d: 'deregistered',
  x: 'expired',
};

/** A position in a service's revisions: (epoch, revision), compared numerically. */
interface Cursor {
  readonly epoch: string;
  readonly revision: number;
}

/** The stream id Keel gives the entry of `cursor` when the stream takes explicit ids. */
function streamId(cursor: Cursor): string {
  return `${cursor.epoch === '' ? '0' : cursor.epoch}-${cursor.revision}`;
}

const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;

/**
 * Compares two stream ids (`<ms>-<seq>`, each a 64-bit unsigned number — BigInt, since foreign
 * ids may be past 2^53). Anything else sorts first, so it never wins a maximum.
 */
function compareIds(a: string, b: string): number {
  const ma = STREAM_ID.exec(a);
  const mb = STREAM_ID.exec(b);
  if (ma === null || mb === null) return ma === null ? (mb === null ? 0 : -1) : 1;
  const [ams, aseq, bms, bseq] = [ma[1], ma[2], mb[1], mb[2]].map((x) => BigInt(x ?? '0')) as [
    bigint,
    bigint,
    bigint,
    bigint,
  ];
  if (ams !== bms) return ams < bms ? -1 : 1;
  return aseq === bseq ? 0 : aseq < bseq ? -1 : 1;
}

/**
 * How long a deregistration's mark stays (see DEREGISTER in scripts.ts): a copy of the call that
 * ioredis sends again after reconnecting within this long still answers `true`. Longer than any
 * reconnect a caller waits out (the registry's operation timeout is 2 s by default); the reaper
 * drops the mark after it, unlogged.
 */
const MARK_MS = 60_000;

/** Backends made by a Redis Cluster backend to follow one service each. */
const LANES = new WeakSet<RedisBackend>();

class ReadTimeout extends Error {
  override readonly name = 'ReadTimeout';
}

/**
 * A {@link DiscoveryBackend} on Redis (7.0 or later). Give it one ioredis client; it opens one
 * more connection (a duplicate) for the blocking change-log reader, shared by every watch of
 * every registry using this backend. `close()` closes that connection; the client stays yours.
 *
 * Key layout per service `S` (prefix `keel:discovery:` by default), all with hash tag `{S}`:
 * `…{S}:records` hash id → instance JSON; `…{S}:leases` hash id → owner token (or, for a
 * minute after a deregistration, `deregistered <call>`); `…{S}:expiry` sorted set id → expiry
 * (server ms); `…{S}:meta` hash `epoch`, `rev`, `seen`, `lid` (stream id of the entry of `rev`),
 * `lw`/`lm`/`lp` (the byte budget's window), `reg` and `reap` (the last answers, by call);
 * `…{S}:log` stream of changes (fields `t` type r/u/d/x, `i` id, `e` epoch, `v` revision, `d`
 * JSON), ids `<epoch>-<revision>` while the stream takes them; `…{S}:graced` set of ids given an
 * outage grace period.
 *
 * The log is bounded by `maxLogLength` entries and about `maxLogBytes` bytes; a watcher further
 * behind resyncs from a snapshot. What else writes to Redis is read as data, not trusted: an
 * entry not shaped like Keel's is skipped and reported (`onQuarantined`, with `entry` set to its
 * stream id), one claiming a revision Keel never wrote is quarantined after one resync, and
 * neither stops the scripts from appending; a change whose entry vanished (trimmed, deleted,
 * evicted) is found by the idle probe within about `blockMs` and resynced over.
 *
 * With Redis Cluster (an ioredis `Cluster` client) each service's keys share a slot, but one
 * blocking read over services in different slots would be refused (`CROSSSLOT`), so there the
 * backend gives every followed service a reader of its own — one more connection (a duplicate
 * of the client) per service followed, closed once nobody follows it. A change of cursor there
 * takes effect at the next read (within `blockMs`): the read is not interrupted, since
 * `CLIENT ID` and `CLIENT UNBLOCK` would reach an arbitrary node of the cluster.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { RedisBackend, Registry } from 'keel/discovery';
 *
 * const client = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
 * await using backend = new RedisBackend({ client });
 * await using registry = new Registry({ backend });
 * await using registration = await registry.register({
 *   service: 'inventory',
 *   id: 'inventory-1',
 *   host: '127.0.0.1',
 *   port: 7001,
 * });
 * console.log(registration.state); // 'active'
 * ```
 */
export class RedisBackend implements DiscoveryBackend, AsyncDisposable {
  /** `redis`. */
  readonly kind = 'redis';

  /** The Redis server's `host:port`, from the client's options (see `redisAddress`). */
  get address(): string | undefined {
    return redisAddress(this.#client);
  }
  readonly #o: Resolved;
  readonly #client: DiscoveryRedisClient;
  /** Followed services → their feeds. */
  readonly #feeds = new Map<string, Set<RedisFeed>>();
  #reader: DiscoveryRedisClient | undefined;
  #readerId: number | undefined;
  /** Bumped whenever the reader connection closes: a read spanning a bump may have missed entries. */
  #generation = 0;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #reading = false;
  /** Sequence number of the current read, so a late kick retry does not hit the next one. */
  #readSeq = 0;
  #kicked = false;
  /** Rejects the reader call in flight (a dropped connection's calls may never settle). */
  #cancel: ((error: Error) => void) | undefined;
  #failures = 0;
  /** When services were last probed for lost entries (`#probe`). */
  #probedAt = Number.NEGATIVE_INFINITY;
  /** Services whose log key holds another type (→ that type): left out of reads until fixed. */
  readonly #badLogs = new Map<string, string>();
  #closed = false;
  readonly #closing = new AbortController();
  readonly #options: RedisBackendOptions;
  /** On Redis Cluster: a backend per followed service, each with its own reader. */
  readonly #lanes = new Map<string, RedisBackend>();

  /** Validates `options` (throwing `InvalidOptionError` naming a bad one); connects nothing yet. */
  constructor(options: RedisBackendOptions) {
    this.#o = resolveOptions('RedisBackend', options, spec);
    this.#client = this.#o.client;
    this.#options = options;
  }

  /** Whether followed services get readers of their own (a Cluster client, and not one already). */
  #perService(): boolean {
    return this.#client.isCluster === true && !LANES.has(this);
  }

  /** The keys of `service`. */
  keys(service: string): ServiceKeys {
    const base = `${this.#o.keyPrefix}{${service}}:`;
    return {
      records: `${base}records`,
      leases: `${base}leases`,
      expiry: `${base}expiry`,
      meta: `${base}meta`,
      log: `${base}log`,
      graced: `${base}graced`,
    };
  }

  /** {@inheritDoc DiscoveryBackend.register} */
  async register(
    service: string,
    id: string,
    data: string,
    token: string,
    ttlMs: number,
    options?: WriteOptions,
  ): Promise<RegisterOutcome> {
    this.#open('register');
    throwIfAborted(options?.signal);
    const o = this.#o;
    const reply = await this.#run(REGISTER, service, [
      id,
      data,
      token,
      Math.ceil(ttlMs),
      o.outageThresholdMs,
      o.outageGraceMs,
      o.maxLogLength,
      o.maxLogBytes,
      randomUUID(), // a copy sent again after a dropped connection answers this call's outcome
    ]);
    return String(reply) as RegisterOutcome;
  }

  /** {@inheritDoc DiscoveryBackend.heartbeat} */
  async heartbeat(
    service: string,
    id: string,
    token: string,
    ttlMs: number,
    options?: WriteOptions,
  ): Promise<HeartbeatOutcome> {
    this.#open('heartbeat');
    throwIfAborted(options?.signal);
    const o = this.#o;
    const reply = await this.#run(HEARTBEAT, service, [
      id,
      token,
      Math.ceil(ttlMs),
      o.outageThresholdMs,
      o.outageGraceMs,
    ]);
    return String(reply) as HeartbeatOutcome;
  }

  /** {@inheritDoc DiscoveryBackend.deregister} */
  async deregister(
    service: string,
    id: string,
    token: string,
    options?: WriteOptions,
  ): Promise<boolean> {
    this.#open('deregister');
    throwIfAborted(options?.signal);
    const o = this.#o;
    const reply = await this.#run(DEREGISTER, service, [
      id,
      token,
      o.outageThresholdMs,
      o.outageGraceMs,
      o.maxLogLength,
      o.maxLogBytes,
      // Names this call, so a copy of it sent again after a dropped connection recognises the
      // mark its first copy left (see DEREGISTER).
      randomUUID(),
      MARK_MS,
    ]);
    return Number(reply) === 1;
  }

  /** {@inheritDoc DiscoveryBackend.snapshot} */
  async snapshot(service: string, options?: SnapshotOptions): Promise<Snapshot> {
    this.#open('snapshot');
    throwIfAborted(options?.signal);
    const since = options?.since;
    // The whole log at most: `maxLogLength` entries, plus the stream macro node approximate
    // trimming leaves (100 entries by default), plus room for a few foreign entries.
    const args =
      since === undefined
        ? []
        : [since.epoch, since.revision, this.#o.maxLogLength + APPROXIMATE_TRIM_SLACK];
    const reply = await this.#run(SNAPSHOT, service, args);
    if (!Array.isArray(reply) || reply.length < 3 || !Array.isArray(reply[2])) {
      throw new Error(`unexpected snapshot reply for ${service}`);
    }
    const [epoch, rev, flat, lid, after] = reply as [unknown, unknown, unknown[], unknown, unknown];
    const records: RawRecord[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2)
      records.push({ id: String(flat[i]), data: flat[i + 1] });
    let snapshot: Snapshot = { epoch: String(epoch), revision: Number(rev), records };
    // Where the entry of this revision sits in the log; absent for a log an older Keel wrote.
    if (typeof lid === 'string' && STREAM_ID.test(lid)) snapshot = { ...snapshot, position: lid };
    if (since !== undefined && Array.isArray(after)) {
      const removedSince = removalsSince(logEntries(after), since, snapshot.revision);
      if (removedSince !== undefined) snapshot = { ...snapshot, removedSince };
    }
    return snapshot;
  }

  /** {@inheritDoc DiscoveryBackend.reap} */
  async reap(service: string, options?: WriteOptions): Promise<number> {
    this.#open('reap');
    throwIfAborted(options?.signal);
    const o = this.#o;
    const reply = await this.#run(REAP, service, [
      o.outageThresholdMs,
      o.outageGraceMs,
      o.maxLogLength,
      o.reapBatch,
      o.maxLogBytes,
      randomUUID(), // a copy sent again after a dropped connection counts this call's removals
    ]);
    return Number(reply);
  }

  /** {@inheritDoc DiscoveryBackend.follow} */
  follow(service: string, listener: FeedListener): ChangeFeed {
    this.#open('follow');
    if (this.#perService() && !this.#closed) {
      let lane = this.#lanes.get(service);
      if (lane === undefined) {
        lane = new RedisBackend(this.#options);
        LANES.add(lane);
        this.#lanes.set(service, lane);
      }
      return lane.follow(service, listener);
    }
    const feed = new RedisFeed(this, service, listener);
    let set = this.#feeds.get(service);
    if (set === undefined) {
      set = new Set();
      this.#feeds.set(service, set);
    }
    set.add(feed);
    return feed;
  }

  /**
   * Stops the reader and closes its connection (and, on Redis Cluster, each service's reader).
   * The client you passed stays open: quit it yourself, after this. Afterwards every method
   * rejects (or throws) a `ClosedError`. Close it after the registries that use it. Safe to
   * call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.abort(new Error('backend closed'));
    for (const set of this.#feeds.values()) for (const feed of set) feed.detach();
    this.#feeds.clear();
    this.#wake?.();
    this.#reader?.disconnect();
    this.#reader = undefined;
    await Promise.all([this.#loop, ...[...this.#lanes.values()].map((lane) => lane.close())]);
  }

  /** {@link RedisBackend.close}, for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- reader ---------------------------------------------------------------------------------

  /** @internal A feed was positioned, moved or closed: restart the read with the new cursors. */
  changed(feed: RedisFeed, closed: boolean): void {
    if (closed) {
      const set = this.#feeds.get(feed.service);
      set?.delete(feed);
      if (set?.size === 0) {
        this.#feeds.delete(feed.service);
        this.#badLogs.delete(feed.service);
      }
    }
    if (this.#closed) return;
    this.#loop ??= this.#readLoop().finally(() => {
      this.#loop = undefined;
    });
    this.#wake?.();
    if (this.#reading) this.#kick();
  }

  /**
   * Interrupts the blocked read (CLIENT UNBLOCK), so the next one uses the new cursors. The
   * read may not have reached the server yet (UNBLOCK then answers 0): try again shortly, a
   * few times, rather than wait out a whole block.
   */
  #kick(attempt = 0): void {
    this.#kicked = true;
    const id = this.#readerId;
    if (id === undefined || id < 0) return;
    const read = this.#readSeq;
    this.#client.call('CLIENT', 'UNBLOCK', id).then(
      (unblocked) => {
        if (Number(unblocked) !== 0 || attempt >= 5) return;
        if (!this.#reading || this.#readSeq !== read || this.#closed) return;
        this.#o.clock
          .setTimer(() => {
            if (this.#reading && this.#readSeq === read) this.#kick(attempt + 1);
          }, 5)
          .unref();
      },
      () => undefined,
    );
  }

  async #readLoop(): Promise<void> {
    while (!this.#closed) {
      const cursors = this.#cursors();
      if (cursors.size === 0) {
        if (this.#feeds.size === 0) {
          // A per-service reader on Redis Cluster is not kept for a service nobody follows.
          if (LANES.has(this)) this.#dropReader();
          return;
        }
        let timer: Timer | undefined;
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          // Only services with a bad log key: look at them again every blockMs.
          if (this.#badLogs.size > 0) timer = this.#o.clock.setTimer(resolve, this.#o.blockMs);
          timer?.unref();
        });
        timer?.cancel();
        this.#wake = undefined;
        if (this.#badLogs.size > 0) await this.#recheckLogs().catch(() => undefined);
        continue;
      }
      try {
        await this.#readOnce(cursors);
        this.#failures = 0;
      } catch (error) {
        if (this.#isClosed()) return;
        this.#failures++;
        this.#dropReader();
        this.#interruptAll('change-log read failed', error);
        const o = this.#o;
        const cap = Math.min(o.retryMaxMs, o.retryBaseMs * 2 ** Math.min(this.#failures - 1, 20));
        try {
          await sleep(o.random() * cap, {
            clock: o.clock,
            signal: this.#closing.signal,
            unref: true,
          });
        } catch {
          return;
        }
      }
    }
  }

  // Methods rather than fields: these change across awaits, which type narrowing cannot see.
  #isClosed(): boolean {
    return this.#closed;
  }

  /** Throws a `ClosedError` naming `operation` once the backend is closed. */
  #open(operation: string): void {
    if (this.#closed) throw new ClosedError('RedisBackend', operation);
  }

  #wasKicked(): boolean {
    return this.#kicked;
  }

  /** The smallest log position of each followed, positioned service. */
  #cursors(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [service, set] of this.#feeds) {
      if (this.#badLogs.has(service)) continue;
      let min: string | undefined;
      for (const feed of set) {
        const p = feed.position;
        if (p !== undefined && (min === undefined || compareIds(p, min) < 0)) min = p;
      }
      if (min !== undefined) out.set(service, min);
    }
    return out;
  }

  async #ensureReader(): Promise<DiscoveryRedisClient> {
    if (this.#reader !== undefined && this.#readerId !== undefined) return this.#reader;
    const reader = this.#reader ?? this.#client.duplicate();
    if (this.#reader === undefined) {
      this.#reader = reader;
      // Failures surface through the reads; without a listener ioredis would print each one.
      reader.on('error', () => undefined);
      reader.on('close', () => {
        if (this.#reader !== reader) return;
        // The connection dropped. Rather than let ioredis reconnect and re-send the read (which
        // would hide the gap), drop this connection — its pending read fails — and have every
        // reader resync now, flagged stale until it has a fresh snapshot.
        this.#dropReader();
        this.#interruptAll('connection to Redis lost');
      });
    }
    // On Redis Cluster the id would come from an arbitrary node, and a CLIENT UNBLOCK of it could
    // wake someone else's blocked command there: no id, so no kicks (reads just run their course).
    const id = LANES.has(this)
      ? -1
      : await this.#bounded(reader.call('CLIENT', 'ID'), this.#o.readTimeoutMs);
    this.#readerId = Number(id);
    return reader;
  }

  #dropReader(): void {
    this.#cancel?.(new Error('connection to Redis lost'));
    const reader = this.#reader;
    this.#reader = undefined;
    this.#readerId = undefined;
    this.#generation++;
    reader?.disconnect();
  }

  async #readOnce(cursors: Map<string, string>): Promise<void> {
    const o = this.#o;
    const reader = await this.#ensureReader();
    const generation = this.#generation;
    const services = [...cursors.keys()];
    const args: (string | number)[] = ['COUNT', o.readBatch, 'BLOCK', o.blockMs, 'STREAMS'];
    for (const service of services) args.push(this.keys(service).log);
    for (const service of services) args.push(cursors.get(service) as string);
    this.#kicked = false;
    this.#reading = true;
    this.#readSeq++;
    let reply: unknown;
    try {
      reply = await this.#bounded(reader.call('XREAD', ...args), o.blockMs + o.readTimeoutMs);
    } catch (error) {
      // One service's log key holding another type fails the read of every service: find it,
      // leave it out, and read the others on.
      if (!(error instanceof Error && error.message.includes('WRONGTYPE'))) throw error;
      if ((await this.#isolateBadLogs(services)) === 0) throw error;
      return;
    } finally {
      this.#reading = false;
    }
    if (this.#closed) return;
    if (generation !== this.#generation) {
      // The connection dropped and came back under this read: entries may have been missed.
      this.#interruptAll('reconnected');
      return;
    }
    for (const set of this.#feeds.values()) for (const feed of set) feed.markHealthy();
    if (reply === null || reply === undefined) {
      if (!this.#wasKicked()) await this.#probe(reader, cursors, services);
      return;
    }
    const fed = new Set<string>();
    for (const [key, raw] of streamsOf(reply)) {
      const service = services.find((s) => this.keys(s).log === key);
      const last = raw[raw.length - 1];
      if (service === undefined || last === undefined) continue;
      fed.add(service);
      const entries: ChangeEntry[] = [];
      const foreign: Foreign[] = [];
      for (const item of raw) {
        const parsed = parseEntry(item);
        if ('reason' in parsed) foreign.push(parsed);
        else entries.push(parsed);
      }
      const set = this.#feeds.get(service);
      if (set !== undefined) for (const feed of [...set]) feed.deliver(entries, foreign, last[0]);
    }
    // Reads that always bring something (other services busy) still probe the quiet ones.
    if (!this.#wasKicked() && this.#o.clock.now() - this.#probedAt >= o.blockMs) {
      await this.#probe(
        reader,
        cursors,
        services.filter((s) => !fed.has(s)),
      );
    }
  }

  /**
   * A read that brought nothing proves nothing was appended after the positions — not that
   * nothing changed: the store may have lost its data with nobody writing since, or a change's
   * entry may be gone from the log (trimmed to nothing, the key deleted or evicted). For each
   * service, read atomically its epoch, its revision and whether the log holds anything past
   * the position; a feed whose store moved (or went back) with nothing left to read is told to
   * resync, and one whose store is where it is learns how many records the store holds (see
   * {@link FeedListener.probed}).
   *
   * The probe runs on the reader's connection, idle between reads, not on the client: there it
   * would queue behind the client's writes, which a write pause (`CLIENT PAUSE … WRITE`) holds,
   * and time out — and the views would go stale while the store is readable. (The script is
   * read-only for the same reason.)
   */
  async #probe(
    reader: DiscoveryRedisClient,
    cursors: Map<string, string>,
    services: readonly string[],
  ): Promise<void> {
    this.#probedAt = this.#o.clock.now();
    if (this.#badLogs.size > 0) await this.#recheckLogs();
    await Promise.all(
      services.map(async (service) => {
        const position = cursors.get(service);
        if (position === undefined) return;
        const reply = await this.#bounded(
          this.#run(PROBE, service, [position], reader),
          this.#o.readTimeoutMs,
          false,
        );
        const [epoch, rev, after, records] = Array.isArray(reply) ? (reply as unknown[]) : [];
        if (Number(after) === 1) return; // more to read: the next read brings it
        const store: Cursor = {
          epoch: typeof epoch === 'string' ? epoch : '',
          revision: Number(rev ?? 0),
        };
        const count = Number(records ?? -1);
        const set = this.#feeds.get(service);
        if (set !== undefined) for (const feed of [...set]) feed.check(store, count);
      }),
    );
  }

  /** Finds the services among `services` whose log key is not a stream; returns how many. */
  async #isolateBadLogs(services: readonly string[]): Promise<number> {
    let found = 0;
    for (const service of services) {
      const log = this.keys(service).log;
      const type = String(
        await this.#bounded(this.#client.call('TYPE', log), this.#o.readTimeoutMs, false),
      );
      if (type === 'stream' || type === 'none') continue;
      found++;
      this.#badLogs.set(service, type);
      const why = `change-log key ${log} holds a ${type}, not a stream: not read until a write replaces it`;
      const set = this.#feeds.get(service);
      if (set !== undefined) for (const feed of [...set]) feed.interrupt(why, new Error(why));
    }
    return found;
  }

  /** Services whose log key is a stream again (or gone) are read again, after a resync. */
  async #recheckLogs(): Promise<void> {
    for (const service of [...this.#badLogs.keys()]) {
      const type = String(
        await this.#bounded(
          this.#client.call('TYPE', this.keys(service).log),
          this.#o.readTimeoutMs,
          false,
        ),
      );
      if (type !== 'stream' && type !== 'none') continue;
      this.#badLogs.delete(service);
      const set = this.#feeds.get(service);
      if (set !== undefined)
        for (const feed of [...set]) feed.interrupt('change-log key is a stream again');
    }
  }

  #interruptAll(reason: string, error?: unknown): void {
    for (const set of this.#feeds.values())
      for (const feed of [...set]) feed.interrupt(reason, error);
  }

  /**
   * Bounds a reader call by `ms`, and lets a dropped connection cancel it at once: ioredis
   * keeps the commands of a connection that closed for re-sending, so after `disconnect()`
   * they may never settle.
   */
  #bounded<T>(promise: Promise<T>, ms: number, cancellable = true): Promise<T> {
    let timer: Timer | undefined;
    promise.catch(() => undefined);
    return Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        if (cancellable) this.#cancel = reject;
        // After the I/O ready by then (see core/io-timeout.ts), so lag does not fail a read.
        timer = ioTimeout(
          this.#o.clock,
          () => {
            reject(new ReadTimeout(`no answer within ${ms} ms`));
          },
          ms,
        );
        timer.unref();
      }),
    ]).finally(() => {
      timer?.cancel();
      if (cancellable) this.#cancel = undefined;
    });
  }

  /** Runs `script` over the keys of `service` (on the client, unless `via` is given). */
  #run(
    script: Script,
    service: string,
    args: readonly (string | number)[],
    via: DiscoveryRedisClient = this.#client,
  ): Promise<unknown> {
    const k = this.keys(service);
    return runScript(via, script, [k.records, k.leases, k.expiry, k.meta, k.log, k.graced], args);
  }
}

type StreamEntries = [string, [string, string[]][]];

/** How many entries past `maxLogLength` the snapshot reads of the log (see `snapshot`). */
const APPROXIMATE_TRIM_SLACK = 200;

/**
 * The `{t, i, e, v, …}` list SNAPSHOT returns of the log entries after a revision, as entries
 * to count removals from (see `removalsSince`). One not written by Keel (no known type, or an
 * epoch or revision that is not a number) is left out: it changed nothing.
 */
function* logEntries(
  flat: readonly unknown[],
): Generator<Pick<ChangeEntry, 'epoch' | 'revision' | 'type' | 'id'>> {
  for (let k = 0; k + 3 < flat.length; k += 4) {
    const [t, id, epoch, v] = [flat[k], flat[k + 1], flat[k + 2], flat[k + 3]];
    const type = typeof t === 'string' && Object.hasOwn(TYPES, t) ? TYPES[t] : undefined;
    if (type === undefined || typeof id !== 'string' || typeof epoch !== 'string') continue;
    if (!/^\d{1,15}$/.test(epoch) || typeof v !== 'string' || !/^\d{1,15}$/.test(v)) continue;
    yield { type, id, epoch, revision: Number(v) };
  }
}

/**
 * The streams of an XREAD reply, whatever the client's reply mapping: RESP2's
 * `[[key, entries], …]`, RESP3 maps flattened to `[key, entries, …]` (ioredis 6's default), or a
 * plain object (RESP3 mapping).
 */
function streamsOf(reply: unknown): StreamEntries[] {
  if (Array.isArray(reply)) {
    if (reply.length === 0) return [];
    if (typeof reply[0] === 'string' || Buffer.isBuffer(reply[0])) {
      const out: StreamEntries[] = [];
      for (let i = 0; i + 1 < reply.length; i += 2)
        out.push([String(reply[i]), reply[i + 1] as [string, string[]][]]);
      return out;
    }
    return reply as StreamEntries[];
  }
  if (typeof reply === 'object' && reply !== null)
    return Object.entries(reply as Record<string, [string, string[]][]>);
  return [];
}

/** A log entry Keel's scripts did not write: reported and skipped. */
interface Foreign {
  readonly position: string;
  readonly reason: string;
  readonly id?: string;
}

const DIGITS = /^\d{1,15}$/;

/**
 * Reads one stream entry as a change, or as foreign when it is not shaped like one of Keel's: a
 * known type `t`, an instance id `i`, and an epoch and revision — fields `e` and `v`, or, in
 * entries older Keels wrote, the id `<epoch>-<revision>`.
 */
function parseEntry(raw: [string, string[]]): ChangeEntry | Foreign {
  const [position, fields] = raw;
  let type: ChangeType | undefined;
  let kind: string | undefined;
  let instanceId: string | undefined;
  let data: unknown;
  let epoch: string | undefined;
  let revision: string | undefined;
  for (let i = 0; i + 1 < (fields as unknown[]).length; i += 2) {
    const field = String(fields[i]);
    const value = fields[i + 1];
    if (field === 't') {
      kind = String(value);
      type = Object.hasOwn(TYPES, kind) ? TYPES[kind] : undefined;
    } else if (field === 'i') instanceId = String(value);
    else if (field === 'd') data = value;
    else if (field === 'e') epoch = String(value);
    else if (field === 'v') revision = String(value);
  }
  if (epoch === undefined && revision === undefined) {
    const m = STREAM_ID.exec(position);
    epoch = m?.[1];
    revision = m?.[2];
  }
  const claimed = instanceId === undefined || instanceId === '' ? {} : { id: instanceId };
  if (type === undefined) {
    const reason =
      kind === undefined
        ? 'not a change-log entry (no type field)'
        : `unknown change type ${JSON.stringify(kind.slice(0, 20))}`;
    return { position, reason, ...claimed };
  }
  if (claimed.id === undefined)
    return { position, reason: 'change-log entry without an instance id' };
  if (
    epoch === undefined ||
    revision === undefined ||
    !DIGITS.test(epoch) ||
    !DIGITS.test(revision)
  )
    return { position, reason: 'change-log entry without a valid epoch and revision', ...claimed };
  const rev = Number(revision);
  if (rev < 1) return { position, reason: 'change-log entry with revision 0', ...claimed };
  return data === undefined
    ? { epoch, revision: rev, type, id: claimed.id, position }
    : { epoch, revision: rev, type, id: claimed.id, data, position };
}

/** One reader's cursor over one service's log. */
class RedisFeed implements ChangeFeed {
  readonly service: string;
  readonly #backend: RedisBackend;
  readonly #listener: FeedListener;
  /** The revision the reader has in sequence (set by seek, advanced by entries that follow it). */
  #cursor: Cursor | undefined;
  /** The stream id read up to. */
  #position: string | undefined;
  /** Foreign entries up to this position were reported already. */
  #reported = '0-0';
  #interrupted = false;
  #closed = false;

  constructor(backend: RedisBackend, service: string, listener: FeedListener) {
    this.#backend = backend;
    this.service = service;
    this.#listener = listener;
  }

  get position(): string | undefined {
    return this.#position;
  }

  seek(epoch: string, revision: number, position?: string): void {
    if (this.#closed) return;
    this.#cursor = { epoch, revision };
    this.#position =
      position !== undefined && STREAM_ID.test(position) ? position : streamId({ epoch, revision });
    this.#interrupted = false;
    this.#backend.changed(this, false);
  }

  /** Entries read (Keel's, and foreign ones) up to stream id `last`. */
  deliver(entries: readonly ChangeEntry[], foreign: readonly Foreign[], last: string): void {
    if (this.#closed || this.#cursor === undefined || this.#position === undefined) return;
    if (compareIds(last, this.#position) > 0) this.#position = last;
    for (const f of foreign) {
      if (compareIds(f.position, this.#reported) <= 0) continue;
      this.#reported = f.position;
      this.#listener.foreign(f.position, f.reason, f.id);
    }
    if (entries.length === 0) return;
    // Only entries in sequence move the cursor: one out of sequence makes the reader resync
    // (which seeks) or quarantine it (which must not count as progress).
    for (const entry of entries) {
      const c: Cursor = this.#cursor;
      const first = c.epoch === '' && c.revision === 0 && entry.revision === 1;
      if ((entry.epoch === c.epoch || first) && entry.revision === c.revision + 1)
        this.#cursor = { epoch: entry.epoch, revision: entry.revision };
    }
    this.#listener.entries(entries);
  }

  /**
   * The store as a probe found it, with nothing left to read, holding `records` records (-1:
   * unknown): resync if it moved, else let the reader check its count.
   */
  check(store: Cursor, records: number): void {
    const c = this.#cursor;
    if (c === undefined) return;
    if (store.epoch === c.epoch && store.revision === c.revision) {
      if (records >= 0 && !this.#closed) this.#listener.probed?.(c.epoch, c.revision, records);
    } else if (store.epoch !== c.epoch) {
      this.interrupt(`store epoch changed (${c.epoch || 'none'} -> ${store.epoch || 'none'})`);
    } else if (store.revision < c.revision) {
      this.interrupt(`store revision went back (${c.revision} -> ${store.revision})`);
    } else if (store.revision > c.revision) {
      this.interrupt(
        `change-log entries lost: the store is at revision ${store.revision}, its log ends at ${c.revision} (trimmed, deleted or evicted)`,
      );
    }
  }

  interrupt(reason: string, error?: unknown): void {
    if (this.#closed || this.#interrupted) return;
    this.#interrupted = true;
    this.#listener.interrupted(reason, error);
  }
  markHealthy(): void {
    if (this.#closed) return;
    this.#listener.healthy();
  }

  /** Detaches without telling the backend (it is closing). */
  detach(): void {
    this.#closed = true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#backend.changed(this, true);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
