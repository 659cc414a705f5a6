/**
 * A Bloom filter kept in Redis as a bitmap (one string key, `SETBIT`/`GETBIT`), so every
 * process shares it. Bit positions are computed here (the same double hashing as
 * {@link BloomFilter}); each call sends all of them to one script: one round trip per call,
 * batch or not.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import {
  InvalidOptionError,
  guardedOption,
  integerOption,
  isClock,
  numberOption,
  redisAddress,
  resolveOptions,
  stringOption,
  systemClock,
  luaScript,
  type Clock,
} from '../core/index.js';
import {
  MAX_BLOOM_BITS,
  bloomPositions,
  bloomShape,
  checkBloomKey,
  checkKeyList,
  type BloomShape,
} from './bloom.js';
import { CacheClosedError } from './errors.js';
import {
  isCacheRedisClient,
  redisFailure,
  runBounded,
  type CacheRedisClient,
} from './redis-tier.js';

/**
 * KEYS: bitmap. ARGV: k, then k positions per key. Sets the bits; returns per key 1 when one
 * of its bits was unset (the key was certainly new), else 0.
 */
const ADD = luaScript(`
local k = tonumber(ARGV[1])
local out = {}
local n = (#ARGV - 1) / k
for j = 0, n - 1 do
  local fresh = 0
  for i = 1, k do
    if redis.call('SETBIT', KEYS[1], ARGV[1 + j * k + i], 1) == 0 then fresh = 1 end
  end
  out[j + 1] = fresh
end
return out
`);

/**
 * KEYS: bitmap. ARGV: k, the built marker bit (m, one past the filter's bits), then k positions
 * per key. Returns per key 1 if all its bits are set — or if the bitmap lacks its marker: only
 * a rebuild sets it (its side key is marked, and renamed over the filter whole), so a bitmap
 * without it was never built, or was lost and made again by an `add`. A Redis that may evict
 * any key (`allkeys-*` policies) can drop the bitmap, a restart without persistence or a flush
 * can lose it; the `add` that follows makes one holding only the keys added since, and
 * "absent" would then be a false negative for every key added before (as a cache's guard,
 * every existing item would read as missing). Until a rebuild, nothing is ruled out. The marker
 * costs one `GETBIT` per call, where telling a missing bitmap apart cost an `EXISTS`.
 */
const CHECK = luaScript(`
local k = tonumber(ARGV[1])
local out = {}
local n = (#ARGV - 2) / k
local unbuilt = redis.call('GETBIT', KEYS[1], ARGV[2]) == 0
for j = 0, n - 1 do
  local all = 1
  if not unbuilt then
    for i = 1, k do
      if redis.call('GETBIT', KEYS[1], ARGV[2 + j * k + i]) == 0 then all = 0 break end
    end
  end
  out[j + 1] = all
end
return out
`);

/**
 * KEYS: a rebuild's side key. ARGV: the marker bit (m, one past the filter's bits), ttl ms.
 * Starts the side key with its marker set, and a ttl (a rebuild whose process dies leaves no
 * bitmap behind for good). The marker stays when the side key is swapped in: it marks the
 * filter built (see {@link CHECK}).
 */
const START = luaScript(`
redis.call('SETBIT', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`);

/**
 * KEYS: a rebuild's side key. ARGV: k, the marker bit, ttl ms, then k positions per key. As
 * {@link ADD}, on a side key that still has its marker: one that lost it — evicted, or expired
 * while its source was slow — is not written again, since the keys of the chunks before would be
 * missing from it (false negatives once swapped in). Renews the ttl.
 */
const ADD_SIDE = luaScript(`
if redis.call('GETBIT', KEYS[1], ARGV[2]) == 0 then
  return redis.error_reply('rebuild side key lost (evicted or expired)')
end
local k = tonumber(ARGV[1])
local n = (#ARGV - 3) / k
for j = 0, n - 1 do
  for i = 1, k do redis.call('SETBIT', KEYS[1], ARGV[3 + j * k + i], 1) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
`);

/**
 * KEYS: side key, filter. ARGV: the marker bit. Swaps a rebuilt filter in atomically (and drops
 * the side key's ttl). A side key without its marker is not swapped in, and a missing one means
 * the swap was done: a copy of this call sent again after a dropped connection (ioredis resends
 * commands left unanswered) finds it renamed by its first copy, and must not touch the filter
 * that copy put in place. (A side key lost just before the swap leaves the old filter, which
 * holds every key it held: no false negatives.) Exported for the tests (the entry point does not
 * re-export it).
 */
export const SWAP = luaScript(`
if redis.call('GETBIT', KEYS[1], ARGV[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
return 1
`);

/** KEYS: a side key. Drops what a failed rebuild built. */
const DROP = luaScript(`
return redis.call('DEL', KEYS[1])
`);

/**
 * How long a rebuild's side key lives without a chunk written to it: a rebuild whose source
 * pauses longer than this between two chunks fails (nothing is swapped in).
 */
const REBUILD_TTL_MS = 600_000;

/** Keys per script call when adding many (bounds one script's run time on the server). */
const CHUNK = 1_000;

/** Options of {@link RedisBloomFilter}. */
export interface RedisBloomOptions {
  /** The Redis client (an ioredis `Redis` or `Cluster`). */
  readonly redis: CacheRedisClient;
  /** The filter's name; its key is `<prefix>{<name>}` (one Cluster slot). */
  readonly name: string;
  /** How many distinct keys the filter is designed for. */
  readonly expectedItems: number;
  /** Target false-positive rate at `expectedItems`. @defaultValue `0.01` */
  readonly falsePositiveRate?: number | undefined;
  /** Key prefix; no `{` or `}`. @defaultValue `'keel:bloom:'` */
  readonly prefix?: string | undefined;
  /** Longest wait for one call, ms; at most 2³¹ − 1. @defaultValue `1_000` */
  readonly timeoutMs?: number | undefined;
  /** Clock for the timeout. @defaultValue `systemClock` */
  readonly clock?: Clock | undefined;
}

const spec = {
  redis: guardedOption(isCacheRedisClient, 'a Redis client (ioredis Redis or Cluster)', {
    required: true,
  }),
  name: stringOption({ required: true, nonEmpty: true }),
  expectedItems: integerOption({ min: 1, required: true }),
  falsePositiveRate: numberOption({ min: 0, minExclusive: true, max: 0.5, default: 0.01 }),
  prefix: stringOption({ default: 'keel:bloom:' }),
  // setTimeout fires after 1 ms past 2^31 − 1: every call would time out.
  timeoutMs: numberOption({ min: 1, max: 2 ** 31 - 1, default: 1_000 }),
  clock: guardedOption(isClock, 'a Clock { now(), setTimer() }', { default: systemClock }),
};

/**
 * A Bloom filter on Redis shared by every process: no false negatives, false positives at about
 * the designed rate at `expectedItems`. Use it alone or as a `Cache`'s `guard` (a Redis failure
 * there lets the key through rather than refusing it). Build it with `rebuild(existing items)`,
 * which replaces the contents atomically, and keep it current with `add`: it rules keys out only
 * once built — until then every key is "maybe" (`add`s are kept). A bitmap lost (evicted under
 * an `allkeys-*` policy, flushed, a restart without persistence) rules nothing out until the
 * next `rebuild`, even once an `add` has made a new one: that one holds only the keys added
 * since, and ruling keys out by it would report existing items absent. Its key has no ttl: keep
 * it on a Redis that does not evict it (`noeviction`, or a `volatile-*` policy).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { RedisBloomFilter } from 'keel/cache';
 *
 * const redis = new Redis();
 * const skus = new RedisBloomFilter({ redis, name: 'skus', expectedItems: 1_000_000 });
 * await skus.rebuild(['sku-1', 'sku-2']); // every item that exists (a database read)
 * await skus.add('sku-3'); // an item created later
 * console.log(await skus.mightContain('sku-1')); // true
 * redis.disconnect();
 * ```
 */
export class RedisBloomFilter {
  /** Bits (m) and hashes (k). */
  readonly shape: BloomShape;
  /** The Redis key holding the bitmap. */
  readonly key: string;
  readonly #o: ReturnType<typeof resolveBloomOptions>;
  #closed = false;

  /** @throws InvalidOptionError naming a bad option */
  constructor(options: RedisBloomOptions) {
    this.#o = resolveBloomOptions(options);
    this.shape = Object.freeze(
      bloomShape(
        { expectedItems: this.#o.expectedItems, falsePositiveRate: this.#o.falsePositiveRate },
        'RedisBloomFilter',
      ),
    );
    // A rebuild marks its side key at bit m (one past the filter's), and Redis sets bits up to
    // 2^32 − 1 only: a filter of exactly MAX_BLOOM_BITS could be filled but never rebuilt.
    if (this.shape.bits >= MAX_BLOOM_BITS) {
      throw new InvalidOptionError(
        'RedisBloomFilter',
        'expectedItems',
        `a count and rate that fit in 2^32 − 1 bits (this needs ${this.shape.bits})`,
        this.#o.expectedItems,
      );
    }
    this.key = `${this.#o.prefix}{${this.#o.name}}`;
  }

  /** A script's arguments: k, then `lead`, then k bit positions per key. */
  #positions(owner: string, keys: readonly string[], ...lead: number[]): number[] {
    const k = this.shape.hashes;
    const out = new Array<number>(keys.length * k);
    keys.forEach((key, j) => {
      checkBloomKey(owner, key);
      bloomPositions(key, this.shape, out, j * k);
    });
    return [k, ...lead, ...out];
  }

  async #run(
    operation: string,
    script: typeof ADD,
    key: string,
    args: (string | number)[],
    second?: string,
  ) {
    if (this.#closed) throw new CacheClosedError('Bloom filter');
    const keys = second === undefined ? [key] : [key, second];
    try {
      return await runBounded(this.#o.redis, script, keys, args, this.#o.clock, this.#o.timeoutMs);
    } catch (error) {
      throw redisFailure(operation, redisAddress(this.#o.redis) ?? 'redis', error);
    }
  }

  async #batch(
    operation: string,
    script: typeof ADD,
    key: string,
    keys: readonly string[],
    owner?: string,
  ): Promise<boolean[]> {
    if (owner !== undefined && !Array.isArray(keys)) {
      throw new InvalidOptionError(owner, 'keys', 'an array of keys', keys);
    }
    if (keys.length === 0) return [];
    // CHECK reads the built marker (bit m) too.
    const args =
      script === CHECK
        ? this.#positions(operation, keys, this.shape.bits)
        : this.#positions(operation, keys);
    const reply = await this.#run(operation, script, key, args);
    return Array.isArray(reply) ? reply.map((bit) => bit === 1) : keys.map(() => false);
  }

  /**
   * Adds `key`; true when it was certainly not in the filter before. `false` claims nothing,
   * as with a false positive: a call whose script ran twice (ioredis sends an unanswered command
   * again after a dropped connection) answers `false` for a new key, its first copy having set
   * the bits.
   * @throws CacheRedisError when Redis fails or times out
   */
  async add(key: string): Promise<boolean> {
    const [fresh] = await this.#batch('bloom-add', ADD, this.key, [key]);
    return fresh === true;
  }

  /**
   * False only when `key` was certainly never added. True for every key until the filter is
   * built by {@link RedisBloomFilter.rebuild}, and again after its bitmap was lost (evicted,
   * flushed, a restart without persistence) until the next rebuild.
   * @throws CacheRedisError when Redis fails or times out
   */
  async mightContain(key: string): Promise<boolean> {
    const [maybe] = await this.#batch('bloom-check', CHECK, this.key, [key]);
    return maybe === true;
  }

  /** {@link RedisBloomFilter.add} for each key, in one round trip; one result per key. */
  addAll(keys: readonly string[]): Promise<boolean[]> {
    return this.#batch('bloom-add', ADD, this.key, keys, 'RedisBloomFilter.addAll');
  }

  /** {@link RedisBloomFilter.mightContain} for each key, in one round trip. */
  mightContainAll(keys: readonly string[]): Promise<boolean[]> {
    return this.#batch('bloom-check', CHECK, this.key, keys, 'RedisBloomFilter.mightContainAll');
  }

  /**
   * Replaces the filter's contents by exactly `keys` (the set of existing items, re-read from
   * the database): built under a side key of its own in the same slot, then renamed over the
   * live one in one step, so readers see the old filter or the new one, never a half-built one.
   * Each rebuild has its own side key (rebuilds run by several processes at once do not write
   * into each other's), marked, so that one evicted or expired midway fails the rebuild rather
   * than being swapped in with the keys of the chunks before missing. A rebuild that fails
   * deletes its side key (a Redis out of memory needs the room back).
   *
   * @throws CacheRedisError when Redis fails, times out, refuses a write (out of memory), or
   *   loses the side key; the filter is then left as it was
   */
  async rebuild(keys: Iterable<string>): Promise<void> {
    // Before the side key is made: a bad argument changes nothing in Redis.
    checkKeyList('RedisBloomFilter.rebuild', keys);
    const side = `${this.key}:rebuild:${randomUUID()}`;
    const marker = this.shape.bits;
    try {
      await this.#run('bloom-rebuild', START, side, [marker, REBUILD_TTL_MS]);
      let chunk: string[] = [];
      for (const key of keys) {
        chunk.push(key);
        if (chunk.length === CHUNK) {
          await this.#addSide(side, marker, chunk);
          chunk = [];
        }
      }
      if (chunk.length > 0) await this.#addSide(side, marker, chunk);
      await this.#run('bloom-rebuild', SWAP, side, [marker], this.key);
    } catch (error) {
      if (!this.#closed) {
        await runBounded(this.#o.redis, DROP, [side], [], this.#o.clock, this.#o.timeoutMs).catch(
          () => undefined,
        );
      }
      throw error;
    }
  }

  async #addSide(side: string, marker: number, keys: readonly string[]): Promise<void> {
    await this.#run(
      'bloom-rebuild',
      ADD_SIDE,
      side,
      this.#positions('bloom-rebuild', keys, marker, REBUILD_TTL_MS),
    );
  }

  /** Stops the filter (later calls reject); the Redis client stays the caller's. Idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  /** `await using` closes it. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function resolveBloomOptions(options: unknown) {
  const resolved = resolveOptions('RedisBloomFilter', options, spec);
  if (/[{}]/.test(resolved.prefix)) {
    throw new InvalidOptionError(
      'RedisBloomFilter',
      'prefix',
      'a prefix without "{" or "}" (the name is the hash tag)',
      resolved.prefix,
    );
  }
  return resolved;
}
