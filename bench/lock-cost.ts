/**
 * Per-cycle cost of an uncontended acquire + release, Keel builds vs node-redlock, on five local
 * redis-servers sharing the same ioredis clients (as row (a) of lock.bench.ts). Libraries run in
 * blocks, A/B/A/B…, in one process; per library it sums over its blocks: this process's CPU
 * (`process.cpuUsage`), the servers' CPU (`INFO cpu`, getrusage: unaffected by waiting for a
 * core), the commands the servers ran (`INFO commandstats`, scripts' inner commands included)
 * and the script's own `usec_per_call`; and it reports the cycles' wall-time p50/p99.
 *
 *   node --expose-gc --import tsx bench/lock-cost.ts [--cycles=20000] [--block=1000] <dist dir>…
 *
 * With `--heap` it measures instead the heap bytes this process allocates per cycle, per
 * library, exactly: no collection may run inside a measured block of `--cycles` cycles (run
 * with `--min-semi-space-size=256 --max-semi-space-size=256`; it says when one did).
 *
 * With `--callgrind`, run under valgrind, it counts this process's instructions per cycle per
 * library (Node's side of a cycle, ioredis included; run in a scratch directory, where the
 * dumps go):
 *
 *   valgrind --tool=callgrind node [--jitless] --import tsx bench/lock-cost.ts --callgrind --warmup=300 [--cycles=1000] <dist dir>…
 *
 *   node --expose-gc --min-semi-space-size=256 --max-semi-space-size=256 --import tsx bench/lock-cost.ts --heap [--cycles=5000] <dist dir>…
 *
 * `--no-batching` makes Keel's Redlocks with `batching: false`, in any mode.
 *
 * Each `<dist dir>` is a built Keel (`npx tsup`, then a copy of `dist/`), loaded side by side.
 * Not a suite of `npm run bench`: a measuring tool for changes to the lock's scripts.
 */
import type { Redis } from 'ioredis';
import type * as LockModule from '../src/lock/index.js';
import NodeRedlock from 'redlock';
import { resolve, join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { RedisHarness } from '../test/support/redis.js';
import { redisCost, redisCounters, type RedisCounters } from '../test/support/redis-cost.js';
import { numberFlag as arg } from './flags.js';

const CYCLES = arg('cycles', 20_000);
const BLOCK = arg('block', 1000);
const dists = process.argv.slice(2).filter((a) => !a.startsWith('--'));
/** `--no-batching`: Keel's Redlocks with `batching: false` (see src/lock/channel.ts). */
const BATCHING = !process.argv.includes('--no-batching');

interface Library {
  readonly name: string;
  readonly cycle: () => Promise<unknown>;
  nodeCpuUs: number;
  redisCpuUs: number;
  commands: number;
  scripts: number;
  scriptUsec: number;
  readonly byCommand: Map<string, number>;
  readonly samples: number[];
}

const percentile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

/** `usec` total of the script commands in `INFO commandstats`. */
async function scriptUsec(client: Redis): Promise<number> {
  const stats = await client.info('commandstats');
  let total = 0;
  for (const m of stats.matchAll(/cmdstat_(evalsha|eval):calls=\d+,usec=(\d+)/g)) {
    total += Number(m[2]);
  }
  return total;
}

let collections = 0;
new PerformanceObserver((list) => {
  collections += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });
const ticks = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((done) => setImmediate(done));
};

/**
 * This process's instructions per cycle of `lib`, when it runs under `valgrind --tool=callgrind`:
 * counters zeroed, `cycles` cycles, a dump, its total ÷ cycles (as lock-redis-count.ts does for
 * a redis-server).
 */
async function instructionsPerCycle(lib: Library, cycles: number): Promise<void> {
  const pid = String(process.pid);
  const dir = process.cwd();
  await new Promise((done) => setTimeout(done, 20));
  execFileSync('callgrind_control', ['--zero', pid], { stdio: 'ignore' });
  for (let c = 0; c < cycles; c++) await lib.cycle();
  // The late answers of the last cycle (Keel decides at a quorum) are part of its cost.
  await new Promise((done) => setTimeout(done, 20));
  const before = new Set(readdirSync(dir));
  execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' });
  const fresh = readdirSync(dir).filter((f) => f.startsWith('callgrind.out') && !before.has(f));
  if (fresh.length !== 1) throw new Error(`expected one new dump, found ${fresh.join(', ')}`);
  const text = readFileSync(join(dir, fresh[0] as string), 'utf8');
  const total = /^(?:totals|summary): (\d+)/m.exec(text);
  if (total === null) throw new Error('no totals line in the dump');
  console.log(
    `${lib.name}: ${(Number(total[1]) / cycles).toFixed(0)} instructions/cycle (${cycles})`,
  );
}

/** Heap bytes allocated per cycle of `lib` over `cycles` cycles, with no collection between. */
async function heapPerCycle(lib: Library, cycles: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('--heap needs node --expose-gc');
  gc();
  // The observer hears of the collection just asked for a little late.
  await new Promise((done) => setTimeout(done, 50));
  const before = collections;
  const heap0 = process.memoryUsage().heapUsed;
  for (let c = 0; c < cycles; c++) await lib.cycle();
  // The late answers of the last cycle (Keel decides at a quorum) are part of its cost.
  await new Promise((done) => setTimeout(done, 20));
  const heap1 = process.memoryUsage().heapUsed;
  await ticks(1);
  const clean = collections === before;
  console.log(
    `${lib.name}: ${((heap1 - heap0) / cycles).toFixed(0)} heap bytes/cycle over ${cycles}` +
      (clean ? '' : ` (NOT exact: ${collections - before} collections ran)`),
  );
}

async function main(): Promise<void> {
  const harness = await RedisHarness.start({ count: 5 });
  const clients = harness.clients();
  const probes = harness.clients();
  try {
    await Promise.all([...clients, ...probes].map((c) => c.ping()));
    const libraries: Library[] = [];
    const made = (name: string, cycle: () => Promise<unknown>): Library => ({
      name,
      cycle,
      nodeCpuUs: 0,
      redisCpuUs: 0,
      commands: 0,
      scripts: 0,
      scriptUsec: 0,
      byCommand: new Map(),
      samples: [],
    });
    for (const [i, dir] of dists.entries()) {
      const mod = (await import(join(resolve(dir), 'lock', 'index.js'))) as typeof LockModule;
      const keel = new mod.Redlock({
        clients,
        ttlMs: 10_000,
        driftFactor: 0.01,
        batching: BATCHING,
      });
      const resource = `cost:keel${i}`;
      libraries.push(
        made(`keel ${dir}`, async () => {
          const lock = await keel.acquire(resource);
          return lock.release();
        }),
      );
    }
    const redlock = new NodeRedlock(clients, { driftFactor: 0.01, retryCount: 10 });
    redlock.on('error', () => undefined);
    libraries.push(
      made('node-redlock', async () => {
        const lock = await redlock.acquire(['cost:redlock'], 10_000);
        return lock.release();
      }),
    );
    // Warm up, interleaved.
    const warmup = arg('warmup', 3000);
    for (let r = 0; r < warmup; r++) for (const lib of libraries) await lib.cycle();
    if (process.argv.includes('--callgrind')) {
      for (const lib of libraries) await instructionsPerCycle(lib, arg('cycles', 1000));
      return;
    }
    if (process.argv.includes('--heap')) {
      for (const lib of libraries) await heapPerCycle(lib, arg('cycles', 5000));
      return;
    }
    const blocks = Math.ceil(CYCLES / BLOCK);
    for (let b = 0; b < blocks; b++) {
      for (let k = 0; k < libraries.length; k++) {
        const lib = libraries[(b + k) % libraries.length] as Library;
        // Let late answers of the previous block land before the counters are read.
        await new Promise((r) => setTimeout(r, 20));
        const before: RedisCounters[] = await Promise.all(probes.map(redisCounters));
        const usecBefore = await Promise.all(probes.map(scriptUsec));
        const cpu0 = process.cpuUsage();
        for (let c = 0; c < BLOCK; c++) {
          const t0 = performance.now();
          await lib.cycle();
          lib.samples.push(performance.now() - t0);
        }
        await new Promise((r) => setTimeout(r, 20));
        const cpu = process.cpuUsage(cpu0);
        const after = await Promise.all(probes.map(redisCounters));
        const usecAfter = await Promise.all(probes.map(scriptUsec));
        lib.nodeCpuUs += cpu.user + cpu.system;
        for (let n = 0; n < probes.length; n++) {
          const cost = redisCost(before[n] as RedisCounters, after[n] as RedisCounters);
          lib.redisCpuUs += cost.cpuMicros;
          lib.commands += cost.commands;
          lib.scripts += cost.scripts;
          lib.scriptUsec += (usecAfter[n] as number) - (usecBefore[n] as number);
          for (const [name, d] of cost.byCommand) {
            if (name === 'info') continue;
            lib.byCommand.set(name, (lib.byCommand.get(name) ?? 0) + d);
          }
        }
      }
    }
    const cycles = blocks * BLOCK;
    const rows = libraries.map((lib) => ({
      library: lib.name,
      'node CPU µs/cycle': (lib.nodeCpuUs / cycles).toFixed(1),
      'redis CPU µs/cycle (5 nodes)': (lib.redisCpuUs / cycles).toFixed(1),
      'script usec/cycle (5 nodes)': (lib.scriptUsec / cycles).toFixed(2),
      'commands/cycle': (lib.commands / cycles).toFixed(2),
      'p50 ms': percentile(lib.samples, 0.5).toFixed(3),
      'p99 ms': percentile(lib.samples, 0.99).toFixed(3),
    }));
    console.table(rows);
    for (const lib of libraries) {
      const per = [...lib.byCommand].map(([k, v]) => `${k}=${(v / cycles).toFixed(2)}`).join(' ');
      console.log(`${lib.name}: ${per}`);
    }
  } finally {
    await Promise.all(probes.map((c) => c.quit().catch(() => undefined)));
    await harness.stop();
  }
}

await main();
