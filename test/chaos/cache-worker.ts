/**
 * One process of the cache chaos suite (forked by cache.chaos.test.ts, run by tsx). It opens a
 * `Cache` on the faulted Redis (L2) and reads a small key set through `getOrLoad` from several
 * concurrent loops; for the keys it owns it also writes the "database" (a version counter per
 * key on a second Redis that is never faulted) and then invalidates the cache (`delete`, or
 * `set` of the new version), retrying until the invalidation lands, as a careful writer does.
 *
 * Its whole history goes to the database Redis, so it survives this process being SIGKILLed:
 * - `log:load:<key>`  `start|readAt|pid` for every loader call (readAt: after the database read);
 * - `log:inv:<key>`   `version|start|end|kind` for every invalidation that landed;
 * - `log:read`        `key|version|src|readAt|start|end` for every getOrLoad that resolved;
 * - `log:call`        `op|ms` for every cache call (its duration), `log:error` for failures.
 *
 * Times are `hostNow()` (CLOCK_MONOTONIC, one timeline for every process on the host). It tells
 * the orchestrator over IPC when a loader starts and ends, so the scheduler can SIGKILL a process
 * while it holds a lease.
 *
 * @packageDocumentation
 */
import { Redis } from 'ioredis';
import { Cache } from '../../src/cache/index.js';
import { between, hostNow, prng, sleep } from './config.js';

/** The worker's settings (JSON in argv[2]). */
export interface CacheWorkerConfig {
  readonly port: number;
  readonly dbPort: number;
  readonly seed: number;
  readonly keys: readonly string[];
  /** The keys this process writes (one writer per key, so writes to a key never race). */
  readonly owned: readonly string[];
  readonly readers: number;
  /** Start in the calm phase (a process restarted after the chaos ended). */
  readonly calm: boolean;
  readonly ttlMs: number;
  readonly staleMs: number;
  readonly leaseTtlMs: number;
  readonly maxWaitMs: number;
  readonly redisTimeoutMs: number;
}

/** A value as the cache holds it. */
export interface Versioned {
  /** The database version it was read at. */
  readonly v: number;
  /** hostNow() just after the database read (or the write, for `set`). */
  readonly readAt: number;
  readonly src: 'load' | 'set';
}

/** Orchestrator → worker. */
export type ToWorker = { readonly t: 'calm' } | { readonly t: 'stop' };
/** Worker → orchestrator. */
export type FromWorker =
  | { readonly t: 'ready' }
  | { readonly t: 'loading' }
  | { readonly t: 'loaded' }
  | { readonly t: 'stopped' };

const config = JSON.parse(process.argv[2] ?? '{}') as CacheWorkerConfig;
const random = prng(config.seed);
const send = (message: FromWorker): void => {
  if (process.connected) process.send?.(message, () => undefined);
};

const db = new Redis({ host: '127.0.0.1', port: config.dbPort });
db.on('error', () => undefined);
const redis = new Redis({
  host: '127.0.0.1',
  port: config.port,
  maxRetriesPerRequest: 1,
  retryStrategy: () => 100,
});
redis.on('error', () => undefined);
const cache = new Cache({
  redis,
  ttlMs: config.ttlMs,
  staleMs: config.staleMs,
  leaseTtlMs: config.leaseTtlMs,
  maxWaitMs: config.maxWaitMs,
  pollIntervalMs: 100,
  redisTimeoutMs: config.redisTimeoutMs,
  degradedRetryMs: config.redisTimeoutMs,
  // XFetch off: its early refresh is one loader starting before the ttl ends, by design — by
  // δ·β·(−ln U), δ the last load's wall time, which a loaded machine stretches to hundreds of
  // ms — and the calm phase's duplicate check (a second load within half a ttl) would count it
  // as a stampede (seed 983483063 at load average 15: two, 184 and 227 ms after the previous
  // read). Off, every load within a ttl of another is one the leases failed to prevent.
  beta: 0,
  // KEEL_CACHE_TRACKING=1 runs the same chaos with server-assisted invalidation on.
  tracking: process.env.KEEL_CACHE_TRACKING === '1',
});

/** `calm`: no more writes, short loads (the "Redis healthy" measurement). Read through
 * functions: the loops test them after awaits, when a message may have changed them. */
const phase = { stopping: false, calm: config.calm };
const stopping = (): boolean => phase.stopping;
const calm = (): boolean => phase.calm;
let running: Promise<void>[] = [];

// Reads and call durations are batched (a SIGKILL loses at most one batch of reads, which only
// means fewer observations); loads and invalidations are written at once.
let reads: string[] = [];
let calls: string[] = [];
let errors: string[] = [];
const flush = async (): Promise<void> => {
  const [r, c, e] = [reads, calls, errors];
  reads = [];
  calls = [];
  errors = [];
  const batch = db.multi();
  if (r.length > 0) batch.rpush('log:read', ...r);
  if (c.length > 0) batch.rpush('log:call', ...c);
  if (e.length > 0) batch.rpush('log:error', ...e);
  await batch.exec();
};
const flusher = setInterval(() => void flush().catch(() => undefined), 50);

const loader = async ({ key }: { key: string }): Promise<Versioned> => {
  const start = hostNow();
  send({ t: 'loading' });
  try {
    // The "query" takes a while: the window in which an invalidation can overtake the load.
    await sleep(calm() ? between(random, 1, 10) : between(random, 5, 60));
    const v = Number((await db.get(`db:${key}`)) ?? 0);
    const readAt = hostNow();
    await db.rpush(`log:load:${key}`, `${start}|${readAt}|${process.pid}`);
    return { v, readAt, src: 'load' };
  } finally {
    send({ t: 'loaded' });
  }
};

async function reader(): Promise<void> {
  while (!stopping()) {
    const key = config.keys[between(random, 0, config.keys.length - 1)] ?? '';
    const start = hostNow();
    try {
      const value = await cache.getOrLoad<Versioned>(key, loader);
      const end = hostNow();
      calls.push(`get|${end - start}`);
      if (value === undefined) errors.push(`get ${key}: undefined`);
      else reads.push(`${key}|${value.v}|${value.src}|${value.readAt}|${start}|${end}`);
    } catch (error) {
      if (!stopping()) errors.push(`get ${key}: ${String(error)}`);
    }
    await sleep(between(random, 0, 8));
  }
}

/** Retries `op` until it lands (the writer's duty: an invalidation must not be dropped). */
async function untilLanded(name: string, op: () => Promise<unknown>): Promise<boolean> {
  while (!stopping()) {
    const start = hostNow();
    try {
      await op();
      calls.push(`${name}|${hostNow() - start}`);
      return true;
    } catch {
      calls.push(`${name}|${hostNow() - start}`);
      await sleep(50);
    }
  }
  return false;
}

async function writer(): Promise<void> {
  if (config.owned.length === 0) return;
  while (!stopping() && !calm()) {
    await sleep(between(random, 60, 250));
    if (stopping() || calm()) return;
    const key = config.owned[between(random, 0, config.owned.length - 1)] ?? '';
    const start = hostNow();
    const version = await db.incr(`db:${key}`);
    const kind = random() < 0.7 ? 'delete' : 'set';
    const landed =
      kind === 'delete'
        ? await untilLanded('delete', () => cache.delete(key))
        : await untilLanded('set', () =>
            cache.set(key, { v: version, readAt: hostNow(), src: 'set' } satisfies Versioned),
          );
    if (landed) await db.rpush(`log:inv:${key}`, `${version}|${start}|${hostNow()}|${kind}`);
  }
}

process.on('message', (message: ToWorker) => {
  if (message.t === 'calm') {
    phase.calm = true;
    return;
  }
  if (phase.stopping) return;
  phase.stopping = true;
  void (async () => {
    await Promise.allSettled(running);
    clearInterval(flusher);
    await flush().catch(() => undefined);
    await cache.close();
    redis.disconnect();
    await db.quit().catch(() => undefined);
    send({ t: 'stopped' });
    process.disconnect();
  })();
});
process.on('disconnect', () => process.exit(0));

await db.ping();
await redis.ping().catch(() => undefined);
running = [...Array.from({ length: config.readers }, reader), writer()];
send({ t: 'ready' });
