/**
 * Peak-EWMA latency balancing (Finagle's `p2cPeakEwma`, also Linkerd's default): each
 * endpoint's cost is a peak-sensitive exponentially weighted moving average of its latency —
 * it jumps up to a slow response at once and decays back over `latencyDecayMs` — multiplied by
 * `(in-flight + 1)` and divided by weight; two random usable endpoints are compared and the
 * cheaper one wins. An endpoint with calls in flight but no latency sample yet costs a large
 * penalty, so a new endpoint gets probed by one call, not flooded.
 *
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';
import { compareLoads, pickOfTwo, type LoadComparator } from './two-choices.js';

/** Cost of an unmeasured endpoint with calls in flight (Finagle uses a similarly huge value). */
const PENALTY_MS = 1e9;

class PeakEwma<T> implements Strategy<T> {
  readonly name = 'peak-ewma';
  readonly loadAware = true;
  #states: readonly EndpointState<T>[] = [];
  #ctx: PickContext<T> | undefined;
  readonly #compare: LoadComparator<T> = (a, b) => compareLoads(this.#load(a), this.#load(b));

  #load(state: EndpointState<T>): number {
    const latency = (this.#ctx as PickContext<T>).latencyOf(state);
    const cost = latency === undefined ? (state.inFlight === 0 ? 0 : PENALTY_MS) : latency;
    return (cost * (state.inFlight + 1)) / state.effectiveWeight;
  }

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    this.#ctx = ctx;
    return pickOfTwo(this.#states, ctx, this.#compare);
  }
}

/**
 * Latency-aware picks: peak-EWMA cost × (in-flight + 1), by two random choices. Report
 * latencies through `lease.done({ ok, latencyMs })`; the decay time is the balancer's
 * `latencyDecayMs` option.
 *
 * @example
 * ```ts
 * import { LoadBalancer, peakEwma } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({
 *   strategy: peakEwma(),
 *   latencyDecayMs: 10_000,
 *   endpoints: [{ id: 'payments-1' }, { id: 'payments-2' }],
 * });
 * const lease = balancer.acquire();
 * lease?.done({ ok: true, latencyMs: 35 });
 * ```
 */
export function peakEwma<T = unknown>(): Strategy<T> {
  return new PeakEwma<T>();
}
