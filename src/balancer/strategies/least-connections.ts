/**
 * Least connections: the usable endpoint with the fewest calls in flight per unit of weight
 * (nginx's `least_conn`, weighted), ties broken at random so equal endpoints share the load.
 * O(n) per pick.
 *
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';

class LeastConnections<T> implements Strategy<T> {
  readonly name = 'least-connections';
  readonly loadAware = true;
  #states: readonly EndpointState<T>[] = [];

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    let chosen: EndpointState<T> | undefined;
    let best = Infinity;
    let ties = 0;
    for (const state of this.#states) {
      if (!ctx.usable(state)) continue;
      const load = state.inFlight / state.effectiveWeight;
      if (load < best) {
        best = load;
        chosen = state;
        ties = 1;
      } else if (load === best) {
        // Reservoir sampling over the tied minimum: each tied endpoint equally likely.
        ties++;
        if (ctx.randomIndex(ties) === 0) chosen = state;
      }
    }
    return chosen;
  }
}

/**
 * Picks the usable endpoint with the lowest `inFlight / weight`, ties at random. Needs
 * `acquire()` / `lease.done()` so in-flight counts are known.
 *
 * @example
 * ```ts
 * import { LoadBalancer, leastConnections } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({ strategy: leastConnections(), endpoints: [{ id: 'a' }, { id: 'b' }] });
 * const first = balancer.acquire();
 * const second = balancer.acquire(); // the other endpoint: the first has a call in flight
 * console.log(first?.endpoint.id !== second?.endpoint.id); // true
 * first?.done({ ok: true });
 * second?.done({ ok: true });
 * ```
 */
export function leastConnections<T = unknown>(): Strategy<T> {
  return new LeastConnections<T>();
}
