/**
 * `Cache`: an in-process L1 (lru-cache) in front of an optional Redis L2, built against the
 * three ways a cache fails under load — breakdown (a hot key expires and everyone rebuilds it:
 * in-process single-flight plus a cross-process Redis lease, stale-while-revalidate, XFetch),
 * avalanche (keys expiring together: ttl jitter, `warm`) and penetration (keys that exist
 * nowhere: negative caching, a Bloom-filter guard).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import {
  EventChannel,
  InvalidOptionError,
  KeelChannel,
  raceAbort,
  resolveOptions,
  runScript,
  throwIfAborted,
  wakeableSleep,
  wallTime,
  type Subscription,
} from '../core/index.js';
import {
  encodeEnvelope,
  freshness,
  jitteredTtl,
  makeEntry,
  readHeader,
  shiftEntry,
  xfetchRefreshL1,
  xfetchRefresh,
  type Entry,
  type HeaderFields,
  type L1Entry,
  type L1Life,
  type Lifetimes,
} from './entry.js';
import {
  CacheClosedError,
  CacheSerializationError,
  isCacheRedisError,
  type CacheRedisError,
} from './errors.js';
import type {
  CacheDegradedEvent,
  CacheGraceEvent,
  CacheQuarantineEvent,
  CacheRecoveredEvent,
  CacheRefreshErrorEvent,
  CacheStaleWriteRefusedEvent,
} from './events.js';
import {
  resolveCacheOptions,
  callSignal,
  resolveCallOptions,
  resolveSignal,
  warmSpec,
  type CacheGuard,
  type CacheOptions,
  type LifetimeOptions,
  type ResolvedCacheOptions,
} from './options.js';
import { checkKeyList } from './bloom.js';
import { RedisTier } from './redis-tier.js';
import * as scripts from './scripts.js';

/** What a loader is given. */
export interface LoaderContext {
  /** The key asked for (without the namespace). */
  readonly key: string;
  /** Aborts when the cache closes; pass it on to the database call. */
  readonly signal: AbortSignal;
}

/**
 * Loads the value of a key from the source of truth. Returning `undefined` means the key does
 * not exist: the absence is cached for `negativeTtlMs`.
 */
export type Loader<V> = (context: LoaderContext) => V | undefined | Promise<V | undefined>;

/** Options of {@link Cache.warm}. */
export interface WarmOptions {
  /** Most loads at once. @defaultValue `8` */
  readonly concurrency?: number | undefined;
  /** Stops warming (the loads already running finish); rejects with its reason. */
  readonly signal?: AbortSignal | undefined;
}

/** Options of {@link Cache.get} and {@link Cache.delete}. */
export interface CallOptions {
  /** Rejects with its reason when aborted. */
  readonly signal?: AbortSignal | undefined;
}

/** A Redis value counts as newer than the copy being reloaded when fresh this much longer. */
const LEASE_FRESHER_MARGIN_MS = 10;

/** A quarantined value is kept this long under `<key>:quarantine` for inspection. */
const QUARANTINE_TTL_MS = 86_400_000;

const channels = {
  degraded: new KeelChannel<CacheDegradedEvent>('cache', 'degraded'),
  recovered: new KeelChannel<CacheRecoveredEvent>('cache', 'recovered'),
  quarantine: new KeelChannel<CacheQuarantineEvent>('cache', 'quarantine'),
  grace: new KeelChannel<CacheGraceEvent>('cache', 'grace'),
  refreshError: new KeelChannel<CacheRefreshErrorEvent>('cache', 'refresh-error'),
  staleWriteRefused: new KeelChannel<CacheStaleWriteRefusedEvent>('cache', 'stale-write-refused'),
};

/** One shared load of a key in this process. */
interface Flight {
  readonly promise: Promise<unknown>;
  /** Set by a local `set`/`delete` while loading: the result must not be stored. */
  voided: boolean;
  /**
   * A background refresh: its promise resolves to the loaded value, or to {@link NO_VALUE} when
   * it did not load (another process held the lease, or the loader failed), in which case a
   * caller that joined it loads in the foreground.
   */
  readonly background: boolean;
  /**
   * The load's first `GET` is on its way (see {@link Cache.#load}): a caller that joins now
   * sends the lease read along with it (see {@link Probe}).
   */
  getting: boolean;
  /** The lease read sent along with the first `GET`, if a caller joined in time. */
  probe: Probe | undefined;
  /**
   * The load's key, its full name, loader and kept lifetimes, and the generation its first `GET`
   * began in: what that `GET`'s continuation ({@link Cache.#afterGet}, one function per cache)
   * reads, held here rather than in a closure made per load.
   */
  readonly full: string;
  readonly key: string;
  readonly loader: Loader<unknown>;
  readonly call: LifetimeOptions | undefined;
  generation: number;
}

/**
 * A `getOrLoad` caller's options as the load or refresh it starts keeps them: validated and
 * frozen (the caller may change its object afterwards).
 */
function kept(options: LifetimeOptions | undefined): LifetimeOptions | undefined {
  return options === undefined ? undefined : resolveCallOptions('Cache.getOrLoad', options);
}

/**
 * The read script (which takes the lease when Redis has no value) sent by the second caller of
 * a load while the load's first `GET` is still on its way, rather than after that `GET` comes
 * back empty: on a key that many callers want at once — a cold stampede — the lease is then
 * taken (or found held) one round trip sooner, and the loader, or the wait for another
 * process's fill, starts one round trip sooner. A `GET` that finds the value makes the read
 * unneeded; if the read took the lease all the same (the value went in between), the lease is
 * given back (see {@link Cache.#dropProbe}).
 */
interface Probe {
  /** The lease token the read script was sent with (the load's token if it takes the lease). */
  readonly token: string;
  /** Registered before the read was sent (see {@link CacheCore.watch}). */
  readonly watch: Watch;
  readonly read: Promise<L2Read>;
}

/**
 * What a load of a key has heard about it on the subscriber connection since it last sent a
 * read to Redis. Registered before the read is sent, so a fill, release or invalidation that
 * Redis ran after the read is heard even when its message is handled before the read's reply
 * (they come on two connections: the event loop may read either socket first) — a waiter
 * registered only once the reply is in would sleep through it, until its poll.
 */
interface Watch {
  /** A message about the key came since the last read was sent. */
  heard: boolean;
  /** The value the last such message carried (a fill's envelope, on the local timeline). */
  filled: Entry | undefined;
  /** Wakes the load if it sleeps; a no-op otherwise. */
  wake: () => void;
}

/** A settled promise, the placeholder of a flight's until its own is made. */
const RESOLVED: Promise<unknown> = Promise.resolve();

/** The entry that keeps {@link CacheCore.#flights} from emptying; never any key's flight. */
const noop = (): void => undefined;

/**
 * Whether a successful reply to one of the cache's Redis calls shows that Redis took a write
 * that could grow memory — what ends a degraded period started by Redis running out of memory
 * (see `TierSettings.wroteMemory`). Reads and deletes are answered while Redis refuses writes,
 * so their success says nothing; a `set` (its script's first command is a `SET`) does, and so
 * do a fill written, a lease taken and a value quarantined.
 */
function wroteMemory(operation: string, reply: unknown): boolean {
  switch (operation) {
    case 'set':
      return true;
    case 'fill':
    case 'quarantine':
      return reply === 1;
    case 'lease':
      return Array.isArray(reply) && reply[0] === 1;
    case 'read':
      return Array.isArray(reply) && reply[1] === 1;
    default:
      return false;
  }
}

/**
 * Whether Redis refused a command because the key holds another type than a string: foreign data
 * under one of the cache's keys (see {@link CacheCore.foreign}). The error prefix Redis sends,
 * also from inside a script.
 */
function isWrongType(error: CacheRedisError): boolean {
  const cause: unknown = error.cause;
  return (
    error.kind === 'script-error' && cause instanceof Error && cause.message.includes('WRONGTYPE')
  );
}

const IDLE_FLIGHT: Flight = Object.freeze({
  promise: RESOLVED,
  voided: false,
  background: false,
  getting: false,
  probe: undefined,
  full: '',
  key: '',
  loader: noop,
  call: undefined,
  generation: 0,
});

/** `Cache`'s key memo before its first key: equal to nothing a caller can pass. */
const NO_KEY: object = Object.freeze({});

/** {@link CacheCore.parse}'s header fields, reused by every read (it is synchronous). */
const HEADER: HeaderFields = {
  negative: false,
  freshUntil: 0,
  staleUntil: 0,
  graceUntil: 0,
  deltaMs: 0,
};

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** {@link CacheCore.parseShared}'s entry, reused by every such read (see there). */
const SCRATCH: Mutable<Entry> = {
  value: undefined,
  negative: false,
  freshUntil: 0,
  staleUntil: 0,
  graceUntil: 0,
  deltaMs: 0,
  refreshAt: undefined,
};

/**
 * Longest envelope (characters) a fill message carries to the waiters (see
 * {@link CacheCore.fillMessage}); a larger value is read from Redis by each waiting process.
 */
const FILL_MESSAGE_VALUE_MAX = 8_192;

/** A load's first `GET` found no value: the read script (which takes the lease) runs next. */
const MISSED: unique symbol = Symbol('missed');

/**
 * A bare lease read (see {@link CacheCore.readScript}) found a value, which it did not send:
 * the load that uses it reads the value with a GET. Took no lease, so a read let go of needs
 * nothing undone.
 */
const PRESENT: L2Read = Object.freeze({ kind: 'miss', took: false, leaseTtlMs: 0 });

/** A load's first read found Redis down. */
const DOWN: L2Read = Object.freeze({ kind: 'down' });

/** What a background refresh's flight resolves to when it produced no value. */
const NO_VALUE: unique symbol = Symbol('no value');

/** A read of L2 turned into an entry on the local timeline, or why there is none. */
type L2Read =
  | {
      readonly kind: 'entry';
      readonly entry: Entry;
      readonly took: boolean;
      /** Redis reported the key changed while this read was on its way: serve, don't keep. */
      readonly uncached?: true;
    }
  | { readonly kind: 'miss'; readonly took: boolean; readonly leaseTtlMs: number }
  | { readonly kind: 'down' };

const isKey = (key: unknown): key is string => typeof key === 'string' && key !== '';

/** How many distinct L1 lives a cache keeps for sharing (see {@link CacheCore.storeL1}). */
const LIVES_KEPT = 256;

/**
 * `full` as one flat string, for keeping as an L1 key. `namespace:key` built by `+` is a V8
 * cons string — a node pointing at both parts, which the map then keeps alive with it (about
 * 32 bytes more per entry than one flat copy); `join` writes the characters into a new string.
 */
const flatKey = (full: string): string =>
  full.length < 13 ? full : [full.slice(0, 1), full.slice(1)].join('');

/** Everything the namespaces of one cache share. */
class CacheCore {
  readonly o: ResolvedCacheOptions;
  readonly l1: LRUCache<string, L1Entry> | undefined;
  /** The time L1 entries' fresh deadlines are counted from (see {@link L1Entry}). */
  readonly epoch: number;
  /** The last life given to an L1 entry, shared by the next ones with the same lifetimes. */
  /** {@link CacheCore.hit}'s memo. */
  #hitSlot: L1Entry | undefined;
  #hitValue: Promise<unknown> = Promise.resolve(undefined);
  /** Recent lives by their fields, shared by the entries that have them. */
  readonly #lives = new Map<string, L1Life>();
  #life: L1Life = { staleMs: 0, graceMs: 0, negative: false, deltaMs: 0, refreshAt: undefined };
  readonly tier: RedisTier | undefined;
  readonly origin = randomUUID();
  readonly channel: string;
  /**
   * Loads in flight, by key: the first in {@link CacheCore.#soloKey} / {@link CacheCore.#solo},
   * any others here (a key is in one place or the other, never both). One load at a time — a
   * hot key's L2 hits one after another — then never touches the map: a map that gains and loses
   * an entry per load rebuilds its table every few loads (V8's ordered hash tables reclaim
   * deleted entries only by rehashing into a new table), about 50 bytes per L2 hit. The map
   * always holds one entry under `''` (no key's name), so that it does not shrink and grow its
   * table as it empties and fills while several loads overlap.
   */
  readonly #flights = new Map<string, Flight>([['', IDLE_FLIGHT]]);
  #soloKey: string | undefined;
  #solo: Flight | undefined;
  readonly refreshing = new Set<string>();
  /** The loads of each key that wait, or may come to wait, for another's fill (see Watch). */
  readonly watches = new Map<string, Set<Watch>>();
  readonly closing = new AbortController();
  guard: CacheGuard | undefined;
  /**
   * L2 reads on their way, by key, while Redis tracking is on: a report that the key changed
   * marks them, and a marked read's value is not kept in L1 (it may predate the change — the
   * race the Redis client-side caching docs describe for a separate invalidation connection).
   */
  readonly reads = new Map<string, Set<{ stale: boolean }>>();
  /**
   * Bumped each time every L1 copy is dropped (changes may have gone unheard): a Redis read
   * begun under an older generation may predate such a change, so its value is served but not
   * kept in L1.
   */
  generation = 0;
  #tokens = 0;
  #lastFull = '';
  #lastValueKey = '';
  closed = false;

  readonly degraded = new EventChannel<CacheDegradedEvent>();
  readonly recovered = new EventChannel<CacheRecoveredEvent>();
  readonly quarantine = new EventChannel<CacheQuarantineEvent>();
  readonly grace = new EventChannel<CacheGraceEvent>();
  readonly refreshError = new EventChannel<CacheRefreshErrorEvent>();
  readonly staleWriteRefused = new EventChannel<CacheStaleWriteRefusedEvent>();

  constructor(options: ResolvedCacheOptions) {
    this.o = options;
    this.guard = options.guard;
    this.channel = `${options.prefix}events`;
    this.epoch = options.clock.now();
    if (options.l1 !== false) {
      const { max, maxSize, sizeOf } = options.l1;
      this.l1 =
        maxSize === undefined
          ? new LRUCache<string, L1Entry>({ max })
          : new LRUCache<string, L1Entry>({
              max,
              maxSize,
              sizeCalculation: (entry) => Math.max(1, measure(entry.value, sizeOf)),
            });
    }
    if (options.redis !== undefined) {
      this.tier = new RedisTier({
        client: options.redis,
        clock: options.clock,
        timeoutMs: options.redisTimeoutMs,
        retryMs: options.degradedRetryMs,
        channel: this.channel,
        subscribe: options.invalidation,
        scripts: scripts.ALL,
        tracking: options.tracking,
        prefix: options.prefix,
        onInvalidate: (keys) => {
          this.#onInvalidate(keys);
        },
        onListening: () => {
          this.#invalidateAll();
        },
        onMessage: (message) => {
          this.#onMessage(message);
        },
        onDegraded: (operation, error) => {
          this.emit(this.degraded, channels.degraded, () => ({
            operation,
            error,
            time: wallTime(),
          }));
        },
        onRecovered: (degradedMs) => {
          this.emit(this.recovered, channels.recovered, () => ({ degradedMs, time: wallTime() }));
        },
        wroteMemory,
      });
    }
  }

  /** A foreground load settles: later callers start their own (or find L1 filled). */
  land(full: string, flight: Flight): void {
    if (this.flightOf(full) === flight) this.endFlight(full);
  }

  /** The load of `full` in flight, if any. */
  flightOf(full: string): Flight | undefined {
    return this.#soloKey === full ? this.#solo : this.#flights.get(full);
  }

  /**
   * A set or delete (here, or another process's): the load of `full` in flight, if any, must
   * not keep its (possibly older) result in L1, and later callers start their own.
   */
  voidFlight(full: string): void {
    const flight = this.flightOf(full);
    // Not the placeholder under '' (frozen): a foreign message can name the empty key.
    if (flight !== undefined && flight !== IDLE_FLIGHT) {
      flight.voided = true;
      this.endFlight(full);
    }
  }

  /** Registers `flight` as the load of `full`, which has none in flight. */
  startFlight(full: string, flight: Flight): void {
    if (this.#soloKey === undefined) {
      this.#soloKey = full;
      this.#solo = flight;
    } else this.#flights.set(full, flight);
  }

  /** Takes the load of `full` out (later callers start their own). */
  endFlight(full: string): void {
    if (this.#soloKey === full) {
      this.#soloKey = undefined;
      this.#solo = undefined;
    } else this.#flights.delete(full);
  }

  /** Feeds a typed event and its diagnostics channel from one place; builds nothing unheard. */
  emit<T extends object>(events: EventChannel<T>, channel: KeelChannel<T>, build: () => T): void {
    if (!events.active && !channel.active) return;
    const event = build();
    events.emit(event);
    channel.publish(event);
  }

  /**
   * The time to judge an L1 hit by: a fresh clock reading, every time. (A reading reused for a
   * millisecond or several hits, lru-cache's `ttlResolution`, is faster, but after the event
   * loop was blocked it is as old as the block, and a hit could then return a value past its
   * ttl + staleMs — the bound the cache promises.)
   */
  hitNow(): number {
    return this.o.clock.now();
  }

  token(): string {
    return `${this.origin}:${(this.#tokens++).toString(36)}`;
  }

  /** The Redis key of `full`'s value (the last one is kept: a hot key's reads build no string). */
  valueKey(full: string): string {
    if (full !== this.#lastFull) {
      this.#lastFull = full;
      this.#lastValueKey = `${this.o.prefix}{${full}}`;
    }
    return this.#lastValueKey;
  }

  /** `f` fill, `i` invalidation (set/delete), `r` lease released: `kind|origin|namespace:key`. */
  message(kind: 'f' | 'i' | 'r', full: string): string {
    return `${kind}|${this.origin}|${full}`;
  }

  /**
   * A fill's message: with the envelope written when it is small (`v|origin|<length of the
   * key>|namespace:key<envelope>`), so that waiters in other processes, woken by it, have the
   * value without reading Redis again — a round trip, and a wake-up of the process, fewer
   * between the loader's end and theirs. A larger value goes as a plain `f` (the message fans
   * out to every process subscribed).
   */
  fillMessage(full: string, envelope: string): string {
    return envelope.length > FILL_MESSAGE_VALUE_MAX
      ? this.message('f', full)
      : `v|${this.origin}|${full.length}|${full}${envelope}`;
  }

  #onMessage(message: string): void {
    const first = message.indexOf('|');
    const second = message.indexOf('|', first + 1);
    if (first !== 1 || second === -1) return;
    let full: string;
    let envelope: string | undefined;
    if (message[0] === 'v') {
      const third = message.indexOf('|', second + 1);
      const length = third === -1 ? NaN : Number(message.slice(second + 1, third));
      if (!Number.isSafeInteger(length) || length < 1 || third + 1 + length > message.length) {
        return;
      }
      full = message.slice(third + 1, third + 1 + length);
      envelope = message.slice(third + 1 + length);
    } else {
      full = message.slice(second + 1);
    }
    // Another process changed the value: our L1 copy is out of date. Our own messages change
    // nothing (L1 was updated before the write).
    if (message.slice(first + 1, second) !== this.origin && message[0] !== 'r') {
      this.l1?.delete(full);
      // A set or delete: a load of the key in flight here may have read the source before it,
      // and one without the lease (a waiter that gave up, Redis out of memory or down) has no
      // token to refuse its write-back — its value must not land in L1 after this message, to
      // be served for its ttl over the newer one. Its callers still get it; later ones load.
      if (message[0] === 'i') this.voidFlight(full);
    }
    // The filled value goes to this process's waiters (a load waiting on the lease), which keep
    // it in L1 as they would a read — unless a local set or delete voided them meanwhile. It is
    // not put in L1 here: a local set may have come after the fill (its message still on the
    // way), and its newer value must not be overwritten. A value that does not read back is
    // left to the waiters' own read (which quarantines it).
    if (envelope !== undefined && this.watches.has(full)) {
      const entry = this.#decode(envelope);
      this.wake(full, 'failure' in entry ? undefined : entry);
      return;
    }
    this.wake(full);
  }

  /**
   * Redis reported keys changed (any writer, Keel or not): their L1 copies go, and reads of them
   * on their way are not kept. `null` (a flush) drops every copy.
   */
  #onInvalidate(keys: readonly string[] | null): void {
    if (keys === null) {
      this.#invalidateAll();
      return;
    }
    const prefix = this.o.prefix;
    for (const key of keys) {
      // `<prefix>{<namespace:key>}`; the lease, quarantine and other keys under the prefix end
      // after the brace and are not values.
      if (!key.startsWith(prefix) || key[prefix.length] !== '{' || !key.endsWith('}')) continue;
      const full = key.slice(prefix.length + 1, -1);
      this.l1?.delete(full);
      const reads = this.reads.get(full);
      if (reads !== undefined) for (const read of reads) read.stale = true;
    }
  }

  /**
   * Every L1 copy goes and no read on its way is kept: changes may have gone unheard (the
   * subscription just went live, at startup or after a reconnect; a flush was reported).
   */
  #invalidateAll(): void {
    this.generation++;
    this.l1?.clear();
    for (const reads of this.reads.values()) for (const read of reads) read.stale = true;
  }

  /**
   * Tells the loads watching `full` that it was filled, released or invalidated (with the value
   * a fill message carried, if any), and wakes those that sleep. The latest message wins: a
   * fill followed by an invalidation leaves no value to take.
   */
  wake(full: string, filled?: Entry): void {
    const set = this.watches.get(full);
    if (set === undefined) return;
    // A wake only settles a promise: nothing here changes the set while it is walked.
    for (const watch of set) {
      watch.heard = true;
      watch.filled = filled;
      watch.wake();
    }
  }

  /** Starts hearing about `full`; call before sending the read that may lead to a wait. */
  watch(full: string): Watch {
    const watch: Watch = { heard: false, filled: undefined, wake: noop };
    let set = this.watches.get(full);
    if (set === undefined) this.watches.set(full, (set = new Set()));
    set.add(watch);
    return watch;
  }

  unwatch(full: string, watch: Watch): void {
    const set = this.watches.get(full);
    if (set === undefined) return;
    set.delete(watch);
    if (set.size === 0) this.watches.delete(full);
  }

  /**
   * Sleeps until a message about the watched key comes, or `ms` passes — at once if one came
   * since the last read was sent. Rejects with CacheClosedError if the cache closes meanwhile.
   *
   * @returns the value the last message carried (on the local timeline), if any; the watch is
   *   then reset, ready for the next read
   */
  async waitFor(watch: Watch, ms: number): Promise<Entry | undefined> {
    if (!watch.heard) {
      const sleeping = wakeableSleep(ms, { clock: this.o.clock, signal: this.closing.signal });
      watch.wake = sleeping.wake;
      try {
        await sleeping.done;
      } finally {
        watch.wake = noop;
      }
    }
    const filled = watch.filled;
    watch.heard = false;
    watch.filled = undefined;
    return filled;
  }

  storeL1(full: string, entry: Entry): void {
    if (this.l1 === undefined) return;
    const cap = this.o.l1 === false ? Infinity : this.o.l1.ttlMs;
    let freshUntil = entry.freshUntil;
    let staleUntil = entry.staleUntil;
    if (cap !== Infinity) {
      const limit = this.o.clock.now() + cap;
      freshUntil = Math.min(freshUntil, limit);
      staleUntil = Math.min(staleUntil, limit);
    }
    // Whole ms after the epoch, rounded down (`+ 0` turns a -0, which V8 boxes, into 0).
    const fresh = Math.floor(freshUntil - this.epoch) + 0;
    const base = this.epoch + fresh;
    // Whole durations where they are (the cache's lifetimes; a fractional clock reading makes
    // `(t + d) - t` differ from d in the last bits), so that entries share one life — but never
    // reaching past the deadlines given.
    const staleMs = Math.min(Math.round(staleUntil - freshUntil), staleUntil - base);
    const graceMs = Math.min(Math.round(entry.graceUntil - freshUntil), entry.graceUntil - base);
    // δ matters only to XFetch; without it every entry of the same lifetimes shares one life.
    // With it, δ in whole ms rounded up (as the Redis envelope keeps it; up, so that XFetch
    // stays on for a sub-ms load), so that loads of about the same duration share one too.
    const deltaMs = this.o.beta > 0 ? Math.ceil(entry.deltaMs) : 0;
    let life = this.#life;
    if (
      life.staleMs !== staleMs ||
      life.graceMs !== graceMs ||
      life.negative !== entry.negative ||
      life.deltaMs !== deltaMs
    ) {
      // Not the last one: look it up among the recent ones (a bounded table, emptied when full).
      const id = `${staleMs}|${graceMs}|${entry.negative ? 1 : 0}|${deltaMs}`;
      let known = this.#lives.get(id);
      if (known === undefined) {
        if (this.#lives.size >= LIVES_KEPT) this.#lives.clear();
        known = { staleMs, graceMs, negative: entry.negative, deltaMs, refreshAt: undefined };
        this.#lives.set(id, known);
      }
      life = this.#life = known;
    }
    this.l1.set(flatKey(full), { value: entry.value, fresh, life });
  }

  /**
   * A settled promise of an L1 hit's value. Kept for the last entry hit only, not one per entry
   * (bytes every entry would carry): a hot key's repeated hits then allocate nothing, another
   * key's hit allocates one promise. An entry is a new object whenever its value changes, so
   * the kept promise is never of an older value.
   */
  hit(slot: L1Entry): Promise<unknown> {
    if (this.#hitSlot !== slot) {
      this.#hitSlot = slot;
      this.#hitValue = Promise.resolve(slot.value);
    }
    return this.#hitValue;
  }

  /** An L1 entry as an {@link Entry} on the local timeline (for a load's grace fallback). */
  fromL1(slot: L1Entry): Entry {
    const freshUntil = this.epoch + slot.fresh;
    const life = slot.life;
    return {
      value: slot.value,
      negative: life.negative,
      freshUntil,
      staleUntil: freshUntil + life.staleMs,
      graceUntil: freshUntil + life.graceMs,
      deltaMs: life.deltaMs,
      refreshAt: life.refreshAt,
    };
  }

  /** Wall-clock minus monotonic: adding it moves a local deadline onto the shared timeline. */
  wallOffset(): number {
    return this.o.wallClock() - this.o.clock.now();
  }

  lifetimes(options: LifetimeOptions | undefined): Lifetimes {
    const o = this.o;
    return {
      ttlMs: jitteredTtl(options?.ttlMs ?? o.ttlMs, o.jitter, o.random),
      staleMs: options?.staleMs ?? o.staleMs,
      graceMs: options?.graceMs ?? o.graceMs,
    };
  }

  negativeLifetimes(): Lifetimes {
    return { ttlMs: this.o.negativeTtlMs, staleMs: 0, graceMs: 0 };
  }

  /**
   * Reads L2 and, with `acquire`, takes the lease when there is no value. A value is read with
   * one plain `GET` (a hit costs one command and one round trip); only a miss, or a value that
   * was quarantined, runs the script that reads again and takes the lease atomically.
   */
  readL2(full: string, token: string, acquire: boolean): Promise<L2Read> {
    const tier = this.tier;
    if (tier === undefined) return Promise.resolve<L2Read>({ kind: 'down' });
    // Not async itself: the read's own promise is returned, with no layer around it.
    if (!this.o.tracking) return this.#readL2(tier, full, token, acquire, undefined);
    return this.#trackedReadL2(tier, full, token, acquire);
  }

  /** `readL2` registered in `reads`, so a report of a change on its way marks it. */
  async #trackedReadL2(
    tier: RedisTier,
    full: string,
    token: string,
    acquire: boolean,
  ): Promise<L2Read> {
    const read = { stale: false };
    let reads = this.reads.get(full);
    if (reads === undefined) this.reads.set(full, (reads = new Set()));
    reads.add(read);
    try {
      return await this.#readL2(tier, full, token, acquire, read);
    } finally {
      reads.delete(read);
      if (reads.size === 0 && this.reads.get(full) === reads) this.reads.delete(full);
    }
  }

  #readL2(
    tier: RedisTier,
    full: string,
    token: string,
    acquire: boolean,
    read: { readonly stale: boolean } | undefined,
  ): Promise<L2Read> {
    const key = this.valueKey(full);
    if (!tier.canGet) return this.#readScript(tier, full, key, token, acquire, read);
    const generation = this.generation;
    // A chain, not an async function: a hit costs the GET's promise and this one.
    return tier.get('read', key).then(
      (raw): L2Read | Promise<L2Read> => {
        if (typeof raw === 'string') {
          const entry = this.parse(full, key, raw);
          if (!(entry instanceof Promise)) {
            return read?.stale === true || generation !== this.generation
              ? { kind: 'entry', entry, took: false, uncached: true }
              : { kind: 'entry', entry, took: false };
          }
          // Quarantined: the script reads again and takes the lease. Left in place (Redis
          // refused the move): no lease can be taken over it, so the caller loads now.
          return entry.then((moved) =>
            moved ? this.#readScript(tier, full, key, token, acquire, read) : DOWN,
          );
        }
        if (!acquire) return { kind: 'miss', took: false, leaseTtlMs: 0 };
        return this.#readScript(tier, full, key, token, acquire, read);
      },
      (error: unknown): L2Read | Promise<L2Read> => {
        if (!isCacheRedisError(error)) throw error;
        // Foreign data under the key: moved aside, then read as a miss.
        if (isWrongType(error)) {
          return this.foreign(full, key, error).then(() =>
            acquire
              ? this.#readScript(tier, full, key, token, acquire, read)
              : { kind: 'miss', took: false, leaseTtlMs: 0 },
          );
        }
        return DOWN;
      },
    );
  }

  /**
   * The read script, taking the lease when there is no value (after a `GET` that missed).
   * `bare`: a value it finds is not sent back (see {@link scripts.READ}) but read again with a
   * `GET` when the read is used — the lease read that leaves with a GET is used only after a
   * miss, so it must not carry (nor decode, nor quarantine) a value nobody will use.
   */
  readScript(full: string, token: string, bare = false): Promise<L2Read> {
    const tier = this.tier;
    if (tier === undefined) return Promise.resolve<L2Read>(DOWN);
    return this.#readScript(tier, full, this.valueKey(full), token, true, undefined, bare);
  }

  /** The read script: the value, and with `acquire` the lease when there is none, atomically. */
  async #readScript(
    tier: RedisTier,
    full: string,
    key: string,
    token: string,
    acquire: boolean,
    read: { readonly stale: boolean } | undefined,
    bare = false,
    foreignMoved = false,
  ): Promise<L2Read> {
    const generation = this.generation;
    // Degraded: nothing is sent (as `run` would refuse it), so nothing can take a lease late.
    if (tier.degraded) return DOWN;
    let reply: unknown;
    try {
      reply = await tier.run(
        'read',
        scripts.READ,
        [key, `${key}:lease`],
        bare
          ? [token, this.o.leaseTtlMs, acquire ? '1' : '0', '1']
          : [token, this.o.leaseTtlMs, acquire ? '1' : '0'],
        acquire
          ? (late, failed) => {
              if (failed || (Array.isArray(late) && late[1] === 1)) {
                this.abandonLease(full, key, token);
              }
            }
          : undefined,
      );
    } catch (error) {
      if (!isCacheRedisError(error)) throw error;
      if (acquire && error.kind === 'timed-out') this.abandonLease(full, key, token);
      // Foreign data under the value or lease key: moved aside, and the script runs again (once).
      if (isWrongType(error) && !foreignMoved) {
        await this.foreign(full, key, error);
        return this.#readScript(tier, full, key, token, acquire, read, bare, true);
      }
      return DOWN;
    }
    const [raw, took, pttl] = Array.isArray(reply) ? (reply as unknown[]) : [];
    // A bare read found a value (it came between the GET that missed and this script; no lease
    // was taken): whoever uses this read reads the value itself (see #loadSlow).
    if (bare && raw === 1) return PRESENT;
    const leaseTtlMs = typeof pttl === 'number' && pttl > 0 ? pttl : 0;
    if (typeof raw !== 'string') return { kind: 'miss', took: took === 1, leaseTtlMs };
    const entry = this.parse(full, key, raw);
    if (entry instanceof Promise) {
      // Quarantined; left in place (Redis refused the move), it keeps any lease from being
      // taken: the caller loads now rather than wait for a fill that cannot come.
      return (await entry) ? { kind: 'miss', took: false, leaseTtlMs } : DOWN;
    }
    return read?.stale === true || generation !== this.generation
      ? { kind: 'entry', entry, took: took === 1, uncached: true }
      : { kind: 'entry', entry, took: took === 1 };
  }

  /**
   * Gives up the lease of `full` held with `token` (at `leaseKey`), so a waiter takes over now
   * rather than when it runs out: bounded and degraded as any tier call. Never rejects.
   */
  giveBack(tier: RedisTier, full: string, leaseKey: string, token: string): Promise<void> {
    return tier
      .run('release', scripts.RELEASE, [leaseKey], [token, this.channel, this.message('r', full)])
      .then(noop, noop);
  }

  /**
   * Gives back the lease that a script sent with `token` may still take: it timed out, and the
   * load went on without it — but Redis may only have held it (`CLIENT PAUSE … WRITE`, a slow
   * script or `DEBUG SLEEP` ahead of it) and run it since. A lease taken then has no loader:
   * nobody fills or releases it, and every other process waits for it to run out (`leaseTtlMs`).
   * Called twice: when the script times out (the release goes out on the same connection, so
   * Redis runs it after the script), and again when the script's late answer says it took the
   * lease (or it failed, and may have run): a script whose `EVALSHA` answered `NOSCRIPT` (the
   * scripts were flushed) runs again as `EVAL`, sent only then — after the first release, which
   * it overtakes. Sent even while the tier is degraded (what follows the script must follow it),
   * neither bounded nor awaited; a no-op when the token holds nothing.
   */
  abandonLease(full: string, key: string, token: string): void {
    const redis = this.o.redis;
    if (redis === undefined) return;
    runScript(
      redis,
      scripts.RELEASE,
      [`${key}:lease`],
      [token, this.channel, this.message('r', full)],
    ).catch(noop);
  }

  /**
   * The envelope as a local entry, or (malformed) the promise of its quarantine: `true` once the
   * text is gone from the key (moved aside, or replaced meanwhile), `false` when Redis failed the
   * move and it is still there. A good read allocates the payload's text, the value and the
   * entry, nothing more (see {@link readHeader}).
   */
  parse(full: string, key: string, raw: string): Entry | Promise<boolean> {
    const entry = this.#decode(raw);
    if (!('failure' in entry)) return entry;
    return this.#quarantine(full, key, raw, entry.failure, entry.cause);
  }

  /**
   * {@link parse} into {@link SCRATCH}, which it returns: no entry object for an L2 hit, whose
   * deadlines are only compared and copied. Its fields are the read's only until the next read
   * of any key; the caller reads them out (or copies it) before running anything that could
   * read.
   */
  parseShared(full: string, key: string, raw: string): Entry | Promise<boolean> {
    const failure = this.#decodeInto(raw, SCRATCH);
    if (failure === undefined) return SCRATCH;
    return this.#quarantine(full, key, raw, failure.failure, failure.cause);
  }

  /** Lets go of the value {@link parseShared} left in the scratch entry (it may be large). */
  releaseShared(): void {
    SCRATCH.value = undefined;
  }

  /** The envelope as a local entry, or why it cannot be trusted. */
  #decode(raw: string): Entry | { readonly failure: string; readonly cause: unknown } {
    // A copy of the scratch entry, made before anything else can read into it; the scratch
    // entry keeps no value after it.
    const failure = this.#decodeInto(raw, SCRATCH);
    if (failure !== undefined) return failure;
    const entry = { ...SCRATCH };
    SCRATCH.value = undefined;
    return entry;
  }

  /** Decodes the envelope into `into`'s fields, or says why it cannot be trusted. */
  #decodeInto(
    raw: string,
    into: Mutable<Entry>,
  ): { readonly failure: string; readonly cause: unknown } | undefined {
    const header = HEADER;
    const start = readHeader(raw, header);
    if (typeof start === 'string') return { failure: start, cause: undefined };
    // Read out before the serializer runs (it is the caller's code).
    const { negative, freshUntil, staleUntil, graceUntil, deltaMs } = header;
    let value: unknown;
    if (!negative) {
      try {
        value = this.o.serializer.deserialize(raw.slice(start));
      } catch (error) {
        return { failure: 'the serializer refused the payload', cause: error };
      }
      if (value === undefined)
        return { failure: 'the payload reads as undefined', cause: undefined };
    }
    // From the shared wall-clock timeline onto the local one (as shiftEntry does).
    const offset = -this.wallOffset();
    into.value = value;
    into.negative = negative;
    into.freshUntil = freshUntil + offset;
    into.staleUntil = staleUntil + offset;
    into.graceUntil = graceUntil + offset;
    into.deltaMs = deltaMs;
    into.refreshAt = undefined;
    return undefined;
  }

  /**
   * Moves a malformed value aside and reports it (a good read stays synchronous). Resolves to
   * whether the text is gone from the key: `false` when Redis failed the move (out of memory,
   * timed out), so that the caller loads now — no lease is taken over a value, and waiting for a
   * fill would last until `maxWaitMs`.
   */
  async #quarantine(
    full: string,
    key: string,
    raw: string,
    reason: string,
    cause: unknown,
  ): Promise<boolean> {
    const quarantineKey = `${key}:quarantine`;
    let moved = false;
    let gone = false;
    try {
      moved =
        (await this.tier?.run(
          'quarantine',
          scripts.QUARANTINE,
          [key, quarantineKey],
          [raw, QUARANTINE_TTL_MS],
        )) === 1;
      // Not moved but answered: another text replaced it meanwhile.
      gone = true;
    } catch {
      // Reported below either way; the value is not served.
    }
    this.emit(this.quarantine, channels.quarantine, () => ({
      key: full,
      reason,
      quarantineKey: moved ? quarantineKey : undefined,
      ...(cause === undefined ? {} : { cause }),
      time: wallTime(),
    }));
    return gone;
  }

  /**
   * Moves the value or lease key of `full` (value key `key`) aside when it holds foreign data of
   * another type, on which `error` (a `WRONGTYPE` reply) failed, and reports each key moved.
   * Never rejects; a move that fails is reported (the `WRONGTYPE` reply as its cause), and the
   * caller reads on. Nothing moved (another reader moved it first) reports nothing.
   */
  async foreign(full: string, key: string, error: CacheRedisError): Promise<void> {
    const keys = [key, `${key}:lease`, `${key}:quarantine`, `${key}:lease:quarantine`];
    let reply: unknown;
    try {
      reply = await this.tier?.run('quarantine', scripts.FOREIGN, keys, [QUARANTINE_TTL_MS]);
    } catch {
      this.emit(this.quarantine, channels.quarantine, () => ({
        key: full,
        reason: 'a key of another type than a string (not moved: Redis failed the move)',
        quarantineKey: undefined,
        cause: error,
        time: wallTime(),
      }));
      return;
    }
    const moved = Array.isArray(reply) ? (reply as unknown[]) : [];
    for (let i = 0; i + 1 < moved.length; i += 2) {
      const which = moved[i] === 'lease' ? 'lease' : 'value';
      const type = String(moved[i + 1]);
      this.emit(this.quarantine, channels.quarantine, () => ({
        key: full,
        reason: `the ${which} key holds a ${type}, not a string`,
        quarantineKey: which === 'lease' ? `${key}:lease:quarantine` : `${key}:quarantine`,
        time: wallTime(),
      }));
    }
  }

  /** Serializes `entry` into the envelope text, and its Redis expiry (ms from now, ≥ 1). */
  envelope(full: string, entry: Entry): { text: string; px: number } {
    let payload = '';
    if (!entry.negative) {
      try {
        payload = this.o.serializer.serialize(entry.value);
      } catch (error) {
        throw new CacheSerializationError(full, error);
      }
      if (typeof payload !== 'string') {
        throw new CacheSerializationError(
          full,
          new Error('the serializer did not return a string'),
        );
      }
    }
    const offset = this.wallOffset();
    const text = encodeEnvelope(shiftEntry(entry, offset), payload);
    const px = Math.max(1, Math.ceil(entry.graceUntil - this.o.clock.now()));
    return { text, px: Number.isFinite(px) ? px : 2_147_483_647 };
  }
}

function measure(value: unknown, sizeOf: ((value: unknown) => number) | undefined): number {
  if (sizeOf !== undefined) {
    const size = sizeOf(value);
    return Number.isFinite(size) && size > 0 ? size : 1;
  }
  try {
    return (JSON.stringify(value) as string | undefined)?.length ?? 1;
  } catch {
    return 1;
  }
}

/**
 * A two-tier cache: an in-process L1 (`lru-cache`, bounded by count and size) in front of an
 * optional Redis L2, that does not stampede, avalanche or let absent keys through.
 *
 * - `getOrLoad` runs the loader **once** per key per expiry: callers in this process share one
 *   load, and processes share one through a short Redis lease (`SET NX PX` with a token); the
 *   others wait for the value, woken by pub/sub (polling as the fallback), or get the stale
 *   value. A lease whose holder died runs out and another process loads.
 * - A load that started before a `delete` or `set` cannot write its (possibly older) value
 *   back: its lease token was voided (memcache leases, NSDI 2013).
 * - Stale-while-revalidate within `staleMs`, XFetch early refresh (β), grace when the loader
 *   fails, ttl jitter, negative caching and an optional Bloom-filter `guard`.
 * - Redis failing or paused degrades to L1 and the loader (`onDegraded`), never beyond
 *   `redisTimeoutMs` per call; values read back from Redis are checked, and anything malformed
 *   is quarantined (`onQuarantine`), never served.
 *
 * @example
 * ```ts
 * import { Cache } from 'keel/cache';
 *
 * await using cache = new Cache({ ttlMs: 30_000, staleMs: 5_000 });
 * const price = await cache.getOrLoad('sku-1', async () => ({ cents: 1999 }));
 * console.log(price); // { cents: 1999 }
 * ```
 */
export class Cache {
  readonly #core: CacheCore;
  readonly #namespace: string;
  /** `#full`'s memo: the last key asked for (a sentinel no caller can pass until set) and its L1 name. */
  #lastKey: unknown = NO_KEY;
  #lastFull = '';

  /** @throws InvalidOptionError naming a bad option */
  constructor(options: CacheOptions = {}) {
    const view = pendingView;
    pendingView = undefined;
    if (view !== undefined) {
      this.#core = view.core;
      this.#namespace = view.namespace;
    } else {
      const resolved = resolveCacheOptions(options);
      this.#core = new CacheCore(resolved);
      this.#namespace = resolved.namespace;
    }
  }

  /** This cache's namespace: its keys are `namespace:key` in L1 and in Redis. */
  get name(): string {
    return this.#namespace;
  }

  /**
   * A cache over another namespace that shares this one's L1, Redis connection, options and
   * events. Closing any view closes them all.
   *
   * @throws InvalidOptionError when `namespace` is not a non-empty string
   */
  namespace(namespace: string): Cache {
    if (!isKey(namespace)) {
      throw new InvalidOptionError('Cache.namespace', 'namespace', 'a non-empty string', namespace);
    }
    pendingView = { core: this.#core, namespace };
    return new Cache();
  }

  /**
   * Swaps the guard consulted before Redis and the loader (a rebuilt Bloom filter), atomically
   * for every later call; `undefined` removes it.
   */
  setGuard(guard: CacheGuard | undefined): void {
    if (guard !== undefined && typeof (guard as Partial<CacheGuard>).mightContain !== 'function') {
      throw new InvalidOptionError(
        'Cache.setGuard',
        'guard',
        'a guard { mightContain(key) }',
        guard,
      );
    }
    this.#core.guard = guard;
  }

  #full(owner: string, key: unknown): string {
    if (this.#core.closed) throw new CacheClosedError();
    // The last key's L1 name is kept: a hot key's hits then build (and hash) no new string.
    if (key === this.#lastKey) return this.#lastFull;
    if (!isKey(key)) throw new InvalidOptionError(owner, 'key', 'a non-empty string', key);
    this.#lastKey = key;
    return (this.#lastFull = `${this.#namespace}:${key}`);
  }

  /**
   * The value of `key`: fresh from L1; else (stale, expired or absent) the result of one load
   * shared by every caller in every process. A stale value within `staleMs` is returned at once
   * while one caller refreshes it; a fresh one may be refreshed early (XFetch). `undefined`
   * when the loader said the key does not exist (cached for `negativeTtlMs`) or the guard ruled
   * it out.
   *
   * @throws what the loader threw, when there is no value within the grace period to serve
   * @throws CacheClosedError after `close()`
   * @throws InvalidOptionError for a bad key or option
   */
  getOrLoad<V>(key: string, loader: Loader<V>, options?: LifetimeOptions): Promise<V | undefined> {
    // Not an async function: an L1 hit costs one resolved promise and no async frame. Errors
    // are still delivered as rejections, never thrown synchronously.
    try {
      return this.#getOrLoad(key, loader, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #getOrLoad<V>(
    key: string,
    loader: Loader<V>,
    options: LifetimeOptions | undefined,
  ): Promise<V | undefined> {
    const full = this.#full('Cache.getOrLoad', key);
    if (typeof loader !== 'function') {
      throw new InvalidOptionError('Cache.getOrLoad', 'loader', 'a function', loader);
    }
    // Validated here, copied only where kept: a caller that starts a load or a refresh keeps its
    // lifetimes (resolved below); one that joins a load in flight — all of a stampede's callers
    // but one — only waits, and needs only its signal (no copy: no garbage per waiter).
    const signal = options === undefined ? undefined : callSignal('Cache.getOrLoad', options);
    throwIfAborted(signal);
    const core = this.#core;
    const slot = core.l1?.get(full);
    if (slot !== undefined) {
      const now = core.hitNow();
      const freshUntil = core.epoch + slot.fresh;
      if (now < freshUntil) {
        if (xfetchRefreshL1(slot, freshUntil, now, core.o.beta, core.o.random)) {
          this.#refresh(full, key, loader, kept(options), freshUntil);
        }
        return core.hit(slot) as Promise<V | undefined>;
      }
      if (now < freshUntil + slot.life.staleMs) {
        this.#refresh(full, key, loader, kept(options), freshUntil);
        return core.hit(slot) as Promise<V | undefined>;
      }
      if (now >= freshUntil + slot.life.graceMs) core.l1?.delete(full);
    }
    let flight = core.flightOf(full);
    if (flight?.background === true) {
      // A refresh of the value that just went out of date is running: share its result, and
      // load in the foreground only if it produced none.
      const joined = flight.promise.then((value) =>
        value === NO_VALUE ? this.getOrLoad(key, loader, options) : (value as V | undefined),
      );
      return raceAbort(joined, signal);
    }
    if (flight === undefined) {
      const call = kept(options);
      // Registered first, so every path of the load can take it out as it settles (see land).
      const started: Flight = {
        promise: RESOLVED,
        voided: false,
        background: false,
        getting: false,
        probe: undefined,
        full,
        key,
        loader,
        call,
        generation: 0,
      };
      core.startFlight(full, started);
      let promise: Promise<V | undefined>;
      try {
        promise = this.#load(full, key, loader, call, started);
      } catch (error) {
        core.land(full, started);
        throw error;
      }
      (started as { promise: Promise<unknown> }).promise = promise;
      flight = started;
    } else if (flight.getting && flight.probe === undefined) {
      // A second caller while the first GET is on its way: the key is wanted by many at once.
      this.#probe(full, flight);
    }
    return raceAbort(flight.promise as Promise<V | undefined>, signal);
  }

  /**
   * The shared load of `full` (foreground: some caller waits for it). Without a guard to ask
   * first, it starts with one plain `GET`, chained here directly — no async frame and no lease
   * token, which only a miss needs: an L2 hit costs the GET's promise and the tier's, whose
   * reaction runs what follows (see {@link RedisTier.getThen}). Anything but a fresh or stale value goes on in {@link Cache.#loadRest}.
   */
  #load<V>(
    full: string,
    key: string,
    loader: Loader<V>,
    call: LifetimeOptions | undefined,
    flight: Flight,
  ): Promise<V | undefined> {
    const core = this.#core;
    const tier = core.tier;
    if (core.guard !== undefined || tier === undefined || !tier.canGet || core.o.tracking) {
      return this.#loadRest(full, key, loader, call, flight, undefined);
    }
    // Every path either goes on in #loadRest (which lands the flight as it settles) or lands it
    // in #afterGet, before anything that could throw (a refresh started there then is not
    // refused as already running).
    flight.generation = core.generation;
    flight.getting = true;
    // The tier runs #afterGet in its own reaction to the GET, given the flight (one promise, no
    // closure made per load).
    return tier.getThen('read', core.valueKey(full), this.#afterGet, flight) as Promise<
      V | undefined
    >;
  }

  /** What follows {@link Cache.#load}'s `GET` of `flight`'s key: `raw` is what it found. */
  readonly #afterGet = (
    raw: string | null | undefined,
    error: CacheRedisError | undefined,
    flight: Flight,
  ): unknown => {
    const core = this.#core;
    const { full, key, loader, call, generation } = flight;
    flight.getting = false;
    // A lease read that left with the GET goes on only after a miss (it ran after the GET);
    // on every other path it is let go of (see #dropProbe).
    if (typeof raw !== 'string' && error === undefined) {
      return this.#loadRest(full, key, loader, call, flight, MISSED);
    }
    if (flight.probe !== undefined) this.#dropProbe(full, flight);
    if (error !== undefined) {
      // Foreign data under the key (another type): moved aside, then read as a miss.
      if (isWrongType(error)) {
        return core
          .foreign(full, core.valueKey(full), error)
          .then(() => this.#loadRest(full, key, loader, call, flight, MISSED));
      }
      return this.#loadRest(full, key, loader, call, flight, DOWN);
    }
    if (typeof raw !== 'string') return this.#loadRest(full, key, loader, call, flight, MISSED);
    // The shared scratch entry (no object per hit): used up before anything else can read.
    const entry = core.parseShared(full, core.valueKey(full), raw);
    // Quarantined: the read script reads again and takes the lease — or, left in place (Redis
    // refused the move), the caller loads now: no lease can be taken over it.
    if (entry instanceof Promise) {
      return entry.then((gone) =>
        this.#loadRest(full, key, loader, call, flight, gone ? MISSED : DOWN),
      );
    }
    const value = entry.value;
    const freshUntil = entry.freshUntil;
    const now = core.o.clock.now();
    // Past its stale window: reloaded (or served within grace) the long way, with a copy.
    if (now >= entry.staleUntil) {
      const own: Entry = { ...entry };
      core.releaseShared();
      const read: L2Read =
        generation === core.generation
          ? { kind: 'entry', entry: own, took: false }
          : { kind: 'entry', entry: own, took: false, uncached: true };
      return this.#loadRest(full, key, loader, call, flight, read);
    }
    const refresh = now >= freshUntil || xfetchRefresh(entry, now, core.o.beta, core.o.random);
    core.land(full, flight);
    // A read begun before a change went unheard is served, not kept (CacheCore.generation).
    if (!flight.voided && generation === core.generation) core.storeL1(full, entry);
    core.releaseShared();
    if (refresh) this.#refresh(full, key, loader, call, freshUntil);
    return value;
  };

  /** Sends the lease read along with `flight`'s first GET (see {@link Probe}). */
  #probe(full: string, flight: Flight): void {
    const core = this.#core;
    const token = core.token();
    const watch = core.watch(full);
    const read = core.readScript(full, token, true);
    // Marked handled now: a read let go of is never awaited (one that is still throws there).
    read.catch(noop);
    flight.probe = { token, watch, read };
  }

  /**
   * Lets go of the lease read sent with a GET that did not miss: it stops watching, and a lease
   * it took all the same (the value went between the GET and the script) is given back at once,
   * waking the other processes' waiters, rather than held until it runs out with nobody
   * loading.
   */
  #dropProbe(full: string, flight: Flight): void {
    const probe = flight.probe;
    if (probe === undefined) return;
    flight.probe = undefined;
    const core = this.#core;
    core.unwatch(full, probe.watch);
    void probe.read.then((read) => {
      if (read.kind === 'down' || !read.took || core.tier === undefined) return;
      return core.giveBack(core.tier, full, `${core.valueKey(full)}:lease`, probe.token);
    }, noop);
  }

  /**
   * The rest of a load: the lease, waiting for another process's fill, the loader. `first` is
   * what {@link Cache.#load}'s `GET` found (`MISSED`: no value, so the read script runs next),
   * or `undefined` to start with a read.
   */
  #loadRest<V>(
    full: string,
    key: string,
    loader: Loader<V>,
    call: LifetimeOptions | undefined,
    flight: Flight,
    first: L2Read | typeof MISSED | undefined,
  ): Promise<V | undefined> {
    const core = this.#core;
    return this.#loadSlow(full, key, loader, call, flight, first).then(
      (value) => {
        core.land(full, flight);
        return value;
      },
      (error: unknown) => {
        core.land(full, flight);
        throw error;
      },
    );
  }

  async #loadSlow<V>(
    full: string,
    key: string,
    loader: Loader<V>,
    call: LifetimeOptions | undefined,
    flight: Flight,
    first: L2Read | typeof MISSED | undefined,
  ): Promise<V | undefined> {
    const core = this.#core;
    const guard = first === undefined ? core.guard : undefined;
    // A guard that cannot answer (its Redis is down) lets the key through: it exists to spare
    // the database absent keys, and refusing present ones would be an outage of its own.
    if (guard !== undefined) {
      const maybe = await Promise.resolve()
        .then(() => guard.mightContain(key))
        .catch(() => true);
      if (!maybe) return undefined;
    }
    // The last value we know, served if the loader fails within its grace period.
    const slot = core.l1?.get(full);
    let last = slot === undefined ? undefined : core.fromL1(slot);
    // A lease read sent along with the first GET (see Probe) is this load's first read script.
    let probe = first === MISSED ? flight.probe : undefined;
    flight.probe = undefined;
    const token = probe?.token ?? core.token();
    // Registered before the first read that may lead to a wait is sent (see Watch).
    const watch = core.tier === undefined ? undefined : (probe?.watch ?? core.watch(full));
    // Whether this load holds the lease (then it loads with its token).
    let leased = false;
    try {
      if (watch !== undefined) {
        const deadline = core.o.clock.now() + core.o.maxWaitMs;
        let next = first;
        for (;;) {
          let read =
            next === undefined
              ? await core.readL2(full, token, true)
              : next === MISSED
                ? await (probe?.read ?? core.readScript(full, token))
                : next;
          if (read === PRESENT) read = await core.readL2(full, token, true);
          next = undefined;
          probe = undefined;
          if (read.kind === 'down') break;
          let took = read.took;
          if (read.kind === 'entry') {
            const now = core.o.clock.now();
            const state = freshness(read.entry, now);
            if (state === 'fresh' || state === 'stale') {
              if (!flight.voided && read.uncached !== true) core.storeL1(full, read.entry);
              if (state === 'stale' || xfetchRefresh(read.entry, now, core.o.beta, core.o.random)) {
                // Out first: a refresh is not started while a load of the key is registered.
                core.land(full, flight);
                this.#refresh(full, key, loader, call, read.entry.freshUntil);
              }
              return read.entry.value as V | undefined;
            }
            if (state === 'grace') last = read.entry;
            // A value past its stale window is still there: the lease was not tried.
            const lease = await this.#takeLease(full, token, read.entry.freshUntil);
            if (lease.fresher !== undefined) {
              if (!flight.voided && lease.keep === true) core.storeL1(full, lease.fresher);
              return lease.fresher.value as V | undefined;
            }
            // Redis failed the lease (down, or out of memory: refused each time it is asked):
            // load now, as after a read that failed, rather than retry it until maxWaitMs.
            if (lease.failed === true) break;
            took = lease.took;
          }
          if (took) {
            leased = true;
            break;
          }
          if (core.closed) throw new CacheClosedError();
          const left = deadline - core.o.clock.now();
          if (left <= 0) break;
          const leaseLeft =
            read.kind === 'miss' && read.leaseTtlMs > 0 ? read.leaseTtlMs : Infinity;
          // Rejects with CacheClosedError if the cache closes meanwhile. A fill message that
          // carried the value is the next read (no GET after the wake); one heard before the
          // read's reply was handled wakes it at once.
          const filled = await core.waitFor(
            watch,
            Math.min(core.o.pollIntervalMs, leaseLeft, left),
          );
          if (filled !== undefined) next = { kind: 'entry', entry: filled, took: false };
        }
      }
    } finally {
      if (watch !== undefined) core.unwatch(full, watch);
    }
    return this.#run(full, key, loader, call, flight, leased ? token : undefined, last);
  }

  /**
   * Takes the lease to reload a copy fresh until `freshUntil` (local time) — unless Redis
   * already holds a value fresh for longer (another process reloaded it meanwhile), which is
   * returned instead: without that check, a process whose copy went out of date just after
   * another's fill (its message still on the way) would take the released lease and load again.
   */
  async #takeLease(
    full: string,
    token: string,
    freshUntil: number,
  ): Promise<{
    readonly took: boolean;
    readonly fresher?: Entry;
    readonly keep?: boolean;
    readonly failed?: boolean;
  }> {
    const core = this.#core;
    const key = core.valueKey(full);
    const generation = core.generation;
    // On the shared (wall-clock) timeline, with a margin for the envelope's rounding and the
    // jitter between two reads of the offset.
    const after = Math.round(freshUntil + core.wallOffset()) + LEASE_FRESHER_MARGIN_MS;
    const tier = core.tier;
    // Degraded: nothing is sent (as `run` would refuse it), so nothing can take the lease late.
    if (tier === undefined || tier.degraded) return { took: false, failed: true };
    let reply: unknown;
    try {
      reply = await tier.run(
        'lease',
        scripts.TAKE_LEASE,
        [key, `${key}:lease`],
        [token, core.o.leaseTtlMs, Number.isFinite(after) ? after : 0],
        (late, failed) => {
          if (failed || (Array.isArray(late) && late[0] === 1)) {
            core.abandonLease(full, key, token);
          }
        },
      );
    } catch (error) {
      if (!isCacheRedisError(error)) throw error;
      // It may still run and take the lease, for nobody (see CacheCore.abandonLease).
      if (error.kind === 'timed-out') core.abandonLease(full, key, token);
      // `failed`: a caller that waits for the lease would wait in vain (out of memory, Redis
      // refuses it every time) — it loads now, as after a read that failed.
      return { took: false, failed: true };
    }
    const [took, raw] = Array.isArray(reply) ? (reply as unknown[]) : [];
    if (took === 1) return { took: true };
    if (typeof raw !== 'string') return { took: false };
    const fresher = core.parse(full, key, raw);
    // Quarantined; left in place (Redis refused the move), it holds off any lease: load now.
    if (fresher instanceof Promise)
      return (await fresher) ? { took: false } : { took: false, failed: true };
    // `keep`: no change went unheard while the script ran (see CacheCore.generation).
    return { took: false, fresher, keep: generation === core.generation };
  }

  /**
   * Runs the loader and stores its result: in L2 through the lease `token` (refused if a set or
   * delete voided it), and in L1 unless a local set or delete voided the flight. Without a token
   * (L1 only, Redis degraded, or a waiter that gave up waiting) L2 is left alone.
   */
  async #run<V>(
    full: string,
    key: string,
    loader: Loader<V>,
    call: LifetimeOptions | undefined,
    flight: Flight,
    token: string | undefined,
    last: Entry | undefined,
  ): Promise<V | undefined> {
    const core = this.#core;
    const clock = core.o.clock;
    const tier = core.tier;
    const valueKey = core.valueKey(full);
    const leaseKey = `${valueKey}:lease`;
    // The holder keeps its lease while the loader runs, so it only runs out if this process
    // dies (then another process takes over within leaseTtlMs).
    let heartbeat: { cancel(): void } | undefined;
    const beat = (): void => {
      heartbeat = clock
        .setTimer(() => {
          tier
            ?.run('extend', scripts.EXTEND_LEASE, [leaseKey], [token ?? '', core.o.leaseTtlMs])
            .catch(() => undefined);
          beat();
        }, core.o.leaseTtlMs / 3)
        .unref();
    };
    if (token !== undefined && tier !== undefined) beat();
    const started = clock.now();
    let value: V | undefined;
    try {
      value = await loader({ key, signal: core.closing.signal });
    } catch (error) {
      heartbeat?.cancel();
      if (token !== undefined && tier !== undefined) {
        // Give the lease up so a waiter takes over now rather than when it runs out.
        await core.giveBack(tier, full, leaseKey, token);
      }
      const now = clock.now();
      if (last !== undefined && now < last.graceUntil && !last.negative) {
        const served = last;
        core.emit(core.grace, channels.grace, () => ({
          key: full,
          error,
          staleByMs: Math.max(0, now - served.freshUntil),
          time: wallTime(),
        }));
        return served.value as V | undefined;
      }
      throw error;
    } finally {
      heartbeat?.cancel();
    }
    const now = clock.now();
    const negative = value === undefined;
    if (negative && core.o.negativeTtlMs <= 0) {
      if (token !== undefined && tier !== undefined)
        await core.giveBack(tier, full, leaseKey, token);
      return undefined;
    }
    const entry = makeEntry(
      value,
      negative,
      now,
      negative ? core.negativeLifetimes() : core.lifetimes(call),
      now - started,
    );
    let stored = token === undefined;
    if (token !== undefined && tier !== undefined) {
      let envelope: { text: string; px: number };
      try {
        envelope = core.envelope(full, entry);
      } catch (error) {
        // The serializer refused the value (CacheSerializationError): nothing will be written
        // back, so the lease goes now — held, it kept other processes' waiters sleeping until it
        // ran out.
        await core.giveBack(tier, full, leaseKey, token);
        throw error;
      }
      const { text, px } = envelope;
      try {
        stored =
          (await tier.run(
            'fill',
            scripts.FILL,
            [valueKey, leaseKey],
            [token, text, px, core.channel, core.fillMessage(full, text)],
          )) === 1;
      } catch (error) {
        if (!isCacheRedisError(error)) throw error;
        // Redis failed the write-back: keep the value in L1 (this process's own read). And
        // give the lease up: a write-back Redis refused (out of memory under `noeviction`; a
        // delete is still allowed) left it held with nobody loading, and waiters in other
        // processes would sleep until it ran out rather than load now. (A write-back that timed
        // out may still run, and then lets the lease go itself.)
        stored = true;
        await core.giveBack(tier, full, leaseKey, token);
      }
      if (!stored) {
        core.emit(core.staleWriteRefused, channels.staleWriteRefused, () => ({
          key: full,
          time: wallTime(),
        }));
      }
      core.wake(full);
    }
    if (stored && !flight.voided) core.storeL1(full, entry);
    return value;
  }

  /** Starts a background refresh of `full` unless one is running; never throws. */
  #refresh<V>(
    full: string,
    key: string,
    loader: Loader<V>,
    call: LifetimeOptions | undefined,
    freshUntil: number,
  ): void {
    const core = this.#core;
    if (core.refreshing.has(full) || core.flightOf(full) !== undefined || core.closed) return;
    core.refreshing.add(full);
    const flight: Flight = {
      promise: Promise.resolve(),
      voided: false,
      background: true,
      getting: false,
      probe: undefined,
      full,
      key,
      loader,
      call,
      generation: core.generation,
    };
    const run = async (): Promise<unknown> => {
      let token: string | undefined;
      if (core.tier !== undefined && !core.tier.degraded) {
        token = core.token();
        const lease = await this.#takeLease(full, token, freshUntil);
        // Redis already holds a newer value (another process refreshed it; its fill message
        // has not reached us yet): take that one instead of loading again.
        if (lease.fresher !== undefined) {
          if (!flight.voided && lease.keep === true) core.storeL1(full, lease.fresher);
          return lease.fresher.value;
        }
        // Redis failed the lease (out of memory: refused every time it is asked; or timed out):
        // refresh without one, the value kept in L1 only, as a foreground load does. Giving up
        // here left the stale value served for its whole stale window, refreshed by nobody.
        if (lease.failed === true) token = undefined;
        // Another process (or this one) is refreshing: its fill will reach us.
        else if (!lease.took) return NO_VALUE;
      }
      // Grace is the foreground's business: a failed refresh leaves the stale value in place.
      return this.#run(full, key, loader, call, flight, token, undefined);
    };
    core.startFlight(full, flight);
    const promise = run().catch((error: unknown) => {
      core.emit(core.refreshError, channels.refreshError, () => ({
        key: full,
        error,
        time: wallTime(),
      }));
      return NO_VALUE;
    });
    (flight as { promise: Promise<unknown> }).promise = promise;
    void promise.finally(() => {
      core.refreshing.delete(full);
      core.land(full, flight);
    });
  }

  /**
   * The value of `key` if cached and fresh or within `staleMs` (L1, then Redis), without
   * loading; `undefined` otherwise (and for a cached absence). Redis failures degrade to a miss.
   */
  async get<V = unknown>(key: string, options?: CallOptions): Promise<V | undefined> {
    const full = this.#full('Cache.get', key);
    const signal = resolveSignal('Cache.get', options);
    throwIfAborted(signal);
    const core = this.#core;
    const slot = core.l1?.get(full);
    if (slot !== undefined && core.hitNow() < core.epoch + slot.fresh + slot.life.staleMs) {
      return slot.value as V | undefined;
    }
    if (core.tier === undefined) return undefined;
    const read = await raceAbort(core.readL2(full, '', false), signal);
    if (read.kind !== 'entry') return undefined;
    const state = freshness(read.entry, core.o.clock.now());
    if (state !== 'fresh' && state !== 'stale') return undefined;
    if (read.uncached !== true) core.storeL1(full, read.entry);
    return read.entry.value as V | undefined;
  }

  /**
   * The fresh value of `key` in L1, synchronously, or `undefined`: no Redis, no loader, no
   * recency update. For hot paths that can fall back to `getOrLoad`.
   */
  // The caller names the type it stored, as with JSON.parse: the cache cannot check it.
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
  peek<V = unknown>(key: string): V | undefined {
    const full = this.#full('Cache.peek', key);
    const core = this.#core;
    const slot = core.l1?.peek(full);
    if (slot === undefined || core.hitNow() >= core.epoch + slot.fresh) return undefined;
    return slot.value as V | undefined;
  }

  /**
   * Stores `value` for `key` in L1 and Redis, voids any load of it in flight here or in other
   * processes (their write-back is refused), and tells other processes to drop their L1 copy.
   *
   * @throws CacheRedisError when Redis failed the write (L1 was updated)
   * @throws CacheSerializationError when the serializer could not write the value
   */
  async set(key: string, value: unknown, options?: LifetimeOptions): Promise<void> {
    const full = this.#full('Cache.set', key);
    if (value === undefined) {
      throw new InvalidOptionError('Cache.set', 'value', 'a value (use delete to remove)', value);
    }
    const call = options === undefined ? undefined : resolveCallOptions('Cache.set', options);
    throwIfAborted(call?.signal);
    const core = this.#core;
    const entry = makeEntry(value, false, core.o.clock.now(), core.lifetimes(call), 0);
    const envelope = core.tier === undefined ? undefined : core.envelope(full, entry);
    this.#core.voidFlight(full);
    core.storeL1(full, entry);
    if (core.tier !== undefined && envelope !== undefined) {
      const valueKey = core.valueKey(full);
      await raceAbort(
        core.tier.run(
          'set',
          scripts.WRITE,
          [valueKey, `${valueKey}:lease`],
          [envelope.text, envelope.px, core.channel, core.message('i', full)],
        ),
        call?.signal,
      );
    }
  }

  /**
   * Removes `key` from L1 and Redis, voids any load of it in flight (here and elsewhere: its
   * write-back is refused), and tells other processes to drop their L1 copy.
   *
   * @returns whether a value was there (in Redis when there is one, else in L1)
   * @throws CacheRedisError when Redis failed the delete (L1 was cleared)
   */
  async delete(key: string, options?: CallOptions): Promise<boolean> {
    const full = this.#full('Cache.delete', key);
    const signal = resolveSignal('Cache.delete', options);
    throwIfAborted(signal);
    const core = this.#core;
    this.#core.voidFlight(full);
    const had = core.l1?.delete(full) ?? false;
    if (core.tier === undefined) return had;
    const valueKey = core.valueKey(full);
    // The token under `:deleted` lets a copy of the script sent again after a dropped
    // connection answer as its first copy did (see scripts.DELETE); kept as long as this call
    // waits for the answer.
    const reply = await raceAbort(
      core.tier.run(
        'delete',
        scripts.DELETE,
        [valueKey, `${valueKey}:lease`, `${valueKey}:deleted`],
        [core.channel, core.message('i', full), core.token(), Math.ceil(core.o.redisTimeoutMs)],
      ),
      signal,
    );
    return reply === 1;
  }

  /**
   * Loads `keys` ahead of traffic (avalanche prevention after a deploy or a flush), at most
   * `concurrency` at once, each through `getOrLoad` (so it is single-flighted like any read).
   *
   * @returns how many keys were loaded with a value (not absent)
   */
  async warm<V>(
    keys: Iterable<string>,
    loader: Loader<V>,
    options: WarmOptions = {},
  ): Promise<number> {
    checkKeyList('Cache.warm', keys);
    const { concurrency, signal } = resolveOptions('Cache.warm', options, warmSpec);
    throwIfAborted(signal);
    const iterator = keys[Symbol.iterator]();
    let loaded = 0;
    const worker = async (): Promise<void> => {
      for (let next = iterator.next(); next.done !== true; next = iterator.next()) {
        throwIfAborted(signal);
        const value = await this.getOrLoad(next.value, loader, { signal });
        if (value !== undefined) loaded++;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return loaded;
  }

  /**
   * Redis failed: the cache serves from L1 and the loader until it answers again. Once per
   * degraded period. Out of memory (kind `out-of-memory`) degrades too, but the cache keeps
   * reading Redis, which still answers reads and deletes; only its writes (leases, fills, `set`)
   * are refused.
   */
  onDegraded(listener: (event: CacheDegradedEvent) => void): Subscription {
    return this.#core.degraded.subscribe(listener);
  }

  /**
   * Redis answers again after a degraded period — after out of memory, once it takes a write
   * again (a read answered meanwhile does not end that period).
   */
  onRecovered(listener: (event: CacheRecoveredEvent) => void): Subscription {
    return this.#core.recovered.subscribe(listener);
  }

  /**
   * A value read from Redis was malformed, or a value or lease key held another type than a
   * string: moved aside (when Redis allowed) and treated as a miss.
   */
  onQuarantine(listener: (event: CacheQuarantineEvent) => void): Subscription {
    return this.#core.quarantine.subscribe(listener);
  }

  /** The loader failed and the last value was served (grace period). */
  onGrace(listener: (event: CacheGraceEvent) => void): Subscription {
    return this.#core.grace.subscribe(listener);
  }

  /** A background refresh failed; the old value stays until it expires. */
  onRefreshError(listener: (event: CacheRefreshErrorEvent) => void): Subscription {
    return this.#core.refreshError.subscribe(listener);
  }

  /** A loaded value was not written back because the key was set or deleted meanwhile. */
  onStaleWriteRefused(listener: (event: CacheStaleWriteRefusedEvent) => void): Subscription {
    return this.#core.staleWriteRefused.subscribe(listener);
  }

  /**
   * Closes the cache (all its namespaces): calls reject with {@link CacheClosedError}, waiters
   * wake and reject, loaders see their signal abort, the subscriber connection this cache opened
   * closes. The Redis client passed in is left open (it is the caller's). Safe to call twice.
   */
  close(): Promise<void> {
    const core = this.#core;
    if (core.closed) return Promise.resolve();
    core.closed = true;
    core.closing.abort(new CacheClosedError());
    core.tier?.close();
    core.l1?.clear();
    return Promise.resolve();
  }

  /**
   * Whether Redis reports every change to this cache's keys right now (option `tracking`, on a
   * Redis ≥ 6 that accepts `CLIENT TRACKING`): `false` before the invalidation connection is
   * up, while it is down, and where the server refused (the cache then relies on its own
   * pub/sub invalidation and the L1 ttl).
   */
  get tracking(): boolean {
    return this.#core.tier?.tracking ?? false;
  }

  /**
   * Whether this cache hears other processes' invalidations and fills right now: its
   * subscription on its own Redis connection is live. `false` before that connection has
   * subscribed, while it is down, and without one (`invalidation: false`, no Redis, a client
   * without `duplicate`). Each time it becomes `true` (at startup, after every reconnect) the
   * cache drops every L1 copy it holds: writes published meanwhile went unheard. Until then an
   * L1 copy is served within its ttl (+ `staleMs`; cap it with `l1: { ttlMs }`).
   */
  get listening(): boolean {
    return this.#core.tier?.listening ?? false;
  }

  /** `await using cache = new Cache(…)` closes it. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Handed from `namespace()` to the constructor it calls, synchronously. */
let pendingView: { readonly core: CacheCore; readonly namespace: string } | undefined;
