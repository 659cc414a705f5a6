/**
 * Per-transition cost of 100 5-step sagas in flight (the two throughput rows of saga.bench.ts:
 * steps that make one Redis call, and steps with no I/O), for several Keel sources loaded side by
 * side in one process on one local redis-server. Variants run in blocks, A/B/A/B…; per variant it
 * sums over its blocks: wall time (transitions/s), this process's CPU (`process.cpuUsage`), the
 * server's CPU (`INFO cpu`, getrusage: unaffected by waiting for a core on a loaded machine), and
 * the script calls and commands the server ran (`INFO commandstats`, deterministic), and, in
 * blocks with no GC, the bytes allocated per transition (heap growth; see `gcs` below).
 *
 *   node --expose-gc --import tsx bench/saga-cost.ts [--rounds=20] [--blocks=6] [--port=N] [--only=io|bare] [--hand] <src dir>…
 *
 * `--hand` adds the io row's steps alone (no saga), the user's own cost to subtract.
 * `--port=N` uses a redis-server already listening on 127.0.0.1:N (started under
 * `valgrind --tool=callgrind`, it counts the server's instructions per transition exactly).
 *
 * Each `<src dir>` holds a copy of Keel's `src/` (e.g. `.scratch/A/src`, a copy taken before a
 * change, and `src`), run through tsx, or a build (`dist`, after `npm run build`): what users run
 * (tsx compiles with esbuild's `keepNames`, which wraps every function made at run time in a
 * `__name` call, an `Object.defineProperty`; a build has none). Not a suite of `npm run bench`: a measuring tool for changes to the saga's
 * store and scripts.
 */
import { Redis } from 'ioredis';
import type * as SagaModule from '../src/saga/index.js';
import { existsSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import { RedisHarness } from '../test/support/redis.js';
import { redisCost, redisCounters, type RedisCounters } from '../test/support/redis-cost.js';
import { numberFlag } from './flags.js';
import { sagaRows } from './saga-rows.js';

const ROUNDS = numberFlag('rounds', 20);
const BLOCKS = numberFlag('blocks', 6);
const IN_FLIGHT = 100;
const STEPS = 5;
const TRANSITIONS = 1 + 2 * STEPS;
/** `--only=io` or `--only=bare`: one of the two rows. */
const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7);
const dirs = process.argv.slice(2).filter((a) => !a.startsWith('--'));

interface Variant {
  readonly name: string;
  readonly round: () => Promise<void>;
  wallMs: number;
  nodeCpuUs: number;
  /** Of nodeCpuUs, the kernel's (system calls: socket writes and reads). */
  nodeSysUs: number;
  /** Heap growth over the blocks with no GC in them (bytes), and the transitions they ran. */
  allocBytes: number;
  allocTransitions: number;
  redisCpuUs: number;
  scripts: number;
  commands: number;
  sagas: number;
}

const variant = (name: string, round: () => Promise<void>): Variant => ({
  name,
  round,
  wallMs: 0,
  nodeCpuUs: 0,
  nodeSysUs: 0,
  allocBytes: 0,
  allocTransitions: 0,
  redisCpuUs: 0,
  scripts: 0,
  commands: 0,
  sagas: 0,
});

/**
 * GCs so far. A block with none in it grew the heap by exactly what it allocated (what survives
 * and what is garbage alike): run with a young generation large enough, e.g.
 * `--min-semi-space-size=256 --max-semi-space-size=256` (MB) for `--rounds=20`.
 */
let gcs = 0;
new PerformanceObserver((list) => {
  gcs += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });

async function main(): Promise<void> {
  // --port=N: an already running server (e.g. one under `valgrind --tool=callgrind`).
  const port = numberFlag('port', 0);
  const harness = port === 0 ? await RedisHarness.start({ count: 1 }) : undefined;
  const connect = (): Redis =>
    harness === undefined ? new Redis({ host: '127.0.0.1', port }) : harness.client(0);
  const client = connect();
  const effects = connect();
  const probe = connect();
  const closers: (() => Promise<void>)[] = [];
  try {
    const variants: Variant[] = [];
    for (const [i, dir] of dirs.entries()) {
      // A source copy (saga/index.ts, through tsx) or a build (dist/: saga/index.js, what users run).
      const source = join(resolve(dir), 'saga', 'index.ts');
      const entry = existsSync(source) ? source : join(resolve(dir), 'saga', 'index.js');
      const mod = (await import(pathToFileURL(entry).href)) as typeof SagaModule;
      const { coordinator, rows } = sagaRows(mod, client, effects, `cost${i}:`, only);
      closers.push(() => coordinator.close());
      for (const row of rows) variants.push(variant(`${row.label} ${dir}`, row.round));
    }
    if (process.argv.includes('--hand')) {
      // The io row's steps alone (5 INCRs per saga, 100 in flight, no saga): the user's own cost,
      // to subtract from the io row's (per transition here too: the same divisor).
      variants.push(
        variant('hand (io steps alone)', async () => {
          await Promise.all(
            Array.from({ length: IN_FLIGHT }, async () => {
              for (let n = 1; n <= STEPS; n++) await effects.incr(`effect:s${n}`);
            }),
          );
        }),
      );
    }
    for (let r = 0; r < 5; r++) for (const v of variants) await v.round();
    for (let b = 0; b < BLOCKS; b++) {
      for (let k = 0; k < variants.length; k++) {
        const v = variants[(b + k) % variants.length] as Variant;
        globalThis.gc?.();
        await new Promise((r) => setTimeout(r, 20));
        const before: RedisCounters = await redisCounters(probe);
        const gcs0 = gcs;
        const heap0 = process.memoryUsage().heapUsed;
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (let c = 0; c < ROUNDS; c++) await v.round();
        v.wallMs += performance.now() - t0;
        const cpu = process.cpuUsage(cpu0);
        const heap1 = process.memoryUsage().heapUsed;
        await new Promise((r) => setImmediate(r)); // GC entries are delivered asynchronously
        if (gcs === gcs0) {
          v.allocBytes += heap1 - heap0;
          v.allocTransitions += ROUNDS * IN_FLIGHT * TRANSITIONS;
        }
        const cost = redisCost(before, await redisCounters(probe));
        v.nodeCpuUs += cpu.user + cpu.system;
        v.nodeSysUs += cpu.system;
        v.redisCpuUs += cost.cpuMicros;
        v.scripts += cost.scripts;
        v.commands += cost.commands - (cost.byCommand.get('incr') ?? 0);
        v.sagas += ROUNDS * IN_FLIGHT;
      }
    }
    console.table(
      variants.map((v) => {
        const t = v.sagas * TRANSITIONS;
        return {
          variant: v.name,
          'transitions/s': Math.round(t / (v.wallMs / 1000)),
          'node CPU µs/transition': (v.nodeCpuUs / t).toFixed(2),
          'of it sys': (v.nodeSysUs / t).toFixed(2),
          'redis CPU µs/transition': (v.redisCpuUs / t).toFixed(2),
          'script calls/saga': (v.scripts / v.sagas).toFixed(2),
          'commands/transition': (v.commands / t).toFixed(2),
          'kB allocated/transition':
            v.allocTransitions === 0 ? 'GC' : (v.allocBytes / v.allocTransitions / 1000).toFixed(3),
        };
      }),
    );
  } finally {
    for (const close of closers) await close();
    for (const c of [client, effects, probe]) await c.quit().catch(() => undefined);
    await harness?.stop();
  }
}

await main();
