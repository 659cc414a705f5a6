/**
 * breaker: the cost of a circuit breaker around an already-resolved async function — Keel's
 * CircuitBreaker against `opossum` (9.x) and `cockatiel` (3.x), the breakers Node users pick,
 * and the bare call as the baseline. Also the failure path as the window grows, rejections while
 * open (with and without stack traces), and memory per breaker.
 */
import { getHeapStatistics } from 'node:v8';
import { ConsecutiveBreaker, circuitBreaker, handleAll } from 'cockatiel';
import Opossum from 'opossum';
import { CircuitBreaker } from '../src/breaker/index.js';
import { defineSuite, type BenchReport, type BenchTask, type MeasuredTask } from './suite.js';

const resolved = (): Promise<number> => Promise.resolve(1);
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
  const bare = measured.get(BARE)?.meanNs ?? Number.NaN;
  const overhead = (name: string): number => (measured.get(name)?.meanNs ?? Number.NaN) - bare;
  const ours = overhead(KEEL);
  return {
    title: 'closed-state overhead per call (mean breaker time − mean bare call time, same run)',
    rows: [
      { breaker: 'keel', 'overhead ns': ours, 'keel ÷ this': 1 },
      {
        breaker: 'opossum',
        'overhead ns': overhead(OPOSSUM),
        'keel ÷ this': ours / overhead(OPOSSUM),
      },
      {
        breaker: 'cockatiel',
        'overhead ns': overhead(COCKATIEL),
        'keel ÷ this': ours / overhead(COCKATIEL),
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
  return {
    title: 'memory per breaker instance (10 000 instances, heap delta after GC)',
    rows: [
      {
        breaker: 'keel CircuitBreaker (count window of 20)',
        'bytes/instance': measure(() => new CircuitBreaker()),
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
    'CircuitBreaker vs opossum 9 and cockatiel 3 around an already-resolved async function',
  tasks: [...closedTasks(), ...failureTasks(), ...rejectionTasks()],
  reports: (measured) => [overheadReport(measured), memoryReport()],
});
