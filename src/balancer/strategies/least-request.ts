/**
 * Least request by two random choices, Envoy's "weighted least request" load balancer: of two
 * random usable endpoints, take the one with the higher `weight / (active + 1)^bias` — i.e. the
 * lower `(active + 1)^bias / weight`. `activeRequestBias` (Envoy's `active_request_bias`) sets
 * how much in-flight requests count against weight: 1 is the default, 0 ignores them.
 *
 * @packageDocumentation
 */
import { numberOption, resolveOptions } from '../../core/index.js';
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';
import { compareLoads, pickOfTwo, type LoadComparator } from './two-choices.js';

/** Options of {@link leastRequest}. */
export interface LeastRequestOptions {
  /** Exponent of `(active + 1)` in the load; 0 makes it weighted random between the two. @defaultValue 1 */
  readonly activeRequestBias?: number;
}

class LeastRequest<T> implements Strategy<T> {
  readonly name = 'least-request';
  readonly loadAware = true;
  #states: readonly EndpointState<T>[] = [];
  readonly #compare: LoadComparator<T>;

  constructor(bias: number) {
    this.#compare =
      bias === 1
        ? (a, b) =>
            compareLoads((a.inFlight + 1) / a.effectiveWeight, (b.inFlight + 1) / b.effectiveWeight)
        : (a, b) =>
            compareLoads(
              (a.inFlight + 1) ** bias / a.effectiveWeight,
              (b.inFlight + 1) ** bias / b.effectiveWeight,
            );
  }

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    return pickOfTwo(this.#states, ctx, this.#compare);
  }
}

/**
 * Power-of-two-choices least request (Envoy's weighted least request). O(1) per pick, no
 * allocation. Needs `acquire()` / `lease.done()` so in-flight counts are known.
 *
 * @example
 * ```ts
 * import { LoadBalancer, leastRequest } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({
 *   strategy: leastRequest({ activeRequestBias: 1 }),
 *   endpoints: [{ id: 'a' }, { id: 'b' }, { id: 'c', weight: 2 }],
 * });
 * const lease = balancer.acquire();
 * lease?.done({ ok: true, latencyMs: 12 });
 * ```
 */
export function leastRequest<T = unknown>(options: LeastRequestOptions = {}): Strategy<T> {
  const { activeRequestBias } = resolveOptions('leastRequest', options, {
    activeRequestBias: numberOption({ min: 0, max: 10, default: 1 }),
  });
  return new LeastRequest<T>(activeRequestBias);
}

/**
 * `p2c()` — "power of two choices" (Mitzenmacher, "The Power of Two Choices in Randomized Load
 * Balancing", 2001), the name most people look for. It is {@link leastRequest} under another
 * name: the same factory, the same options and the same strategy (`name: 'least-request'`).
 *
 * @example
 * ```ts
 * import { LoadBalancer, p2c } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({ strategy: p2c(), endpoints: [{ id: 'a' }, { id: 'b' }] });
 * ```
 */
export const p2c: typeof leastRequest = leastRequest;
