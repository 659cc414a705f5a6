/**
 * What the slowest cycles of lock.bench.ts row (a) are made of (session 15). The interleaved
 * loop of row (a) — a built Keel (`<dist dir>`), node-redlock and, with `--mutex`, RedlockMutex,
 * in row (a)'s six orders with `--balanced` (else the old plain rotation) — recording per cycle:
 * acquire and release latency; `gc` PerformanceObserver entries overlapping it; with `--clock`,
 * Keel's timer callbacks run inside it (Keel gets a clock whose timers note when they fire);
 * with `--rusage`, the process's voluntary context switches inside it (it blocked waiting for a
 * reply: a server had not run yet); with `--wrap`, answers that arrived inside it to calls sent
 * before it, and the node that answered last (every library's clients are wrapped alike). It
 * prints, per library, the composition of all cycles and of those above p98, the p50/p99
 * by the library that ran just before, and (session 17) the cycles a collection overlapped by
 * the library that ran just before and by the half (acquire or release) in which it started,
 * and how many collections ran outside every timed cycle.
 *
 * With `--hooks` (distorts the timings; counts only): promises made, and callbacks of other
 * async resources run (socket reads, ticks, timers), per cycle and per library, by async_hooks;
 * `--ticks` adds where the ticks were scheduled.
 *
 *   node --expose-gc --import tsx bench/lock-tail.ts [--rounds=10000] [--warmup=3000] [--sequential=MS] [--mutex] [--balanced] [--clock] [--rusage] [--wrap] <dist dir>
 *
 * `--sequential=MS` (session 18) first runs each library alone for MS ms, five times over, one
 * library after the other — what the suite's tinybench tasks do in its process before its row
 * (a) loop — then the warm-up and the loop as usual.
 *   node --expose-gc --import tsx bench/lock-tail.ts --rounds=2000 --warmup=1000 --hooks <dist dir>
 *
 * Each `<dist dir>` is a built Keel (`npx tsup`, then a copy of `dist/`). A measuring tool, not
 * a suite of `npm run bench`; wall-clock figures from it are only as quiet as the machine.
 */
import type { Redis } from 'ioredis';
import type * as LockModule from '../src/lock/index.js';
import type { RedlockMutex } from 'redis-semaphore';
import { resolve, join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { createHook } from 'node:async_hooks';
import { RedisHarness } from '../test/support/redis.js';
import { numberFlag as arg } from './flags.js';
import { ORDERS } from './lock-orders.js';
import { ROW_A, rowAMutex, rowARedlock } from './lock-peers.js';

const ROUNDS = arg('rounds', 10_000);
const WARMUP = arg('warmup', 3000);
const flag = (f: string): boolean => process.argv.includes(`--${f}`);
const rusage = flag('rusage');
const dist = process.argv.slice(2).filter((a) => !a.startsWith('--'))[0] ?? 'dist';

interface Cycle {
  t0: number;
  t1: number;
  t2: number;
  prev: string;
  late: number; // replies arriving in the cycle for calls sent before it
  lastNode: number;
  timers: number;
  promises: number;
  macros: number;
  invol: number;
  vol: number;
}

const gcs: { start: number; end: number; kind: number }[] = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
    gcs.push({ start: e.startTime, end: e.startTime + e.duration, kind });
  }
}).observe({ entryTypes: ['gc'] });

const timerFires: number[] = [];
// Replies: [sendTime, replyTime, node] for the wrapped clients.
const replies: { sent: number; at: number; node: number }[] = [];
let recording = false;

function wrap(clients: Redis[]): Redis[] {
  return clients.map((c, node) => {
    const w = Object.create(c) as Redis & Record<string, unknown>;
    const track = (p: Promise<unknown>): Promise<unknown> => {
      if (!recording) return p;
      const sent = performance.now();
      p.then(
        () => replies.push({ sent, at: performance.now(), node }),
        () => undefined,
      );
      return p;
    };
    w.evalsha = (...a: unknown[]) =>
      track((c.evalsha as (...x: unknown[]) => Promise<unknown>)(...a));
    w.eval = (...a: unknown[]) => track((c.eval as (...x: unknown[]) => Promise<unknown>)(...a));
    return w;
  });
}

let promises = 0;
let macros = 0;
let current = '';
const sampleTicks = flag('ticks');
const tickSites = new Map<string, number>();
const types = new Map<number, string>();
const byType = new Map<string, number>();
if (flag('hooks')) {
  createHook({
    init(id, type) {
      if (type === 'PROMISE') promises++;
      else types.set(id, type);
      if (type === 'TickObject' && sampleTicks && current !== '') {
        const st = (new Error().stack ?? '')
          .split('\n')
          .slice(2, 9)
          .map((l) =>
            l
              .trim()
              .replace(/\(.*node_modules\//, '(')
              .replace(/file:.*\/(dist|base)\//, ''),
          )
          .join(' < ');
        const k = `${current}: ${st}`;
        tickSites.set(k, (tickSites.get(k) ?? 0) + 1);
      }
    },
    before(id) {
      // Callbacks of non-promise resources: I/O reads, timers, immediates, ticks.
      const t = types.get(id);
      if (t !== undefined) {
        macros++;
        byType.set(`${current}:${t}`, (byType.get(`${current}:${t}`) ?? 0) + 1);
      }
    },
  }).enable();
}

const pct = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

async function main(): Promise<void> {
  const harness = await RedisHarness.start({ count: 5 });
  const base = harness.clients();
  try {
    await Promise.all(base.map((c) => c.ping()));
    const clientsFor = (): Redis[] => (flag('wrap') ? wrap(base) : base);
    const mod = (await import(join(resolve(dist), 'lock', 'index.js'))) as typeof LockModule;
    const clock = {
      now: () => performance.now(),
      setTimer: (cb: () => void, ms: number) => {
        const h = setTimeout(
          () => {
            timerFires.push(performance.now());
            cb();
          },
          Number.isFinite(ms) ? Math.max(0, ms) : 0,
        );
        return {
          cancel: () => {
            clearTimeout(h);
          },
          unref() {
            h.unref();
            return this;
          },
        };
      },
    };
    const keel = new mod.Redlock({
      clients: clientsFor(),
      ...ROW_A,
      ...(flag('clock') ? { clock } : {}),
    });
    const redlock = rowARedlock(clientsFor());
    const mutexClients = clientsFor();
    type Lib = {
      name: string;
      acquire: () => Promise<unknown>;
      release: (l: unknown) => Promise<unknown>;
      cycles: Cycle[];
    };
    const libs: Lib[] = [
      {
        name: 'keel',
        acquire: () => keel.acquire('bench:seq:keel'),
        release: (l) => (l as { release(): Promise<unknown> }).release(),
        cycles: [],
      },
      {
        name: 'redlock',
        acquire: () => redlock.acquire(['bench:seq:redlock'], ROW_A.ttlMs),
        release: (l) => (l as { release(): Promise<unknown> }).release(),
        cycles: [],
      },
    ];
    if (flag('mutex')) {
      libs.push({
        name: 'mutex',
        acquire: async () => {
          const m = rowAMutex(mutexClients, 'bench:seq:semaphore');
          await m.acquire();
          return m;
        },
        release: (m) => (m as RedlockMutex).release(),
        cycles: [],
      });
    }
    const run = async (rounds: number, keep: boolean): Promise<void> => {
      let prev = '';
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < libs.length; i++) {
          const order = ORDERS[r % ORDERS.length] as number[];
          const lib = (
            flag('balanced') && libs.length === 3
              ? libs[order[i] as number]
              : libs[(i + r) % libs.length]
          ) as Lib;
          current = lib.name;
          const p0 = promises;
          const m0 = macros;
          const ru0 = rusage ? process.resourceUsage() : undefined;
          const t0 = performance.now();
          const l = await lib.acquire();
          const t1 = performance.now();
          await lib.release(l);
          const t2 = performance.now();
          const ru1 = rusage ? process.resourceUsage() : undefined;
          if (keep) {
            lib.cycles.push({
              t0,
              t1,
              t2,
              prev,
              late: 0,
              lastNode: -1,
              timers: 0,
              promises: promises - p0,
              macros: macros - m0,
              invol:
                ru0 && ru1 ? ru1.involuntaryContextSwitches - ru0.involuntaryContextSwitches : 0,
              vol: ru0 && ru1 ? ru1.voluntaryContextSwitches - ru0.voluntaryContextSwitches : 0,
            });
          }
          prev = lib.name;
        }
      }
    };
    // `--sequential=MS`: before the warm-up, each library alone for MS ms, five times over, one
    // library after the other (what the suite's tinybench tasks do before its row (a) loop).
    const sequentialMs = arg('sequential', 0);
    for (let round = 0; round < (sequentialMs > 0 ? 5 : 0); round++) {
      for (const lib of libs) {
        const until = performance.now() + sequentialMs;
        while (performance.now() < until) await lib.release(await lib.acquire());
      }
    }
    await run(WARMUP, false);
    gcs.length = 0;
    timerFires.length = 0;
    recording = true;
    await run(ROUNDS, true);
    recording = false;
    await new Promise((d) => setTimeout(d, 100));
    // Attribute events to cycles.
    const all = libs.flatMap((l) => l.cycles.map((c) => ({ lib: l.name, c })));
    all.sort((a, b) => a.c.t0 - b.c.t0);
    const find = (t: number): Cycle | undefined => {
      let lo = 0;
      let hi = all.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const c = (all[mid] as { c: Cycle }).c;
        if (t < c.t0) hi = mid - 1;
        else if (t > c.t2) lo = mid + 1;
        else return c;
      }
      return undefined;
    };
    for (const t of timerFires) {
      const c = find(t);
      if (c !== undefined) c.timers++;
    }
    for (const r of replies) {
      const c = find(r.at);
      if (c === undefined) continue;
      if (r.sent < c.t0) c.late++;
      c.lastNode = r.node; // replies are in arrival order
    }
    const gcIn = (c: Cycle): { any: boolean; ms: number; major: boolean } => {
      let ms = 0;
      let any = false;
      let major = false;
      for (const g of gcs) {
        if (g.end < c.t0 || g.start > c.t2) continue;
        any = true;
        ms += Math.min(g.end, c.t2) - Math.max(g.start, c.t0);
        if (g.kind !== 1) major = true;
      }
      return { any, ms, major };
    };
    if (flag('hooks'))
      console.log([...byType].map(([k, v]) => `${k}=${(v / ROUNDS).toFixed(2)}`).join(' '));
    if (sampleTicks)
      for (const [k, v] of [...tickSites].sort((a, b) => b[1] - a[1]).slice(0, 14))
        console.log((v / ROUNDS).toFixed(2), k);
    console.log(`gcs: ${gcs.length} in ${ROUNDS} rounds; keel timer fires ${timerFires.length}`);
    for (const lib of libs) {
      const tot = lib.cycles.map((c) => c.t2 - c.t0);
      const acq = lib.cycles.map((c) => c.t1 - c.t0);
      const rel = lib.cycles.map((c) => c.t2 - c.t1);
      const p98 = pct(tot, 0.98);
      const tail = lib.cycles.filter((c) => c.t2 - c.t0 > p98);
      const describe = (cs: Cycle[]): string => {
        const n = cs.length;
        let gc = 0;
        let gcMs = 0;
        let major = 0;
        let timers = 0;
        let late = 0;
        let prom = 0;
        let mac = 0;
        const prev = new Map<string, number>();
        const lastNode = new Map<number, number>();
        let acqTail = 0;
        let invol = 0;
        let vol = 0;
        let unexplained = 0;
        for (const c of cs) {
          if (c.vol > 0) invol++;
          vol += c.vol;
          if (c.vol === 0 && c.timers === 0 && !gcIn(c).any) unexplained++;
          const g = gcIn(c);
          if (g.any) gc++;
          gcMs += g.ms;
          if (g.major) major++;
          if (c.timers > 0) timers++;
          late += c.late;
          prom += c.promises;
          mac += c.macros;
          prev.set(c.prev, (prev.get(c.prev) ?? 0) + 1);
          lastNode.set(c.lastNode, (lastNode.get(c.lastNode) ?? 0) + 1);
          if (c.t1 - c.t0 > c.t2 - c.t1) acqTail++;
        }
        const f = (x: number): string => `${((100 * x) / n).toFixed(1)}%`;
        return (
          `n=${n} gc=${f(gc)} (major ${major}, gc ms/cycle ${(gcMs / n).toFixed(3)}) ` +
          `timer=${f(timers)} blocked=${f(invol)} vol/cycle=${(vol / n).toFixed(2)} none-of-gc/timer/blocked=${f(unexplained)} late/cycle=${(late / n).toFixed(2)} acq>rel=${f(acqTail)} ` +
          `promises/cycle=${(prom / n).toFixed(1)} macrotasks/cycle=${(mac / n).toFixed(1)} ` +
          `prev=${[...prev].map(([k, v]) => `${k}:${v}`).join(',')} ` +
          `lastNode=${[...lastNode]
            .sort((a, b) => a[0] - b[0])
            .map(([k, v]) => `${k}:${v}`)
            .join(',')}`
        );
      };
      console.log(
        `${lib.name}: p50 ${pct(tot, 0.5).toFixed(3)} p98 ${p98.toFixed(3)} p99 ${pct(tot, 0.99).toFixed(3)} ms; ` +
          `acquire p50/p99 ${pct(acq, 0.5).toFixed(3)}/${pct(acq, 0.99).toFixed(3)}; ` +
          `release p50/p99 ${pct(rel, 0.5).toFixed(3)}/${pct(rel, 0.99).toFixed(3)}`,
      );
      console.log(`  all : ${describe(lib.cycles)}`);
      for (const prevName of libs.map((l) => l.name)) {
        const xs = lib.cycles.filter((c) => c.prev === prevName).map((c) => c.t2 - c.t0);
        if (xs.length > 0)
          console.log(
            `  after ${prevName}: n=${xs.length} p50 ${pct(xs, 0.5).toFixed(3)} p99 ${pct(xs, 0.99).toFixed(3)}`,
          );
      }
      const withT = lib.cycles.filter((c) => c.timers > 0).map((c) => c.t2 - c.t0);
      const withG = lib.cycles.filter((c) => gcIn(c).any).map((c) => c.t2 - c.t0);
      const neither = lib.cycles
        .filter((c) => c.timers === 0 && !gcIn(c).any)
        .map((c) => c.t2 - c.t0);
      console.log(
        `  timer cycles n=${withT.length} p50 ${pct(withT, 0.5).toFixed(3)}; gc cycles n=${withG.length} p50 ${pct(withG, 0.5).toFixed(3)}; ` +
          `neither: p50 ${pct(neither, 0.5).toFixed(3)} p99 ${pct(neither, 0.99).toFixed(3)}`,
      );
      console.log(`  tail: ${describe(tail)}`);
      // Which cycle a collection lands in: by the library that ran just before, and by the half
      // (acquire or release) in which it started.
      const gcPrev = new Map<string, number>();
      let inAcquire = 0;
      let inRelease = 0;
      for (const c of lib.cycles) {
        if (!gcIn(c).any) continue;
        gcPrev.set(c.prev, (gcPrev.get(c.prev) ?? 0) + 1);
        for (const g of gcs) {
          if (g.end < c.t0 || g.start > c.t2) continue;
          if (g.start < c.t1) inAcquire++;
          else inRelease++;
        }
      }
      console.log(
        `  gc cycles by the library before: ${[...gcPrev].map(([p, n]) => `${p}:${n}`).join(' ')}; ` +
          `collections starting in acquire ${inAcquire}, in release ${inRelease}`,
      );
    }
    let between = 0;
    for (const g of gcs) if (find(g.start) === undefined && find(g.end) === undefined) between++;
    console.log(`collections outside every timed cycle: ${between} of ${gcs.length}`);
    const k = libs[0] as Lib;
    const n = libs[1] as Lib;
    const kt = k.cycles.map((c) => c.t2 - c.t0);
    const nt = n.cycles.map((c) => c.t2 - c.t0);
    console.log(
      `ratio keel/redlock p50 ${(pct(kt, 0.5) / pct(nt, 0.5)).toFixed(3)} p99 ${(pct(kt, 0.99) / pct(nt, 0.99)).toFixed(3)}`,
    );
    await keel.close();
  } finally {
    await harness.stop();
  }
}

await main();
