/**
 * Public-API fuzz suite for the option layer of `keel/cache`, `keel/queue` and `keel/saga`
 * (issue 14): constructors (Cache, BloomFilter, RedisBloomFilter, Queue, SagaCoordinator,
 * IdempotencyKeys), `bloomShape`, `defineSaga`, `idempotent`, and the calls `getOrLoad`, `get`,
 * `set`, `delete`, `peek`, `send`, `sendMany`, `consume` and `run` get arbitrary values
 * (fc.anything(), special numbers, lone surrogates, 1 MB strings, `__proto__` keys, throwing
 * getters, Proxies — see `./arbitraries.js`). Each call must end in the documented result, a
 * typed KeelError (an InvalidOptionError naming what was wrong), or the caller's own error (a
 * `HostileError`) passed through — never a plain TypeError/RangeError, never a hang (every async
 * call is raced against a generous bound; that bound is a hang detector, not a timed assertion).
 *
 * The in-memory cache and the Bloom filter need no Redis. The rest uses ONE real redis-server
 * from test/support (never a mock), with few runs (`REDIS_RUNS`) to keep the file quick.
 */
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { isInvalidOptionError, type InvalidOptionError } from '../../src/core/index.js';
import { BloomFilter, Cache, RedisBloomFilter, bloomShape } from '../../src/cache/index.js';
import { Queue, idempotent } from '../../src/queue/index.js';
import { IdempotencyKeys, SagaCoordinator, defineSaga } from '../../src/saga/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import {
  built,
  hostileNumber,
  hostileString,
  hostileValue,
  newTally,
  settle,
  type Tally,
} from './arbitraries.js';

const RUNS = Number(process.env.KEEL_FUZZ_RUNS ?? 100);
/** Runs of the properties that touch Redis: few, since each makes round trips. */
const REDIS_RUNS = Number(process.env.KEEL_FUZZ_REDIS_RUNS ?? Math.min(RUNS, 50));
/** A hang detector only: every call here ends in milliseconds when it works. */
const HANG_MS = 10_000;

const tallies = new Map<string, Tally>();
function tallyOf(name: string): Tally {
  let tally = tallies.get(name);
  if (tally === undefined) tallies.set(name, (tally = newTally()));
  return tally;
}
afterAll(() => {
  const parts = [...tallies].map(
    ([name, t]) => `${name} ${t.returned + t.typed + t.hostile} (${t.typed} typed errors)`,
  );
  console.log(`cache/queue/saga fuzz: ${parts.join(', ')}`);
});

/** Awaits `run()` within {@link HANG_MS} and checks how it ended, as `settle` does. */
async function settleAsync(what: string, run: () => unknown, tally: Tally): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolve) => {
    timer = setTimeout(() => resolve('hang'), HANG_MS);
  });
  try {
    const outcome = await Promise.race([
      Promise.resolve()
        .then(run)
        .then(
          (value) => ({ ok: true as const, value }),
          (error: unknown) => ({ ok: false as const, error }),
        ),
      hang,
    ]);
    expect(outcome, `${what} did not settle within ${HANG_MS} ms`).not.toBe('hang');
    if (outcome === 'hang') return undefined;
    if (outcome.ok) {
      tally.returned++;
      return outcome.value;
    }
    settle(
      what,
      () => {
        throw outcome.error;
      },
      tally,
    );
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Option objects: mostly the real keys with plausible or hostile values, sometimes anything. */
function optionsOf(
  keys: readonly string[],
  plausible: fc.Arbitrary<unknown>,
): fc.Arbitrary<unknown> {
  return fc.oneof(
    {
      weight: 4,
      arbitrary: fc.dictionary(
        fc.constantFrom(...keys, '__proto__', 'constructor', 'tllMs'),
        fc.oneof(plausible, hostileValue),
        { maxKeys: 4 },
      ),
    },
    { weight: 1, arbitrary: hostileValue },
  );
}

/** The object's own fields, or none when it is not a plain object (so defaults can follow). */
function fieldsOf(o: unknown): object {
  return typeof o === 'object' && o !== null && !Array.isArray(o) ? o : {};
}

const plausibleNumber = fc.oneof(
  fc.constantFrom(0, 1, 2, 5, 50, 200, 1000, 30_000, 0.01, 0.5),
  hostileNumber,
);
const keyArb = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('sku-1', 'k', 'order:{7}') },
  { weight: 1, arbitrary: hostileString },
  { weight: 1, arbitrary: hostileValue },
);
const fnOrHostile = (fn: () => unknown): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 3, arbitrary: fc.constant(fn) }, { weight: 1, arbitrary: hostileValue });

/** Builds every lazy hostile object in `values` (see `built` in ./arbitraries.js). */
function realAll(...values: unknown[]): unknown[] {
  let out = values;
  built((...xs: unknown[]) => {
    out = xs;
  })(...values);
  return out;
}

const CACHE_KEYS = [
  'l1',
  'namespace',
  'prefix',
  'ttlMs',
  'staleMs',
  'graceMs',
  'negativeTtlMs',
  'jitter',
  'beta',
  'leaseTtlMs',
  'maxWaitMs',
  'pollIntervalMs',
  'redisTimeoutMs',
  'degradedRetryMs',
  'invalidation',
  'serializer',
  'guard',
  'clock',
  'wallClock',
  'random',
  'redis',
];
/** The well-formed loader; a hit or a load through it returns its value. */
const goodLoader = (): { cents: number } => ({ cents: 1999 });
const LIFETIME_KEYS = ['ttlMs', 'staleMs', 'graceMs', 'signal'];

describe('fuzz: keel/cache option layer (in memory)', () => {
  it('Cache: constructor, getOrLoad, get, set, delete and peek with hostile input give typed errors', async () => {
    const tally = tallyOf('Cache');
    await fc.assert(
      fc.asyncProperty(
        optionsOf(
          CACHE_KEYS,
          fc.oneof(
            plausibleNumber,
            fc.boolean(),
            fc.constantFrom('ns', { max: 10 }, { max: 0 }, false),
            hostileString,
          ),
        ),
        keyArb,
        fnOrHostile(goodLoader),
        optionsOf(LIFETIME_KEYS, plausibleNumber),
        hostileValue,
        async (options, key, loader, lifetimes, value) => {
          const [o, k, l, t, v] = realAll(options, key, loader, lifetimes, value);
          let made: Cache | undefined;
          // A Redis-less cache: a `redis` key from the options is dropped, since its client
          // could not be closed here (the Redis-backed paths are fuzzed below). Copying the
          // fields may run a hostile getter, so it happens inside `settle` too.
          const make = (): Cache => {
            if (typeof o !== 'object' || o === null || Array.isArray(o)) {
              return new Cache(o as never);
            }
            const rest: Record<string, unknown> = { ...o };
            delete rest.redis;
            return new Cache(rest);
          };
          if (!settle('new Cache', () => (made = make()), tally)) return;
          const cache = made as Cache;
          try {
            const loaded = await settleAsync(
              'Cache.getOrLoad',
              () => cache.getOrLoad(k as never, l as never, t as never),
              tally,
            );
            if (loaded !== undefined && l === goodLoader) {
              expect(loaded).toEqual({ cents: 1999 });
            }
            await settleAsync('Cache.set', () => cache.set(k as never, v, t as never), tally);
            await settleAsync('Cache.get', () => cache.get(k as never, t as never), tally);
            settle('Cache.peek', () => cache.peek(k as never), tally);
            await settleAsync('Cache.delete', () => cache.delete(k as never, t as never), tally);
          } finally {
            await cache.close();
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('BloomFilter and bloomShape: hostile options and keys give typed errors', () => {
    const tally = tallyOf('BloomFilter');
    fc.assert(
      fc.property(
        fc.oneof(
          // Mostly well formed (so add/mightContain run), else anything.
          {
            weight: 2,
            arbitrary: fc.record(
              {
                expectedItems: fc.oneof(fc.integer({ min: 1, max: 10_000 }), plausibleNumber),
                falsePositiveRate: fc.oneof(fc.double({ min: 1e-6, max: 0.5 }), plausibleNumber),
              },
              { requiredKeys: ['expectedItems'] },
            ),
          },
          {
            weight: 2,
            arbitrary: optionsOf(['expectedItems', 'falsePositiveRate'], plausibleNumber),
          },
        ),
        keyArb,
        built((options: unknown, key: unknown) => {
          let shape: unknown;
          if (settle('bloomShape', () => (shape = bloomShape(options as never)), tally)) {
            const s = shape as { bits: number; hashes: number };
            expect(Number.isSafeInteger(s.bits) && s.bits > 0).toBe(true);
            expect(Number.isSafeInteger(s.hashes) && s.hashes > 0).toBe(true);
          }
          let made: BloomFilter | undefined;
          if (!settle('new BloomFilter', () => (made = new BloomFilter(options as never)), tally))
            return;
          const bloom = made as BloomFilter;
          if (settle('BloomFilter.add', () => bloom.add(key as never), tally)) {
            // No false negatives: a key added is always reported.
            expect(bloom.mightContain(key as never)).toBe(true);
          }
          settle('BloomFilter.mightContain', () => bloom.mightContain(key as never), tally);
        }),
      ),
      { numRuns: RUNS },
    );
  });
});

describeRedis('fuzz: keel/cache, keel/queue and keel/saga with one real redis-server', () => {
  const redis = useRedis();
  const clients: Redis[] = [];
  /** One shared client for the whole file (closed after), raised to a hostile value sometimes. */
  let shared: Redis | undefined;
  const client = (): Redis => {
    if (shared === undefined) {
      shared = redis().client(0, { maxRetriesPerRequest: 1 });
      clients.push(shared);
    }
    return shared;
  };
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
  });
  const clientArb = fc.oneof(
    { weight: 4, arbitrary: fc.constant('client') },
    { weight: 1, arbitrary: hostileValue },
  );
  const clientOf = (c: unknown): unknown => (c === 'client' ? client() : c);

  it('RedisBloomFilter: hostile options and keys give typed errors', async () => {
    const tally = tallyOf('RedisBloomFilter');
    await fc.assert(
      fc.asyncProperty(
        clientArb,
        optionsOf(
          ['name', 'expectedItems', 'falsePositiveRate', 'prefix', 'clock'],
          fc.oneof(plausibleNumber, fc.constantFrom('skus', 'b{1}'), hostileString),
        ),
        keyArb,
        async (c, options, key) => {
          const [o, k] = realAll(options, key);
          let made: RedisBloomFilter | undefined;
          const ok = settle(
            'new RedisBloomFilter',
            () =>
              (made = new RedisBloomFilter({
                name: 'fuzz',
                expectedItems: 100,
                ...fieldsOf(o),
                redis: clientOf(c) as never,
              })),
            tally,
          );
          if (!ok) return;
          const bloom = made as RedisBloomFilter;
          try {
            const added = await settleAsync(
              'RedisBloomFilter.add',
              () => bloom.add(k as never),
              tally,
            );
            if (added !== undefined) expect(await bloom.mightContain(k as never)).toBe(true);
            await settleAsync(
              'RedisBloomFilter.mightContainAll',
              () => bloom.mightContainAll([k] as never),
              tally,
            );
          } finally {
            await bloom.close();
          }
        },
      ),
      { numRuns: REDIS_RUNS },
    );
  });

  it('Queue: constructor, send, sendMany, consume and idempotent with hostile input give typed errors', async () => {
    const tally = tallyOf('Queue');
    await fc.assert(
      fc.asyncProperty(
        clientArb,
        optionsOf(
          ['prefix', 'partitions', 'dedupWindowMs', 'retention', 'clock'],
          fc.oneof(plausibleNumber, fc.constantFrom('fz:q', { maxLen: 10 }), hostileString),
        ),
        fc.oneof(fc.constantFrom('orders', 'pay{1}'), hostileString, hostileValue),
        hostileValue,
        optionsOf(
          ['key', 'id', 'delayMs', 'headers', 'signal'],
          fc.oneof(plausibleNumber, hostileString),
        ),
        fc.oneof(fc.array(fc.record({ payload: hostileValue }), { maxLength: 3 }), hostileValue),
        optionsOf(
          [
            'concurrency',
            'visibilityMs',
            'maxAttempts',
            'backoff',
            'ordered',
            'consumer',
            'sweepMs',
            'blockMs',
            'pollMs',
            'closeTimeoutMs',
            'random',
          ],
          fc.oneof(plausibleNumber, fc.boolean(), hostileString),
        ),
        optionsOf(['ttlMs', 'prefix', 'client'], fc.oneof(plausibleNumber, hostileString)),
        async (c, options, topic, payload, sendOptions, items, consumeOptions, idemOptions) => {
          const [o, t, p, so, it, co, io] = realAll(
            options,
            topic,
            payload,
            sendOptions,
            items,
            consumeOptions,
            idemOptions,
          );
          let made: Queue | undefined;
          const ok = settle(
            'new Queue',
            () =>
              (made = new Queue({
                prefix: 'fz:q',
                ...fieldsOf(o),
                client: clientOf(c) as never,
              })),
            tally,
          );
          if (!ok) return;
          const queue = made as Queue;
          try {
            const sent = await settleAsync(
              'Queue.send',
              () => queue.send(t as never, p, so as never),
              tally,
            );
            if (sent !== undefined) {
              expect(['sent', 'delayed', 'duplicate']).toContain(
                (sent as { status: string }).status,
              );
            }
            await settleAsync(
              'Queue.sendMany',
              () => queue.sendMany(t as never, it as never),
              tally,
            );
            let handler: unknown = () => undefined;
            settle(
              'idempotent',
              () => (handler = idempotent({ ...fieldsOf(io), client: client() }, () => undefined)),
              tally,
            );
            settle(
              'Queue.consume',
              () => {
                const consumer = queue.consume(t as never, 'g', handler as never, co as never);
                void consumer.close();
              },
              tally,
            );
          } finally {
            await settleAsync('Queue.close', () => queue.close(), tally);
          }
        },
      ),
      { numRuns: REDIS_RUNS },
    );
  });

  it('SagaCoordinator.run: an input JSON cannot encode (BigInt, cycle) or null options give an InvalidOptionError naming it', async () => {
    // Found by the property below: run() let JSON.stringify's own TypeError escape.
    const saga = defineSaga('fz-input', [{ name: 'a', run: () => 1 }]);
    const coordinator = new SagaCoordinator({
      redis: client(),
      sagas: [saga],
      prefix: 'fz:saga-input:',
      recovery: false,
    });
    try {
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      for (const input of [10n, { n: 1n }, cyclic]) {
        const error: unknown = await coordinator
          .run(saga, 'i-1', input as never)
          .catch((e: unknown) => e);
        expect(isInvalidOptionError(error)).toBe(true);
        expect((error as InvalidOptionError).option).toBe('input');
      }
      // Also found by it: `null` options read `.signal` off null.
      const error: unknown = await coordinator
        .run(saga, 'i-1', 1, null as never)
        .catch((e: unknown) => e);
      expect(isInvalidOptionError(error)).toBe(true);
      expect((error as InvalidOptionError).option).toBe('options');
    } finally {
      await coordinator.close();
    }
  });

  it('defineSaga, SagaCoordinator, run and IdempotencyKeys with hostile input give typed errors', async () => {
    const tally = tallyOf('Saga');
    const goodSteps = [
      { name: 'reserve', run: () => 1, compensate: () => undefined },
      { name: 'charge', run: () => 2 },
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constantFrom('order', 'Pay-1'), hostileString, hostileValue),
        fc.oneof(
          { weight: 3, arbitrary: fc.constant('good') },
          {
            weight: 2,
            arbitrary: fc.array(
              fc.record(
                {
                  name: fc.oneof(fc.constantFrom('a', 'b'), hostileString, hostileValue),
                  run: fnOrHostile(() => 1),
                  retry: optionsOf(
                    ['attempts', 'initialDelayMs', 'maxDelayMs', 'factor', 'jitter', 'retryIf'],
                    plausibleNumber,
                  ),
                  timeoutMs: plausibleNumber,
                },
                { requiredKeys: ['name', 'run'] },
              ),
              { maxLength: 3 },
            ),
          },
          { weight: 1, arbitrary: hostileValue },
        ),
        optionsOf(['timeoutMs', 'compensationRetry'], plausibleNumber),
        clientArb,
        optionsOf(
          [
            'prefix',
            'shards',
            'leaseMs',
            'recovery',
            'recoveryIntervalMs',
            'maxRecovering',
            'historyLimit',
            'finishedHistory',
            'retentionMs',
            'owner',
            'clock',
            'random',
          ],
          fc.oneof(plausibleNumber, fc.boolean(), hostileString),
        ),
        fc.oneof(fc.constantFrom('id-1', 'o{2}'), hostileString, hostileValue),
        hostileValue,
        optionsOf(['signal'], hostileValue),
        optionsOf(['prefix', 'leaseMs', 'ttlMs', 'maxPollMs', 'clock'], plausibleNumber),
        async (name, steps, sagaOptions, c, options, id, input, runOptions, idemOptions) => {
          const [n, s, so, o, i, inp, ro, io] = realAll(
            name,
            steps,
            sagaOptions,
            options,
            id,
            input,
            runOptions,
            idemOptions,
          );
          let saga: unknown;
          settle(
            'defineSaga',
            () =>
              (saga = defineSaga(n as never, (s === 'good' ? goodSteps : s) as never, so as never)),
            tally,
          );
          const definition = saga ?? defineSaga('fallback', goodSteps as never);
          settle(
            'new IdempotencyKeys',
            () =>
              new IdempotencyKeys({
                prefix: 'fz:idem:',
                ...fieldsOf(io),
                redis: clientOf(c) as never,
              }),
            tally,
          );
          let made: SagaCoordinator | undefined;
          const ok = settle(
            'new SagaCoordinator',
            () =>
              (made = new SagaCoordinator({
                prefix: 'fz:saga:',
                ...fieldsOf(o),
                recovery: false,
                sagas: [definition as never],
                redis: clientOf(c) as never,
              })),
            tally,
          );
          if (!ok) return;
          const coordinator = made as SagaCoordinator;
          try {
            const outcome = await settleAsync(
              'SagaCoordinator.run',
              () => coordinator.run(definition as never, i as never, inp, ro as never),
              tally,
            );
            if (outcome !== undefined) expect(typeof outcome).toBe('object');
          } finally {
            await settleAsync('SagaCoordinator.close', () => coordinator.close(), tally);
          }
        },
      ),
      { numRuns: REDIS_RUNS },
    );
  });
});
