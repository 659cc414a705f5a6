/**
 * The process to count under callgrind for the saga's per-transition cost: one build of Keel's
 * saga (a `dist/`, or a copy of one), 100 5-step sagas in flight on a redis-server already
 * running, 3 untimed rounds, then `rounds` rounds of 100 sagas (11 transitions each). It prints
 * the transitions it ran and what `INFO commandstats` counted for them (script calls, and the
 * server's µs per transition in `EVALSHA` and in every command).
 *
 *   valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file=<file> \
 *     node --single-threaded --import tsx bench/saga-count.ts <build> <port> <rounds> [bare|io]
 *
 * Node instructions per transition: the difference between the totals of two such runs with
 * different `rounds` (e.g. 2 and 12), divided by the difference in transitions (startup, imports
 * and the untimed rounds cancel out). `--single-threaded` keeps V8's compiler and GC on the main
 * thread, which callgrind counts (the default worker threads would be counted apart); repeats
 * still differ by a few per cent (which transitions share a batch follows timing), so compare
 * builds alternately and more than once. Redis's side: start the redis-server itself under
 * callgrind (`--hz 1`) and dump it (`callgrind_control -d`) around a run.
 * Not a suite of `npm run bench`: a measuring tool for changes to the saga.
 */
import { Redis } from 'ioredis';
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as SagaModule from '../src/saga/index.js';
import { benchSagas } from './saga-rows.js';

const [dir = 'dist', port = '6379', roundsText = '10', row = 'bare'] = process.argv.slice(2);
const mod = (await import(
  pathToFileURL(join(resolve(dir), 'saga', 'index.js')).href
)) as typeof SagaModule;
const connect = (): Redis => new Redis({ host: '127.0.0.1', port: Number(port) });
const client = connect();
const effects = connect();
const probe = connect();
const { io, bare } = benchSagas(mod, effects);
const def = row === 'io' ? io : bare;
// A fresh prefix per run: a run never meets another's instances.
const coordinator = new mod.SagaCoordinator({
  redis: client,
  sagas: [io, bare],
  recovery: false,
  prefix: `count${process.pid}:`,
});
const input = { orderId: 12345, sku: 'ABC-123', qty: 2, cents: 3998 };
let serial = 0;
const round = async (): Promise<void> => {
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      const outcome = await coordinator.run(def, `x-${serial++}`, input);
      if (outcome.status !== 'completed') throw new Error(`saga ${outcome.status}`);
    }),
  );
};

/** calls and usec per command, from `INFO commandstats`. */
async function stats(): Promise<Map<string, [number, number]>> {
  const out = new Map<string, [number, number]>();
  for (const line of (await probe.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
    if (m !== null) out.set(m[1] as string, [Number(m[2]), Number(m[3])]);
  }
  return out;
}

try {
  for (let r = 0; r < 3; r++) await round();
  const before = await stats();
  const rounds = Number(roundsText);
  for (let r = 0; r < rounds; r++) await round();
  const after = await stats();
  const transitions = rounds * 100 * 11;
  const delta = (name: string, at: 0 | 1): number =>
    (after.get(name)?.[at] ?? 0) - (before.get(name)?.[at] ?? 0);
  let usec = 0;
  for (const name of after.keys()) if (name !== 'info') usec += delta(name, 1);
  console.log(
    JSON.stringify({
      build: dir,
      row,
      transitions,
      scriptCalls: delta('evalsha', 0),
      evalshaUsecPerTransition: Number((delta('evalsha', 1) / transitions).toFixed(3)),
      allUsecPerTransition: Number((usec / transitions).toFixed(3)),
    }),
  );
} finally {
  await coordinator.close();
  for (const c of [client, effects, probe]) c.disconnect();
}
