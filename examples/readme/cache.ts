import { Redis } from 'ioredis';
import { Cache, RedisBloomFilter } from 'keel/cache';

const redis = new Redis(6379);
// Penetration: SKUs that exist, in a Bloom filter on Redis (absent ones never reach the loader).
// Built from every SKU that exists (a database read); `add` keeps it current.
const skus = new RedisBloomFilter({ redis, name: 'skus', expectedItems: 100_000 });
await skus.rebuild(['sku-1', 'sku-2']);

let databaseReads = 0;
const loadPrice = async (sku: string) => {
  databaseReads++; // … SELECT price FROM products WHERE sku = $1 …
  return { sku, cents: 1999 };
};

{
  await using prices = new Cache({
    redis, // L2, shared by every process; L1 is in-process (lru-cache)
    namespace: 'price',
    ttlMs: 30_000, // jittered by default (avalanche)
    staleMs: 5_000, // served while one caller refreshes
    graceMs: 60_000, // served when the loader fails
    guard: skus,
  });
  prices.onDegraded((event) => console.warn('cache degraded:', event.error.kind));

  // 100 concurrent readers of a cold key, in this process and (through a Redis lease) in any
  // other: one database read.
  const answers = await Promise.all(
    Array.from({ length: 100 }, () => prices.getOrLoad('sku-1', () => loadPrice('sku-1'))),
  );
  console.log(answers[0]?.cents, databaseReads); // 1999 1
  console.log(await prices.getOrLoad('sku-404', () => loadPrice('sku-404'))); // undefined
  await prices.delete('sku-1'); // other processes drop their L1 copy too
}
await redis.quit();
