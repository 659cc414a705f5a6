/**
 * Do Node and Redis work at the same time in the saga's 100-in-flight rows? For each build given
 * (a `dist`-like directory holding `saga/index.js`) and each row (steps with one Redis `INCR`,
 * steps without I/O), after 20 warm-up rounds of 100 sagas: wall time per transition, this
 * process's CPU (`process.cpuUsage`) and the server's (`INFO cpu`) per transition, and their sum
 * less the wall time — positive when the two processes overlapped (when both waited for a core
 * on a loaded machine, it goes negative; Node's CPU is the whole process's, V8's GC helper threads
 * included, so it is an upper bound of the overlap); then how the transitions rode: transitions per
 * script call, the share of transitions by the size of the call that carried them, and how many
 * of the coordinator's script calls were already in flight when each was sent (counted on the
 * coordinator's client, around `evalsha`). Builds and rows alternate, `--repeats` times.
 *
 *   node --expose-gc --import tsx bench/saga-overlap.ts [--rounds=20] [--repeats=2] [--only=io|bare] [--share] <build dir>…
 *
 * `--share`: the steps' `INCR` on the coordinator's own connection (the bench's steps use a
 * client of their own, as a service's calls would). Not a suite of `npm run bench`: a measuring
 * tool for the saga's batching (session 17, see bench/README.md).
 */
import type { Redis } from 'ioredis';
import type * as SagaModule from '../src/saga/index.js';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RedisHarness } from '../test/support/redis.js';
import { redisCost, redisCounters } from '../test/support/redis-cost.js';
import { numberFlag } from './flags.js';
import { sagaRows } from './saga-rows.js';

const ROUNDS = numberFlag('rounds', 20);
const REPEATS = numberFlag('repeats', 2);
const IN_FLIGHT = 100;
const TRANSITIONS = 11;
const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7);
const share = process.argv.includes('--share');
const dirs = process.argv.slice(2).filter((a) => !a.startsWith('--'));

/** What the coordinator's client sent: transitions per call, and calls in flight at each send. */
interface Sends {
  sizes: number[];
  inflightAtSend: number[];
  inflight: number;
}

/** The coordinator's client, counting its script calls as they are made. */
function counted(client: Redis, sends: Sends): Redis {
  const evalsha = client.evalsha.bind(client) as (...a: unknown[]) => Promise<unknown>;
  const wrapped = (...a: unknown[]): Promise<unknown> => {
    const numKeys = a[1] as number;
    const first = a[2 + numKeys];
    // A batch (TRANSITIONS) has 8 arguments after its keys, the first its transition count.
    sends.sizes.push(a.length - 2 - numKeys === 8 && typeof first === 'number' ? first : 1);
    sends.inflightAtSend.push(sends.inflight);
    sends.inflight++;
    const settled = (): void => {
      sends.inflight--;
    };
    const reply = evalsha(...a);
    reply.then(settled, settled);
    return reply;
  };
  return new Proxy(client, {
    get: (target, key): unknown =>
      key === 'evalsha' ? wrapped : (Reflect.get(target, key, target) as unknown),
  });
}

const bucket = (n: number): string =>
  n === 1 ? '1' : n <= 16 ? '2-16' : n <= 50 ? '17-50' : n <= 100 ? '51-100' : '>100';

async function main(): Promise<void> {
  const harness = await RedisHarness.start({ count: 1 });
  const probe = harness.client(0);
  const rows: Record<string, string | number>[] = [];
  const closers: (() => Promise<void>)[] = [];
  try {
    const runs: { label: string; sends: Sends; round: () => Promise<void> }[] = [];
    for (const [i, dir] of dirs.entries()) {
      const entry = join(resolve(dir), 'saga', 'index.js');
      const mod = (await import(pathToFileURL(entry).href)) as typeof SagaModule;
      const sends: Sends = { sizes: [], inflightAtSend: [], inflight: 0 };
      const plain = harness.client(0);
      const client = counted(plain, sends);
      const effects = share ? plain : harness.client(0);
      const { coordinator, rows: made } = sagaRows(mod, client, effects, `overlap${i}:`, only);
      closers.push(() => coordinator.close());
      for (const row of made) runs.push({ label: `${row.label} ${dir}`, sends, round: row.round });
    }
    for (const run of runs) for (let r = 0; r < 20; r++) await run.round();
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const run of runs) {
        globalThis.gc?.();
        run.sends.sizes.length = 0;
        run.sends.inflightAtSend.length = 0;
        const before = await redisCounters(probe);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (let r = 0; r < ROUNDS; r++) await run.round();
        const wallUs = (performance.now() - t0) * 1000;
        const cpu = process.cpuUsage(cpu0);
        const cost = redisCost(before, await redisCounters(probe));
        const t = ROUNDS * IN_FLIGHT * TRANSITIONS;
        const node = (cpu.user + cpu.system) / t;
        const redis = cost.cpuMicros / t;
        const byBucket = new Map<string, number>();
        for (const n of run.sends.sizes)
          byBucket.set(bucket(n), (byBucket.get(bucket(n)) ?? 0) + n);
        const depth = new Map<number, number>();
        for (const n of run.sends.inflightAtSend) depth.set(n, (depth.get(n) ?? 0) + 1);
        rows.push({
          variant: run.label,
          'transitions/s': Math.round(t / (wallUs / 1e6)),
          'wall µs/t': (wallUs / t).toFixed(1),
          'node CPU µs/t': node.toFixed(1),
          'redis CPU µs/t': redis.toFixed(1),
          'sum − wall': (node + redis - wallUs / t).toFixed(1),
          't/call': (t / run.sends.sizes.length).toFixed(1),
          'share of t by call size': [...byBucket]
            .map(([b, n]) => `${b}:${Math.round((100 * n) / t)}%`)
            .join(' '),
          'calls in flight at send': [...depth]
            .sort((a, b) => a[0] - b[0])
            .map(([d, n]) => `${d}:${n}`)
            .join(' '),
          load: (await import('node:os')).loadavg()[0]?.toFixed(1) ?? '',
        });
      }
    }
    console.table(rows);
  } finally {
    for (const close of closers) await close();
    await harness.stop();
  }
}

await main();
