/**
 * The cache's Redis side (L2): key layout, scripts run with a per-call timeout, the degraded
 * state, and the pub/sub connection that carries fills and invalidations between processes.
 * Reached only through the small {@link CacheRedisClient} interface, so no ioredis type leaks.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { redisAddress, runScript, type Clock, type LuaScript } from '../core/index.js';
import { CacheRedisError, type RedisFailureKind } from './errors.js';

/** A connection for pub/sub, as ioredis's `duplicate()` gives it. */
export interface CacheSubscriber {
  /** Subscribes the connection to `channels`. */
  subscribe(...channels: string[]): Promise<unknown>;
  /** Listens for messages published on a subscribed channel. */
  on(event: 'message', listener: (channel: string, message: string) => void): unknown;
  /** Listens for connection errors. */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** Listens for the connection becoming ready (again, after a reconnect). */
  on(event: 'ready', listener: () => void): unknown;
  /** Closes the connection. */
  disconnect(): void;
}

/**
 * What the cache needs of a Redis client: scripts (`evalsha` / `eval`) and, for cross-process
 * notifications and invalidations, `duplicate()` to open its subscriber connection. An ioredis
 * `Redis` or `Cluster` fits as is. Without `duplicate`, waiters poll and other processes' L1
 * copies live out their ttl.
 */
export interface CacheRedisClient {
  /** Runs a cached Lua script by its SHA1 (`EVALSHA`). */
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** Runs a Lua script from its source (`EVAL`). */
  eval(source: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>;
  /** ioredis: a new connection with the same options (`Redis`) or startup nodes (`Cluster`). */
  duplicate?(): CacheSubscriber;
  /** ioredis sets it on a `Cluster` client, whose `duplicate()` takes other arguments. */
  readonly isCluster?: boolean | undefined;
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
 * Runs `script`, rejecting with an internal timeout marker (see {@link redisFailure}) when
 * Redis has not answered within `timeoutMs`. The timer is cleared either way, and a reply that
 * comes after the timeout is dropped without an unhandled rejection.
 * @internal
 */
export async function runBounded(
  client: CacheRedisClient,
  script: LuaScript,
  keys: readonly string[],
  args: readonly (string | number)[],
  clock: Clock,
  timeoutMs: number,
): Promise<unknown> {
  let timer: { cancel(): void } | undefined;
  try {
    const call = runScript(client, script, keys, args);
    call.catch(() => undefined);
    const timeout = new Promise<never>((_, reject) => {
      timer = clock.setTimer(() => {
        // The marker, not an Error: redisFailure turns it into a CacheRedisError ('timed-out').
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(TIMED_OUT);
      }, timeoutMs);
    });
    return await Promise.race([call, timeout]);
  } finally {
    timer?.cancel();
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
}

export class RedisTier {
  readonly #s: TierSettings;
  #address: string | undefined;
  /** While now < this, Redis is not tried (degraded); reads go to L1 and the loader. */
  #downUntil = -Infinity;
  #degradedSince: number | undefined;
  #lastError: CacheRedisError | undefined;
  #subscriber: CacheSubscriber | undefined;

  constructor(settings: TierSettings) {
    this.#s = settings;
    if (settings.subscribe && typeof settings.client.duplicate === 'function') {
      this.#subscriber = this.#openSubscriber(settings.client);
    }
  }

  /** Whether other processes' fills and invalidations reach this one. */
  get subscribed(): boolean {
    return this.#subscriber !== undefined;
  }

  /** Whether the tier is degraded now (Redis failed lately and is not yet due to be retried). */
  get degraded(): boolean {
    return this.#s.clock.now() < this.#downUntil;
  }

  #openSubscriber(client: CacheRedisClient): CacheSubscriber {
    // Resubscribing ourselves on 'ready' (not ioredis's autoResubscribe, which does not catch a
    // failed SUBSCRIBE): a failure here only means waiters fall back to polling. A Cluster's
    // duplicate(startupNodes?, options?) is called bare: it resubscribes on its own.
    const plain = client as { duplicate(options?: { autoResubscribe: boolean }): CacheSubscriber };
    const subscriber =
      client.isCluster === true ? plain.duplicate() : plain.duplicate({ autoResubscribe: false });
    const channel = this.#s.channel;
    subscriber.on('error', () => undefined);
    subscriber.on('ready', () => {
      subscriber.subscribe(channel).catch(() => undefined);
    });
    subscriber.on('message', (from, message) => {
      if (from === channel) this.#s.onMessage(message);
    });
    return subscriber;
  }

  /** The node errors name, read only when an error is built. */
  get #where(): string {
    return (this.#address ??= redisAddress(this.#s.client) ?? 'redis');
  }

  /**
   * Runs `script`, bounded by the per-call timeout. Failures (and calls made while degraded)
   * throw a {@link CacheRedisError}; the first failure starts a degraded period and reports it.
   */
  async run(
    operation: string,
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    const clock = this.#s.clock;
    if (clock.now() < this.#downUntil && this.#lastError !== undefined) throw this.#lastError;
    try {
      const reply = await runBounded(this.#s.client, script, keys, args, clock, this.#s.timeoutMs);
      if (this.#degradedSince !== undefined) {
        const since = this.#degradedSince;
        this.#degradedSince = undefined;
        this.#downUntil = -Infinity;
        this.#s.onRecovered(clock.now() - since);
      }
      return reply;
    } catch (error) {
      const failure = redisFailure(operation, this.#where, error);
      const kind = failure.kind;
      // A script error is this call's problem (a key of the wrong type), not Redis being down.
      if (kind !== 'script-error') {
        this.#lastError = failure;
        this.#downUntil = clock.now() + this.#s.retryMs;
        if (this.#degradedSince === undefined) {
          this.#degradedSince = clock.now();
          this.#s.onDegraded(operation, failure);
        }
      }
      throw failure;
    }
  }

  /** Closes the subscriber connection this tier opened (never the caller's client). */
  close(): void {
    this.#subscriber?.disconnect();
    this.#subscriber = undefined;
  }
}
