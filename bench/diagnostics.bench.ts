/**
 * What Keel's `node:diagnostics_channel` publishing costs when nobody subscribes (issue 15:
 * "within noise, ≤ 2 ns or ≤ 2 %"), for the three hottest calls: a balancer pick, a breaker
 * execute and a lock acquire + release (MemoryLock: the same guarded trace as Redlock's, without
 * a network round trip drowning a nanosecond).
 *
 * The baseline is the same code with the publishing compiled out: both variants are bundled
 * here by esbuild from the same sources, one as they are and one with `src/core/diagnostics.ts`
 * swapped for `diagnostics-stub.ts` (every channel constantly without subscribers, so the JIT
 * drops the guarded code). Same build, same loader, same process, interleaved rounds: the ratio
 * is the cost of the `hasSubscribers` guards and nothing else. A subscriber's cost is in the
 * balancer, breaker and lock suites.
 */
import diagnostics from 'node:diagnostics_channel';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, type Plugin } from 'esbuild';
import type * as Balancer from '../src/balancer/index.js';
import type * as Breaker from '../src/breaker/index.js';
import type * as LockModule from '../src/lock/index.js';
import { defineSuite, type BenchTask } from './suite.js';

const root = join(import.meta.dirname, '..');
const ENTRY = `export { LoadBalancer, roundRobin } from './src/balancer/index.ts';
export { CircuitBreaker } from './src/breaker/index.ts';
export { MemoryLock } from './src/lock/index.ts';
`;

interface Variant {
  readonly LoadBalancer: typeof Balancer.LoadBalancer;
  readonly roundRobin: typeof Balancer.roundRobin;
  readonly CircuitBreaker: typeof Breaker.CircuitBreaker;
  readonly MemoryLock: typeof LockModule.MemoryLock;
}

/** Swaps core's diagnostics module for the stub (only core's: lock/diagnostics.ts is real code). */
const stubDiagnostics: Plugin = {
  name: 'stub-diagnostics',
  setup(b) {
    b.onResolve({ filter: /^\.\/diagnostics\.js$/ }, (args) =>
      resolve(args.resolveDir) === join(root, 'src', 'core')
        ? { path: join(import.meta.dirname, 'diagnostics-stub.ts') }
        : undefined,
    );
  },
};

/** Bundles the entry (with or without the stub) next to node_modules, and imports it. */
async function variant(stubbed: boolean): Promise<Variant> {
  const out = join(root, 'bench', 'results', `.diagnostics-${stubbed ? 'off' : 'on'}.mjs`);
  const result = await build({
    stdin: { contents: ENTRY, resolveDir: root, loader: 'ts' },
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    write: false,
    plugins: stubbed ? [stubDiagnostics] : [],
  });
  const text = result.outputFiles[0]?.text ?? '';
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, text);
  return (await import(pathToFileURL(out).href)) as Variant;
}

const [on, off] = await Promise.all([variant(false), variant(true)]);

/**
 * Guards the bench itself: the shipped variant publishes to a subscriber, the stubbed one
 * cannot. Run after the measurements (as the suite's teardown): a pick made while someone
 * subscribes leaves its type feedback in `pick()` (the publishing branch taken, an active
 * channel seen), so run first it made the measured process one that had had a subscriber —
 * not the no-subscriber case the suite is about.
 */
function checkVariants(): void {
  const seen: unknown[] = [];
  const listener = (m: unknown): void => {
    seen.push(m);
  };
  diagnostics.subscribe('keel:balancer:pick', listener);
  for (const v of [on, off])
    new v.LoadBalancer({ strategy: v.roundRobin(), endpoints: [{ id: 'a', data: 0 }] }).pick();
  diagnostics.unsubscribe('keel:balancer:pick', listener);
  if (seen.length !== 1)
    throw new Error(`expected one pick message (the shipped variant's), got ${seen.length}`);
}

const BATCH = 1000;

function pick(v: Variant): () => unknown {
  const endpoints = Array.from({ length: 10 }, (_, i) => ({ id: `e${i}`, data: i }));
  const balancer = new v.LoadBalancer({ name: 'bench', strategy: v.roundRobin(), endpoints });
  return () => balancer.pick();
}

function execute(v: Variant): () => unknown {
  const breaker = new v.CircuitBreaker({ name: 'bench' });
  const one = Promise.resolve(1);
  const fn = (): Promise<number> => one;
  return () => breaker.execute(fn);
}

function lockCycle(v: Variant): () => Promise<unknown> {
  const locks = new v.MemoryLock({ ttlMs: 10_000 });
  return async () => {
    const lock = await locks.acquire('sku:1');
    return lock.release();
  };
}

/** A pair: the component as shipped (no subscriber) compared with its compiled-out baseline. */
function pair(
  what: string,
  make: (v: Variant) => () => unknown,
  batch: number | undefined,
): BenchTask[] {
  const baseline = `${what}: publishing compiled out`;
  return [
    { name: baseline, kind: 'baseline', ...(batch === undefined ? {} : { batch }), fn: make(off) },
    {
      name: `${what}: as shipped, no subscriber`,
      kind: 'keel',
      compareTo: baseline,
      ...(batch === undefined ? {} : { batch }),
      fn: make(on),
    },
  ];
}

export const suite = defineSuite({
  name: 'diagnostics',
  description:
    'the no-subscriber cost of diagnostics_channel publishing: pick, execute, acquire vs the same code with publishing compiled out',
  tasks: [
    ...pair('roundRobin pick, N=10', pick, BATCH),
    ...pair('breaker execute (closed)', execute, undefined),
    ...pair('MemoryLock acquire + release', lockCycle, undefined),
  ],
  teardown: checkVariants,
});
