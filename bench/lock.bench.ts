/**
 * lock: Keel's `Redlock` against node-redlock (npm `redlock` 5.0.0-beta.2) and redis-semaphore
 * 5.8's `RedlockMutex` — the Redlock implementations Node users pick today — on the same five
 * local redis-server processes, through the same five ioredis clients, in the same run.
 *
 * The suite starts its own servers (test/support's `RedisHarness`) in `setup` and stops them in
 * `teardown`, which the runner calls even when something fails. Measured:
 *
 * - (a) uncontended acquire + release, one resource, sequential — tinybench tasks (ops/s), and
 *   p50/p99 both from those tasks and from a loop that interleaves the libraries call by call;
 * - (b) throughput with 50 concurrent workers, each looping acquire + release on its own
 *   resource (the lock service's throughput), and the same with all 50 on one resource;
 * - (c) handoff latency: a holder releases while 1 or 10 waiters sit in `acquire`'s retry
 *   loop; time from the holder *calling* `release()` to the first waiter's acquire resolving
 *   (and, beside it, from `release()` resolving), with each library's default retry delays;
 * - (d) 3 of 5 nodes paused (SIGSTOP): time until each library's acquire fails, bounded.
 *
 * Equivalent settings everywhere: ttl 10 s, drift factor 0.01 (redis-semaphore has none), no
 * automatic extension, and where a scenario sets retry delays, the same delay distribution for
 * every library (see `RetryWindow`). Keel otherwise runs with its defaults (per-node timeout
 * 100 ms, release notifications on).
 */
import type { Redis } from 'ioredis';
import NodeRedlock from 'redlock';
import { RedlockMutex } from 'redis-semaphore';
import diagnostics from 'node:diagnostics_channel';
import type * as LockModule from '../src/lock/index.js';
import type { Redlock, RedlockOptions } from '../src/lock/index.js';
import { RedisHarness } from '../test/support/redis.js';
import { loadKeel } from './built.js';
import { ORDERS } from './lock-orders.js';
import {
  defineSuite,
  type BenchReport,
  type BenchTask,
  type MeasuredTask,
  type SuiteContext,
} from './suite.js';

/** Lock ttl for every library (Keel's and redis-semaphore's default; node-redlock has none). */
const TTL_MS = 10_000;
/** Clock-drift allowance, node-redlock's and Keel's default (redis-semaphore has none). */
const DRIFT_FACTOR = 0.01;
const NODES = 5;
const PAUSED = [0, 1, 2] as const;

// ---------------------------------------------------------------------------------------------
// The rig: servers, the shared clients and one instance per library, created in setup.

interface Rig {
  readonly harness: RedisHarness;
  /** One ioredis client per server (default options), shared by all three libraries. */
  readonly clients: Redis[];
  /** Keel with its defaults (ttl and drift as above), for the uncontended tasks. */
  readonly keel: Redlock;
  readonly redlock: NodeRedlock;
}

// ---------------------------------------------------------------------------------------------
// Which Keel is measured: the built package when it is up to date (see bench/built.ts).

let keelLock: typeof LockModule | undefined;
let measuredBuild = 'not loaded';

async function loadKeelLock(): Promise<typeof LockModule> {
  if (keelLock !== undefined) return keelLock;
  const loaded = await loadKeel('lock', () => import('../src/lock/index.js'));
  keelLock = loaded.module;
  measuredBuild = loaded.from;
  return keelLock;
}

function keel(): typeof LockModule {
  if (keelLock === undefined) throw new Error('lock bench: Keel is not loaded (setup has not run)');
  return keelLock;
}

let harness: RedisHarness | undefined;
let rig: Rig | undefined;
/** Every Keel Redlock the suite made and has not closed yet (teardown closes the rest). */
const opened = new Set<Redlock>();
/** `error` events node-redlock emitted (it emits one per refusing or failing node vote). */
let redlockErrors = 0;

function need(): Rig {
  if (rig === undefined) throw new Error('lock bench: setup has not run (or failed)');
  return rig;
}

async function setup(context: SuiteContext): Promise<void> {
  await loadKeelLock();
  // Assigned before anything else can fail, so teardown stops the servers whatever happens.
  harness = await RedisHarness.start({ count: NODES });
  const clients = harness.clients();
  await Promise.all(clients.map((c) => c.ping()));
  const redlock = nodeRedlock(clients, { retryCount: 10, retryDelay: 200, retryJitter: 100 });
  rig = { harness, clients, keel: keelRedlock(clients, {}), redlock };
  // Warm every library up before anything is measured: tinybench's own warm-up (250 ms) left
  // Keel, which has more code for V8 to optimize, below its steady state for much of its first
  // second — measured in a continuous loop, its first 5 000 cycles ran ~15 % slower than the
  // next 5 000 while node-redlock's did not. Interleaved, so all three get the same.
  await interleaved(context.quick ? 300 : WARM_UP_ROUNDS);
}

/** Warm-up cycles per library before the (a) measurements. */
const WARM_UP_ROUNDS = 5000;

async function teardown(): Promise<void> {
  const servers = harness;
  harness = undefined;
  rig = undefined;
  try {
    await Promise.all([...opened].map((r) => r.close()));
    opened.clear();
  } finally {
    await servers?.stop(); // closes the clients, SIGKILLs the servers (paused ones too)
  }
}

function nodeRedlock(
  clients: Redis[],
  retry: { retryCount: number; retryDelay: number; retryJitter: number },
): NodeRedlock {
  const instance = new NodeRedlock(clients, {
    driftFactor: DRIFT_FACTOR,
    automaticExtensionThreshold: 500,
    ...retry,
  });
  instance.on('error', () => {
    redlockErrors++;
  });
  return instance;
}

function keelRedlock(
  clients: Redis[],
  options: Omit<RedlockOptions, 'clients' | 'ttlMs' | 'driftFactor'>,
): Redlock {
  const instance = new (keel().Redlock)({
    clients,
    ttlMs: TTL_MS,
    driftFactor: DRIFT_FACTOR,
    ...options,
  });
  opened.add(instance);
  return instance;
}

async function closeKeel(instance: Redlock): Promise<void> {
  await instance.close();
  opened.delete(instance);
}

// ---------------------------------------------------------------------------------------------
// (a) Uncontended acquire + release: tinybench tasks.

const KEEL_SEQ = 'keel Redlock: acquire + release';
const REDLOCK_SEQ = 'node-redlock: acquire + release';
const MUTEX_SEQ = 'redis-semaphore RedlockMutex: acquire + release';

/** redis-semaphore options for a lock: ttl as everyone's, no background refresh timer. */
function mutexOptions(retryIntervalMs: number, acquireTimeoutMs: number) {
  return {
    lockTimeout: TTL_MS,
    acquireTimeout: acquireTimeoutMs,
    retryInterval: retryIntervalMs,
    // node-redlock's and Keel's acquire() do not auto-extend; redis-semaphore would start a
    // refresh interval per acquired lock. Off, so all three do the same work.
    refreshInterval: 0,
  };
}

/** One uncontended acquire + release per library, as the tasks and the interleaved loop run it. */
const cycles: readonly (readonly [library: string, task: string, cycle: () => Promise<unknown>])[] =
  [
    [
      'keel Redlock',
      KEEL_SEQ,
      async () => {
        const lock = await need().keel.acquire('bench:seq:keel');
        return lock.release();
      },
    ],
    [
      'node-redlock',
      REDLOCK_SEQ,
      async () => {
        const lock = await need().redlock.acquire(['bench:seq:redlock'], TTL_MS);
        return lock.release();
      },
    ],
    [
      'redis-semaphore RedlockMutex',
      MUTEX_SEQ,
      async () => {
        const mutex = new RedlockMutex(
          need().clients,
          'bench:seq:semaphore',
          mutexOptions(10, 10_000),
        );
        await mutex.acquire();
        await mutex.release();
        return mutex;
      },
    ],
  ];

const tasks: BenchTask[] = cycles.map(([library, name, cycle]) =>
  library === 'keel Redlock'
    ? { name, kind: 'keel', compareTo: [REDLOCK_SEQ, MUTEX_SEQ], fn: cycle }
    : { name, kind: 'peer', fn: cycle },
);

/**
 * The same cycles again, interleaved: each round runs one cycle of every library, in an order
 * that changes round by round (see `ORDERS`). tinybench measures one task after the other, so
 * on a shared machine a burst of load from elsewhere lands on one library only; interleaving
 * spreads it over all three, which is what a latency ratio needs.
 */
async function interleaved(rounds: number): Promise<Map<string, number[]>> {
  const samples = new Map(cycles.map(([library]) => [library, [] as number[]]));
  for (let round = 0; round < rounds; round++) {
    const order = ORDERS[round % ORDERS.length] as readonly number[];
    for (const index of order) {
      const [library, , cycle] = cycles[index] as (typeof cycles)[number];
      const t0 = performance.now();
      await cycle();
      samples.get(library)?.push(performance.now() - t0);
    }
  }
  return samples;
}

async function latencyReport(
  measured: ReadonlyMap<string, MeasuredTask>,
  context: SuiteContext,
): Promise<BenchReport> {
  // 10 000 cycles (was 3000): p99 is then the 100th-largest sample, not the 30th. Resampling one
  // run's rounds (2026-12-05, loaded machine) put the 5–95 % range of the p99 ratio at
  // ×0.92–1.18 for 3000 cycles and ×0.97–1.12 for 10 000 (the p50 ratio's within ±0.5 % at
  // either): at 3000 a p99 verdict was mostly the draw. About 8 s more per run.
  const rounds = context.quick ? 300 : 10_000;
  progress(`(a) uncontended latency, interleaved: ${rounds} cycles per library`);
  const samples = await interleaved(rounds);
  const p = (library: string, q: number): number => percentile(samples.get(library) ?? [], q);
  const keel50 = p('keel Redlock', 0.5);
  const keel99 = p('keel Redlock', 0.99);
  return {
    title: `(a) uncontended acquire + release, one resource, sequential — tinybench (one library after the other) and interleaved (${rounds} cycles each, libraries alternating; the targets are judged on these)`,
    rows: cycles.map(([library, task]) => {
      const m = measured.get(task);
      const p50 = p(library, 0.5);
      const p99 = p(library, 0.99);
      return {
        library,
        'tinybench ops/s': m === undefined ? '—' : Math.round(m.opsPerSec),
        'tinybench p50 ms': m === undefined ? '—' : ms(m.p50Ns / 1e6),
        'tinybench p99 ms': m === undefined ? '—' : ms(m.p99Ns / 1e6),
        'interleaved p50 ms': ms(p50),
        'interleaved p99 ms': ms(p99),
        'keel p50 ÷ this': ratio(keel50 / p50),
        'keel p99 ÷ this': ratio(keel99 / p99),
        target:
          library === 'node-redlock'
            ? `p50 ≤ 1.0× ${met(keel50 <= p50)}, p99 ≤ 1.0× ${met(keel99 <= p99)}`
            : '—',
      };
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// (e) The cost of diagnostics_channel: the same uncontended cycle with nobody subscribed and
// with one subscriber (an APM-like listener on every lock channel: the three traces and the
// events), interleaved call by call. The subscription is switched between the timed cycles.

/** Messages the subscriber of (e) received. */
let delivered = 0;
const count = (): void => {
  delivered++;
};

/** One subscriber on every lock channel; returns the function that unsubscribes it. */
function subscribeAll(): () => void {
  const stops: (() => void)[] = [];
  for (const op of ['acquire', 'extend', 'release']) {
    const channel = diagnostics.tracingChannel(`keel:lock:${op}`);
    const handlers = { start: count, end: count, asyncStart: count, asyncEnd: count, error: count };
    channel.subscribe(handlers);
    stops.push(() => {
      channel.unsubscribe(handlers);
    });
  }
  for (const event of ['lost', 'quorum-failed', 'contended']) {
    diagnostics.subscribe(`keel:lock:${event}`, count);
    stops.push(() => {
      diagnostics.unsubscribe(`keel:lock:${event}`, count);
    });
  }
  return () => {
    for (const stop of stops) stop();
  };
}

async function diagnosticsReport(context: SuiteContext): Promise<BenchReport> {
  const rounds = context.quick ? 300 : 3000;
  progress(`(e) diagnostics_channel cost: ${rounds} cycles with and without a subscriber`);
  const keelCycle = (cycles[0] as (typeof cycles)[number])[2];
  const none: number[] = [];
  const one: number[] = [];
  delivered = 0;
  for (let round = 0; round < rounds; round++) {
    // Alternate which goes first, so neither always follows the other.
    for (const subscribed of round % 2 === 0 ? [false, true] : [true, false]) {
      const unsubscribe = subscribed ? subscribeAll() : undefined;
      const t0 = performance.now();
      await keelCycle();
      (subscribed ? one : none).push(performance.now() - t0);
      unsubscribe?.();
    }
  }
  const base50 = percentile(none, 0.5);
  const base99 = percentile(none, 0.99);
  return {
    title: `(e) keel Redlock acquire + release with nobody subscribed to the keel:lock:* channels vs one subscriber on all of them (interleaved, ${rounds} cycles each)`,
    rows: [
      ['no subscriber', none],
      ['one subscriber', one],
    ].map(([label, samples]) => {
      const p50 = percentile(samples as number[], 0.5);
      const p99 = percentile(samples as number[], 0.99);
      return {
        'keel Redlock': label as string,
        'p50 ms': ms(p50),
        'p99 ms': ms(p99),
        'p50 ÷ no subscriber': ratio(p50 / base50),
        'p99 ÷ no subscriber': ratio(p99 / base99),
        'messages per cycle': label === 'one subscriber' ? (delivered / rounds).toFixed(1) : '0',
      };
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// A common face for the three libraries in the scenarios (b)–(d).

interface Held {
  release(): Promise<unknown>;
}

/**
 * Delays between attempts drawn uniformly from [minMs, maxMs], mapped onto each library's
 * options: Keel waits `retryDelayMs + U(0, retryJitterMs)`, node-redlock `retryDelay ±
 * retryJitter`, redis-semaphore a fixed `retryInterval` (its mean).
 */
interface RetryWindow {
  readonly minMs: number;
  readonly maxMs: number;
}

interface Contender {
  readonly library: string;
  /** The retry delays this contender uses, as a sentence for the report. */
  readonly retry: string;
  /**
   * Acquires `resource`. With a `deadline` (performance.now() ms) it retries while the lock is
   * taken until then, and `signal` stops it early where the library supports that; without one
   * it uses the instance's retry settings.
   */
  acquire(resource: string, deadline?: number, signal?: AbortSignal): Promise<Held>;
  close(): Promise<void>;
}

const remaining = (deadline: number): number =>
  Math.max(1, Math.ceil(deadline - performance.now()));

function keelContender(window: RetryWindow | 'default', notifications = true): Contender {
  const clients = need().clients;
  const redlock =
    window === 'default'
      ? keelRedlock(clients, { retryCount: 1_000_000, notifications })
      : keelRedlock(clients, {
          retryCount: 1_000_000,
          retryDelayMs: window.minMs,
          retryJitterMs: window.maxMs - window.minMs,
          notifications,
        });
  const min = window === 'default' ? 200 : window.minMs;
  const max = window === 'default' ? 300 : window.maxMs;
  return {
    library: notifications ? 'keel Redlock' : 'keel Redlock, notifications off',
    retry: `retryDelayMs ${min} + retryJitterMs ${max - min}${window === 'default' ? ' (defaults)' : ''}`,
    acquire: (resource, deadline, signal) => {
      if (deadline === undefined) return redlock.acquire(resource, { signal });
      const timeout = AbortSignal.timeout(remaining(deadline));
      return redlock.acquire(resource, {
        signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]),
      });
    },
    close: () => closeKeel(redlock),
  };
}

function redlockContender(window: RetryWindow | 'default'): Contender {
  // node-redlock 5.0.0-beta.2's defaults in code are retryDelay 200, retryJitter 100 (its
  // README's example shows 200 for the jitter); delays are 200 ± 100, i.e. 100–300 ms.
  const delay = window === 'default' ? 200 : (window.minMs + window.maxMs) / 2;
  const jitter = window === 'default' ? 100 : (window.maxMs - window.minMs) / 2;
  const redlock = nodeRedlock(need().clients, {
    retryCount: 0,
    retryDelay: delay,
    retryJitter: jitter,
  });
  const minDelay = Math.max(1, delay - jitter);
  return {
    library: 'node-redlock',
    retry: `retryDelay ${delay} ± retryJitter ${jitter}${window === 'default' ? ' (defaults)' : ''}`,
    // No AbortSignal in node-redlock's acquire: bound its retries so it gives up near the deadline.
    acquire: (resource, deadline) =>
      deadline === undefined
        ? redlock.acquire([resource], TTL_MS, { retryCount: 10 })
        : redlock.acquire([resource], TTL_MS, {
            retryCount: Math.ceil(remaining(deadline) / minDelay),
          }),
    close: () => Promise.resolve(),
  };
}

function mutexContender(window: RetryWindow | 'default'): Contender {
  const interval = window === 'default' ? 10 : (window.minMs + window.maxMs) / 2;
  return {
    library: 'redis-semaphore RedlockMutex',
    retry: `retryInterval ${interval}${window === 'default' ? ' (default)' : ''}`,
    acquire: async (resource, deadline, signal) => {
      const mutex = new RedlockMutex(
        need().clients,
        resource,
        mutexOptions(interval, deadline === undefined ? 10_000 : remaining(deadline)),
      );
      await mutex.acquire(signal);
      return mutex;
    },
    close: () => Promise.resolve(),
  };
}

function contenders(window: RetryWindow | 'default'): Contender[] {
  return [keelContender(window), redlockContender(window), mutexContender(window)];
}

// ---------------------------------------------------------------------------------------------
// (b) Throughput at concurrency 50.

const WORKERS = 50;
/** Retry delays for the same-resource variant: 5–15 ms for everyone. */
const CONTENDED: RetryWindow = { minMs: 5, maxMs: 15 };

interface Throughput {
  readonly done: number;
  readonly failed: number;
  readonly elapsedMs: number;
}

/**
 * `WORKERS` workers loop acquire + release until `total` cycles have started or `budgetMs`
 * passed. A cycle whose acquire gives up counts as failed, not done.
 */
async function runWorkers(
  contender: Contender,
  resourceOf: (worker: number) => string,
  total: number,
  budgetMs: number,
  contended: boolean,
): Promise<Throughput> {
  let started = 0;
  let done = 0;
  let failed = 0;
  const t0 = performance.now();
  const deadline = t0 + budgetMs;
  await Promise.all(
    Array.from({ length: WORKERS }, async (_, worker) => {
      while (started < total && performance.now() < deadline) {
        started++;
        try {
          // Uncontended acquires never retry: no deadline (and, for Keel, no timeout signal).
          const held = await contender.acquire(
            resourceOf(worker),
            contended ? deadline : undefined,
          );
          await held.release();
          done++;
        } catch {
          failed++;
        }
      }
    }),
  );
  return { done, failed, elapsedMs: performance.now() - t0 };
}

async function throughputReport(context: SuiteContext): Promise<BenchReport> {
  const { quick } = context;
  const rounds = quick ? 1 : 3;
  const distinctOps = quick ? 1000 : 6000;
  const sameOps = quick ? 200 : 2000;
  const budgetMs = quick ? 3000 : 20_000;
  progress(`(b) throughput at concurrency ${WORKERS}: ${rounds} round(s) per library`);
  const distinct = contenders('default');
  // Keel once more without release notifications: how much of its contended figure is the
  // wake-up of every waiter on every release.
  const same = [...contenders(CONTENDED), keelContender(CONTENDED, false)];
  const runs = new Map<string, Throughput[]>();
  const record = (key: string, t: Throughput): void => {
    runs.set(key, [...(runs.get(key) ?? []), t]);
  };
  try {
    for (let round = 0; round < rounds; round++) {
      // Rotate the order each round, so no library always runs first (or last).
      for (let i = 0; i < distinct.length; i++) {
        const c = distinct[(i + round) % distinct.length] as Contender;
        const tag = `${c.library}|${round}`;
        record(
          `distinct|${c.library}`,
          await runWorkers(c, (w) => `bench:tp:${tag}:${w}`, distinctOps, budgetMs, false),
        );
      }
      for (let i = 0; i < same.length; i++) {
        const c = same[(i + round) % same.length] as Contender;
        record(
          `same|${c.library}`,
          await runWorkers(c, () => `bench:tp-same:${c.library}`, sameOps, budgetMs, true),
        );
      }
    }
  } finally {
    await Promise.all([...distinct, ...same].map((c) => c.close()));
  }
  const opsPerSec = (t: Throughput): number => (t.done * 1000) / t.elapsedMs;
  const median = (key: string): { ops: number; failed: number; done: number } => {
    const list = runs.get(key) ?? [];
    const sorted = [...list].sort((a, b) => opsPerSec(a) - opsPerSec(b));
    const mid = sorted[Math.floor(sorted.length / 2)];
    return {
      ops: mid === undefined ? Number.NaN : opsPerSec(mid),
      failed: list.reduce((s, t) => s + t.failed, 0),
      done: list.reduce((s, t) => s + t.done, 0),
    };
  };
  const rows: Record<string, string | number>[] = [];
  for (const [variant, list, window] of [
    ['distinct', distinct, 'uncontended, no retries'],
    ['same', same, `retry ${CONTENDED.minMs}–${CONTENDED.maxMs} ms`],
  ] as const) {
    const keel = median(`${variant}|keel Redlock`).ops;
    for (const c of list) {
      const m = median(`${variant}|${c.library}`);
      const isRedlock = c.library === 'node-redlock';
      rows.push({
        workload:
          variant === 'distinct'
            ? `${WORKERS} workers, own resource each (${window})`
            : `${WORKERS} workers, one resource (${window})`,
        library: c.library,
        'ops/s': Math.round(m.ops),
        'keel ÷ this': ratio(keel / m.ops),
        'done/failed': `${m.done}/${m.failed}`,
        target: variant === 'distinct' && isRedlock ? `keel ≥ 2× ${met(keel >= 2 * m.ops)}` : '—',
      });
    }
  }
  return {
    title: `(b) throughput, ${WORKERS} concurrent workers looping acquire + release (median of ${rounds} round(s); ${distinctOps} / ${sameOps} cycles per round, at most ${budgetMs / 1000} s)`,
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// (c) Handoff latency.

interface Handoffs {
  /** From the holder calling release() to the first waiter's acquire resolving. */
  readonly fromCall: number[];
  /** From the holder's release() resolving to the same moment (negative: the waiter won first). */
  readonly fromResolved: number[];
  /** Waiters whose acquire gave up (retry budget or deadline) before getting the lock. */
  gaveUp: number;
  /** True when a handoff did not happen before the budget ran out. */
  stalled: boolean;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A timer to race against, cancelled in `finally` so no timer outlives its wait. */
function deadlineTimer(ms: number): { readonly fired: Promise<undefined>; cancel(): void } {
  let handle: ReturnType<typeof setTimeout> | undefined;
  const fired = new Promise<undefined>((resolve) => {
    handle = setTimeout(resolve, Math.max(0, ms), undefined);
  });
  return {
    fired,
    cancel: () => {
      clearTimeout(handle);
    },
  };
}

/**
 * One holder, `waiters` waiters in `acquire`; the holder holds 10–60 ms, releases, and the
 * first waiter to get the lock becomes the next holder while a fresh waiter takes its place.
 */
async function measureHandoffs(
  contender: Contender,
  waiters: number,
  count: number,
  budgetMs: number,
): Promise<Handoffs> {
  const resource = `bench:handoff:${contender.library}:${waiters}`;
  const deadline = performance.now() + budgetMs;
  const stop = new AbortController();
  const result: Handoffs = { fromCall: [], fromResolved: [], gaveUp: 0, stalled: false };
  type Won = { readonly held: Held; readonly at: number; readonly id: number };
  const pending = new Map<number, Promise<Won | undefined>>();
  let nextId = 0;
  const spawn = (): void => {
    const id = nextId++;
    pending.set(
      id,
      contender.acquire(resource, deadline, stop.signal).then(
        (held) => ({ held, at: performance.now(), id }),
        () => {
          pending.delete(id);
          if (!stop.signal.aborted) result.gaveUp++;
          return undefined;
        },
      ),
    );
  };
  let holder: Held | undefined = await contender.acquire(resource, deadline);
  try {
    for (let i = 0; i < waiters; i++) spawn();
    for (let i = 0; i < count && performance.now() < deadline; i++) {
      await sleep(10 + Math.random() * 50);
      const calledAt = performance.now();
      await holder.release();
      const resolvedAt = performance.now();
      holder = undefined;
      let winner: Won | undefined;
      const timer = deadlineTimer(deadline - performance.now());
      try {
        while (winner === undefined && pending.size > 0 && performance.now() < deadline) {
          winner = await Promise.race([...pending.values(), timer.fired]);
        }
      } finally {
        timer.cancel();
      }
      if (winner === undefined) {
        result.stalled = true;
        break;
      }
      pending.delete(winner.id);
      holder = winner.held;
      result.fromCall.push(winner.at - calledAt);
      result.fromResolved.push(winner.at - resolvedAt);
      spawn();
    }
  } finally {
    stop.abort();
    await holder?.release().catch(() => undefined);
    // Waiters that can be stopped reject at once; node-redlock's finish their retry budget, so
    // release each as it gets the lock until all are done.
    await Promise.all(
      [...pending.values()].map(async (p) => {
        const won = await p;
        await won?.held.release().catch(() => undefined);
      }),
    );
  }
  return result;
}

async function handoffReport(context: SuiteContext): Promise<BenchReport> {
  const count = context.quick ? 8 : 100;
  const budgetMs = context.quick ? 3000 : 40_000;
  progress(`(c) handoff latency: ${count} handoffs per library, 1 and 10 waiters`);
  const rows: Record<string, string | number>[] = [];
  for (const waiters of [1, 10]) {
    const list = contenders('default');
    const results = new Map<string, Handoffs>();
    try {
      for (const c of list)
        results.set(c.library, await measureHandoffs(c, waiters, count, budgetMs));
    } finally {
      await Promise.all(list.map((c) => c.close()));
    }
    const keelP50 = percentile(results.get('keel Redlock')?.fromCall ?? [], 0.5);
    for (const c of list) {
      const h = results.get(c.library);
      if (h === undefined) continue;
      const p50 = percentile(h.fromCall, 0.5);
      rows.push({
        waiters,
        library: c.library,
        'retry delays (ms)': c.retry,
        handoffs: `${h.fromCall.length}${h.stalled ? ' (stalled)' : ''}`,
        'p50 ms': ms(p50),
        'p99 ms': ms(percentile(h.fromCall, 0.99)),
        'p50 ms from resolved': ms(percentile(h.fromResolved, 0.5)),
        'keel p50 ÷ this': ratio(keelP50 / p50),
        'gave up': h.gaveUp,
        target: c.library === 'keel Redlock' ? `p50 ≤ 5 ms ${met(p50 <= 5)}` : '—',
      });
    }
  }
  return {
    title:
      '(c) handoff latency: from the holder calling release() to the first waiter’s acquire resolving (“from resolved”: from release() resolving)',
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// (d) Three of five nodes paused.

interface Outcome {
  readonly ms: number;
  readonly error?: string;
  readonly hung: boolean;
}

async function pausedReport(context: SuiteContext): Promise<BenchReport> {
  const capMs = context.quick ? 3000 : 10_000;
  progress(
    `(d) ${PAUSED.length} of ${NODES} nodes paused: time to a failure, at most ${capMs / 1000} s`,
  );
  const r = need();
  // Library defaults for retries; the same ttl. Waiting is bounded by the cap, not the retries.
  const keel = keelRedlock(r.clients, {});
  const redlock = nodeRedlock(r.clients, { retryCount: 10, retryDelay: 200, retryJitter: 100 });
  const attempts: [string, () => Promise<Held>][] = [
    ['keel Redlock', () => keel.acquire('bench:paused:keel')],
    ['node-redlock', () => redlock.acquire(['bench:paused:redlock'], TTL_MS)],
    [
      'redis-semaphore RedlockMutex',
      async () => {
        const mutex = new RedlockMutex(
          r.clients,
          'bench:paused:semaphore',
          mutexOptions(10, 10_000),
        );
        await mutex.acquire();
        return mutex;
      },
    ],
  ];
  const late: Promise<unknown>[] = [];
  let outcomes: Outcome[];
  for (const index of PAUSED) r.harness.pause(index);
  try {
    // All three at once against the same paused nodes: the wait is bounded by one cap.
    outcomes = await Promise.all(
      attempts.map(async ([, attempt]) => {
        const t0 = performance.now();
        const call = attempt();
        // Whatever a hung call does once the nodes resume, release it and swallow its error.
        late.push(call.then((held) => held.release()).catch(() => undefined));
        const timer = deadlineTimer(capMs);
        try {
          return await Promise.race([
            call.then(
              (): Outcome => ({ ms: performance.now() - t0, error: 'none: acquired', hung: false }),
              (error: unknown): Outcome => ({
                ms: performance.now() - t0,
                error: errorName(error),
                hung: false,
              }),
            ),
            timer.fired.then((): Outcome => ({ ms: capMs, hung: true })),
          ]);
        } finally {
          timer.cancel();
        }
      }),
    );
  } finally {
    for (const index of PAUSED)
      if (r.harness.node(index).state === 'paused') r.harness.resume(index);
    // Resumed nodes answer the queued commands; let the stragglers settle (bounded).
    const settle = deadlineTimer(15_000);
    await Promise.race([Promise.all(late), settle.fired]);
    settle.cancel();
    await closeKeel(keel);
  }
  return {
    title: `(d) ${PAUSED.length} of ${NODES} nodes paused (SIGSTOP): time until acquire fails (gave up waiting after ${capMs / 1000} s)`,
    rows: attempts.map(([library], i) => {
      const o = outcomes[i] as Outcome;
      return {
        library,
        'time to failure': o.hung ? `> ${capMs / 1000} s (hung)` : `${ms(o.ms)} ms`,
        error: o.hung ? '— (still pending)' : (o.error ?? ''),
        target:
          library === 'keel Redlock'
            ? `typed QuorumUnavailableError, promptly ${met(!o.hung && o.error === 'QuorumUnavailableError')}`
            : '—',
      };
    }),
  };
}

function errorName(error: unknown): string {
  if (keel().isQuorumUnavailableError(error)) return 'QuorumUnavailableError';
  return error instanceof Error ? error.name : typeof error;
}

// ---------------------------------------------------------------------------------------------

function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

const ms = (value: number): string =>
  Number.isFinite(value) ? value.toFixed(value < 10 ? 2 : 1) : '—';
const ratio = (value: number): string => (Number.isFinite(value) ? `×${value.toFixed(2)}` : '—');
const met = (ok: boolean): string => (ok ? 'met' : 'MISSED');

function progress(line: string): void {
  process.stderr.write(`  lock: ${line}…\n`);
}

export const suite = defineSuite({
  name: 'lock',
  description:
    'Redlock vs node-redlock 5.0.0-beta.2 and redis-semaphore 5.8 RedlockMutex, uncontended, one resource, five local redis-server processes (ttl 10 s, drift 0.01)',
  tasks,
  setup,
  teardown,
  reports: async (measured, context) => {
    const reports: BenchReport[] = [
      { title: 'Keel measured from', rows: [{ build: measuredBuild }] },
      await latencyReport(measured, context),
    ];
    reports.push(await throughputReport(context));
    reports.push(await handoffReport(context));
    reports.push(await pausedReport(context));
    reports.push(await diagnosticsReport(context));
    reports.push({
      title:
        "node-redlock 'error' events during the run (it emits one per node that refuses or fails a vote)",
      rows: [{ events: redlockErrors }],
    });
    return reports;
  },
});
