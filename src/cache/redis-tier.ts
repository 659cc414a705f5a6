/**
 * The cache's Redis side (L2): key layout, scripts run with a per-call timeout, the degraded
 * state, and the pub/sub connection that carries fills and invalidations between processes.
 * Reached only through the small {@link CacheRedisClient} interface, so no ioredis type leaks.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import {
  ioTimeout,
  redisAddress,
  runScript,
  type Clock,
  type LuaScript,
  type Timer,
} from '../core/index.js';
import { CacheRedisError, type RedisFailureKind } from './errors.js';

/** A connection for pub/sub, as ioredis's `duplicate()` gives it. */
export interface CacheSubscriber {
  /** Subscribes the connection to `channels`. */
  subscribe(...channels: string[]): Promise<unknown>;
  /** Listens for messages published on a subscribed channel. */
  on(event: 'message', listener: (channel: string, message: string) => void): unknown;
  /**
   * Listens for messages as the client received them: Redis's key-invalidation messages
   * (`tracking`) carry an array of keys, or `null`, which the string event cannot show.
   */
  on(event: 'messageBuffer', listener: (channel: unknown, message: unknown) => void): unknown;
  /** Listens for connection errors. */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** Listens for the connection becoming ready (again, after a reconnect) or closing. */
  on(event: 'ready' | 'close', listener: () => void): unknown;
  /** Any command (`CLIENT ID`, `CLIENT TRACKING …`), for server-assisted invalidation. */
  call?(command: string, ...args: (string | number)[]): Promise<unknown>;
  /** Closes the connection. */
  disconnect(): void;
}

/**
 * What the cache needs of a Redis client: scripts (`evalsha` / `eval`), `get` for the one-round
 * trip read of a hit, and, for cross-process notifications and invalidations, `duplicate()` to
 * open its subscriber connection. An ioredis `Redis` or `Cluster` fits as is. Without `get`,
 * reads run a script; without `duplicate`, waiters poll and other processes' L1 copies live out
 * their ttl.
 */
export interface CacheRedisClient {
  /** Runs a cached Lua script by its SHA1 (`EVALSHA`). */
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** Runs a Lua script from its source (`EVAL`). */
  eval(source: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** A plain `GET`: what a cache hit costs (one command, one round trip). */
  get?(key: string): Promise<string | null>;
  /** ioredis: a new connection with the same options (`Redis`) or startup nodes (`Cluster`). */
  duplicate?(): CacheSubscriber;
  /** ioredis sets it on a `Cluster` client, whose `duplicate()` takes other arguments. */
  readonly isCluster?: boolean | undefined;
  /** `SCRIPT LOAD source`: the cache's scripts are loaded when it is built (see `RedisTier`). */
  script?(subcommand: 'LOAD', source: string): Promise<unknown>;
}

/** True for anything that can run the cache's scripts. @internal */
export function isCacheRedisClient(value: unknown): value is CacheRedisClient {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as CacheRedisClient).evalsha === 'function' &&
    typeof (value as CacheRedisClient).eval === 'function'
  );
}

/** Thrown inside the tier while it is degraded and not yet due to retry Redis. */
const TIMED_OUT = Symbol('timed out');

function classify(error: unknown): RedisFailureKind {
  if (error === TIMED_OUT) return 'timed-out';
  if (!(error instanceof Error)) return 'failed';
  const code = (error as { code?: unknown }).code;
  const text = `${error.message} ${typeof code === 'string' ? code : ''}`;
  if (text.includes('ECONNREFUSED')) return 'connection-refused';
  // ioredis gives up on a command after `maxRetriesPerRequest` reconnection attempts.
  if (error.name === 'MaxRetriesPerRequestError') return 'not-connected';
  if (
    text.includes('Connection is closed') ||
    text.includes("Stream isn't writeable") ||
    text.includes('enableOfflineQueue')
  ) {
    return 'not-connected';
  }
  if (error.name === 'ReplyError') return 'script-error';
  return 'failed';
}

/** The {@link CacheRedisError} for what a Redis call threw. @internal */
export function redisFailure(operation: string, address: string, error: unknown): CacheRedisError {
  return new CacheRedisError(
    operation,
    address,
    classify(error),
    error === TIMED_OUT ? undefined : error,
  );
}

/**
 * `call`, or a rejection with an internal timeout marker (see {@link redisFailure}) when Redis
 * has not answered within `timeoutMs`. The timer is an {@link ioTimeout}: after the event loop
 * was blocked past the deadline, a reply already in the socket still wins. It is cleared either
 * way, and a reply that comes after the timeout is dropped without an unhandled rejection. One
 * promise and one timer per call (no `Promise.race`, no async frame).
 * @internal
 */
export function bounded<T>(call: Promise<T>, clock: Clock, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = ioTimeout(
      clock,
      () => {
        // The marker, not an Error: redisFailure turns it into a CacheRedisError ('timed-out').
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(TIMED_OUT);
      },
      timeoutMs,
    );
    call.then(
      (value) => {
        timer.cancel();
        resolve(value);
      },
      (error: unknown) => {
        timer.cancel();
        reject(error);
      },
    );
  });
}

/**
 * Runs `script`, bounded by `timeoutMs` (see {@link bounded}).
 * @internal
 */
export function runBounded(
  client: CacheRedisClient,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
  clock: Clock,
  timeoutMs: number,
): Promise<unknown> {
  return bounded(runScript(client, script, keys, args), clock, timeoutMs);
}

/**
 * The channel Redis publishes key invalidations on, for a connection that `CLIENT TRACKING …
 * REDIRECT`s them to a RESP2 pub/sub connection (https://redis.io/docs/latest/develop/reference/client-side-caching/).
 */
export const INVALIDATE_CHANNEL = '__redis__:invalidate';

/** A call waiting for Redis, in {@link Deadlines}. */
interface Pending {
  readonly deadline: number;
  done: boolean;
  /** What the call is, for the error when it times out. */
  readonly operation: string;
  /** Settles the call's promise. */
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  /** What the call's promise settles with, given the outcome (see {@link RedisTier.getThen}). */
  readonly then: Continuation<unknown, unknown> | undefined;
}

/**
 * What follows a Redis call, run in the tier's own reaction to it: given the reply, or the
 * {@link CacheRedisError} the call failed or timed out with (`reply` then `undefined`).
 */
export type Continuation<T, R> = (
  reply: T | undefined,
  error: CacheRedisError | undefined,
) => R | PromiseLike<R>;

const noop = (): void => undefined;

/** Where {@link capture} puts the resolving functions of the promise being made. */
const captured: { resolve: (value: unknown) => void; reject: (error: unknown) => void } = {
  resolve: noop,
  reject: noop,
};

/** A promise executor that keeps nothing itself (see {@link RedisTier.#call}). */
function capture(resolve: (value: never) => void, reject: (error: unknown) => void): void {
  captured.resolve = resolve as (value: unknown) => void;
  captured.reject = reject;
}

/** Settles `pending`'s promise with the call's outcome, through its continuation if it has one. */
function finish(pending: Pending, reply: unknown, error: CacheRedisError | undefined): void {
  const then = pending.then;
  if (then === undefined) {
    if (error === undefined) pending.resolve(reply);
    else pending.reject(error);
    return;
  }
  try {
    pending.resolve(then(reply, error));
  } catch (thrown) {
    pending.reject(thrown);
  }
}

/**
 * The per-call timeouts of one tier, on one timer. Every call gets the same `timeoutMs`, so
 * deadlines fall in the order calls start: a FIFO queue with one timer armed for its head does
 * the work of a timer per call (a `setTimeout` + `clearTimeout` pair cost about as much as the
 * rest of an L2 hit's own code). Replies on one connection come in order, so settled calls leave
 * from the head and the queue stays as short as the calls in flight. The queue is an array used
 * from `#head` to `#tail` and kept when it empties (emptied by `length = 0`, V8 would free its
 * store, and the next call allocate it again). When the timer fires, the expiry waits one
 * `setImmediate`, as {@link ioTimeout} does: after the event loop was blocked, replies already in
 * the socket are read first and win.
 */
class Deadlines {
  readonly #clock: Clock;
  readonly #ms: number;
  readonly #expire: (pending: Pending) => void;
  readonly #queue: (Pending | undefined)[] = [];
  #head = 0;
  #tail = 0;
  #timer: Timer | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;

  constructor(clock: Clock, ms: number, expire: (pending: Pending) => void) {
    this.#clock = clock;
    this.#ms = ms;
    this.#expire = expire;
  }

  /** Calls `reject` with a timeout once `timeoutMs` passes, unless {@link settle} comes first. */
  add(
    operation: string,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
    then: Continuation<unknown, unknown> | undefined,
  ): Pending {
    const pending: Pending = {
      deadline: this.#clock.now() + this.#ms,
      done: false,
      operation,
      resolve,
      reject,
      then,
    };
    this.#queue[this.#tail++] = pending;
    if (this.#timer === undefined && this.#immediate === undefined) this.#arm(this.#ms);
    return pending;
  }

  /** The call answered: it will not expire. */
  settle(pending: Pending): void {
    pending.done = true;
    this.#drop();
  }

  /** Moves the head past settled calls (their slots emptied: nothing of theirs is kept). */
  #drop(): void {
    const queue = this.#queue;
    const tail = this.#tail;
    let head = this.#head;
    while (head < tail && (queue[head] as Pending).done) queue[head++] = undefined;
    if (head === tail) {
      head = this.#tail = 0;
    } else if (head >= 1024 && head * 2 >= tail) {
      queue.copyWithin(0, head, tail);
      queue.length = this.#tail = tail - head;
      head = 0;
    }
    this.#head = head;
  }

  #arm(ms: number): void {
    // Unref'd: a call in flight keeps its socket (and so the process) alive by itself.
    this.#timer = this.#clock
      .setTimer(() => {
        this.#timer = undefined;
        this.#immediate = setImmediate(() => {
          this.#immediate = undefined;
          this.#expireDue();
        });
        this.#immediate.unref();
      }, ms)
      .unref();
  }

  #expireDue(): void {
    const now = this.#clock.now();
    const queue = this.#queue;
    for (let at = this.#head; at < this.#tail; at++) {
      const pending = queue[at] as Pending;
      if (pending.done) continue;
      if (pending.deadline > now) break;
      pending.done = true;
      this.#expire(pending);
    }
    this.#drop();
    if (this.#head < this.#tail) {
      this.#arm(Math.max(1, (queue[this.#head] as Pending).deadline - now));
    }
  }

  /** Stops the timer (calls still in flight then never time out: the tier is closing). */
  close(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }
}

/** Settings of a {@link RedisTier}. */
export interface TierSettings {
  readonly client: CacheRedisClient;
  readonly clock: Clock;
  readonly timeoutMs: number;
  readonly retryMs: number;
  /** The channel fills and invalidations travel on. */
  readonly channel: string;
  readonly subscribe: boolean;
  readonly onMessage: (message: string) => void;
  readonly onDegraded: (operation: string, error: CacheRedisError) => void;
  readonly onRecovered: (degradedMs: number) => void;
  /** Scripts loaded into Redis up front (`SCRIPT LOAD`, one per script, not awaited). */
  readonly scripts?: readonly LuaScript[];
  /** Ask Redis (≥ 6, not a Cluster) to report every change to a key under `prefix`. */
  readonly tracking?: boolean;
  /** The key prefix tracked in broadcasting mode. */
  readonly prefix?: string;
  /** Keys Redis reported changed (full Redis key names), or `null`: every key went (a flush). */
  readonly onInvalidate?: (keys: readonly string[] | null) => void;
  /**
   * The subscription went live, at startup or after a reconnect (with `tracking`, reports flow
   * too): messages and reports are heard from now on, and any published before — while the
   * connection was not yet subscribed, or down — were lost.
   */
  readonly onListening?: () => void;
}

/** The keys of a tracking invalidation message: an array of keys, or `null` for a flush. */
function invalidatedKeys(message: unknown): string[] | null {
  if (message === null || message === undefined) return null;
  const list = Array.isArray(message) ? (message as unknown[]) : [message];
  const keys: string[] = [];
  for (const key of list) {
    if (typeof key === 'string') keys.push(key);
    else if (Buffer.isBuffer(key)) keys.push(key.toString('utf8'));
  }
  return keys;
}

export class RedisTier {
  readonly #s: TierSettings;
  #address: string | undefined;
  /** While now < this, Redis is not tried (degraded); reads go to L1 and the loader. */
  #downUntil = -Infinity;
  #degradedSince: number | undefined;
  #lastError: CacheRedisError | undefined;
  #subscriber: CacheSubscriber | undefined;
  /** Bumped each time the subscriber's connection closes: a set-up begun before is void. */
  #connection = 0;
  /** The subscriber's connection is subscribed: other processes' messages reach this one. */
  #listening = false;
  #tracking = false;
  /** `GET` of the client, bound; `undefined` when it has none (reads then run a script). */
  readonly #get: ((key: string) => Promise<string | null>) | undefined;
  readonly #deadlines: Deadlines;

  constructor(settings: TierSettings) {
    this.#s = settings;
    // A reply after the timeout is dropped: it neither settles the call nor ends the degraded
    // period it started (a later call does, once Redis answers in time).
    this.#deadlines = new Deadlines(settings.clock, settings.timeoutMs, (pending) => {
      finish(pending, undefined, this.#failed(pending.operation, TIMED_OUT));
    });
    this.#get =
      typeof settings.client.get === 'function'
        ? settings.client.get.bind(settings.client)
        : undefined;
    if (settings.subscribe && typeof settings.client.duplicate === 'function') {
      this.#subscriber = this.#openSubscriber(settings.client);
    }
    this.#preload(settings.client, settings.scripts ?? []);
  }

  /**
   * Loads `scripts` into Redis now, so that the first `EVALSHA` of each finds it. Otherwise the
   * first cold stampede a fresh process serves (after a deploy, or a Redis restart) pays a
   * `NOSCRIPT` reply and an `EVAL` of the whole source — a second round trip — to take the
   * lease, and again to fill: on the critical path of every waiter of that first load. The
   * `SCRIPT LOAD`s go first on the client's connection, so the cache's later calls on it come
   * after them. Best effort: not awaited, failures ignored (a Redis that refuses `SCRIPT`, is
   * down, or flushes its scripts later still gets the `EVAL` fallback of `runScript`). Skipped
   * on a Cluster, where `SCRIPT LOAD` reaches one node and each node needs its own copy.
   */
  #preload(client: CacheRedisClient, scripts: readonly LuaScript[]): void {
    if (client.isCluster === true || typeof client.script !== 'function') return;
    for (const script of scripts) {
      try {
        client.script('LOAD', script.source).catch(() => undefined);
      } catch {
        // A client whose `script` throws: the EVAL fallback covers it.
      }
    }
  }

  /** Whether other processes' fills and invalidations reach this one. */
  get subscribed(): boolean {
    return this.#subscriber !== undefined;
  }

  /** Whether the subscription is live right now (see {@link TierSettings.onListening}). */
  get listening(): boolean {
    return this.#listening;
  }

  /** Whether Redis reports changed keys to this tier right now (`CLIENT TRACKING`). */
  get tracking(): boolean {
    return this.#tracking;
  }

  /** Whether a read can be a plain `GET` (the client has `get`). */
  get canGet(): boolean {
    return this.#get !== undefined;
  }

  /** Whether the tier is degraded now (Redis failed lately and is not yet due to be retried). */
  get degraded(): boolean {
    return this.#s.clock.now() < this.#downUntil;
  }

  #openSubscriber(client: CacheRedisClient): CacheSubscriber {
    // Resubscribing ourselves on 'ready' (not ioredis's autoResubscribe, which does not catch a
    // failed SUBSCRIBE): a failure here only means waiters fall back to polling. A Cluster's
    // duplicate(startupNodes?, options?) is called bare: it resubscribes on its own.
    // With tracking, the connection speaks RESP2 (ioredis 6 defaults to RESP3): Redis then sends
    // the redirected reports as pub/sub messages on __redis__:invalidate, where a RESP3
    // connection would get `invalidate` push frames that ioredis does not surface.
    const plain = client as {
      duplicate(options?: { autoResubscribe: boolean; protocol?: number }): CacheSubscriber;
    };
    const subscriber =
      client.isCluster === true
        ? plain.duplicate()
        : plain.duplicate(
            this.#s.tracking === true
              ? { autoResubscribe: false, protocol: 2 }
              : { autoResubscribe: false },
          );
    const channel = this.#s.channel;
    subscriber.on('error', () => undefined);
    subscriber.on('ready', () => {
      void this.#setUp(subscriber);
    });
    subscriber.on('close', () => {
      this.#connection++;
      this.#listening = false;
      this.#tracking = false;
    });
    subscriber.on('message', (from, message) => {
      if (from === channel) this.#s.onMessage(message);
    });
    if (this.#s.tracking === true) {
      subscriber.on('messageBuffer', (from, message) => {
        if (String(from) === INVALIDATE_CHANNEL) this.#s.onInvalidate?.(invalidatedKeys(message));
      });
    }
    return subscriber;
  }

  /**
   * On every (re)connection of the subscriber: with `tracking`, turns on `CLIENT TRACKING` in
   * broadcasting mode for the cache's prefix, redirected to this same connection (RESP2: the
   * reports arrive as messages on `__redis__:invalidate`, which it subscribes to); then
   * subscribes. Broadcasting mode (`BCAST PREFIX`) reports every change under the prefix
   * whichever connection read the key, so the caller's client is left untouched and the server
   * keeps no per-key table (https://redis.io/docs/latest/commands/client-tracking/). A server
   * that refuses (Redis < 6, a Cluster, `CLIENT` renamed or denied by ACL) leaves the cache on
   * its own pub/sub invalidation.
   */
  async #setUp(subscriber: CacheSubscriber): Promise<void> {
    const connection = this.#connection;
    const channels = [this.#s.channel];
    let tracking = false;
    const call =
      typeof subscriber.call === 'function' ? subscriber.call.bind(subscriber) : undefined;
    if (this.#s.tracking === true && this.#s.client.isCluster !== true && call !== undefined) {
      try {
        const id = await call('CLIENT', 'ID');
        await call(
          'CLIENT',
          'TRACKING',
          'ON',
          'REDIRECT',
          String(id),
          'BCAST',
          'PREFIX',
          this.#s.prefix ?? '',
        );
        channels.push(INVALIDATE_CHANNEL);
        tracking = true;
      } catch {
        tracking = false;
      }
    }
    try {
      await subscriber.subscribe(...channels);
    } catch {
      return;
    }
    // Messages (and reports) reach this process only from the moment Redis ran the SUBSCRIBE:
    // any published before — since the cache started, or while the connection was down — went
    // to nobody. onListening tells the cache, which drops the L1 copies it may have kept since.
    if (connection === this.#connection && this.#subscriber === subscriber) {
      this.#listening = true;
      this.#tracking = tracking;
      this.#s.onListening?.();
    }
  }

  /** The node errors name, read only when an error is built. */
  get #where(): string {
    return (this.#address ??= redisAddress(this.#s.client) ?? 'redis');
  }

  /**
   * Runs `script`, bounded by the per-call timeout. Failures (and calls made while degraded)
   * throw a {@link CacheRedisError}; the first failure starts a degraded period and reports it.
   */
  run(
    operation: string,
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    if (this.#lastError !== undefined && this.#s.clock.now() < this.#downUntil) {
      return Promise.reject(this.#lastError);
    }
    return this.#call(operation, runScript(this.#s.client, script, keys, args));
  }

  /**
   * `GET key` (see {@link canGet}), bounded and degraded like {@link run}: a cache hit in one
   * plain command and one round trip.
   */
  get(operation: string, key: string): Promise<string | null> {
    return this.getThen<string | null>(operation, key, undefined);
  }

  /**
   * {@link get} with `then` run on its outcome — the reply, or the {@link CacheRedisError} it
   * failed with — in the tier's own reaction to the call: the promise returned settles with
   * what `then` returns (or rejects with what it throws). What follows a read then costs no
   * promise and reaction of its own. `then` always runs asynchronously (degraded too).
   */
  getThen<R>(
    operation: string,
    key: string,
    then: Continuation<string | null, R> | undefined,
  ): Promise<R> {
    if (this.#lastError !== undefined && this.#s.clock.now() < this.#downUntil) {
      const error = this.#lastError;
      return then === undefined
        ? Promise.reject(error)
        : Promise.resolve().then(() => then(undefined, error));
    }
    const get = this.#get;
    if (get === undefined) return Promise.reject(new TypeError('the Redis client has no get'));
    let call: Promise<unknown>;
    try {
      call = get(key);
    } catch (error) {
      // A client that throws instead of rejecting fails the call the same way.
      call = Promise.reject(error);
    }
    return this.#call(operation, call, then as Continuation<unknown, unknown> | undefined);
  }

  /**
   * `call` bounded by the per-call timeout (see {@link Deadlines}), its outcome recorded (a
   * success ends a degraded period, a failure starts one), in one promise: a hit pays for one
   * promise over the client's own, and no timer of its own. With `then`, the promise settles
   * with what `then` makes of the outcome (see {@link getThen}).
   */
  #call<R>(
    operation: string,
    call: Promise<unknown>,
    then?: Continuation<unknown, unknown>,
  ): Promise<R> {
    // The executor is one shared function (no closure per call): it hands the promise's
    // resolving functions out through `captured`, read right after.
    const promise = new Promise<R>(capture);
    const { resolve, reject } = captured;
    captured.resolve = captured.reject = noop;
    let pending: Pending | undefined;
    try {
      pending = this.#deadlines.add(operation, resolve, reject, then);
      const settling = pending;
      call.then(
        (reply) => {
          if (settling.done) return;
          this.#deadlines.settle(settling);
          if (this.#degradedSince !== undefined) this.#recovered();
          finish(settling, reply, undefined);
        },
        (error: unknown) => {
          if (settling.done) return;
          this.#deadlines.settle(settling);
          finish(settling, undefined, this.#failed(operation, error));
        },
      );
    } catch (error) {
      // As a throwing executor would: the promise rejects (and the call will not time out) —
      // but a continuation still runs, as for a failed call: it releases what its caller holds
      // (a load's single-flight slot).
      if (pending !== undefined) this.#deadlines.settle(pending);
      if (then === undefined) reject(error);
      else {
        try {
          resolve(then(undefined, this.#failed(operation, error)));
        } catch (thrown) {
          reject(thrown);
        }
      }
    }
    return promise;
  }

  #recovered(): void {
    const since = this.#degradedSince;
    if (since === undefined) return;
    this.#degradedSince = undefined;
    this.#downUntil = -Infinity;
    this.#s.onRecovered(this.#s.clock.now() - since);
  }

  #failed(operation: string, error: unknown): CacheRedisError {
    const clock = this.#s.clock;
    const failure = redisFailure(operation, this.#where, error);
    // A script error is this call's problem (a key of the wrong type), not Redis being down.
    if (failure.kind !== 'script-error') {
      this.#lastError = failure;
      this.#downUntil = clock.now() + this.#s.retryMs;
      if (this.#degradedSince === undefined) {
        this.#degradedSince = clock.now();
        this.#s.onDegraded(operation, failure);
      }
    }
    return failure;
  }

  /** Closes the subscriber connection this tier opened (never the caller's client). */
  close(): void {
    this.#deadlines.close();
    this.#subscriber?.disconnect();
    this.#subscriber = undefined;
    this.#connection++;
    this.#listening = false;
    this.#tracking = false;
  }
}
