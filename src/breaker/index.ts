/**
 * `keel/breaker` — circuit breakers that cost almost nothing when healthy and never hang when
 * not: Resilience4j's state model (sliding windows, failure and slow-call rates, half-open
 * trials), computed on access with no background timers.
 *
 * @module keel/breaker
 */
export { CircuitBreaker } from './breaker.js';
export type { CircuitBreakerOptions, ExecuteOptions } from './breaker.js';
export { BreakerRegistry } from './registry.js';
export type { BreakerRegistryMetrics } from './registry.js';
export type {
  BreakerStateChangeMessage,
  BreakerCallRejectedMessage,
  BreakerExecuteContext,
} from './channels.js';
export {
  BreakerOpenError,
  BreakerTimeoutError,
  isBreakerOpenError,
  isBreakerTimeoutError,
  BREAKER_OPEN,
  BREAKER_TIMEOUT,
} from './errors.js';
export type {
  BreakerState,
  BreakerMetrics,
  BreakerPermit,
  BreakerSnapshot,
  CallFinished,
  CallRejected,
  StateChange,
} from './types.js';
