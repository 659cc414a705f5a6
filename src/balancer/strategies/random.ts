/**
 * Random and weighted random picks. Weighted random uses Vose's alias method (M. D. Vose, "A
 * linear algorithm for generating random numbers with a given distribution", IEEE TSE 1991):
 * O(n) to build, O(1) per pick — one uniform index, one biased coin.
 *
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';

/** Draws before an unusable endpoint makes the pick fall back to a scan. */
const MAX_DRAWS = 8;

/** Resolution of the alias method's biased coin: integer draws stay unboxed (no allocation). */
const COIN = 2 ** 30;

class UniformRandom<T> implements Strategy<T> {
  readonly name = 'random';
  readonly loadAware = false;
  #states: readonly EndpointState<T>[] = [];

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    const states = this.#states;
    const n = states.length;
    if (n === 0) return undefined;
    for (let draw = 0; draw < MAX_DRAWS; draw++) {
      const state = states[ctx.randomIndex(n)] as EndpointState<T>;
      if (ctx.usable(state)) return state;
    }
    // Many unusable endpoints: pick uniformly among the usable ones by a reservoir scan.
    let chosen: EndpointState<T> | undefined;
    let seen = 0;
    for (const state of states) {
      if (!ctx.usable(state)) continue;
      seen++;
      if (ctx.randomIndex(seen) === 0) chosen = state;
    }
    return chosen;
  }
}

class WeightedRandom<T> implements Strategy<T> {
  readonly name = 'weighted-random';
  readonly loadAware = false;
  #states: readonly EndpointState<T>[] = [];
  /** Per column: the chance of keeping the column rather than its alias, × COIN. */
  #threshold = new Uint32Array(0);
  #alias = new Int32Array(0);
  #builtFor = -1;

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
    this.#builtFor = -1;
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    const states = this.#states;
    const n = states.length;
    if (n === 0) return undefined;
    // Weights change only with the version (slow-start steps); rebuild the table then.
    if (this.#builtFor !== ctx.version) this.#build(ctx.version);
    for (let draw = 0; draw < MAX_DRAWS; draw++) {
      const column = ctx.randomIndex(n);
      const keep = ctx.randomIndex(COIN) < (this.#threshold[column] as number);
      const state = states[keep ? column : (this.#alias[column] as number)] as EndpointState<T>;
      if (ctx.usable(state)) return state;
    }
    // Many unusable endpoints: weighted reservoir scan over the usable ones.
    let chosen: EndpointState<T> | undefined;
    let total = 0;
    for (const state of states) {
      if (!ctx.usable(state)) continue;
      const weight = state.effectiveWeight;
      total += weight;
      if (ctx.random() * total < weight) chosen = state;
    }
    return chosen;
  }

  /** Vose's alias table over every endpoint's effective weight. */
  #build(version: number): void {
    const states = this.#states;
    const n = states.length;
    if (this.#threshold.length !== n) {
      this.#threshold = new Uint32Array(n);
      this.#alias = new Int32Array(n);
    }
    let total = 0;
    for (const state of states) total += state.effectiveWeight;
    const scaled = new Float64Array(n);
    const small: number[] = [];
    const large: number[] = [];
    states.forEach((state, i) => {
      const value = (state.effectiveWeight * n) / total;
      scaled[i] = value;
      (value < 1 ? small : large).push(i);
    });
    while (small.length > 0 && large.length > 0) {
      const s = small.pop() as number;
      const l = large.pop() as number;
      this.#threshold[s] = Math.round((scaled[s] as number) * COIN);
      this.#alias[s] = l;
      const rest = (scaled[l] as number) + (scaled[s] as number) - 1;
      scaled[l] = rest;
      (rest < 1 ? small : large).push(l);
    }
    // Leftovers are 1 up to rounding error.
    for (const i of large) this.#threshold[i] = COIN;
    for (const i of small) this.#threshold[i] = COIN;
    this.#builtFor = version;
  }
}

/**
 * Uniformly random picks over the usable endpoints, ignoring weights.
 *
 * @example
 * ```ts
 * import { LoadBalancer, random } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({ strategy: random(), endpoints: [{ id: 'a' }, { id: 'b' }] });
 * console.log(balancer.pick()?.id);
 * ```
 */
export function random<T = unknown>(): Strategy<T> {
  return new UniformRandom<T>();
}

/**
 * Random picks in proportion to weight (after slow start), O(1) each by the alias method.
 *
 * @example
 * ```ts
 * import { LoadBalancer, weightedRandom } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({
 *   strategy: weightedRandom(),
 *   endpoints: [{ id: 'small', weight: 1 }, { id: 'big', weight: 3 }],
 * });
 * console.log(balancer.pick()?.id); // 'big' three times as often as 'small'
 * ```
 */
export function weightedRandom<T = unknown>(): Strategy<T> {
  return new WeightedRandom<T>();
}
