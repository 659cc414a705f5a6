/**
 * The breaker's `node:diagnostics_channel` channels (issue 15; naming in core/diagnostics.ts):
 *
 * - `keel:breaker:state-change` — {@link BreakerStateChangeMessage}, every change of state;
 * - `keel:breaker:call-rejected` — {@link BreakerCallRejectedMessage}, every rejected call;
 * - `tracing:keel:breaker:execute:*` — `execute()` as a `TracingChannel` operation, only for
 *   breakers made with `traceExecute: true` (tracing every call of every breaker would put a
 *   closure and a context object on the hot path of a service that only wanted state changes).
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { KeelChannel, operationChannel } from '../core/index.js';
import type { BreakerState } from './types.js';

/** Published on `keel:breaker:state-change`. */
export interface BreakerStateChangeMessage {
  /** The breaker's name. */
  readonly name: string;
  /** The state left. */
  readonly from: BreakerState;
  /** The state entered. */
  readonly to: BreakerState;
  /** Why, in a few words. */
  readonly reason: string;
  /** Wall-clock time of the change (epoch ms). */
  readonly time: number;
}

/** Published on `keel:breaker:call-rejected`. */
export interface BreakerCallRejectedMessage {
  /** The breaker's name. */
  readonly name: string;
  /** The state that rejected the call. */
  readonly state: BreakerState;
  /** Whole milliseconds until a trial call may be let through. */
  readonly retryAfterMs: number;
  /** Wall-clock time of the rejection (epoch ms). */
  readonly time: number;
}

/**
 * The context of a traced `execute()` (`tracing:keel:breaker:execute:start` … `asyncEnd`):
 * Node adds `result` or `error` to it when the call settles.
 */
export interface BreakerExecuteContext {
  /** The breaker's name. */
  readonly name: string;
  /** The state when the call arrived. */
  readonly state: BreakerState;
  /** Wall-clock time the call arrived (epoch ms). */
  readonly time: number;
  /** Set by Node: the call's value. */
  result?: unknown;
  /** Set by Node: the call's error (a rejection by the breaker included). */
  error?: unknown;
}

/** @internal */
export const stateChangeChannel = new KeelChannel<BreakerStateChangeMessage>(
  'breaker',
  'state-change',
);
/** @internal */
export const callRejectedChannel = new KeelChannel<BreakerCallRejectedMessage>(
  'breaker',
  'call-rejected',
);
/** @internal */
export const executeChannel = operationChannel<BreakerExecuteContext>('breaker', 'execute');
