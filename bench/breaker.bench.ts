/**
 * breaker: the cost of a circuit breaker around an async function — Keel's CircuitBreaker
 * against `opossum` (9.x) and `cockatiel` (3.x), the breakers Node users pick, and the bare call
 * as the baseline — in three call mixes (issue 14): a function returning an already-resolved
 * promise, a truly async one (a chain of awaits) and a rejecting one. Also a call with a per-call
 * `timeoutMs`, the failure path as the window grows, rejections while open (with and without
 * stack traces), and memory per breaker, alone and inside a `BreakerRegistry`.
 */
import diagnostics from 'node:diagnostics_channel';
import { getHeapStatistics } from 'node:v8';
import { ConsecutiveBreaker, circuitBreaker, handleAll } from 'cockatiel';
import Opossum from 'opossum';
import { BreakerRegistry, CircuitBreaker } from '../src/breaker/index.js';
import { defineSuite, type BenchReport, type BenchTask, type MeasuredTask } from './suite.js';

const resolved = (): Promise<number> => Promise.resolve(1);
/** Declares the signal parameter, so it gets an AbortSignal of its own (see `execute`). */
const resolvedTakingSignal = (signal: AbortSignal): Promise<number> =>
  Promise.resolve(signal.aborted ? 0 : 1);
const failing = (): Promise<number> => Promise.reject(new Error('down'));

const keel = new CircuitBreaker({ name: 'bench' });
// opossum with its defaults (a 10 s timeout, so a timer per call, and rolling stats).
const opossum = new Opossum(resolved);
const cockatiel = circuitBreaker(handleAll, {
  halfOpenAfter: 10_000,
  breaker: new ConsecutiveBreaker(5),
});

const BARE = 'bare call (await fn())';
const KEEL = 'keel CircuitBreaker.execute (closed)';
const OPOSSUM = 'opossum.fire (closed)';
const COCKATIEL = 'cockatiel policy.execute (closed)';
const KEEL_TRACED = 'keel execute, traceExecute: true, no subscriber (closed)';
const KEEL_TRACED_SUBSCRIBED = 'keel execute, traceExecute: true, a tracing subscriber (closed)';
const KEEL_CHANNEL_SUBSCRIBED = 'keel execute with a keel:breaker:state-change subscriber (closed)';
const KEEL_TIMEOUT = 'keel execute with timeoutMs: 1000 (closed, finishes in time)';
const KEEL_TIMEOUT_SIGNAL = 'keel execute with timeoutMs: 1000, fn takes its own signal';

/** A truly async function: three awaits, so the promise settles several microtasks later. */
const tick = Promise.resolve();
const asyncFn = async (): Promise<number> => {
  await tick;
  await tick;
  await tick;
  return 1;
};
const ASYNC_BARE = 'async fn: bare call';
const ASYNC_KEEL = 'async fn: keel execute (closed)';
const ASYNC_COCKATIEL = 'async fn: cockatiel execute (closed)';
const keelAsync = new CircuitBreaker({ name: 'bench-async' });
const cockatielAsync = circuitBreaker(handleAll, {
  halfOpenAfter: 10_000,
  breaker: new ConsecutiveBreaker(5),
});

/**
 * A rejecting function. One error object, made once: an `Error` with its stack per call would
 * cost more than either breaker. Both breakers must stay closed while every call fails: Keel's
 * window is never full enough to judge (it is reset every 100 000 calls), cockatiel's
 * consecutive-failure threshold is never reached.
 */
const downError = new Error('down');
const rejecting = (): Promise<number> => Promise.reject(downError);
const swallow = (): number => 0;
const REJECT_BARE = 'rejecting fn: bare call';
const REJECT_KEEL = 'rejecting fn: keel execute (closed)';
const REJECT_COCKATIEL = 'rejecting fn: cockatiel execute (closed)';
const keelRejecting = new CircuitBreaker({
  name: 'bench-rejecting',
  window: { size: 1_000_000 },
  minimumCalls: 1_000_000,
});
let rejectedCalls = 0;
const cockatielRejecting = circuitBreaker(handleAll, {
  halfOpenAfter: 10_000,
  breaker: new ConsecutiveBreaker(Number.MAX_SAFE_INTEGER),
});

/** Diagnostics channels (issue 15): what publishing costs without and with a subscriber. */
const keelTraced = new CircuitBreaker({ name: 'bench-traced', traceExecute: true });
const tracing = diagnostics.tracingChannel('keel:breaker:execute');
const tracingSubscriber = {
  start: (): void => undefined,
  end: (): void => undefined,
  asyncStart: (): void => undefined,
  asyncEnd: (): void => undefined,
  error: (): void => undefined,
};
const stateChanges = (): void => undefined;

function channelTasks(): BenchTask[] {
  return [
    {
      name: KEEL_CHANNEL_SUBSCRIBED,
      kind: 'keel',
      compareTo: [KEEL],
      beforeAll: () => {
        diagnostics.subscribe('keel:breaker:state-change', stateChanges);
      },
      afterAll: () => {
        diagnostics.unsubscribe('keel:breaker:state-change', stateChanges);
      },
      fn: () => keel.execute(resolved),
    },
    {
      name: KEEL_TRACED,
      kind: 'keel',
      compareTo: [KEEL],
      fn: () => keelTraced.execute(resolved),
    },
    {
      name: KEEL_TRACED_SUBSCRIBED,
      kind: 'keel',
      compareTo: [KEEL_TRACED, KEEL],
      beforeAll: () => {
        tracing.subscribe(tracingSubscriber);
      },
      afterAll: () => {
        tracing.unsubscribe(tracingSubscriber);
      },
      fn: () => keelTraced.execute(resolved),
    },
  ];
}

function closedTasks(): BenchTask[] {
  return [
    { name: BARE, kind: 'baseline', fn: () => resolved() },
    {
      name: KEEL,
      kind: 'keel',
      compareTo: [OPOSSUM, COCKATIEL, BARE],
      fn: () => keel.execute(resolved),
    },
    { name: OPOSSUM, kind: 'peer', fn: () => opossum.fire() },
    { name: COCKATIEL, kind: 'peer', fn: () => cockatiel.execute(resolved) },
    {
      name: KEEL_TIMEOUT,
      kind: 'keel',
      compareTo: [KEEL],
      fn: () => keel.execute(resolved, { timeoutMs: 1000 }),
    },
    {
      name: KEEL_TIMEOUT_SIGNAL,
      kind: 'keel',
      compareTo: [KEEL],
      fn: () => keel.execute(resolvedTakingSignal, { timeoutMs: 1000 }),
    },
    { name: ASYNC_BARE, kind: 'baseline', fn: () => asyncFn() },
    {
      name: ASYNC_KEEL,
      kind: 'keel',
      compareTo: [ASYNC_COCKATIEL, ASYNC_BARE],
      fn: () => keelAsync.execute(asyncFn),
    },
    { name: ASYNC_COCKATIEL, kind: 'peer', fn: () => cockatielAsync.execute(asyncFn) },
    { name: REJECT_BARE, kind: 'baseline', fn: () => rejecting().catch(swallow) },
    {
      name: REJECT_KEEL,
      kind: 'keel',
      compareTo: [REJECT_COCKATIEL, REJECT_BARE],
      fn: () => {
        if (++rejectedCalls % 100_000 === 0) keelRejecting.reset();
        return keelRejecting.execute(rejecting).catch(swallow);
      },
    },
    {
      name: REJECT_COCKATIEL,
      kind: 'peer',
      fn: () => cockatielRejecting.execute(rejecting).catch(swallow),
    },
  ];
}

/** The failure path with N failures already in the window: metrics-only, so it never opens. */
function failureTasks(): BenchTask[] {
  return [1_000, 10_000, 100_000].map((size) => {
    const breaker = new CircuitBreaker({
      name: `fail-${size}`,
      window: { size },
      minimumCalls: size,
    });
    breaker.metricsOnly();
    for (let i = 0; i < size; i++) breaker.tryAcquire()?.failure(new Error('down'));
    return {
      name: `keel failing call, ${size} failures in the window`,
      kind: 'keel' as const,
      fn: () => breaker.execute(failing).catch(() => 0),
    };
  });
}

function rejectionTasks(): BenchTask[] {
  const withStack = new CircuitBreaker({ name: 'open' });
  withStack.forceOpen();
  const stackless = new CircuitBreaker({ name: 'open-stackless', stacklessRejections: true });
  stackless.forceOpen();
  const openOpossum = new Opossum(resolved);
  openOpossum.open();
  const openCockatiel = circuitBreaker(handleAll, {
    halfOpenAfter: 3_600_000,
    breaker: new ConsecutiveBreaker(1),
  });
  void openCockatiel.execute(failing).catch(() => 0);
  const opossumName = 'opossum rejection while open';
  const cockatielName = 'cockatiel rejection while open';
  return [
    {
      name: 'keel rejection while open (with stack)',
      kind: 'keel',
      compareTo: [opossumName, cockatielName],
      fn: () => withStack.execute(resolved).catch(() => 0),
    },
    {
      name: 'keel rejection while open (stackless)',
      kind: 'keel',
      compareTo: [opossumName, cockatielName],
      fn: () => stackless.execute(resolved).catch(() => 0),
    },
    { name: opossumName, kind: 'peer', fn: () => openOpossum.fire().catch(() => 0) },
    { name: cockatielName, kind: 'peer', fn: () => openCockatiel.execute(resolved).catch(() => 0) },
  ];
}

function overheadReport(measured: ReadonlyMap<string, MeasuredTask>): BenchReport {
  const mean = (name: string): number => measured.get(name)?.meanNs ?? Number.NaN;
  const row = (
    mix: string,
    bare: string,
    ours: string,
    peer: string,
    peerName: string,
  ): Record<string, string | number> => {
    const keelNs = mean(ours) - mean(bare);
    const peerNs = mean(peer) - mean(bare);
    return {
      'call mix': mix,
      peer: peerName,
      'bare ns': mean(bare),
      'keel overhead ns': keelNs,
      'peer overhead ns': peerNs,
      'keel ÷ peer (target ≤ 0.333)': keelNs / peerNs,
    };
  };
  return {
    title:
      'closed-state overhead per call (mean breaker time − mean bare call time, same run), by call mix',
    rows: [
      row('already-resolved promise', BARE, KEEL, COCKATIEL, 'cockatiel'),
      row('already-resolved promise', BARE, KEEL, OPOSSUM, 'opossum'),
      row('async (3 awaits)', ASYNC_BARE, ASYNC_KEEL, ASYNC_COCKATIEL, 'cockatiel'),
      row('rejecting', REJECT_BARE, REJECT_KEEL, REJECT_COCKATIEL, 'cockatiel'),
    ],
  };
}

function timeoutReport(measured: ReadonlyMap<string, MeasuredTask>): BenchReport {
  const mean = (name: string): number => measured.get(name)?.meanNs ?? Number.NaN;
  return {
    title: 'cost of a per-call timeoutMs (call finishes in time; same breaker, same run)',
    rows: [
      {
        fn: '() => … (shares a signal)',
        'without timeout ns': mean(KEEL),
        'with timeoutMs ns': mean(KEEL_TIMEOUT),
        'extra ns (target < 1000)': mean(KEEL_TIMEOUT) - mean(KEEL),
      },
      {
        fn: '(signal) => … (own AbortSignal)',
        'without timeout ns': mean(KEEL),
        'with timeoutMs ns': mean(KEEL_TIMEOUT_SIGNAL),
        'extra ns (target < 1000)': mean(KEEL_TIMEOUT_SIGNAL) - mean(KEEL),
      },
    ],
  };
}

function memoryReport(): BenchReport {
  const gc = (globalThis as { gc?: () => void }).gc;
  const measure = (make: () => unknown): number => {
    const held: unknown[] = [];
    gc?.();
    const before = getHeapStatistics().used_heap_size;
    for (let i = 0; i < 10_000; i++) held.push(make());
    gc?.();
    const after = getHeapStatistics().used_heap_size;
    return held.length > 0 ? (after - before) / held.length : 0;
  };
  const registry = new BreakerRegistry({ failureRateThreshold: 0.5, openDurationMs: 10_000 });
  let keys = 0;
  return {
    title: 'memory per breaker instance (10 000 instances, heap delta after GC)',
    rows: [
      {
        breaker: 'keel CircuitBreaker (count window of 20)',
        'bytes/instance': measure(() => new CircuitBreaker()),
      },
      {
        breaker: 'keel CircuitBreaker in a BreakerRegistry (shared defaults, key strings included)',
        'bytes/instance': measure(() => registry.breakerFor(`downstream-${keys++}`)),
      },
      {
        breaker: 'cockatiel circuitBreaker(ConsecutiveBreaker)',
        'bytes/instance': measure(() =>
          circuitBreaker(handleAll, { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(5) }),
        ),
      },
      {
        breaker: 'opossum (shut down after measuring)',
        'bytes/instance': measure(() => {
          const b = new Opossum(resolved);
          b.shutdown(); // opossum starts interval timers per instance; stop them
          return b;
        }),
      },
    ],
  };
}

export const suite = defineSuite({
  name: 'breaker',
  description:
    'CircuitBreaker vs opossum 9 and cockatiel 3: resolved, async and rejecting calls, timeouts, memory',
  tasks: [...closedTasks(), ...channelTasks(), ...failureTasks(), ...rejectionTasks()],
  reports: (measured) => [overheadReport(measured), timeoutReport(measured), memoryReport()],
});
