/**
 * Row (a) of lock.bench.ts — an uncontended acquire + release, one resource, ttl 10 s, drift
 * 0.01 — with each library in a process of its own (session 18). In the suite all three
 * libraries share one process and its five ioredis clients, so the ioredis code they share gets
 * its JIT feedback from all three, in whatever order the process ran them (session 18 found the
 * suite's tinybench phase, each library alone before the interleaved loop, moves the ratio 2–5 %;
 * see the lock section of bench/README.md). No application has that history: it uses one lock
 * library. Here each child process loads one library and its own five clients; the parent starts
 * the five redis-servers and asks the children for one cycle at a time, in row (a)'s six orders
 * (`bench/lock-orders.ts`), so load from elsewhere still lands on every library alike. Each
 * child times its own cycle; the message round trip is outside the timed part. Between two of a
 * child's cycles the others run, so its two late answers of a round (a quorum decides it) arrive
 * while it waits, as they would in an application whose locks are not back to back.
 *
 *   node --expose-gc --import tsx bench/lock-solo.ts [--rounds=10000] [--warmup=5000] [--mutex] <dist dir>
 *
 * A measuring tool, not a suite of `npm run bench` (the suite's judge is unchanged); wall-clock
 * figures from it are only as quiet as the machine.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import type * as LockModule from '../src/lock/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { numberFlag as arg } from './flags.js';
import { ROW_A, rowAMutex, rowARedlock } from './lock-peers.js';
import { ORDERS } from './lock-orders.js';

const LIBRARIES = ['keel', 'redlock', 'mutex'] as const;
type Library = (typeof LIBRARIES)[number];

interface Ask {
  readonly t: 'cycle';
}
type Answer = { readonly t: 'ready' } | { readonly t: 'done'; readonly ms: number };

/** A child: one library on its own clients; answers each `cycle` with its latency. */
async function child(library: Library, ports: number[], dist: string): Promise<void> {
  const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port }));
  await Promise.all(clients.map((c) => c.ping()));
  let cycle: () => Promise<unknown>;
  if (library === 'keel') {
    const mod = (await import(join(resolve(dist), 'lock', 'index.js'))) as typeof LockModule;
    const keel = new mod.Redlock({ clients, ...ROW_A });
    cycle = async () => (await keel.acquire('bench:solo:keel')).release();
  } else if (library === 'redlock') {
    const redlock = rowARedlock(clients);
    cycle = async () => (await redlock.acquire(['bench:solo:redlock'], ROW_A.ttlMs)).release();
  } else {
    cycle = async () => {
      const m = rowAMutex(clients, 'bench:solo:semaphore');
      await m.acquire();
      await m.release();
    };
  }
  const send = (m: Answer): void => {
    process.send?.(m);
  };
  process.on('message', (m: Ask | { t: 'exit' }) => {
    if (m.t === 'exit') {
      for (const c of clients) c.disconnect();
      process.exit(0);
    }
    void (async () => {
      const t0 = performance.now();
      await cycle();
      send({ t: 'done', ms: performance.now() - t0 });
    })();
  });
  send({ t: 'ready' });
}

/** One cycle of `worker`'s library; resolves with its latency in ms. */
function ask(worker: ChildProcess): Promise<number> {
  return new Promise((resolveMs) => {
    worker.once('message', (m: Answer) => {
      if (m.t === 'done') resolveMs(m.ms);
    });
    worker.send({ t: 'cycle' } satisfies Ask);
  });
}

const percentile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

async function parent(): Promise<void> {
  const rounds = arg('rounds', 10_000);
  const warmup = arg('warmup', 5000);
  const dist = process.argv.slice(2).filter((a) => !a.startsWith('--'))[0] ?? 'dist';
  const libraries: Library[] = process.argv.includes('--mutex')
    ? [...LIBRARIES]
    : ['keel', 'redlock'];
  const harness = await RedisHarness.start({ count: 5 });
  const workers: ChildProcess[] = [];
  try {
    const ports = [0, 1, 2, 3, 4].map((i) => harness.node(i).port);
    const self = fileURLToPath(import.meta.url);
    for (const library of libraries) {
      const worker = fork(self, ['--child', library, ports.join(','), dist], {
        execArgv: process.execArgv,
      });
      workers.push(worker);
      await new Promise<void>((ready) => {
        worker.once('message', () => {
          ready();
        });
      });
    }
    // Row (a)'s six orders over the libraries present (indices into `libraries`).
    const orders = ORDERS.map((o) => o.filter((i) => i < libraries.length));
    const samples = libraries.map(() => [] as number[]);
    for (let round = 0; round < warmup + rounds; round++) {
      for (const index of orders[round % orders.length] ?? []) {
        const ms = await ask(workers[index] as ChildProcess);
        if (round >= warmup) samples[index]?.push(ms);
      }
    }
    const stats = libraries.map((library, i) => {
      const xs = samples[i] ?? [];
      return { library, p50: percentile(xs, 0.5), p99: percentile(xs, 0.99), n: xs.length };
    });
    const keel = stats[0];
    for (const s of stats) {
      console.log(
        `${s.library}: n=${s.n} p50 ${s.p50.toFixed(3)} p99 ${s.p99.toFixed(3)} ms` +
          (keel === undefined || s === keel
            ? ''
            : `; keel ÷ this p50 ×${(keel.p50 / s.p50).toFixed(3)} p99 ×${(keel.p99 / s.p99).toFixed(3)}`),
      );
    }
  } finally {
    for (const w of workers) w.send({ t: 'exit' });
    await harness.stop();
  }
}

const at = process.argv.indexOf('--child');
if (at >= 0) {
  const [library, ports, dist] = process.argv.slice(at + 1);
  await child(library as Library, (ports ?? '').split(',').map(Number), dist ?? 'dist');
} else {
  await parent();
}
