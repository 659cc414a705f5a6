/**
 * The catalog during the flash sale: shoppers browse product pages (name and price) while they
 * buy — one SKU made hot (half of all page views), a long tail, and some requests for SKUs that
 * do not exist (typos, scrapers, old links). Every read goes through `keel/cache`: three
 * gateway replicas, each with its own `Cache` (own L1) over one shared Redis L2 in Redis mode
 * (one replica, L1 only, in embedded mode), with a Bloom filter of the real SKUs as the guard.
 * The "database" counts its reads and takes a few ms per read.
 *
 * The three cache failures of a flash sale, answered and measured here: the hot SKU's entry
 * expires every second while 16 shoppers read it at once (breakdown: loader calls for it per
 * expiry must stay ≤ 1, across replicas), entries written together expire spread out (ttl
 * jitter), and absent SKUs never reach the database (penetration: the Bloom filter says no).
 */
import { Redis } from 'ioredis';
import { BloomFilter, Cache } from 'keel/cache';
import { seededRandom } from './config.js';
import type { Invariant } from './report.js';

/** What one catalog run measured. */
export interface CatalogResult {
  readonly replicas: number;
  readonly tier: string;
  readonly durationMs: number;
  readonly ttlMs: number;
  readonly requests: number;
  readonly absentRequests: number;
  readonly loaderCalls: number;
  readonly dbReads: number;
  /** Absent-SKU requests the Bloom filter answered (no loader, no database). */
  readonly bloomStopped: number;
  readonly hotSku: string;
  readonly hotRequests: number;
  readonly hotLoaderCalls: number;
  /** How many times the hot SKU's entry could have expired in the run (+1 for the cold load). */
  readonly hotExpiries: number;
}

export interface CatalogOptions {
  readonly skus: readonly string[];
  readonly seed: number;
  /** Redis URL for the shared L2 (Redis mode); L1 only without it. */
  readonly redisUrl?: string | undefined;
  readonly prefix?: string | undefined;
  /** Page views in all, at most. @defaultValue 10 000 */
  readonly requests?: number | undefined;
  /** Stops the shoppers early (when the sale is over). */
  readonly stop?: (() => boolean) | undefined;
}

const TTL_MS = 1_000;
const DB_READ_MS = 5;
const CONCURRENCY = 16;

/** Runs the browsing traffic and returns what it measured. */
export async function runCatalog(o: CatalogOptions): Promise<CatalogResult> {
  const random = seededRandom(o.seed ^ 0xca7a);
  const products = new Map(
    o.skus.map((sku, i) => [sku, { sku, name: `Product ${i + 1}`, cents: 999 + 100 * i }]),
  );
  const hotSku = o.skus[0] ?? 'SKU-001';
  let dbReads = 0;
  const readDb = async (sku: string) => {
    dbReads++;
    await new Promise((resolve) => setTimeout(resolve, DB_READ_MS));
    return products.get(sku);
  };
  const bloom = new BloomFilter({
    expectedItems: Math.max(100, o.skus.length),
    falsePositiveRate: 0.01,
  });
  bloom.addAll(o.skus);

  const clients: Redis[] = [];
  const caches: Cache[] = [];
  const replicas = o.redisUrl === undefined ? 1 : 3;
  for (let i = 0; i < replicas; i++) {
    let redis: Redis | undefined;
    if (o.redisUrl !== undefined) {
      redis = new Redis(o.redisUrl, { maxRetriesPerRequest: 2 });
      redis.on('error', () => undefined);
      clients.push(redis);
    }
    caches.push(
      new Cache({
        redis,
        namespace: 'product',
        prefix: o.prefix ?? 'trading:cache:',
        ttlMs: TTL_MS,
        staleMs: 500,
        negativeTtlMs: 5_000,
        guard: bloom,
      }),
    );
  }

  let loaderCalls = 0;
  let hotLoaderCalls = 0;
  let absentLoaderCalls = 0;
  const loader = async ({ key }: { key: string }) => {
    loaderCalls++;
    if (key === hotSku) hotLoaderCalls++;
    if (!products.has(key)) absentLoaderCalls++;
    return readDb(key);
  };

  const total = o.requests ?? 10_000;
  let sent = 0;
  let hotRequests = 0;
  let absentRequests = 0;
  const tail = o.skus.slice(1);
  const started = performance.now();
  try {
    const shopper = async (): Promise<void> => {
      while (sent < total && o.stop?.() !== true) {
        sent++;
        const r = random();
        let sku: string;
        if (r < 0.5 || tail.length === 0) {
          sku = hotSku;
          hotRequests++;
        } else if (r < 0.9) {
          sku = tail[Math.floor(random() ** 2 * tail.length)] ?? hotSku;
        } else {
          sku = `SKU-X${Math.floor(random() * 100_000)}`;
          absentRequests++;
        }
        const cache = caches[Math.floor(random() * caches.length)] as Cache;
        await cache.getOrLoad(sku, loader);
        // A page view every few milliseconds per shopper.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, shopper));
  } finally {
    for (const cache of caches) await cache.close();
    // A background refresh started before close may still be writing back its (5 ms) load.
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Leave nothing behind on the servers (they may be the user's): the run's cache keys go.
    const [first] = clients;
    if (first !== undefined)
      await removeKeys(first, o.prefix ?? 'trading:cache:').catch(() => undefined);
    for (const client of clients) await client.quit().catch(() => undefined);
  }
  const durationMs = performance.now() - started;
  return {
    replicas,
    tier: o.redisUrl === undefined ? 'L1 only (embedded mode)' : 'own L1 each + shared Redis L2',
    durationMs: Math.round(durationMs),
    ttlMs: TTL_MS,
    requests: sent,
    absentRequests,
    loaderCalls,
    dbReads,
    bloomStopped: absentRequests - absentLoaderCalls,
    hotSku,
    hotRequests,
    hotLoaderCalls,
    // Jitter shortens a ttl by up to 10 %, and XFetch may refresh a little before that.
    hotExpiries: Math.floor(durationMs / (0.9 * TTL_MS - 50)) + 1,
  };
}

/** Deletes every key under `prefix` (SCAN, then DEL in batches). */
async function removeKeys(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length > 0) await client.del(...keys);
  } while (cursor !== '0');
}

/** The catalog's invariants, for the audit. */
export function catalogInvariants(c: CatalogResult): Invariant[] {
  return [
    {
      name: 'cache: loader calls for the hot SKU per expiry ≤ 1',
      ok: c.hotLoaderCalls <= c.hotExpiries,
      detail: `${c.hotLoaderCalls} loader calls for ${c.hotSku} over at most ${c.hotExpiries} expiries (${c.hotRequests} requests for it, ${c.replicas} replica(s))`,
    },
    {
      name: 'cache: absent SKUs never reach the database',
      ok: c.bloomStopped === c.absentRequests,
      detail: `${c.bloomStopped} of ${c.absentRequests} requests for absent SKUs stopped by the Bloom filter`,
    },
  ];
}

/** The catalog section of the report. */
export function catalogLines(c: CatalogResult): string[] {
  return [
    '',
    `Catalog (keel/cache, ${c.replicas} gateway replica(s), ${c.tier}, ttl ${c.ttlMs} ms + 500 ms stale, Bloom guard):`,
    `  ${c.requests} page views in ${(c.durationMs / 1000).toFixed(1)} s -> ${c.loaderCalls} loader calls -> ${c.dbReads} database reads`,
    `  hot SKU ${c.hotSku}: ${c.hotRequests} views, ${c.hotLoaderCalls} loader calls (${(c.hotLoaderCalls / c.hotExpiries).toFixed(2)} per possible expiry)`,
    `  absent SKUs: ${c.absentRequests} views, ${c.bloomStopped} stopped by the Bloom filter before the cache and the database`,
  ];
}
