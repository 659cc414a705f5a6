/**
 * Exact per-call cost of the calls `resilience.bench.ts` times (issue 17's "≤ 2× a bare call"):
 * heap bytes allocated per call (no collection may run inside the measured loop: run with a
 * young generation fixed large enough, `--min-semi-space-size=256 --max-semi-space-size=256` —
 * with only the maximum set it starts small and scavenges, and the script's check does not
 * always hear of it: confirm with `--trace-gc`), and, with
 * `--profile`, the allocations by function from V8's sampling heap profiler (objects collected
 * by either collector included). Instructions per call come from running it under callgrind
 * twice with different `--calls` and dividing the difference:
 *
 *   node --expose-gc --min-semi-space-size=256 --max-semi-space-size=256 --import tsx \
 *     bench/resilience-cost.ts <dist> [mode…]
 *   valgrind --tool=callgrind node --jitless --import tsx bench/resilience-cost.ts <dist> aggr --calls=2000
 *
 * `<dist>` is a built Keel (`npm run build`, or a copy of `dist/` to compare builds); modes are
 * `bare`, `coop` (`() => fn` through retry + cooperative timeout + breaker), `aggr` (the same
 * with an aggressive timeout) and `signal` (cooperative, `(signal) => fn`). Each call is awaited
 * as tinybench awaits a task. Not a suite of `npm run bench`: a measuring tool for changes to
 * the pipeline's hot path.
 */
import { resolve, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Session } from 'node:inspector/promises';
import { PerformanceObserver } from 'node:perf_hooks';
import type * as Resilience from '../src/resilience/index.js';
import type * as Breaker from '../src/breaker/index.js';
import { numberFlag as arg } from './flags.js';

const CALLS = arg('calls', 100_000);
const WARM = arg('warm', 20_000);
const profile = process.argv.includes('--profile');
const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const dist = resolve(positional[0] ?? 'dist');
const modes = positional.length > 1 ? positional.slice(1) : ['bare', 'coop', 'aggr', 'signal'];

const r = (await import(
  pathToFileURL(join(dist, 'resilience/index.js')).href
)) as typeof Resilience;
const b = (await import(pathToFileURL(join(dist, 'breaker/index.js')).href)) as typeof Breaker;

const resolved = (): Promise<number> => Promise.resolve(1);
const resolvedTakingSignal = (signal: AbortSignal): Promise<number> =>
  Promise.resolve(signal.aborted ? 0 : 1);
const coop = r.pipeline(
  r.retry({ maxAttempts: 3 }),
  r.timeout({ ms: 1000 }),
  new b.CircuitBreaker({ name: 'cost-coop' }),
);
const aggr = r.pipeline(
  r.retry({ maxAttempts: 3 }),
  r.timeout({ ms: 1000, strategy: 'aggressive' }),
  new b.CircuitBreaker({ name: 'cost-aggr' }),
);
const tasks: Record<string, () => Promise<number>> = {
  bare: () => resolved(),
  coop: () => coop.execute(resolved),
  aggr: () => aggr.execute(resolved),
  signal: () => coop.execute(resolvedTakingSignal),
};

let collections = 0;
new PerformanceObserver((list) => {
  collections += list.getEntries().length;
}).observe({ entryTypes: ['gc'] });

async function loop(task: () => Promise<number>, calls: number): Promise<void> {
  for (let i = 0; i < calls; i++) await task();
}

const gc = (globalThis as { gc?: () => void }).gc;
for (const mode of modes) {
  const task = tasks[mode];
  if (task === undefined) throw new Error(`unknown mode ${mode}`);
  await loop(task, WARM);
  if (gc === undefined) {
    // Under callgrind: only the instructions of the loop matter (compare two --calls).
    await loop(task, CALLS);
    continue;
  }
  const session = profile ? new Session() : undefined;
  if (session !== undefined) {
    session.connect();
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: 1,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }
  gc();
  // The observer hears of a collection (the one just asked for) a tick or two late.
  for (let i = 0; i < 3; i++) await new Promise((done) => setImmediate(done));
  const before = collections;
  const heap0 = process.memoryUsage().heapUsed;
  await loop(task, CALLS);
  const heap1 = process.memoryUsage().heapUsed;
  // The observer hears of collections a tick late.
  await new Promise((done) => setImmediate(done));
  const clean = collections === before;
  console.log(
    `${mode}: ${((heap1 - heap0) / CALLS).toFixed(1)} bytes/call over ${CALLS} calls` +
      (clean ? '' : ` (NOT exact: ${collections - before} collections ran; raise the semi-space)`),
  );
  if (session !== undefined) {
    const { profile: heap } = (await session.post('HeapProfiler.stopSampling')) as unknown as {
      profile: {
        head: HeapNode;
        samples: { size: number; nodeId: number }[];
      };
    };
    session.disconnect();
    const byNode = new Map<number, string>();
    const walk = (node: HeapNode, path: string): void => {
      const name = `${node.callFrame.functionName || '(anon)'}:${node.callFrame.lineNumber}`;
      byNode.set(node.id, `${path} > ${name}`.slice(-160));
      for (const child of node.children) walk(child, name);
    };
    walk(heap.head, '');
    const sums = new Map<string, { bytes: number; samples: number }>();
    for (const s of heap.samples) {
      const key = byNode.get(s.nodeId) ?? '?';
      const sum = sums.get(key) ?? { bytes: 0, samples: 0 };
      sum.bytes += s.size;
      sum.samples++;
      sums.set(key, sum);
    }
    for (const [key, sum] of [...sums].sort((x, y) => y[1].bytes - x[1].bytes).slice(0, 14)) {
      console.log(
        `  ${(sum.bytes / CALLS).toFixed(1).padStart(7)} B ${(sum.samples / CALLS).toFixed(2).padStart(6)} obj/call  ${key}`,
      );
    }
  }
}

interface HeapNode {
  id: number;
  callFrame: { functionName: string; lineNumber: number; url: string };
  children: HeapNode[];
}
