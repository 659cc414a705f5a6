/**
 * Per-endpoint state kept by a balancer across `update()` calls: the object for an id that
 * stays in the list is the same object before and after, so counters, EWMA and rotation
 * survive membership changes (the gRPC-java bug that reset rotations put 3–4× load on the
 * first endpoints after every update).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import type { Endpoint } from './types.js';

/**
 * `EndpointState.ejectedUntil` of an endpoint that is not ejected. Not 0: a clock counts from an
 * arbitrary origin, so an ejection may well end at 0 (it was then lost: announced, still
 * picked, and counted against the cap for ever); no ejection ends at -Infinity.
 */
export const NOT_EJECTED = -Infinity;

/**
 * Mutable state of one endpoint. Strategies read it; only the balancer (and its health layer)
 * writes it. A strategy keeps whatever it needs per endpoint itself, in arrays indexed by
 * `index` (smooth weighted round-robin's `current`, least connections' bucket slot).
 */
export class EndpointState<T = unknown> {
  /** The resolved endpoint (replaced when its weight, zone or data change in an update). */
  endpoint: Endpoint<T>;
  /** Position in the current list, 0 … n−1 (caller order); strategies index arrays with it. */
  index = 0;
  /**
   * Weight after slow start, kept current by the balancer (recomputed whenever the pick
   * context's `version` changes), so strategies read a field instead of calling a function.
   */
  effectiveWeight: number;
  /**
   * Not ejected (or the balancer is in panic mode), kept current by the balancer: the part of
   * `PickContext.usable` that does not depend on the pick's `exclude` option.
   */
  available = true;
  /** Calls started and not yet finished (or expired). */
  inFlight = 0;
  /** Peak-EWMA latency estimate (ms) and the clock time of its last update (-Infinity: no sample). */
  ewmaMs = 0;
  /**
   * Clock time (ms) of the last latency sample, -Infinity before the first (not -1: a clock's
   * origin is arbitrary, so real readings may be negative).
   */
  ewmaAt = -Infinity;
  /** Failures since the last success or ejection. */
  consecutiveFailures = 0;
  /**
   * Clock ms until which the endpoint is ejected; -Infinity when it is not (a clock may count
   * from any origin, 0 and below included).
   */
  ejectedUntil = NOT_EJECTED;
  /** Ejections so far (each lasts longer). */
  timesEjected = 0;
  /** Clock ms from which slow start ramps this endpoint up (added, or back from ejection). */
  warmingSince: number;
  /** Times picked. */
  picks = 0;
  /** Calls reported successful. */
  successes = 0;
  /** Calls reported failed (expired leases included). */
  failures = 0;

  constructor(endpoint: Endpoint<T>, now: number) {
    this.endpoint = endpoint;
    this.effectiveWeight = endpoint.weight;
    this.warmingSince = now;
  }

  /** The endpoint's id. */
  get id(): string {
    return this.endpoint.id;
  }
}
