/**
 * The measured loops of `diagnostics.bench.ts`, bundled INTO each copy of each variant (as
 * shipped, compiled out, compiled out with injected work), so every copy runs its own copy of this
 * code, with its own type feedback — as a user's process, which holds one copy of Keel, would.
 *
 * Why not one set of closures in the bench file, given each variant's classes: closures made
 * by one function literal share V8's feedback vector and optimized code. The variant warmed
 * first got monomorphic feedback and code specialised to its own maps; the second one's first
 * call deoptimized that ("wrong map", seen with `--trace-deopt`), and from then on both ran
 * through code made polymorphic by the bench itself, with the second variant's maps checked
 * second — a cost of the measurement, charged to whichever variant was listed second.
 */
import { LoadBalancer, roundRobin } from '../src/balancer/index.js';
import { CircuitBreaker } from '../src/breaker/index.js';
import { MemoryLock } from '../src/lock/index.js';

export { LoadBalancer, roundRobin, CircuitBreaker, MemoryLock };

/**
 * Work a block does per call on top of the operation, in iterations of {@link spin}: 0 (none)
 * except in the bench's injected-cost copies, which set it once, after calibration. Every
 * variant's loops contain the same check, so they differ only in the value.
 */
let extraWork = 0;

/** Sets this copy's {@link extraWork} (the injected-cost copies of the bench). */
export function setExtraWork(iterations: number): void {
  extraWork = iterations;
}

/** Kept so the engine cannot drop the spin's work. */
let spun = 0;

/**
 * `iterations` rounds of a multiply-xor chain: each round depends on the one before, so the
 * time grows linearly with the count and nothing is hoisted out; a real cost, unlike crediting
 * a block with fewer calls than it ran.
 */
export function spin(iterations: number): number {
  let x = spun | 1;
  // `>>> 2` keeps every value within V8's small integers (31 bits): a larger one is a heap
  // number, and storing it in `spun` allocated one per call — a cost not in the count.
  for (let i = 0; i < iterations; i++) x = Math.imul(x ^ i, 0x9e3779b1) >>> 2;
  spun = x;
  return x;
}

/**
 * A timed block: `calls` calls of the operation, back to back; resolves to the milliseconds
 * they took (`performance.now()` around the whole block, nothing per call).
 */
export type Block = (calls: number) => Promise<number>;

/** One measured operation of a variant: a per-call task for tinybench and a timed block. */
export interface Driver {
  /** One call (the pick task is batched by the runner). */
  readonly task: () => unknown;
  readonly block: Block;
}

/** `pick()` on a 10-endpoint round-robin balancer. */
export function pickDriver(): Driver {
  const endpoints = Array.from({ length: 10 }, (_, i) => ({ id: `e${i}`, data: i }));
  const balancer = new LoadBalancer({ name: 'bench', strategy: roundRobin(), endpoints });
  const task = (): unknown => balancer.pick();
  const block = (calls: number): Promise<number> => {
    const start = performance.now();
    let last: unknown;
    for (let i = 0; i < calls; i++) {
      last = balancer.pick();
      if (extraWork !== 0) spin(extraWork);
    }
    const took = performance.now() - start;
    if (last === undefined) throw new Error('bench diagnostics: a pick found no endpoint');
    return Promise.resolve(took);
  };
  return { task, block };
}

/** `execute()` of a closed breaker around an already-resolved promise. */
export function executeDriver(): Driver {
  const breaker = new CircuitBreaker({ name: 'bench' });
  const one = Promise.resolve(1);
  const fn = (): Promise<number> => one;
  const task = (): unknown => breaker.execute(fn);
  const block = async (calls: number): Promise<number> => {
    const start = performance.now();
    for (let i = 0; i < calls; i++) {
      await breaker.execute(fn);
      if (extraWork !== 0) spin(extraWork);
    }
    return performance.now() - start;
  };
  return { task, block };
}

/** An uncontended `MemoryLock` acquire + release of one resource. */
export function lockDriver(): Driver {
  const locks = new MemoryLock({ ttlMs: 10_000 });
  const task = async (): Promise<unknown> => {
    const lock = await locks.acquire('sku:1');
    return lock.release();
  };
  const block = async (calls: number): Promise<number> => {
    const start = performance.now();
    for (let i = 0; i < calls; i++) {
      const lock = await locks.acquire('sku:1');
      await lock.release();
      if (extraWork !== 0) spin(extraWork);
    }
    return performance.now() - start;
  };
  return { task, block };
}
