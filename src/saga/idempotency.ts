/**
 * Idempotency keys on Redis, with Stripe's semantics
 * (https://docs.stripe.com/api/idempotent_requests): the first call with a key runs and stores
 * its result; concurrent and later calls with the key wait for that result and return it; a key
 * reused with a different payload is an {@link IdempotencyConflictError}.
 *
 * Two times are kept apart, where the usual Node middleware has one: the **in-progress lease**
 * (at most 60 s, renewed while the function runs) after which a holder that died is taken over,
 * and the **stored result's ttl** (a day by default). A crashed request's key is therefore free
 * again within a lease, not stuck for the ttl.
 *
 * **Compensation** follows Seata's TCC fence (the `tcc_fence_log` states: tried, committed,
 * rollbacked, suspended; https://seata.apache.org/docs/user/mode/tcc/): {@link
 * IdempotencyKeys.compensate} on a key whose action never ran records a tombstone and undoes
 * nothing (the "empty rollback"); an action that arrives after it is refused with
 * {@link IdempotencyCancelledError} (the "suspension"); on a key whose action ran, it undoes it
 * once with the stored result.
 *
 * Record (one hash per key, `<prefix>{<key>}`): `s` state (`run` | `done` | `undoing` |
 * `cancelled`), `fp` payload fingerprint, `r` result, `h` holder token, `l` lease expiry
 * (Redis server time).
 *
 * Internal module: the public names are re-exported by `keel/saga`.
 * @packageDocumentation
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  InvalidOptionError,
  isAbortSignal,
  isClock,
  luaScript,
  onAbort,
  resolveOptions,
  runScript,
  systemClock,
  throwIfAborted,
  wakeableSleep,
  type Clock,
  type LuaScript,
  type ScriptClient,
  type Timer,
  warnIfEvicting,
} from '../core/index.js';
import { guardedOption, integerOption, stringOption } from '../core/options.js';
import {
  IdempotencyCancelledError,
  IdempotencyConflictError,
  IdempotencyLostError,
  SagaStoreError,
} from './errors.js';

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * ARGV: 1 token, 2 fingerprint, 3 leaseMs, 4 ttlMs.
 *
 * Every script here may run twice for one call: when a connection drops with a reply unread,
 * ioredis reconnects and sends the command again (`autoResendUnfulfilledCommands`), and the first
 * one may have run. So each recognises its own token: a claim that finds itself holding the key
 * runs (rather than waiting out its own lease), and a store or end that finds its own outcome
 * already written succeeds (rather than reporting the lease lost). Final records keep the token
 * (`h`) for that.
 */
export const ACQUIRE = luaScript(`${NOW}
local k = KEYS[1]
local r = redis.call('HMGET', k, 's', 'fp', 'r', 'l', 'h')
if not r[1] then
  redis.call('HSET', k, 's', 'run', 'fp', ARGV[2], 'h', ARGV[1], 'l', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', k, tonumber(ARGV[4]))
  return {'run', 0}
end
if ARGV[2] ~= '' and r[2] ~= '' and r[2] ~= ARGV[2] then return {'conflict', 0} end
if r[1] == 'done' then return {'hit', r[3]} end
if r[1] ~= 'run' then return {'cancelled', 0} end
if r[5] == ARGV[1] then
  redis.call('HSET', k, 'l', now + tonumber(ARGV[3]))
  return {'run', 0}
end
if tonumber(r[4]) > now then return {'wait', tonumber(r[4]) - now} end
redis.call('HSET', k, 'h', ARGV[1], 'l', now + tonumber(ARGV[3]))
return {'run', 1}
`);

/**
 * ARGV: 1 token, 2 result, 3 ttlMs.
 *
 * The lease field is deleted before the result is written, on purpose: a delete never needs
 * memory, and once a script has written anything Redis refuses none of its later writes for
 * memory (a script is never stopped half-way; only a first write that may grow memory is
 * refused when `maxmemory` is reached under `noeviction`). So the result of a function that ran
 * is stored even then — refused, the key would stay `run` and the next call, once the lease ran
 * out, would run the function again. {@link UNDO_END} does the same for a compensation.
 */
export const COMPLETE = luaScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'h')
if r[1] == 'done' and r[2] == ARGV[1] then return 1 end
if r[1] ~= 'run' or r[2] ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'l')
redis.call('HSET', KEYS[1], 's', 'done', 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
`);

/** Frees a key whose function threw, so the next call runs afresh. ARGV: 1 token. */
export const RELEASE = luaScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'h')
if r[1] ~= 'run' or r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`);

/**
 * ARGV: 1 token, 2 leaseMs, 3 state the holder is in (`run` | `undoing`). The lease field is
 * deleted before it is written again, as in {@link COMPLETE}: so a holder keeps its lease while
 * Redis is out of memory, rather than another call taking the key over (and running the
 * function a second time) while the first still runs. One command more, once per third of a
 * lease.
 */
export const RENEW = luaScript(`${NOW}
local r = redis.call('HMGET', KEYS[1], 's', 'h')
if r[1] ~= ARGV[3] or r[2] ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'l')
redis.call('HSET', KEYS[1], 'l', now + tonumber(ARGV[2]))
return 1
`);

/** ARGV: 1 token, 2 leaseMs, 3 ttlMs. Replies `{kind, result or '', has result, wait ms}`. */
export const UNDO_BEGIN = luaScript(`${NOW}
local k = KEYS[1]
local r = redis.call('HMGET', k, 's', 'r', 'l', 'h')
local lease = now + tonumber(ARGV[2])
if not r[1] then
  redis.call('HSET', k, 's', 'cancelled', 'fp', '')
  redis.call('PEXPIRE', k, tonumber(ARGV[3]))
  return {'empty', '', 0, 0}
end
if r[1] == 'cancelled' then return {'already', '', 0, 0} end
local mine = r[1] == 'undoing' and r[4] == ARGV[1]
if r[1] ~= 'done' and not mine and tonumber(r[3]) > now then return {'wait', '', 0, tonumber(r[3]) - now} end
redis.call('HSET', k, 's', 'undoing', 'h', ARGV[1], 'l', lease)
if r[2] then return {'undo', r[2], 1, 0} end
return {'undo', '', 0, 0}
`);

/** ARGV: 1 token, 2 ttlMs. The lease field goes first, as in {@link COMPLETE}. */
export const UNDO_END = luaScript(`
local r = redis.call('HMGET', KEYS[1], 's', 'h')
if r[1] == 'cancelled' and r[2] == ARGV[1] then return 1 end
if r[1] ~= 'undoing' or r[2] ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'l')
redis.call('HSET', KEYS[1], 's', 'cancelled')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
`);

/** Options of {@link IdempotencyKeys}. */
export interface IdempotencyKeysOptions {
  /** A Redis client that runs scripts: an ioredis `Redis` or `Cluster`. */
  readonly redis: ScriptClient;
  /** Prefix of every key. @defaultValue `'keel:idem:'` */
  readonly prefix?: string;
  /**
   * The in-progress lease: a holder that stops renewing it (it died) is taken over after this
   * long. Renewed every third of it while the function runs. At most 60 s. @defaultValue 30000
   */
  readonly leaseMs?: number;
  /** How long a stored result (or a compensation's tombstone) is kept. @defaultValue 24 h */
  readonly ttlMs?: number;
  /** Longest pause between two looks while waiting for another caller. @defaultValue 500 */
  readonly maxPollMs?: number;
  /** Clock for the heartbeat and the waits. @defaultValue `systemClock` */
  readonly clock?: Clock;
}

/** Options of {@link IdempotencyKeys.idempotent}. */
export interface IdempotentOptions {
  /**
   * What the call is for (a request body): its fingerprint is stored with the key, and a later
   * call with the same key and another payload is an {@link IdempotencyConflictError}. Hashed
   * (SHA-256 of its JSON with sorted keys).
   */
  readonly payload?: unknown;
  /** Aborts the wait (never a function already running elsewhere); rejects with its reason. */
  readonly signal?: AbortSignal;
}

/** Options of {@link IdempotencyKeys.compensate}. */
export interface CompensateOptions {
  /** Aborts the wait for an action in progress; rejects with its reason. */
  readonly signal?: AbortSignal;
}

/** What {@link IdempotencyKeys.compensate} did. */
export type CompensateResult =
  /** The action had run (or may have: its holder died); `undo` ran. */
  | 'undone'
  /** The action never ran: nothing undone, and a tombstone bars it from running later. */
  | 'empty'
  /** It was compensated before; nothing done. */
  | 'already';

/** SHA-256 of `value`'s JSON with object keys sorted (so `{a,b}` and `{b,a}` agree). */
function fingerprint(value: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (typeof v === 'object' && v !== null) {
      const out: Record<string, unknown> = {};
      for (const key of Object.keys(v).sort())
        out[key] = canonical((v as Record<string, unknown>)[key]);
      return out;
    }
    return v;
  };
  const json = JSON.stringify(canonical(value)) as string | undefined;
  return createHash('sha256')
    .update(json ?? 'undefined')
    .digest('base64url');
}

/** Results are stored as `j<json>` or `u` (undefined). */
const store = (value: unknown): string => {
  const json = JSON.stringify(value) as string | undefined;
  return json === undefined ? 'u' : `j${json}`;
};
const load = (text: string): unknown =>
  text.startsWith('j') ? JSON.parse(text.slice(1)) : undefined;

/**
 * Idempotency keys on Redis: {@link IdempotencyKeys.idempotent} and
 * {@link IdempotencyKeys.compensate} (both bound, so they can be passed around or destructured).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { IdempotencyKeys } from 'keel/saga';
 *
 * const redis = new Redis();
 * const { idempotent } = new IdempotencyKeys({ redis });
 * const charge = await idempotent('charge:order-42', async () => ({ id: 'ch_1' }), {
 *   payload: { cents: 500 },
 * });
 * console.log(charge.id); // the same on every call with this key
 * redis.disconnect();
 * ```
 */
export class IdempotencyKeys {
  readonly #client: ScriptClient;
  readonly #prefix: string;
  readonly #leaseMs: number;
  readonly #ttlMs: number;
  readonly #maxPollMs: number;
  readonly #clock: Clock;

  constructor(options: IdempotencyKeysOptions) {
    const o = resolveOptions('IdempotencyKeys', options, {
      redis: guardedOption(
        (v): v is ScriptClient =>
          typeof v === 'object' &&
          v !== null &&
          typeof (v as ScriptClient).evalsha === 'function' &&
          typeof (v as ScriptClient).eval === 'function',
        'a Redis client with evalsha and eval (ioredis Redis or Cluster)',
        { required: true },
      ),
      prefix: stringOption({ default: 'keel:idem:' }),
      leaseMs: integerOption({ min: 100, max: 60_000, default: 30_000 }),
      ttlMs: integerOption({ min: 1000, max: 2 ** 40, default: 24 * 3_600_000 }),
      maxPollMs: integerOption({ min: 5, max: 60_000, default: 500 }),
      clock: guardedOption(isClock, 'a Clock { now(), setTimer() }', { default: systemClock }),
    });
    if (o.ttlMs < o.leaseMs) {
      throw new InvalidOptionError(
        'IdempotencyKeys',
        'ttlMs',
        `at least leaseMs (${o.leaseMs})`,
        o.ttlMs,
      );
    }
    this.#client = o.redis;
    warnIfEvicting(o.redis, 'keel/saga');
    this.#prefix = o.prefix;
    this.#leaseMs = o.leaseMs;
    this.#ttlMs = o.ttlMs;
    this.#maxPollMs = o.maxPollMs;
    this.#clock = o.clock;
  }

  #key(key: unknown, owner: string): string {
    if (typeof key !== 'string' || key === '' || key.length > 1024) {
      throw new InvalidOptionError(owner, 'key', 'a string of 1–1024 characters', key);
    }
    return `${this.#prefix}{${key}}`;
  }

  async #run(
    what: string,
    script: LuaScript,
    key: string,
    args: readonly (string | number)[],
  ): Promise<unknown> {
    try {
      return await runScript(this.#client, script, [key], args);
    } catch (error) {
      throw new SagaStoreError(`${what} ${key}`, { cause: error });
    }
  }

  /**
   * Runs `fn` once for `key`: the first call runs it and stores its result (which must survive
   * `JSON.stringify`); calls while it runs wait for it; later calls return the stored result.
   * If `fn` throws, nothing is stored, the key is freed and the error is thrown to this caller
   * (a waiter then runs `fn` itself). A holder that died is taken over after `leaseMs`.
   *
   * @throws {@link IdempotencyConflictError} (another payload), {@link IdempotencyCancelledError}
   * (the key was compensated), {@link IdempotencyLostError} (this call's lease was taken over
   * before it could store the result), {@link SagaStoreError}, `signal.reason`, or what `fn` threw.
   */
  readonly idempotent = async <T>(
    key: string,
    fn: (signal: AbortSignal) => T | Promise<T>,
    options: IdempotentOptions = {},
  ): Promise<Awaited<T>> => {
    const k = this.#key(key, 'idempotent');
    if (typeof fn !== 'function')
      throw new InvalidOptionError('idempotent', 'fn', 'a function', fn);
    const o = resolveOptions('idempotent', options, {
      payload: { parse: (v) => v },
      signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
    });
    throwIfAborted(o.signal);
    const fp = 'payload' in options && options.payload !== undefined ? fingerprint(o.payload) : '';
    const token = randomUUID();
    let pause = 10;
    for (;;) {
      const reply = (await this.#run('idempotent', ACQUIRE, k, [
        token,
        fp,
        this.#leaseMs,
        this.#ttlMs,
      ])) as [string, unknown];
      switch (reply[0]) {
        case 'hit':
          return load(String(reply[1])) as Awaited<T>;
        case 'conflict':
          throw new IdempotencyConflictError(key);
        case 'cancelled':
          throw new IdempotencyCancelledError(key);
        case 'wait':
          pause = Math.min(pause * 2, this.#maxPollMs);
          await wakeableSleep(Math.min(pause, Number(reply[1]) + 1), {
            clock: this.#clock,
            signal: o.signal,
          }).done;
          continue;
        default:
          return await this.#hold<Awaited<T>>(k, key, token, 'run', fn as never, async (value) => {
            const stored = await this.#run('idempotent', COMPLETE, k, [
              token,
              store(value),
              this.#ttlMs,
            ]);
            if (Number(stored) !== 1) throw new IdempotencyLostError(key);
          });
      }
    }
  };

  /**
   * Compensates the action of `key` (TCC's cancel, with Seata's fence): when the action ran —
   * or may have, its holder having died — `undo(result)` runs (`result` is `undefined` when the
   * action's outcome is unknown) and the key is marked compensated; when it never ran, nothing
   * is undone and a tombstone makes the action refuse to run later; when it is running, this
   * waits for it. Safe to call again (answers `already`). `undo` must itself be idempotent: if
   * this process dies during it, the next `compensate` runs it again.
   */
  readonly compensate = async (
    key: string,
    undo: (result: unknown, signal: AbortSignal) => void | Promise<void>,
    options: CompensateOptions = {},
  ): Promise<CompensateResult> => {
    const k = this.#key(key, 'compensate');
    if (typeof undo !== 'function')
      throw new InvalidOptionError('compensate', 'undo', 'a function', undo);
    const o = resolveOptions('compensate', options, {
      signal: guardedOption(isAbortSignal, 'an AbortSignal', { optional: true }),
    });
    throwIfAborted(o.signal);
    const token = randomUUID();
    let pause = 10;
    for (;;) {
      const reply = (await this.#run('compensate', UNDO_BEGIN, k, [
        token,
        this.#leaseMs,
        this.#ttlMs,
      ])) as unknown[];
      if (reply[0] === 'empty' || reply[0] === 'already') return reply[0];
      if (reply[0] === 'wait') {
        pause = Math.min(pause * 2, this.#maxPollMs);
        await wakeableSleep(Math.min(pause, Number(reply[3]) + 1), {
          clock: this.#clock,
          signal: o.signal,
        }).done;
        continue;
      }
      const result = Number(reply[2]) === 1 ? load(String(reply[1])) : undefined;
      await this.#hold(
        k,
        key,
        token,
        'undoing',
        (signal) => undo(result, signal),
        async () => {
          const ended = await this.#run('compensate', UNDO_END, k, [token, this.#ttlMs]);
          if (Number(ended) !== 1) throw new IdempotencyLostError(key);
        },
      );
      return 'undone';
    }
  };

  /** Runs `fn` while renewing the lease in `state`; `finish` stores its result. */
  async #hold<T>(
    k: string,
    key: string,
    token: string,
    state: 'run' | 'undoing',
    fn: (signal: AbortSignal) => T | Promise<T>,
    finish: (value: T) => Promise<void>,
  ): Promise<T> {
    const lost = new AbortController();
    let beat: Timer | undefined;
    const renew = (): void => {
      beat = this.#clock.setTimer(() => {
        this.#run('renew', RENEW, k, [token, this.#leaseMs, state]).then(
          (ok) => {
            if (Number(ok) === 1) renew();
            else lost.abort(new IdempotencyLostError(key));
          },
          () => {
            renew();
          },
        );
      }, this.#leaseMs / 3);
      beat.unref();
    };
    renew();
    let value: T;
    try {
      value = await new Promise<T>((resolve, reject) => {
        const off = onAbort(lost.signal, () => {
          reject(lost.signal.reason as unknown);
        });
        Promise.resolve()
          .then(() => fn(lost.signal))
          .then(resolve, reject)
          .finally(off);
      });
    } catch (error) {
      beat?.cancel();
      if (state === 'run') await this.#run('release', RELEASE, k, [token]).catch(() => undefined);
      throw error;
    }
    beat?.cancel();
    await finish(value);
    return value;
  }
}
