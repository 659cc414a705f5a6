/**
 * `keel/resilience` — resilient calls: retry with budgets and pushback, timeouts, bulkheads,
 * hedged requests, fallbacks and pipelines of them; and endpoint-aware calls over a
 * `keel/balancer` balancer with a breaker per endpoint.
 *
 * @module keel/resilience
 */
export { retry, retryChannel } from './retry.js';
export type { RetryOptions, RetryOn, ErrorFilter, ErrorClass, RetryEvent } from './retry.js';
export type { BackoffOptions } from './backoff.js';
export { RetryBudget } from './budget.js';
export type { RetryBudgetOptions } from './budget.js';
export { timeout } from './timeout.js';
export type { TimeoutOptions } from './timeout.js';
export { bulkhead } from './bulkhead.js';
export type { BulkheadOptions, BulkheadPolicy } from './bulkhead.js';
export { hedge } from './hedge.js';
export type { HedgeOptions } from './hedge.js';
export { fallback } from './fallback.js';
export type { FallbackOptions } from './fallback.js';
export { pipeline } from './pipeline.js';
export type { PolicyLike } from './pipeline.js';
export type { Policy, PolicyCallOptions, Attempt } from './policy.js';
export {
  TimeoutError,
  BulkheadRejectedError,
  HedgeLostError,
  ResilientCallError,
  isTimeoutError,
  isBulkheadRejectedError,
  isHedgeLostError,
  isResilientCallError,
  TIMEOUT,
  BULKHEAD_REJECTED,
  HEDGE_LOST,
  CALL_FAILED,
} from './errors.js';
export type { BulkheadRejection, TriedEndpoint } from './errors.js';
export { resilientCall, ResilientCaller } from './endpoint.js';
export type { ResilientCallOptions, ResilientCallCallOptions, CallReport } from './endpoint.js';
