/** Small helpers shared by the test suites. */
import { expect } from 'vitest';
import { isInvalidOptionError, type InvalidOptionError } from '../../src/core/index.js';

/** Runs `fn` and returns what it threw; fails the test if it did not throw. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

/** Runs `fn`, asserts it threw an InvalidOptionError, and returns it. */
export function invalidOption(fn: () => unknown): InvalidOptionError {
  const error = thrown(fn);
  expect(isInvalidOptionError(error)).toBe(true);
  return error as InvalidOptionError;
}

/** A deterministic Fisher–Yates shuffle (an LCG seeded by `seed`), for order-independence tests. */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

export { seededRandom } from './random.js';

/** Retries `check` (which throws until satisfied) every 25 ms for up to `limitMs` of real time. */
export async function until(check: () => void | Promise<void>, limitMs: number): Promise<void> {
  const deadline = performance.now() + limitMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

/** Resolves with `promise`, or rejects if it takes longer than `ms` (a hang becomes a failure). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`${what} did not settle within ${ms} ms`));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
