/**
 * Counts behind the cache suite's cold stampede (diagnostic, not part of `npm run bench`): the
 * same 4 worker processes (bench/cache-worker.ts) × 250 concurrent `getOrLoad` of one cold key,
 * 50 ms loader, on a redis-server of its own, 20 untimed warm-up rounds and then `rounds`
 * measured ones. Per measured round it reads, from the workers' own reports, each worker's CPU
 * time, its heap growth (rounds without a GC) and its run-queue wait, and from Redis
 * `INFO commandstats` before and after the round, the commands the round ran (script-internal
 * ones included). `LIB=null` runs the workers with no cache (see `CacheLib`): the harness alone.
 *
 * `npx tsx bench/cache-stampede-count.ts [rounds]` (default 30; dist/ fresh: `npm run build`).
 *
 * @packageDocumentation
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RedisHarness } from '../test/support/redis.js';
import type { FromCacheBenchWorker, ToCacheBenchWorker } from './cache-worker.js';

type Done = Extract<FromCacheBenchWorker, { t: 'done' }>;

const rounds = Number(process.argv[2] ?? 30);
const WARM_UP = 20;
const lib = process.env.LIB ?? 'keel';
const script = fileURLToPath(new URL('./cache-worker.ts', import.meta.url));

const harness = await RedisHarness.start({ count: 1 });
const counter = harness.client(0);
const config = { lib, port: harness.port(0), loaderMs: 50, callers: 250, trace: true };
const workers = Array.from({ length: 4 }, () => {
  const child = fork(script, [JSON.stringify(config)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  let ready = (): void => undefined;
  let done: ((m: Done) => void) | undefined;
  child.on('message', (m: FromCacheBenchWorker) => {
    if (m.t === 'ready') ready();
    else done?.(m);
  });
  return {
    child,
    ready: new Promise<void>((resolve) => (ready = resolve)),
    run: (message: ToCacheBenchWorker) =>
      new Promise<Done>((resolve) => {
        done = resolve;
        child.send(message);
      }),
  };
});
await Promise.all(workers.map((w) => w.ready));

async function commandCalls(): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const line of (await counter.info('commandstats')).split('\n')) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (match?.[1] !== undefined) calls.set(match[1], Number(match[2]));
  }
  return calls;
}

interface Traced {
  readonly t0: number;
  readonly t1: number;
}

const cpu: number[] = [];
const heapKb: number[] = [];
const queued: number[] = [];
const overLoader: number[] = [];
const commands = new Map<string, number>();
let exactlyOne = 0;
for (let round = 0; round < WARM_UP + rounds; round++) {
  const key = `c-${round}`;
  const before = await commandCalls();
  const done = await Promise.all(workers.map((w) => w.run({ t: 'stampede', key, ttlMs: 60_000 })));
  const after = await commandCalls();
  if (round < WARM_UP) continue;
  if (Number(await counter.get(`loads:${lib}:${key}`)) === 1) exactlyOne++;
  for (const [name, n] of after) {
    if (name !== 'info')
      commands.set(name, (commands.get(name) ?? 0) + n - (before.get(name) ?? 0));
  }
  const loads = (await counter.lrange(`trace:${lib}:${key}`, 0, -1))
    .map((t) => JSON.parse(t) as Traced)
    .sort((a, b) => a.t0 - b.t0);
  const took = loads[0] === undefined ? 0 : loads[0].t1 - loads[0].t0;
  for (const d of done) {
    cpu.push(d.cpuMs);
    queued.push(d.runQueueMs);
    if (d.gcs === 0) heapKb.push(d.heapBytes / 1024);
    for (const wait of d.latencies) overLoader.push(wait - took);
  }
}

const at = (values: readonly number[], q: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
};
const summary = (values: readonly number[]): string =>
  `p50 ${at(values, 0.5).toFixed(2)}, max ${Math.max(...values).toFixed(2)}`;
console.log(
  `${lib}: ${rounds} rounds after ${WARM_UP} warm-up; exactly 1 loader call in ${exactlyOne}`,
);
console.log(`CPU ms per worker per round: ${summary(cpu)}`);
console.log(`heap kB per worker per round without GC: ${summary(heapKb)} (n = ${heapKb.length})`);
console.log(`run-queue wait ms per worker per round: ${summary(queued)}`);
console.log(
  `each wait − loader, ms: p50 ${at(overLoader, 0.5).toFixed(2)}, p99 ${at(overLoader, 0.99).toFixed(2)}`,
);
const perRound = [...commands]
  .filter(([, n]) => n > 0)
  .map(([name, n]) => `${name} ${(n / rounds).toFixed(2)}`)
  .join(', ');
console.log(`Redis commands per round (INFO commandstats, script-internal included): ${perRound}`);
for (const w of workers) w.child.send({ t: 'stop' });
await Promise.all(workers.map((w) => new Promise((resolve) => w.child.once('exit', resolve))));
counter.disconnect();
await harness.stop();
