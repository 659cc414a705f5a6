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
  isOutOfMemoryError,
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
  // Before the script errors: Redis refused a write for lack of memory, not the script's fault.
  if (isOutOfMemoryError(error.message)) return 'out-of-memory';
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

/**
 * What follows a Redis call, run in the tier's own reaction to it: given the reply, or the
 * {@link CacheRedisError} the call failed or timed out with (`reply` then `undefined`), and the
 * `datum` the call was made with — the caller's state, so that a continuation can be one function
 * made once rather than a closure made per call.
 */
export type Continuation<T, R, D = undefined> = (
  reply: T | undefined,
  error: CacheRedisError | undefined,
  datum: D,
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

/**
 * A call taken out of {@link Deadlines} (see {@link Deadlines.take}): what settles its promise.
 * One record, overwritten by each take and read out at once, so taking a call allocates nothing.
 */
interface Taken {
  operation: string;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  then: Continuation<unknown, unknown, unknown> | undefined;
  datum: unknown;
}

/** Settles a taken call's promise with its outcome, through its continuation if it has one. */
function finish(
  resolve: (value: unknown) => void,
  reject: (error: unknown) => void,
  then: Continuation<unknown, unknown, unknown> | undefined,
  datum: unknown,
  reply: unknown,
  error: CacheRedisError | undefined,
): void {
  if (then === undefined) {
    if (error === undefined) resolve(reply);
    else reject(error);
    return;
  }
  try {
    resolve(then(reply, error, datum));
  } catch (thrown) {
    reject(thrown);
  }
}

/** Slots per call in {@link Deadlines}' ring: operation, resolve, reject, then, datum. */
const STRIDE = 5;

/**
 * The per-call timeouts of one tier, on one timer. Every call gets the same `timeoutMs`, so
 * deadlines fall in the order calls start: a FIFO queue with one timer armed for its head does
 * the work of a timer per call (a `setTimeout` + `clearTimeout` pair cost about as much as the
 * rest of an L2 hit's own code). Replies on one connection mostly come in order, so settled calls
 * leave from the head and the queue stays as short as the calls in flight.
 *
 * A call is a number, its place in the order calls were added; its fields live in a ring — one
 * array of {@link STRIDE} slots per call and a `Float64Array` of deadlines, indexed by the
 * number's low bits, doubled when full and never shrunk — not in an object per call: adding,
 * settling and expiring a call allocate nothing (a deadline in an object's field would also be a
 * heap number of its own). A call is in the queue while `#head ≤ call < #tail`, and waits while
 * its `resolve` slot is set; its slots are emptied when it is taken, so nothing of a settled call
 * is kept. When the timer fires, the expiry waits one `setImmediate`, as {@link ioTimeout} does:
 * after the event loop was blocked, replies already in the socket are read first and win.
 */
class Deadlines {
  readonly #clock: Clock;
  readonly #ms: number;
  readonly #expire: (taken: Taken) => void;
  /** Capacity − 1 (the capacity is a power of two). */
  #mask = 15;
  #deadline = new Float64Array(16);
  #slots: unknown[] = new Array<unknown>(16 * STRIDE).fill(undefined);
  /** The oldest call still in the queue, and the number the next call added gets. */
  #head = 0;
  #tail = 0;
  #timer: Timer | undefined;
  #immediate: ReturnType<typeof setImmediate> | undefined;
  /**
   * True while {@link #expireDue} runs: a call its continuations add then arms no timer (the
   * expiry arms the one timer when it is done; armed twice, the first would be lost to
   * `close()`).
   */
  #expiring = false;
  /** Set by {@link close}: no timer is armed and nothing expires any more. */
  #closed = false;
  /** What {@link take} hands out (see {@link Taken}). */
  readonly taken: Taken = {
    operation: '',
    resolve: noop,
    reject: noop,
    then: undefined,
    datum: undefined,
  };

  constructor(clock: Clock, ms: number, expire: (taken: Taken) => void) {
    this.#clock = clock;
    this.#ms = ms;
    this.#expire = expire;
  }

  /**
   * Adds a call that expires `timeoutMs` from now unless {@link take}n first; returns its
   * number.
   */
  add(
    operation: string,
    resolve: (value: unknown) => void,
    reject: (error: unknown) => void,
    then: Continuation<unknown, unknown, unknown> | undefined,
    datum: unknown,
  ): number {
    if (this.#tail - this.#head > this.#mask) this.#grow();
    const call = this.#tail++;
    const at = call & this.#mask;
    this.#deadline[at] = this.#clock.now() + this.#ms;
    const slots = this.#slots;
    const base = at * STRIDE;
    slots[base] = operation;
    slots[base + 1] = resolve;
    slots[base + 2] = reject;
    slots[base + 3] = then;
    slots[base + 4] = datum;
    if (this.#timer === undefined && this.#immediate === undefined && !this.#expiring) {
      this.#arm(this.#ms);
    }
    return call;
  }

  /** Whether the call in ring position `at` still waits. */
  #waits(at: number): boolean {
    return this.#slots[at * STRIDE + 1] !== undefined;
  }

  /**
   * Takes `call` out (it answered): true, with its fields in {@link taken}, if it was still
   * waiting; false if it expired (or was taken) before.
   */
  take(call: number): boolean {
    const at = call & this.#mask;
    if (call < this.#head || !this.#waits(at)) return false;
    this.#takeAt(at);
    this.#drop();
    return true;
  }

  /** Copies the call in ring position `at` into {@link taken} and empties its slots. */
  #takeAt(at: number): void {
    const taken = this.taken;
    const slots = this.#slots;
    const base = at * STRIDE;
    taken.operation = slots[base] as string;
    taken.resolve = slots[base + 1] as (value: unknown) => void;
    taken.reject = slots[base + 2] as (error: unknown) => void;
    taken.then = slots[base + 3] as Continuation<unknown, unknown, unknown> | undefined;
    taken.datum = slots[base + 4];
    slots.fill(undefined, base, base + STRIDE);
  }

  /** Moves the head past calls already taken. */
  #drop(): void {
    const tail = this.#tail;
    let head = this.#head;
    while (head < tail && !this.#waits(head & this.#mask)) head++;
    this.#head = head;
  }

  /** Doubles the ring, each call in the queue moved to its position in the larger one. */
  #grow(): void {
    const mask = this.#mask;
    const size = (mask + 1) * 2;
    const deadline = new Float64Array(size);
    const slots = new Array<unknown>(size * STRIDE).fill(undefined);
    for (let call = this.#head; call < this.#tail; call++) {
      const from = call & mask;
      const to = call & (size - 1);
      deadline[to] = this.#deadline[from] as number;
      for (let k = 0; k < STRIDE; k++) slots[to * STRIDE + k] = this.#slots[from * STRIDE + k];
    }
    this.#mask = size - 1;
    this.#deadline = deadline;
    this.#slots = slots;
  }

  #arm(ms: number): void {
    if (this.#closed) return;
    // Unref'd: a call in flight keeps its socket (and so the process) alive by itself. The
    // immediate is not: an unref'd immediate does not keep the event loop from sleeping in its
    // poll phase, so with nothing else due (Redis paused, no other traffic) the expiry waited for
    // whatever woke the process next, and the call hung past its timeout. A ref'd one lasts one
    // turn of the loop, which is running anyway when the timer fires.
    this.#timer = this.#clock
      .setTimer(() => {
        this.#timer = undefined;
        this.#immediate = setImmediate(() => {
          this.#immediate = undefined;
          this.#expireDue();
        });
      }, ms)
      .unref();
  }

  #expireDue(): void {
    const now = this.#clock.now();
    // The tail as it is now: a call an expiry's continuation adds is not looked at here.
    const tail = this.#tail;
    this.#expiring = true;
    try {
      // A continuation may close the tier: the calls after it then stay in flight, unexpired.
      for (let call = this.#head; call < tail && !this.#closed; call++) {
        // A continuation run by an expiry may have taken calls and so moved the head past this
        // one (their positions may then hold newer calls).
        if (call < this.#head) call = this.#head;
        const at = call & this.#mask;
        if (!this.#waits(at)) continue;
        if ((this.#deadline[at] as number) > now) break;
        this.#takeAt(at);
        this.#expire(this.taken);
      }
    } finally {
      this.#expiring = false;
    }
    this.#drop();
    if (this.#head < this.#tail) {
      const first = this.#deadline[this.#head & this.#mask] as number;
      this.#arm(Math.max(1, first - now));
    }
  }

  /** Stops the timer (calls still in flight then never time out: the tier is closing). */
  close(): void {
    this.#closed = true;
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
  /**
   * Whether `reply`, a successful answer to `operation`, shows that Redis took a write that
   * could grow memory: only such an answer ends a degraded period that Redis being out of
   * memory started (reads and deletes are answered all along). Absent: any answer ends it.
   */
  readonly wroteMemory?: (operation: string, reply: unknown) => boolean;
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
  /**
   * Redis refused a write for lack of memory (`maxmemory` under `noeviction`) in this degraded
   * period: it ends only when a write lands (see {@link TierSettings.wroteMemory}).
   */
  #outOfMemory = false;
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
    this.#deadlines = new Deadlines(settings.clock, settings.timeoutMs, (taken) => {
      const { resolve, reject, then, datum } = taken;
      finish(resolve, reject, then, datum, undefined, this.#failed(taken.operation, TIMED_OUT));
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
   *
   * A set-up whose connection closed stops at its next step: ioredis sends its unanswered
   * command again on the new connection (`autoResendUnfulfilledCommands`), and a `CLIENT ID`
   * answered there would let it turn tracking on beside the new connection's own set-up, whose
   * `CLIENT TRACKING` Redis then refuses (the prefix is already tracked) — `tracking` read false
   * while Redis reported.
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
        if (connection !== this.#connection) return;
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
   * `late`, if given, is called with the script's outcome when it comes after the call timed
   * out (the reply, or what the client failed it with): the script ran late, or may have.
   */
  run(
    operation: string,
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
    late?: (reply: unknown, failed: boolean) => void,
  ): Promise<unknown> {
    if (this.#lastError !== undefined && this.#s.clock.now() < this.#downUntil) {
      return Promise.reject(this.#lastError);
    }
    return this.#call(
      operation,
      runScript(this.#s.client, script, keys, args),
      undefined,
      undefined,
      late,
    );
  }

  /**
   * `GET key` (see {@link canGet}), bounded and degraded like {@link run}: a cache hit in one
   * plain command and one round trip.
   */
  get(operation: string, key: string): Promise<string | null> {
    return this.getThen<string | null, undefined>(operation, key, undefined, undefined);
  }

  /**
   * {@link get} with `then` run on its outcome — the reply, or the {@link CacheRedisError} it
   * failed with — in the tier's own reaction to the call: the promise returned settles with
   * what `then` returns (or rejects with what it throws). What follows a read then costs no
   * promise and reaction of its own. `then` always runs asynchronously (degraded too), and is
   * given `datum`: a continuation made once, given each call's state, costs a read no closure.
   */
  getThen<R, D>(
    operation: string,
    key: string,
    then: Continuation<string | null, R, D> | undefined,
    datum: D,
  ): Promise<R> {
    if (this.#lastError !== undefined && this.#s.clock.now() < this.#downUntil) {
      const error = this.#lastError;
      return then === undefined
        ? Promise.reject(error)
        : Promise.resolve().then(() => then(undefined, error, datum));
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
    return this.#call(
      operation,
      call,
      then as Continuation<unknown, unknown, unknown> | undefined,
      datum,
    );
  }

  /**
   * `call` bounded by the per-call timeout (see {@link Deadlines}), its outcome recorded (a
   * success ends a degraded period, a failure starts one), in one promise: a hit pays for one
   * promise over the client's own, and no timer of its own. With `then`, the promise settles
   * with what `then` makes of the outcome (see {@link getThen}).
   */
  #call<R>(
    operation: string,
    request: Promise<unknown>,
    then?: Continuation<unknown, unknown, unknown>,
    datum?: unknown,
    late?: (reply: unknown, failed: boolean) => void,
  ): Promise<R> {
    // The executor is one shared function (no closure per call): it hands the promise's
    // resolving functions out through `captured`, read right after.
    const promise = new Promise<R>(capture);
    const { resolve, reject } = captured;
    captured.resolve = captured.reject = noop;
    let call = -1;
    try {
      call = this.#deadlines.add(operation, resolve, reject, then, datum);
      const at = call;
      request.then(
        (reply) => {
          if (!this.#answered(at, true, reply)) late?.(reply, false);
        },
        (error: unknown) => {
          if (!this.#answered(at, false, error)) late?.(error, true);
        },
      );
    } catch (error) {
      // As a throwing executor would: the promise rejects (and the call will not time out) —
      // but a continuation still runs, as for a failed call: it releases what its caller holds
      // (a load's single-flight slot).
      if (call !== -1) this.#deadlines.take(call);
      if (then === undefined) reject(error);
      else {
        try {
          resolve(then(undefined, this.#failed(operation, error), datum));
        } catch (thrown) {
          reject(thrown);
        }
      }
    }
    return promise;
  }

  /**
   * Call `call` answered: `ok` with `outcome` its reply, else `outcome` what it failed with.
   * Ignored when it timed out before: a late reply neither settles the call nor ends the
   * degraded period it started (a later call does, once Redis answers in time). Returns
   * whether the call was still waiting.
   */
  #answered(call: number, ok: boolean, outcome: unknown): boolean {
    const deadlines = this.#deadlines;
    if (!deadlines.take(call)) return false;
    const { operation, resolve, reject, then, datum } = deadlines.taken;
    if (ok) {
      if (
        this.#degradedSince !== undefined &&
        (!this.#outOfMemory || this.#s.wroteMemory?.(operation, outcome) !== false)
      ) {
        this.#recovered();
      }
      finish(resolve, reject, then, datum, outcome, undefined);
    } else finish(resolve, reject, then, datum, undefined, this.#failed(operation, outcome));
    return true;
  }

  #recovered(): void {
    const since = this.#degradedSince;
    if (since === undefined) return;
    this.#degradedSince = undefined;
    this.#outOfMemory = false;
    this.#downUntil = -Infinity;
    this.#s.onRecovered(this.#s.clock.now() - since);
  }

  #failed(operation: string, error: unknown): CacheRedisError {
    const clock = this.#s.clock;
    const failure = redisFailure(operation, this.#where, error);
    // A script error is this call's problem (a key of the wrong type), not Redis being down.
    if (failure.kind === 'script-error') return failure;
    if (failure.kind === 'out-of-memory') {
      // Degraded, but not down: Redis still answers reads (a value, a lease held by another
      // process) and deletes, so calls keep going to it — skipping it would load what Redis
      // holds, not honour a lease taken before, and fail deletes. Writes are refused until
      // memory frees; the period ends when one lands.
      this.#outOfMemory = true;
    } else {
      this.#lastError = failure;
      this.#downUntil = clock.now() + this.#s.retryMs;
    }
    if (this.#degradedSince === undefined) {
      this.#degradedSince = clock.now();
      this.#s.onDegraded(operation, failure);
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
