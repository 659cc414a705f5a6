/**
 * Drift of the no-I/O 100-in-flight row inside one run: does a transition cost more as the run
 * goes on (keys left in Redis, heap, JIT), or does it follow the load on the machine? Per block
 * of `--rounds` rounds (100 5-step sagas each) it prints transitions/s, this process's CPU and
 * the server's (`INFO cpu`) per transition, each process's run-queue wait per transition (the
 * second field of `/proc/<pid>/schedstat`: time runnable but not running), transitions per script
 * call, the server's key count and memory, and ends with the correlations over the blocks after
 * the first two (warm-up).
 *
 *   node --expose-gc --import tsx bench/saga-drift.ts [--blocks=40] [--rounds=10] [<saga module>]
 *
 * `<saga module>`: a built `keel/saga` (e.g. `dist/saga/index.js`); default the sources.
 * Linux only (schedstat). Not a suite of `npm run bench`: a measuring tool.
 * schedstat: https://docs.kernel.org/scheduler/sched-stats.html
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as SagaModule from '../src/saga/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { redisCost, redisCounters } from '../test/support/redis-cost.js';
import { numberFlag } from './flags.js';

const BLOCKS = numberFlag('blocks', 40);
const ROUNDS = numberFlag('rounds', 10);
const IN_FLIGHT = 100;
const TRANSITIONS = 11;
const modulePath = process.argv.slice(2).find((a) => !a.startsWith('--'));

/** Nanoseconds `pid` has waited runnable on a run queue so far. */
const waited = (pid: number | 'self'): number =>
  Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ')[1]);

/** Pearson's correlation of two equally long series. */
function correlation(a: readonly number[], b: readonly number[]): number {
  const mean = (x: readonly number[]): number => x.reduce((s, v) => s + v, 0) / x.length;
  const ma = mean(a);
  const mb = mean(b);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const da = (a[i] as number) - ma;
    const db = (b[i] as number) - mb;
    ab += da * db;
    aa += da * da;
    bb += db * db;
  }
  return ab / Math.sqrt(aa * bb);
}

async function main(): Promise<void> {
  const mod = (
    modulePath === undefined
      ? await import('../src/saga/index.js')
      : await import(pathToFileURL(resolve(modulePath)).href)
  ) as typeof SagaModule;
  const harness = await RedisHarness.start({ count: 1 });
  try {
    const client = harness.client(0);
    const probe = harness.client(0);
    const server = Number(/process_id:(\d+)/.exec(await probe.info('server'))?.[1]);
    const bare = mod.defineSaga(
      'bare',
      [1, 2, 3, 4, 5].map((n) => ({ name: `s${n}`, run: () => ({ ok: n }) })),
    );
    const coordinator = new mod.SagaCoordinator({ redis: client, sagas: [bare], recovery: false });
    const input = { orderId: 12345, sku: 'ABC-123', qty: 2, cents: 3998 };
    let serial = 0;
    const round = (): Promise<unknown> =>
      Promise.all(
        Array.from({ length: IN_FLIGHT }, async () => {
          const outcome = await coordinator.run(bare, `b-${serial++}`, input);
          if (outcome.status !== 'completed') throw new Error(`saga ${outcome.status}`);
        }),
      );
    const rows: Record<string, number>[] = [];
    for (let b = 0; b < BLOCKS; b++) {
      const before = await redisCounters(probe);
      const node0 = waited('self');
      const server0 = waited(server);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for (let r = 0; r < ROUNDS; r++) await round();
      const wallMs = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const nodeWait = waited('self') - node0;
      const serverWait = waited(server) - server0;
      const cost = redisCost(before, await redisCounters(probe));
      const t = ROUNDS * IN_FLIGHT * TRANSITIONS;
      const memory = Number(/used_memory:(\d+)/.exec(await probe.info('memory'))?.[1]);
      const row = {
        block: b,
        'transitions/s': Math.round((t * 1000) / wallMs),
        'node CPU µs/t': (cpu.user + cpu.system) / t,
        'redis CPU µs/t': cost.cpuMicros / t,
        'node wait µs/t': nodeWait / 1000 / t,
        'redis wait µs/t': serverWait / 1000 / t,
        't/script': t / cost.scripts,
        keys: await probe.dbsize(),
        'redis MB': Math.round(memory / 1e6),
      };
      rows.push(row);
      console.log(
        Object.entries(row)
          .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(2)}`)
          .join('  '),
      );
    }
    await coordinator.close();
    const warm = rows.slice(2);
    if (warm.length < 3) return; // too few blocks after warm-up for a correlation
    const col = (k: string): number[] => warm.map((r) => r[k] as number);
    const tps = col('transitions/s');
    const wait = warm.map(
      (r) => (r['node wait µs/t'] as number) + (r['redis wait µs/t'] as number),
    );
    console.log(
      [
        `blocks ${warm.length} after warm-up: transitions/s ${Math.min(...tps)}–${Math.max(...tps)}`,
        `correlation of transitions/s with run-queue wait (both processes) ${correlation(tps, wait).toFixed(2)}`,
        `with Node CPU/t ${correlation(tps, col('node CPU µs/t')).toFixed(2)}, with Redis CPU/t ${correlation(tps, col('redis CPU µs/t')).toFixed(2)}`,
        `with keys ${correlation(tps, col('keys')).toFixed(2)}; Redis CPU/t with keys ${correlation(col('redis CPU µs/t'), col('keys')).toFixed(2)}`,
      ].join('\n'),
    );
  } finally {
    await harness.stop();
  }
}

await main();
