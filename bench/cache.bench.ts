/**
 * cache: L1 hit cost — Keel's `Cache.getOrLoad` (async) and `peek` (sync) on a warm key against
 * `cache-manager` (7.x, in-memory Keyv) `get`, `bentocache` (1.x, memory driver) `getOrSet`, and
 * bare `lru-cache` `get` as the floor (issue 18's table). Only the in-process hit path: the
 * stampede and L2 figures of the issue need Redis and several processes, and are shown by
 * test/cache/multiprocess.test.ts (loader calls) rather than timed here.
 */
import { BentoCache, bentostore } from 'bentocache';
import { memoryDriver } from 'bentocache/drivers/memory';
import { createCache } from 'cache-manager';
import { LRUCache } from 'lru-cache';
import { Cache } from '../src/cache/index.js';
import { defineSuite } from './suite.js';

const KEY = 'sku-1';
const VALUE = { sku: 'sku-1', cents: 1999 };
const load = (): typeof VALUE => VALUE;

const keel = new Cache({ ttlMs: 3_600_000, beta: 0 });
const lru = new LRUCache<string, typeof VALUE>({ max: 10_000, ttl: 3_600_000 });
lru.set(KEY, VALUE);
const manager = createCache({ ttl: 3_600_000 });
const bento = new BentoCache({
  default: 'memory',
  stores: { memory: bentostore().useL1Layer(memoryDriver({ maxItems: 10_000 })) },
});

const LRU = 'lru-cache get (floor)';
const KEEL = 'keel getOrLoad (L1 hit)';
const PEEK = 'keel peek (sync L1 hit)';
const MANAGER = 'cache-manager get (memory)';
const BENTO = 'bentocache getOrSet (memory, hit)';

export const suite = defineSuite({
  name: 'cache',
  description: 'L1 hit: keel getOrLoad / peek vs cache-manager get, bentocache getOrSet, lru-cache',
  setup: async () => {
    await keel.getOrLoad(KEY, load);
    await manager.set(KEY, VALUE);
    await bento.getOrSet({ key: KEY, factory: load, ttl: '1h' });
  },
  teardown: async () => {
    await keel.close();
    await bento.disconnect();
  },
  tasks: [
    { name: LRU, kind: 'baseline', fn: () => lru.get(KEY) },
    { name: KEEL, kind: 'keel', fn: () => keel.getOrLoad(KEY, load), compareTo: [MANAGER, BENTO] },
    { name: PEEK, kind: 'keel', fn: () => keel.peek(KEY), compareTo: LRU },
    { name: MANAGER, kind: 'peer', fn: () => manager.get(KEY) },
    { name: BENTO, kind: 'peer', fn: () => bento.getOrSet({ key: KEY, factory: load, ttl: '1h' }) },
  ],
});
