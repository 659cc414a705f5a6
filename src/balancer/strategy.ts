/**
 * The contract between the balancer (endpoint list, health, leases) and a pick strategy (the
 * algorithm). Strategies are plain objects over plain data; they never see a Redis client, timers or
 * the caller's options.
 *
 * @packageDocumentation
 */
import type { EndpointState } from './state.js';

/**
 * What a strategy may ask while picking. One context object per balancer, reused for every
 * pick: nothing here allocates.
 */
export interface PickContext<T = unknown> {
  /**
   * Increments whenever the set of usable endpoints or any effective weight may have changed
   * (update, ejection, return, a slow-start step, panic mode switching). Strategies that
   * precompute tables compare it with the version they built for.
   */
  readonly version: number;
  /** Uniform random number in [0, 1) from the balancer's injected RNG. */
  random(): number;
  /**
   * A uniform random integer in [0, n) from the same RNG. Prefer it on hot paths: an integer
   * result stays unboxed, while a fractional number returned from a call is a heap allocation.
   */
  randomIndex(n: number): number;
  /** Whether an endpoint may be picked now (not ejected — unless in panic — nor excluded). */
  usable(state: EndpointState<T>): boolean;
  /** The endpoint's weight after slow start (> 0). */
  weightOf(state: EndpointState<T>): number;
  /**
   * The endpoint's latency estimate now (ms): its peak-sensitive EWMA decayed for the time
   * since the last sample, or `undefined` before its first sample.
   */
  latencyOf(state: EndpointState<T>): number | undefined;
  /** The request key for sticky strategies, if the caller gave one. */
  readonly key: string | Uint8Array | undefined;
}

/**
 * A pick algorithm. The balancer calls `reset` whenever the endpoint list changes and `pick`
 * for every pick.
 */
export interface Strategy<T = unknown> {
  /** Name shown in stats and errors, e.g. `round-robin`. */
  readonly name: string;
  /**
   * The endpoint list changed. `states` is the new list in the caller's order; an endpoint that
   * stayed keeps its state object (and so its counters and SWRR `current`). All or nothing:
   * build the new state, then swap, so that a throw leaves the strategy on the old list (the
   * balancer then keeps the old list too).
   */
  reset(states: readonly EndpointState<T>[]): void;
  /**
   * Optional: an endpoint's `inFlight` just changed (a call started or ended). Strategies that
   * keep endpoints ordered by load update their order here instead of scanning on every pick.
   * Called only for endpoints in the list of the last `reset`.
   */
  loadChanged?(state: EndpointState<T>): void;
  /** Picks a usable endpoint, or `undefined` when none is usable. Must not allocate. */
  pick(ctx: PickContext<T>): EndpointState<T> | undefined;
  /** Whether the strategy uses in-flight counts or latency (then `acquire()` matters). */
  readonly loadAware: boolean;
}
