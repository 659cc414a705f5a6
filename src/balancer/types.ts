/**
 * Public types of `keel/balancer`.
 *
 * @packageDocumentation
 */
import type { NodeSpec, RingNode } from '../hashring/types.js';

/**
 * An endpoint as the caller describes it (a service instance): `{ id, weight?, zone?, data? }`,
 * the same shape `keel/hashring` takes for nodes, so one list can feed both.
 */
export type EndpointSpec<T = unknown> = NodeSpec<T>;

/** An endpoint as the balancer hands it back: resolved and frozen. */
export type Endpoint<T = unknown> = RingNode<T>;

/** How a call went, reported through {@link Lease.done}. */
export interface Outcome {
  /** Whether the call succeeded. Failures feed outlier ejection. */
  readonly ok: boolean;
  /** How long the call took, in milliseconds; feeds latency-aware strategies. */
  readonly latencyMs?: number | undefined;
  /**
   * The caller abandoned the call (it aborted, or a hedged attempt lost the race): the lease is
   * released without counting for or against the endpoint's health — `ok` is ignored. A
   * `latencyMs` given with it is how long the call had run, a lower bound on its latency: it
   * raises the endpoint's latency estimate when above it and is ignored otherwise.
   * @defaultValue false
   */
  readonly cancelled?: boolean | undefined;
}

/** Options of {@link keel/balancer!LoadBalancer.run}. */
export interface RunOptions extends PickOptions {
  /**
   * Aborts the call: `fn` gets it, `run` rejects with `signal.reason` as soon as it aborts (even
   * if `fn` ignores it), and the lease is released as cancelled, not as a failure.
   */
  readonly signal?: AbortSignal | undefined;
}

/**
 * One call in flight on an endpoint, from {@link keel/balancer!LoadBalancer.acquire}. Call
 * `done()` exactly once when the call ends (later calls are ignored). A lease that is never
 * finished is expired once it is older than `leaseTimeoutMs` — at the next `acquire()` or
 * `stats()` — and counted as a failure, so a forgotten lease cannot hold an in-flight count
 * forever.
 */
export interface Lease<T = unknown> {
  /** The endpoint picked for this call. */
  readonly endpoint: Endpoint<T>;
  /** Reports the outcome and releases the in-flight count. Idempotent. */
  done(outcome: Outcome): void;
}

/** Options of a single pick. */
export interface PickOptions {
  /** Request key for sticky strategies (consistent hashing). Ignored by the others. */
  readonly key?: string | Uint8Array | undefined;
  /**
   * Ids to avoid, e.g. the endpoints a retry already tried. Honoured when another usable
   * endpoint exists; otherwise ignored rather than returning nothing. Must be a real `Set`
   * (read with `Set.prototype.has` itself, so nothing can change its answer mid-pick).
   */
  readonly exclude?: ReadonlySet<string> | undefined;
}

/** Observable state of one endpoint, for metrics and debugging. */
export interface EndpointStats {
  /** The endpoint's id. */
  readonly id: string;
  /** Its configured weight. */
  readonly weight: number;
  /** Weight after slow start: what the strategy uses now. */
  readonly effectiveWeight: number;
  /** Calls started and not yet finished (or expired). */
  readonly inFlight: number;
  /** Peak-EWMA latency estimate in ms (0 before the first sample). */
  readonly latencyEwmaMs: number;
  /** Failures since the last success or ejection (either resets it). */
  readonly consecutiveFailures: number;
  /** Clock time (ms) until which the endpoint is ejected, or `undefined` when it is not. */
  readonly ejectedUntil: number | undefined;
  /** `ejectedUntil` as wall-clock epoch ms, for dashboards. */
  readonly ejectedUntilTime: number | undefined;
  /** Ejections so far; each ejection lasts longer (base × this, up to the maximum). */
  readonly timesEjected: number;
  /** Times it was picked. */
  readonly picks: number;
  /** Calls reported successful. */
  readonly successes: number;
  /** Calls reported failed (expired leases included). */
  readonly failures: number;
}

/** A change of an endpoint's health, from `onHealthChange`. */
export interface HealthChange {
  /** The endpoint's id. */
  readonly id: string;
  /** `ejected` (taken out of rotation by outlier ejection) or `returned` (back in it). */
  readonly state: 'ejected' | 'returned';
  /** For `ejected`: when it may return (clock ms). */
  readonly until?: number;
  /** For `ejected`: when it may return, wall-clock epoch ms. */
  readonly untilTime?: number;
  /** Wall-clock time of the change (epoch ms). */
  readonly time: number;
}
