/**
 * One measurement of the cache benchmark's bytes row, in a process of its own (forked by
 * cache.bench.ts with `--expose-gc`, run by tsx): the growth of the V8 heap **plus ArrayBuffer
 * backing stores** (`heapUsed + arrayBuffers`, after two full GCs) while one store of the
 * library named in argv[2] holds n = argv[3] small entries (key `sku-<i>`, value
 * `{ sku, cents }`), divided by n. `heapUsed` alone leaves out typed arrays' contents, which
 * live outside the V8 heap (lru-cache's recency list, Keel's L1 slots). A fresh process per
 * measurement: in the benchmark's own process, the garbage and buffers of the rows before
 * (Redis clients, tinybench samples) move the heap by more than n entries weigh. With
 * argv[4] = k > 1 it fills k such stores one after another, each measured on its own while the
 * ones before stay alive, and reports the median: a fresh process's heap sometimes grows by
 * about 200 kB more during one measurement than during another (seen in both libraries alike,
 * in the old space, not in compiled code; more often on a loaded machine) — 4 bytes per entry
 * at n = 50 000, enough to move a ratio by 0.02 — and a median of three is not moved by one
 * such reading. Prints the bytes per entry as JSON.
 *
 * @packageDocumentation
 */
import { createCache } from 'cache-manager';
import { LRUCache } from 'lru-cache';
import { Cache } from '../src/cache/index.js';

export type BytesLib =
  'lru-cache' | 'keel-set' | 'keel-loaded' | 'keel-loaded-xfetch' | 'cache-manager';

const lib = process.argv[2] as BytesLib;
const n = Number(process.argv[3]);
const repeats = Number(process.argv[4] ?? 1);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('bench/cache-bytes.ts needs node --expose-gc');

const used = (): number => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const value = (i: number) => ({ sku: `sku-${i}`, cents: i });

const fills: Record<BytesLib, (n: number) => Promise<unknown>> = {
  'lru-cache': (n) => {
    const c = new LRUCache<string, object>({ max: n + 1, ttl: 3_600_000 });
    for (let i = 0; i < n; i++) c.set(`sku-${i}`, value(i));
    return Promise.resolve(c);
  },
  'keel-set': async (n) => {
    const c = new Cache({ ttlMs: 3_600_000, l1: { max: n + 1 } });
    for (let i = 0; i < n; i++) await c.set(`sku-${i}`, value(i));
    return c;
  },
  // Loaded through getOrLoad and hit once each: what a read-through cache holds (XFetch off).
  'keel-loaded': async (n) => {
    const c = new Cache({ ttlMs: 3_600_000, beta: 0, l1: { max: n + 1 } });
    for (let i = 0; i < n; i++) {
      await c.getOrLoad(`sku-${i}`, () => value(i));
      await c.getOrLoad(`sku-${i}`, () => value(i));
    }
    return c;
  },
  // The same with XFetch on (the default β = 1): every entry also keeps its load's duration.
  'keel-loaded-xfetch': async (n) => {
    const c = new Cache({ ttlMs: 3_600_000, l1: { max: n + 1 } });
    for (let i = 0; i < n; i++) {
      await c.getOrLoad(`sku-${i}`, () => value(i));
      await c.getOrLoad(`sku-${i}`, () => value(i));
    }
    return c;
  },
  // Every write awaited: a write still in flight holds promises and closures.
  'cache-manager': async (n) => {
    const c = createCache({ ttl: 3_600_000 });
    for (let i = 0; i < n; i++) await c.set(`sku-${i}`, value(i));
    return c;
  },
};

/**
 * Fills a small store first (loading and compiling what the fill needs), then measures
 * `repeats` stores, each kept alive to the end; the median of their bytes per entry.
 */
async function main(): Promise<number> {
  await warmUp();
  const kept: unknown[] = [];
  const perEntry: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const before = used();
    const store = await fills[lib](n);
    const after = used();
    // Kept past the second reading (and the later ones), so the store is alive through it.
    kept.push(store);
    perEntry.push((after - before) / n);
  }
  if (kept.some((store) => store === undefined)) throw new Error('nothing kept');
  perEntry.sort((a, b) => a - b);
  return perEntry[Math.floor(perEntry.length / 2)] as number;
}

/** Returns nothing: the warm-up store is garbage by the time `main` reads the heap. */
async function warmUp(): Promise<void> {
  await fills[lib](1_000);
}

console.log(JSON.stringify(await main()));
