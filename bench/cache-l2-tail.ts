/**
 * Where the tail of the cache suite's L2-hit row comes from. Runs the row's method — 20 untimed
 * blocks of each read, then 100 timed blocks of 100 sequential awaited reads, alternating, who
 * goes first alternating by block (bench/cache.bench.ts, `l2HitRow`) — `--runs` times, each in a
 * fresh process as `npm run bench` does, and for each run reports per read (Keel's L2 hit, raw
 * ioredis `GET` + `JSON.parse`): p50 and p99, and for the samples at or above the read's own p99
 * how many overlapped a garbage collection (`gc` performance entries), how many were a block's
 * first read, and this process's run-queue wait (`/proc/self/schedstat`, the time it was ready
 * but waiting for a core) summed over the read's blocks.
 *
 *   node --expose-gc --import tsx bench/cache-l2-tail.ts [--runs=6] [--gc-each-block] <dist dir>
 *
 * `--gc-each-block` adds a full collection before every timed block (both reads).
 * Not a suite of `npm run bench`: a measuring tool for the row's method.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type * as CacheModule from '../src/cache/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { L2_VALUE, l2HitCache } from './cache-l2.js';
import { numberFlag } from './flags.js';

const load = (): typeof L2_VALUE => L2_VALUE;
const BLOCK = 100;
const BLOCKS = 100;
const gcEachBlock = process.argv.includes('--gc-each-block');
/** Reads alternate one by one (K R R K K R …) instead of by blocks of {@link BLOCK}. */
const pairs = process.argv.includes('--pairs');

/** One run's figures for one read. */
interface Side {
  p50: number;
  p99: number;
  /** Samples at or above p99 that overlapped a collection. */
  tailInGc: number;
  /** Samples at or above p99 that were their block's first read. */
  tailFirst: number;
  tail: number;
  /** Collections that began inside this read's timed blocks. */
  gcs: number;
  /** Run-queue wait summed over this read's timed blocks, ms. */
  runQueueMs: number;
}

function percentile(values: Float64Array, q: number): number {
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

/** This thread's run-queue wait so far, ns (second field of /proc/self/schedstat). */
function runQueueNs(): number {
  return Number(readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]);
}

async function child(dir: string): Promise<void> {
  const gcs: { start: number; end: number }[] = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      gcs.push({ start: e.startTime, end: e.startTime + e.duration });
  }).observe({ entryTypes: ['gc'] });
  const collect = (): void => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    gc?.();
  };
  const harness = await RedisHarness.start({ count: 1 });
  const client = harness.client(0);
  const mod = (await import(join(resolve(dir), 'cache', 'index.js'))) as typeof CacheModule;
  const cache = await l2HitCache(mod.Cache, client);
  try {
    const samples = {
      keel: new Float64Array(BLOCKS * BLOCK),
      raw: new Float64Array(BLOCKS * BLOCK),
    };
    const starts = {
      keel: new Float64Array(BLOCKS * BLOCK),
      raw: new Float64Array(BLOCKS * BLOCK),
    };
    const blockSpans = { keel: [] as [number, number][], raw: [] as [number, number][] };
    const runQueue = { keel: 0, raw: 0 };
    const keelBlock = async (b: number | undefined): Promise<void> => {
      for (let i = 0; i < BLOCK; i++) {
        const t = performance.now();
        await cache.getOrLoad('l2', load);
        if (b !== undefined) {
          samples.keel[b * BLOCK + i] = performance.now() - t;
          starts.keel[b * BLOCK + i] = t;
        }
      }
    };
    const rawBlock = async (b: number | undefined): Promise<void> => {
      for (let i = 0; i < BLOCK; i++) {
        const t = performance.now();
        JSON.parse((await client.get('raw')) ?? 'null');
        if (b !== undefined) {
          samples.raw[b * BLOCK + i] = performance.now() - t;
          starts.raw[b * BLOCK + i] = t;
        }
      }
    };
    const timed = async (side: 'keel' | 'raw', b: number): Promise<void> => {
      if (gcEachBlock) collect();
      const q0 = runQueueNs();
      const t0 = performance.now();
      await (side === 'keel' ? keelBlock(b) : rawBlock(b));
      blockSpans[side].push([t0, performance.now()]);
      runQueue[side] += (runQueueNs() - q0) / 1e6;
    };
    for (let b = 0; b < 20; b++) {
      await keelBlock(undefined);
      await rawBlock(undefined);
    }
    collect();
    if (pairs) {
      // One read of each per pair, who goes first alternating by pair: K R, R K, K R, …
      const keelOne = async (i: number): Promise<void> => {
        const t = performance.now();
        await cache.getOrLoad('l2', load);
        samples.keel[i] = performance.now() - t;
        starts.keel[i] = t;
      };
      const rawOne = async (i: number): Promise<void> => {
        const t = performance.now();
        JSON.parse((await client.get('raw')) ?? 'null');
        samples.raw[i] = performance.now() - t;
        starts.raw[i] = t;
      };
      for (let b = 0; b < BLOCKS; b++) {
        if (gcEachBlock) collect();
        const q0 = runQueueNs();
        const t0 = performance.now();
        for (let i = b * BLOCK; i < (b + 1) * BLOCK; i++) {
          if (i % 2 === 0) {
            await keelOne(i);
            await rawOne(i);
          } else {
            await rawOne(i);
            await keelOne(i);
          }
        }
        blockSpans.keel.push([t0, performance.now()]);
        blockSpans.raw.push([t0, performance.now()]);
        runQueue.keel += (runQueueNs() - q0) / 2e6;
        runQueue.raw += (runQueueNs() - q0) / 2e6;
      }
    } else {
      for (let b = 0; b < BLOCKS; b++) {
        if (b % 2 === 0) {
          await timed('keel', b);
          await timed('raw', b);
        } else {
          await timed('raw', b);
          await timed('keel', b);
        }
      }
    }
    // Let the observer deliver the last entries.
    await new Promise((done) => setTimeout(done, 100));
    const side = (name: 'keel' | 'raw'): Side => {
      const values = samples[name];
      const p99 = percentile(values, 0.99);
      let tail = 0;
      let tailInGc = 0;
      let tailFirst = 0;
      for (let i = 0; i < values.length; i++) {
        const d = values[i] as number;
        if (d < p99) continue;
        tail++;
        const t = starts[name][i] as number;
        if (gcs.some((g) => g.start < t + d && g.end > t)) tailInGc++;
        if (i % BLOCK === 0) tailFirst++;
      }
      const within = gcs.filter((g) =>
        blockSpans[name].some(([a, z]) => g.start >= a && g.start < z),
      );
      return {
        p50: percentile(values, 0.5) * 1000,
        p99: p99 * 1000,
        tail,
        tailInGc,
        tailFirst,
        gcs: within.length,
        runQueueMs: runQueue[name],
      };
    };
    process.stdout.write(`${JSON.stringify({ keel: side('keel'), raw: side('raw') })}\n`);
  } finally {
    await cache.close();
    client.disconnect();
    await harness.stop();
  }
}

function parent(dir: string): void {
  const runs = numberFlag('runs', 6);
  const script = fileURLToPath(import.meta.url);
  const rows: string[] = [];
  for (let run = 1; run <= runs; run++) {
    const out = execFileSync(
      process.execPath,
      [
        '--expose-gc',
        '--import',
        'tsx',
        script,
        '--child',
        ...(gcEachBlock ? ['--gc-each-block'] : []),
        dir,
      ],
      { encoding: 'utf8', timeout: 300_000 },
    );
    const r = JSON.parse(out.trim().split('\n').at(-1) as string) as { keel: Side; raw: Side };
    const f = (s: Side): string =>
      `p50 ${s.p50.toFixed(0)} p99 ${s.p99.toFixed(0)} µs, tail ${s.tail}: ${s.tailInGc} in a GC, ${s.tailFirst} first of block; GCs ${s.gcs}, run queue ${s.runQueueMs.toFixed(0)} ms`;
    rows.push(
      `run ${run}: p50 ×${(r.keel.p50 / r.raw.p50).toFixed(2)} p99 ×${(r.keel.p99 / r.raw.p99).toFixed(2)} | keel ${f(r.keel)} | raw ${f(r.raw)}`,
    );
    console.log(rows.at(-1));
  }
}

const dir = process.argv.slice(2).find((a) => !a.startsWith('--'));
if (dir === undefined) throw new Error('usage: bench/cache-l2-tail.ts [--runs=N] <dist dir>');
if (process.argv.includes('--child')) await child(dir);
else parent(dir);
