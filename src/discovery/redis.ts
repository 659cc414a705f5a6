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
 * and each idle timeout checks every service's epoch and revision, so a store that lost its
 * data while nobody wrote is noticed too.
 *
 * @packageDocumentation
 */
import {
  guardedOption,
  integerOption,
  isClock,
  isRandomSource,
  numberOption,
  resolveOptions,
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
  WriteOptions,
} from './backend.js';
import { DEREGISTER, HEARTBEAT, REAP, REGISTER, SNAPSHOT, type Script } from './scripts.js';

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
  /** How long one blocking read waits; also the period of the idle epoch check. @defaultValue 2000 */
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
  /** Hash: instance id → owner token of its registration. */
  readonly leases: string;
  /** Sorted set: instance id → expiry, in Redis server milliseconds. */
  readonly expiry: string;
  /** Hash: `epoch`, `rev` (revision), `seen` (server time of the last write or reap). */
  readonly meta: string;
  /** Stream: the capped change log, entry ids `<epoch>-<revision>`. */
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

/** A stream id as (epoch, revision), compared numerically. */
interface Cursor {
  readonly epoch: string;
  readonly revision: number;
}

function streamId(cursor: Cursor): string {
  return `${cursor.epoch === '' ? '0' : cursor.epoch}-${cursor.revision}`;
}

function compareCursor(a: Cursor, b: Cursor): number {
  const ea = a.epoch === '' ? 0 : Number(a.epoch);
  const eb = b.epoch === '' ? 0 : Number(b.epoch);
  return ea !== eb ? ea - eb : a.revision - b.revision;
}

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
 * `…{S}:records` hash id → instance JSON; `…{S}:leases` hash id → owner token; `…{S}:expiry`
 * sorted set id → expiry (server ms); `…{S}:meta` hash `epoch`, `rev`, `seen`; `…{S}:log`
 * stream of changes with ids `<epoch>-<revision>` (fields `t` type r/u/d/x, `i` id, `d` JSON);
 * `…{S}:graced` set of ids given an outage grace period.
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
    throwIfAborted(options?.signal);
    const o = this.#o;
    const reply = await this.#run(DEREGISTER, service, [
      id,
      token,
      o.outageThresholdMs,
      o.outageGraceMs,
      o.maxLogLength,
    ]);
    return Number(reply) === 1;
  }

  /** {@inheritDoc DiscoveryBackend.snapshot} */
  async snapshot(service: string, options?: WriteOptions): Promise<Snapshot> {
    throwIfAborted(options?.signal);
    const reply = await this.#run(SNAPSHOT, service, []);
    if (!Array.isArray(reply) || reply.length < 3 || !Array.isArray(reply[2])) {
      throw new Error(`unexpected snapshot reply for ${service}`);
    }
    const [epoch, rev, flat] = reply as [unknown, unknown, unknown[]];
    const records: RawRecord[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2)
      records.push({ id: String(flat[i]), data: flat[i + 1] });
    return { epoch: String(epoch), revision: Number(rev), records };
  }

  /** {@inheritDoc DiscoveryBackend.reap} */
  async reap(service: string, options?: WriteOptions): Promise<number> {
    throwIfAborted(options?.signal);
    const o = this.#o;
    const reply = await this.#run(REAP, service, [
      o.outageThresholdMs,
      o.outageGraceMs,
      o.maxLogLength,
      o.reapBatch,
    ]);
    return Number(reply);
  }

  /** {@inheritDoc DiscoveryBackend.follow} */
  follow(service: string, listener: FeedListener): ChangeFeed {
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

  /** Stops the reader and closes its connection. The client you passed stays open. */
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
      if (set?.size === 0) this.#feeds.delete(feed.service);
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
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
        this.#wake = undefined;
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

  #wasKicked(): boolean {
    return this.#kicked;
  }

  /** The smallest cursor of each followed, positioned service. */
  #cursors(): Map<string, Cursor> {
    const out = new Map<string, Cursor>();
    for (const [service, set] of this.#feeds) {
      let min: Cursor | undefined;
      for (const feed of set) {
        const c = feed.cursor;
        if (c !== undefined && (min === undefined || compareCursor(c, min) < 0)) min = c;
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

  async #readOnce(cursors: Map<string, Cursor>): Promise<void> {
    const o = this.#o;
    const reader = await this.#ensureReader();
    const generation = this.#generation;
    const services = [...cursors.keys()];
    const args: (string | number)[] = ['COUNT', o.readBatch, 'BLOCK', o.blockMs, 'STREAMS'];
    for (const service of services) args.push(this.keys(service).log);
    for (const service of services) args.push(streamId(cursors.get(service) as Cursor));
    this.#kicked = false;
    this.#reading = true;
    this.#readSeq++;
    let reply: unknown;
    try {
      reply = await this.#bounded(reader.call('XREAD', ...args), o.blockMs + o.readTimeoutMs);
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
      if (!this.#wasKicked()) await this.#checkEpochs(cursors);
      return;
    }
    for (const [key, entries] of streamsOf(reply)) {
      const service = services.find((s) => this.keys(s).log === key);
      if (service === undefined) continue;
      const parsed = entries.map(parseEntry);
      const set = this.#feeds.get(service);
      if (set !== undefined) for (const feed of [...set]) feed.deliver(parsed);
    }
  }

  /**
   * An idle read proves nothing was appended after the cursors — unless the store lost its data
   * and nobody wrote since. Compare each service's epoch and revision with its readers'.
   */
  async #checkEpochs(cursors: Map<string, Cursor>): Promise<void> {
    await Promise.all(
      [...cursors].map(async ([service, cursor]) => {
        const meta = await this.#bounded(
          this.#client.call('HMGET', this.keys(service).meta, 'epoch', 'rev'),
          this.#o.readTimeoutMs,
          false,
        );
        const [epoch, rev] = Array.isArray(meta) ? (meta as unknown[]) : [];
        const storeEpoch = typeof epoch === 'string' ? epoch : '';
        const storeRev = Number(rev ?? 0);
        if (storeEpoch !== cursor.epoch || storeRev < cursor.revision) {
          const set = this.#feeds.get(service);
          if (set !== undefined)
            for (const feed of [...set])
              feed.interrupt(
                `store epoch changed (${cursor.epoch || 'none'} -> ${storeEpoch || 'none'})`,
              );
        }
      }),
    );
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
        timer = this.#o.clock.setTimer(() => {
          reject(new ReadTimeout(`no answer within ${ms} ms`));
        }, ms);
        timer.unref();
      }),
    ]).finally(() => {
      timer?.cancel();
      if (cancellable) this.#cancel = undefined;
    });
  }

  async #run(
    script: Script,
    service: string,
    args: readonly (string | number)[],
  ): Promise<unknown> {
    const k = this.keys(service);
    const keys = [k.records, k.leases, k.expiry, k.meta, k.log, k.graced];
    try {
      return await this.#client.evalsha(script.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (error instanceof Error && error.message.includes('NOSCRIPT')) {
        return await this.#client.eval(script.source, keys.length, ...keys, ...args);
      }
      throw error;
    }
  }
}

type StreamEntries = [string, [string, string[]][]];

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

function parseEntry(raw: [string, string[]]): ChangeEntry {
  const [id, fields] = raw;
  const dash = id.indexOf('-');
  const epoch = id.slice(0, dash);
  const revision = Number(id.slice(dash + 1));
  let type: ChangeType | undefined;
  let instanceId = '';
  let data: unknown;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const field = fields[i];
    const value = fields[i + 1];
    if (field === 't') type = TYPES[value as string];
    else if (field === 'i') instanceId = String(value);
    else if (field === 'd') data = value;
  }
  // An entry of unknown shape still takes up its revision; as an update with no data it is
  // quarantined by the reader rather than trusted or skipped.
  return { epoch, revision, type: type ?? 'updated', id: instanceId, data };
}

/** One reader's cursor over one service's log. */
class RedisFeed implements ChangeFeed {
  readonly service: string;
  readonly #backend: RedisBackend;
  readonly #listener: FeedListener;
  #cursor: Cursor | undefined;
  #interrupted = false;
  #closed = false;

  constructor(backend: RedisBackend, service: string, listener: FeedListener) {
    this.#backend = backend;
    this.service = service;
    this.#listener = listener;
  }

  get cursor(): Cursor | undefined {
    return this.#cursor;
  }

  seek(epoch: string, revision: number): void {
    if (this.#closed) return;
    this.#cursor = { epoch, revision };
    this.#interrupted = false;
    this.#backend.changed(this, false);
  }

  deliver(entries: readonly ChangeEntry[]): void {
    if (this.#closed || this.#cursor === undefined || entries.length === 0) return;
    const last = entries[entries.length - 1] as ChangeEntry;
    if (compareCursor(last, this.#cursor) > 0)
      this.#cursor = { epoch: last.epoch, revision: last.revision };
    this.#listener.entries(entries);
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
