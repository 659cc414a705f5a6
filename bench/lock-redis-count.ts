/**
 * Exact Redis-side cost of an uncontended acquire + release: user-space instructions one
 * redis-server runs per cycle, counted by valgrind's callgrind, for Keel builds and
 * node-redlock. Five nodes as in row (a) of lock.bench.ts: four plain (the test harness), the
 * fifth under `valgrind --tool=callgrind` with `--hz 1` (so the server's cron adds next to
 * nothing). Per library: warm-up cycles, then `callgrind_control --zero`, `--cycles` cycles,
 * `callgrind_control --dump`, and the instructions of that dump ÷ cycles.
 *
 * The measured node is ~50× slower than the others, and Keel goes on once three nodes have
 * answered, so its requests would queue up there and be read several per socket read — cheaper
 * than in real use. Every cycle therefore ends with a PING of that node (answered after the
 * cycle's commands): the same added cost for every library, reported on its own line (a cycle
 * of PINGs only) so it can be subtracted.
 *
 *   node --import tsx bench/lock-redis-count.ts [--cycles=2000] [--warmup=500] [--fresh] <dist dir>…
 *
 * Each `<dist dir>` is a built Keel (`npm run build`, then a copy of `dist/`). Needs valgrind.
 * Not a suite of `npm run bench`: a measuring tool for changes to the lock's scripts.
 */
import { Redis } from 'ioredis';
import type * as LockModule from '../src/lock/index.js';
import NodeRedlock from 'redlock';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { RedisHarness } from '../test/support/redis.js';
import { numberFlag as arg } from './flags.js';

const CYCLES = arg('cycles', 2000);
const WARMUP = arg('warmup', 500);
/** `--fresh`: a new resource name every cycle (a lock per entity), for Keel and node-redlock. */
const FRESH = process.argv.includes('--fresh');
const dists = process.argv.slice(2).filter((a) => !a.startsWith('--'));

const freePort = (): Promise<number> =>
  new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        done(typeof address === 'object' && address !== null ? address.port : 0);
      });
    });
  });

/** Total `Ir` of the newest callgrind dump in `dir` (its `totals:` or `summary:` line). */
function lastDumpTotal(dir: string, before: ReadonlySet<string>): number {
  const fresh = readdirSync(dir).filter((f) => f.startsWith('cg.') && !before.has(f));
  if (fresh.length !== 1) throw new Error(`expected one new dump, found ${fresh.join(', ')}`);
  const text = readFileSync(join(dir, fresh[0] as string), 'utf8');
  const m = /^(?:totals|summary): (\d+)/m.exec(text);
  if (m === null) throw new Error('no totals line in the dump');
  return Number(m[1]);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-cg-'));
  // Everything after the directory is made runs inside the try, so that the finally removes it
  // (and stops what was started) on every path: valgrind missing, the harness failing, a count
  // failing.
  let child: ChildProcess | undefined;
  let ended: Promise<unknown> = Promise.resolve();
  let failed: Error | undefined;
  let harness: RedisHarness | undefined;
  let measured: Redis | undefined;
  const clients: Redis[] = [];
  try {
    const port = await freePort();
    const server = spawn(
      'valgrind',
      [
        '--tool=callgrind',
        `--callgrind-out-file=${join(dir, 'cg.%p')}`,
        'redis-server',
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--hz',
        '1',
        '--dir',
        dir,
      ],
      { stdio: 'ignore' },
    );
    child = server;
    // Listened to at once: a spawn that fails (valgrind not installed) emits `error` — which,
    // unheard, would end the process before the finally — and `close` may come before the
    // finally would start waiting for it.
    server.once('error', (error) => {
      failed = error;
    });
    ended = new Promise((done) => server.once('close', done));
    harness = await RedisHarness.start({ count: 4, args: ['--hz', '1'] });
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
    measured = probe;
    probe.on('error', () => undefined);
    clients.push(
      ...harness.clients(),
      new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 200 }),
    );
    for (let i = 0; ; i++) {
      try {
        await probe.connect();
        await probe.ping();
        break;
      } catch {
        if (failed !== undefined) throw failed;
        if (i > 400) throw new Error('the valgrind redis-server did not start');
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    const pid = String(server.pid);
    const libraries: [string, () => Promise<unknown>][] = [['PING only', () => Promise.resolve()]];
    for (const [i, d] of dists.entries()) {
      const mod = (await import(join(resolve(d), 'lock', 'index.js'))) as typeof LockModule;
      const keel = new mod.Redlock({ clients, ttlMs: 10_000, driftFactor: 0.01 });
      let n = 0;
      libraries.push([
        `keel ${d}`,
        async () => {
          const lock = await keel.acquire(FRESH ? `cost:keel${i}:${n++}` : `cost:keel${i}`);
          return lock.release();
        },
      ]);
    }
    const redlock = new NodeRedlock(clients, { driftFactor: 0.01, retryCount: 10 });
    redlock.on('error', () => undefined);
    let r = 0;
    libraries.push([
      'node-redlock',
      async () => {
        const lock = await redlock.acquire(
          [FRESH ? `cost:redlock:${r++}` : 'cost:redlock'],
          10_000,
        );
        return lock.release();
      },
    ]);
    const cycle = async (run: () => Promise<unknown>): Promise<void> => {
      await run();
      await probe.ping();
    };
    for (const [name, run] of libraries) {
      for (let c = 0; c < WARMUP; c++) await cycle(run);
      execFileSync('callgrind_control', ['--zero', pid], { stdio: 'ignore' });
      for (let c = 0; c < CYCLES; c++) await cycle(run);
      const before = new Set(readdirSync(dir));
      execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' });
      const total = lastDumpTotal(dir, before);
      console.log(`${name}: ${(total / CYCLES).toFixed(0)} instructions per cycle (${CYCLES})`);
    }
  } finally {
    await measured?.quit().catch(() => undefined);
    for (const c of clients) c.disconnect();
    await harness?.stop();
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
    }
    await ended;
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
