/**
 * The power of two random choices (Mitzenmacher, "The Power of Two Choices in Randomized Load
 * Balancing", 2001): sample two distinct usable endpoints at random and take the less loaded.
 * Nearly as good as scanning for the least loaded, at O(1) per pick, and without the herd
 * behaviour of every client picking the same "best" endpoint.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext } from '../strategy.js';

/** Draws before an unusable sample makes the pick fall back to a scan. */
const MAX_DRAWS = 8;

/**
 * Compares two endpoints' loads: negative when `a` is less loaded, positive when `b` is, 0 for
 * a tie. It returns a small integer rather than the loads themselves because an integer result
 * stays unboxed, while a fractional number returned from a call is a heap allocation.
 */
export type LoadComparator<T> = (a: EndpointState<T>, b: EndpointState<T>) => number;

/** Sign of `x - y` as -1, 0 or 1. */
export function compareLoads(x: number, y: number): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Samples two distinct usable endpoints and returns the less loaded by `compare`. Ties are
 * broken at random. With one usable endpoint, returns it; with none, `undefined`.
 */
export function pickOfTwo<T>(
  states: readonly EndpointState<T>[],
  ctx: PickContext<T>,
  compare: LoadComparator<T>,
): EndpointState<T> | undefined {
  const n = states.length;
  if (n === 0) return undefined;
  if (n === 1) {
    const only = states[0] as EndpointState<T>;
    return ctx.usable(only) ? only : undefined;
  }
  for (let draw = 0; draw < MAX_DRAWS; draw++) {
    const i = ctx.randomIndex(n);
    let j = ctx.randomIndex(n - 1);
    if (j >= i) j++; // two distinct indices, each pair equally likely
    const a = states[i] as EndpointState<T>;
    const b = states[j] as EndpointState<T>;
    const aUsable = ctx.usable(a);
    const bUsable = ctx.usable(b);
    if (aUsable && bUsable) return better(a, b, compare, ctx);
    if (aUsable !== bUsable && usableCount(states, ctx, 2) < 2) return aUsable ? a : b;
  }
  // Many unusable endpoints: two uniform samples among the usable ones by reservoir scan.
  let first: EndpointState<T> | undefined;
  let second: EndpointState<T> | undefined;
  let seen = 0;
  for (const state of states) {
    if (!ctx.usable(state)) continue;
    seen++;
    if (seen === 1) first = state;
    else if (seen === 2) second = state;
    else {
      // Reservoir of size two (Vitter's algorithm R).
      const slot = ctx.randomIndex(seen);
      if (slot === 0) first = state;
      else if (slot === 1) second = state;
    }
  }
  if (first === undefined) return undefined;
  if (second === undefined) return first;
  return better(first, second, compare, ctx);
}

function better<T>(
  a: EndpointState<T>,
  b: EndpointState<T>,
  compare: LoadComparator<T>,
  ctx: PickContext<T>,
): EndpointState<T> {
  const order = compare(a, b);
  if (order < 0) return a;
  if (order > 0) return b;
  return ctx.randomIndex(2) === 0 ? a : b;
}

/** Counts usable endpoints, stopping at `limit`. */
function usableCount<T>(
  states: readonly EndpointState<T>[],
  ctx: PickContext<T>,
  limit: number,
): number {
  let count = 0;
  for (const state of states) {
    if (ctx.usable(state) && ++count >= limit) break;
  }
  return count;
}
