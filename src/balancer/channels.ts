/**
 * The balancer's `node:diagnostics_channel` channels (issue 15; naming in core/diagnostics.ts):
 *
 * - `keel:balancer:endpoint-ejected` / `keel:balancer:endpoint-returned` — outlier ejection took
 *   an endpoint out of rotation / it came back ({@link EndpointHealthMessage});
 * - `keel:balancer:panic-entered` / `keel:balancer:panic-left` — too few endpoints usable, so
 *   ejections are ignored / enough again ({@link PanicMessage}, Envoy's `lb_healthy_panic`);
 * - `keel:balancer:pick` — every endpoint handed out by `pick()` or `acquire()`
 *   ({@link PickMessage}). A pick is the hot path: with nobody subscribed it costs one
 *   `hasSubscribers` read.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { KeelChannel } from '../core/index.js';

/** Published on `keel:balancer:endpoint-ejected` and `keel:balancer:endpoint-returned`. */
export interface EndpointHealthMessage {
  /** The balancer's name (`LoadBalancerOptions.name`, the service for a discovery balancer). */
  readonly balancer: string | undefined;
  /** The endpoint's id. */
  readonly id: string;
  /** For an ejection: when it may return, on the balancer's (monotonic) clock, ms. */
  readonly until?: number;
  /** For an ejection: when it may return, wall-clock epoch ms. */
  readonly untilTime?: number;
  /** For an ejection: how many times this endpoint has been ejected, this one included. */
  readonly timesEjected?: number;
  /** Endpoints ejected now, after this change. */
  readonly ejected: number;
  /** Endpoints in the list. */
  readonly total: number;
  /** Wall-clock time of the change (epoch ms). */
  readonly time: number;
}

/** Published on `keel:balancer:panic-entered` and `keel:balancer:panic-left`. */
export interface PanicMessage {
  /** The balancer's name. */
  readonly balancer: string | undefined;
  /** Endpoints not ejected. */
  readonly usable: number;
  /** Endpoints in the list. */
  readonly total: number;
  /** The `panicThresholdPercent` option. */
  readonly thresholdPercent: number;
  /** Wall-clock time of the change (epoch ms). */
  readonly time: number;
}

/** Published on `keel:balancer:pick`. */
export interface PickMessage {
  /** The balancer's name. */
  readonly balancer: string | undefined;
  /** The strategy's name, e.g. `round-robin`. */
  readonly strategy: string;
  /** The endpoint picked. */
  readonly id: string;
  /** Its calls in flight before this pick. */
  readonly inFlight: number;
  /** Wall-clock time of the pick (epoch ms). */
  readonly time: number;
}

/** @internal */
export const ejectedChannel = new KeelChannel<EndpointHealthMessage>(
  'balancer',
  'endpoint-ejected',
);
/** @internal */
export const returnedChannel = new KeelChannel<EndpointHealthMessage>(
  'balancer',
  'endpoint-returned',
);
/** @internal */
export const panicEnteredChannel = new KeelChannel<PanicMessage>('balancer', 'panic-entered');
/** @internal */
export const panicLeftChannel = new KeelChannel<PanicMessage>('balancer', 'panic-left');
/** @internal */
export const pickChannel = new KeelChannel<PickMessage>('balancer', 'pick');
