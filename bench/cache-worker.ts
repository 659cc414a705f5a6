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
import { readFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import KeyvRedis, { Keyv } from '@keyv/redis';
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { redisDriver } from 'bentocache/drivers/redis';
import { createCache } from 'cache-manager';
import { Redis } from 'ioredis';
import type * as CacheModule from '../src/cache/index.js';
import { loadKeel } from './built.js';

// The built package when it is up to date, as in cache.bench.ts (see bench/built.ts): tsx's
// transform of the sources wraps every closure Keel makes in a naming call users never pay.
const { Cache } = (
  await loadKeel<typeof CacheModule>('cache', () => import('../src/cache/index.js'))
).module;

/**
 * `null` is no cache: one shared promise of the loader per key in each process, for measuring
 * the harness alone (bench/cache-stampede-count.ts); the suite never runs it.
 */
export type CacheLib = 'keel' | 'bentocache' | 'cache-manager' | 'null';

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
      /** Garbage collections that started between `begun` and `ended` (young and full). */
      readonly gcs: number;
      /** Their pauses, in ms. */
      readonly gcMs: number;
      /**
       * This process's time runnable but waiting for a core over the same span, in ms (Linux
       * `/proc/self/schedstat`, second field; NaN where it does not exist), and its CPU time.
       */
      readonly runQueueMs: number;
      readonly cpuMs: number;
      /** V8 heap growth over the same span in bytes: what the round allocated when no GC ran. */
      readonly heapBytes: number;
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
} else if (config.lib === 'null') {
  const flights = new Map<string, Promise<unknown>>();
  read = (key) => {
    let flight = flights.get(key);
    if (flight === undefined) flights.set(key, (flight = loader(key)));
    return flight;
  };
  close = () => Promise.resolve();
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

/** Garbage collections seen so far: when each began ({@link hiResNow}) and its pause (ms). */
const gcStarts: number[] = [];
const gcPauses: number[] = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcStarts.push(performance.timeOrigin + entry.startTime);
    gcPauses.push(entry.duration);
  }
}).observe({ entryTypes: ['gc'] });

/** Nanoseconds this process's main thread has waited on a run queue (Linux; else NaN). */
function runQueueNs(): number {
  try {
    return Number(readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]);
  } catch {
    return Number.NaN;
  }
}

/**
 * A cold stampede: `config.callers` concurrent reads of `key`, started in one synchronous loop.
 *
 * Each caller's bookkeeping is one `then` on its read (its start time, a latency pushed, a
 * countdown) — not an async function awaiting another async function, joined by Promise.all:
 * those cost two async frames, their promises and Promise.all's per-element closures, about
 * 600 bytes and two extra promise reactions per caller, the same for every library. With 1 000
 * callers a round that garbage filled the workers' young generations every ~30 rounds — all
 * four at once, since they allocate alike — and the scavenges, and the extra reactions run while
 * the four processes queue for two cores, landed in the very window being measured (first caller
 * to loader, fill to last caller). What is timed is the library's wait, not the harness's.
 * The schedstat and cpu readings are taken before the first caller starts and after the last
 * one settled, outside that window.
 */
function stampede(key: string, ttlMs: number): void {
  const latencies: number[] = [];
  let errors = 0;
  let left = config.callers;
  const queued = runQueueNs();
  const cpu = process.cpuUsage();
  const gcsBefore = gcStarts.length;
  const heap = getHeapStatistics().used_heap_size;
  const begun = hiResNow();
  const settled = (): void => {
    if (--left > 0) return;
    const ended = hiResNow();
    const used = process.cpuUsage(cpu);
    const heapBytes = getHeapStatistics().used_heap_size - heap;
    // GC entries reach the observer late (after the GC, on a later tick): counted by start time.
    setImmediate(() => {
      let gcs = 0;
      let gcMs = 0;
      for (let i = gcsBefore; i < gcStarts.length; i++) {
        const at = gcStarts[i] as number;
        if (at >= begun && at <= ended) {
          gcs++;
          gcMs += gcPauses[i] as number;
        }
      }
      send({
        t: 'done',
        latencies,
        errors,
        begun,
        ended,
        gcs,
        gcMs,
        runQueueMs: (runQueueNs() - queued) / 1e6,
        cpuMs: (used.user + used.system) / 1e3,
        heapBytes,
      });
    });
  };
  const failed = (): void => {
    errors++;
    settled();
  };
  for (let i = 0; i < config.callers; i++) {
    const start = performance.now();
    let reading: Promise<unknown>;
    try {
      reading = read(key, ttlMs);
    } catch {
      failed();
      continue;
    }
    reading.then(() => {
      latencies.push(performance.now() - start);
      settled();
    }, failed);
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
  if (message.t === 'stampede') {
    stampede(message.key, message.ttlMs);
    return;
  }
  const latencies: number[] = [];
  let errors = 0;
  const { key, ttlMs } = message;
  const until = performance.now() + message.ms;
  const caller = async (): Promise<void> => {
    do {
      if (!(await timed(key, ttlMs, latencies))) errors++;
      await sleep(1);
    } while (performance.now() < until);
  };
  const begun = hiResNow();
  void Promise.all(Array.from({ length: config.callers }, caller)).then(() => {
    send({
      t: 'done',
      latencies,
      errors,
      begun,
      ended: hiResNow(),
      gcs: Number.NaN,
      gcMs: Number.NaN,
      runQueueMs: Number.NaN,
      cpuMs: Number.NaN,
      heapBytes: Number.NaN,
    });
  });
});

await counter.ping();
await ready();
send({ t: 'ready' });
