/**
 * One process of the cache benchmark's multi-process rows (forked by cache.bench.ts, run by
 * tsx): a cache of the library named in its config (Keel, bentocache with its Redis L2, or
 * cache-manager over Keyv + @keyv/redis) on the benchmark's Redis. On `stampede` it runs
 * `callers` concurrent reads of one cold key; on `hot` it keeps `callers` readers of one key
 * busy for `ms`. The loader counts itself in Redis (`INCR loads:<lib>:<key>`, shared by every
 * process) and takes `loaderMs`. It reports each read's latency.
 *
 * @packageDocumentation
 */
import KeyvRedis, { Keyv } from '@keyv/redis';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisDriver } from 'bentocache/drivers/redis';
import { createCache } from 'cache-manager';
import { Redis } from 'ioredis';
import { Cache } from '../src/cache/index.js';

export type CacheLib = 'keel' | 'bentocache' | 'cache-manager';

export interface CacheBenchWorkerConfig {
  readonly lib: CacheLib;
  readonly port: number;
  readonly loaderMs: number;
  readonly callers: number;
  /**
   * Record each load (`RPUSH trace:<lib>:<key>` of `{ pid, start, end, t0, t1 }`: wall-clock ms,
   * and the same instants by {@link hiResNow}) so that the benchmark can tell a duplicate load
   * from one per expiry, and subtract what the loader itself took from its waiters' waits.
   */
  readonly trace?: boolean;
}

export type ToCacheBenchWorker =
  | { readonly t: 'stampede'; readonly key: string; readonly ttlMs: number }
  | { readonly t: 'hot'; readonly key: string; readonly ttlMs: number; readonly ms: number }
  | { readonly t: 'stop' };

export type FromCacheBenchWorker =
  | { readonly t: 'ready' }
  | {
      readonly t: 'done';
      readonly latencies: readonly number[];
      readonly errors: number;
      /** When the first caller started and the last one settled ({@link hiResNow}). */
      readonly begun: number;
      readonly ended: number;
    };

/**
 * Wall-clock milliseconds with the monotonic clock's resolution: the process's time origin plus
 * `performance.now()`, comparable across the benchmark's processes to well under a millisecond
 * (Date.now() has whole milliseconds only).
 */
export const hiResNow = (): number => performance.timeOrigin + performance.now();

const config = JSON.parse(process.argv[2] ?? '{}') as CacheBenchWorkerConfig;
const send = (message: FromCacheBenchWorker): void => {
  if (process.connected) process.send?.(message, () => undefined);
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const counter = new Redis({ host: '127.0.0.1', port: config.port });
const loader = async (key: string): Promise<{ key: string; at: number }> => {
  const start = Date.now();
  const t0 = hiResNow();
  await counter.incr(`loads:${config.lib}:${key}`);
  await sleep(config.loaderMs);
  const t1 = hiResNow();
  const end = Date.now();
  if (config.trace === true) {
    // Not awaited: the load ends when the loader returns, not when Redis has the trace.
    void counter
      .rpush(`trace:${config.lib}:${key}`, JSON.stringify({ pid: process.pid, start, end, t0, t1 }))
      .catch(() => undefined);
  }
  return { key, at: end };
};

/** One read through the library under test, with its ttl. */
let read: (key: string, ttlMs: number) => Promise<unknown>;
let close: () => Promise<void>;
/** Resolves when the library can take a round: Keel's once its cache hears fill messages. */
let ready: () => Promise<void> = () => Promise.resolve();
if (config.lib === 'keel') {
  const redis = new Redis({ host: '127.0.0.1', port: config.port });
  // staleMs: a hot key is served stale while one caller refreshes it (nobody blocks).
  const cache = new Cache({ redis, staleMs: 1_000 });
  read = (key, ttlMs) => cache.getOrLoad(key, () => loader(key), { ttlMs });
  close = async () => {
    await cache.close();
    redis.disconnect();
  };
  // A round must not start before the cache's subscription is live: a fill published earlier
  // would go unheard and its waiters wake on their poll (pollIntervalMs) — start-up, not the
  // stampede. Bounded: a cache that never listens still runs (its waits then show as ≥ 200 ms).
  ready = async () => {
    for (let waited = 0; !cache.listening && waited < 10_000; waited += 10) await sleep(10);
  };
} else if (config.lib === 'bentocache') {
  const bento = new BentoCache({
    default: 'c',
    stores: {
      c: bentostore()
        .useL1Layer(memoryDriver({ maxItems: 10_000 }))
        .useL2Layer(redisDriver({ connection: { host: '127.0.0.1', port: config.port } })),
    },
  });
  read = (key, ttlMs) => bento.getOrSet({ key, factory: () => loader(key), ttl: ttlMs });
  close = () => bento.disconnect();
} else {
  const keyv = new Keyv({ store: new KeyvRedis(`redis://127.0.0.1:${config.port}`) });
  const manager = createCache({ stores: [keyv] });
  read = (key, ttlMs) => manager.wrap(key, () => loader(key), ttlMs);
  close = () => manager.disconnect().then(() => undefined);
}

async function timed(key: string, ttlMs: number, out: number[]): Promise<boolean> {
  const start = performance.now();
  try {
    await read(key, ttlMs);
    out.push(performance.now() - start);
    return true;
  } catch {
    return false;
  }
}

process.on('message', (message: ToCacheBenchWorker) => {
  if (message.t === 'stop') {
    void close()
      .catch(() => undefined)
      .then(() => {
        counter.disconnect();
        process.disconnect();
      });
    return;
  }
  const latencies: number[] = [];
  let errors = 0;
  const { key, ttlMs } = message;
  const until = message.t === 'hot' ? performance.now() + message.ms : 0;
  const caller = async (): Promise<void> => {
    do {
      if (!(await timed(key, ttlMs, latencies))) errors++;
      if (message.t === 'hot') await sleep(1);
    } while (performance.now() < until);
  };
  const begun = hiResNow();
  void Promise.all(Array.from({ length: config.callers }, caller)).then(() => {
    send({ t: 'done', latencies, errors, begun, ended: hiResNow() });
  });
});

await counter.ping();
await ready();
send({ t: 'ready' });
