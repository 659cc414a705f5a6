/**
 * Exact per-hit cost of the cache's L2 hit (L1 off, the value found in Redis) against the raw
 * read it is judged by (ioredis `GET` + `JSON.parse`), set up as the cache suite's L2-hit row
 * (bench/cache.bench.ts): same client, same value, sequential awaited reads. Counts, not
 * timings (the 2-core machines are shared):
 *
 * - default: Redis commands per hit (`INFO commandstats`, scripts' inner commands included);
 * - `--heap`: heap bytes this process allocates per hit, over `--hits` hits with no collection
 *   between (run with `--min-semi-space-size=64 --max-semi-space-size=64`; it says when one ran),
 *   three blocks per read, interleaved, the lowest kept;
 * - `--callgrind`, under valgrind: this process's instructions per hit (counters zeroed, the
 *   hits, a dump; run in a scratch directory, where the dumps go).
 *
 *   node --expose-gc --min-semi-space-size=64 --max-semi-space-size=64 --import tsx bench/cache-l2-cost.ts --heap [--hits=5000] <dist dir>…
 *   valgrind --tool=callgrind node --single-threaded --import tsx bench/cache-l2-cost.ts --callgrind [--hits=2000] <dist dir>…
 *
 * Each `<dist dir>` is a built Keel (`npx tsup`, then a copy of `dist/`), loaded side by side.
 * Not a suite of `npm run bench`: a measuring tool for changes to the L2-hit path.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import type * as CacheModule from '../src/cache/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { redisCost, redisCounters } from '../test/support/redis-cost.js';
import { instructionTotal } from './callgrind.js';
import { L2_VALUE, l2HitCache } from './cache-l2.js';
import { numberFlag } from './flags.js';

const load = (): typeof L2_VALUE => L2_VALUE;
const dists = process.argv.slice(2).filter((a) => !a.startsWith('--'));

interface Read {
  readonly name: string;
  readonly hit: () => Promise<unknown>;
}

let collections = 0;
new PerformanceObserver((list) => {
  collections += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });

const pause = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

async function hits(read: Read, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await read.hit();
}

/** Heap bytes per hit over `n` hits with no collection between, or NaN when one ran. */
async function heapPerHit(read: Read, n: number): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('--heap needs node --expose-gc');
  gc();
  gc();
  // The observer hears of the collections just asked for a little late.
  await pause(50);
  const before = collections;
  const heap0 = process.memoryUsage().heapUsed;
  await hits(read, n);
  const heap1 = process.memoryUsage().heapUsed;
  await pause(50);
  return collections === before ? (heap1 - heap0) / n : Number.NaN;
}

/** This process's instructions per hit, under `valgrind --tool=callgrind`. */
async function instructionsPerHit(read: Read, n: number): Promise<number> {
  const pid = String(process.pid);
  const dir = process.cwd();
  await pause(20);
  execFileSync('callgrind_control', ['--zero', pid], { stdio: 'ignore' });
  await hits(read, n);
  const before = new Set(readdirSync(dir));
  execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' });
  const fresh = readdirSync(dir).filter((f) => f.startsWith('callgrind.out') && !before.has(f));
  if (fresh.length !== 1) throw new Error(`expected one new dump, found ${fresh.join(', ')}`);
  return instructionTotal(readFileSync(join(dir, fresh[0] as string), 'utf8')) / n;
}

async function main(): Promise<void> {
  const harness = await RedisHarness.start({ count: 1 });
  const client = harness.client(0);
  const probe = harness.client(0);
  const caches: { close(): Promise<void> }[] = [];
  try {
    const reads: Read[] = [];
    for (const dir of dists) {
      const mod = (await import(join(resolve(dir), 'cache', 'index.js'))) as typeof CacheModule;
      const cache = await l2HitCache(mod.Cache, client, `n${reads.length}`);
      caches.push(cache);
      reads.push({ name: `keel ${dir}`, hit: () => cache.getOrLoad('l2', load) });
    }
    reads.push({
      name: 'raw ioredis GET + JSON.parse',
      hit: async (): Promise<unknown> => JSON.parse((await client.get('raw')) ?? 'null'),
    });
    // Warm-up, interleaved: every path optimized before anything is counted.
    for (let round = 0; round < numberFlag('warmup', 20); round++) {
      for (const read of reads) await hits(read, 100);
    }
    const n = numberFlag('hits', process.argv.includes('--callgrind') ? 2000 : 5000);
    if (process.argv.includes('--callgrind')) {
      for (const read of reads) {
        console.log(`${read.name}: ${(await instructionsPerHit(read, n)).toFixed(0)} instr/hit`);
      }
      return;
    }
    if (process.argv.includes('--heap')) {
      const best = new Map<string, number>();
      for (let block = 0; block < 3; block++) {
        for (const read of reads) {
          const bytes = await heapPerHit(read, n);
          if (!Number.isNaN(bytes))
            best.set(read.name, Math.min(best.get(read.name) ?? Infinity, bytes));
        }
      }
      for (const read of reads) {
        const bytes = best.get(read.name);
        console.log(
          `${read.name}: ${bytes === undefined ? 'no block without a collection' : `${bytes.toFixed(0)} heap bytes/hit`} (${n} hits, lowest of 3 blocks)`,
        );
      }
      return;
    }
    for (const read of reads) {
      const before = await redisCounters(probe);
      await hits(read, 100);
      const cost = redisCost(before, await redisCounters(probe));
      console.log(`${read.name}: ${cost.commands / 100} Redis commands/hit`);
    }
  } finally {
    for (const cache of caches) await cache.close();
    client.disconnect();
    probe.disconnect();
    await harness.stop();
  }
}

await main();
