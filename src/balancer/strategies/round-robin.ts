/**
 * Round-robin: each usable endpoint in turn. Each balancer starts at a random offset, so many
 * clients started together do not all send their first request to the same endpoint.
 *
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';

class RoundRobin<T> implements Strategy<T> {
  readonly name = 'round-robin';
  readonly loadAware = false;
  #states: readonly EndpointState<T>[] = [];
  /** Index of the next endpoint to try; -1 until the first pick draws the random offset. */
  #next = -1;
  #last: EndpointState<T> | undefined;

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
    // Continue after the endpoint picked last, wherever it now is — not from the start (the
    // rotation-reset bug that overloads the first endpoints after every update).
    if (this.#last !== undefined) {
      const at = states.indexOf(this.#last);
      this.#next = at === -1 ? Math.min(this.#next, states.length) : at + 1;
    }
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    const states = this.#states;
    const n = states.length;
    if (n === 0) return undefined;
    if (this.#next < 0) this.#next = ctx.randomIndex(n);
    // Compare-and-wrap instead of `%`: an integer division costs more than the rest of a pick.
    let index = this.#next >= n ? 0 : this.#next;
    for (let tried = 0; tried < n; tried++) {
      const state = states[index] as EndpointState<T>;
      index = index + 1 === n ? 0 : index + 1;
      if (ctx.usable(state)) {
        this.#next = index;
        this.#last = state;
        return state;
      }
    }
    return undefined;
  }
}

/**
 * Round-robin over the usable endpoints, ignoring weights. O(1) per pick while endpoints are
 * usable; skipping ejected ones costs one check each.
 *
 * @example
 * ```ts
 * import { LoadBalancer, roundRobin } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({ strategy: roundRobin(), endpoints: [{ id: 'a' }, { id: 'b' }] });
 * console.log(balancer.pick()?.id, balancer.pick()?.id); // a b, or b a
 * ```
 */
export function roundRobin<T = unknown>(): Strategy<T> {
  return new RoundRobin<T>();
}
