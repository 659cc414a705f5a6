/**
 * Errors thrown by `keel/resilience`. Each has a stable `code`, an explicit `name` and the
 * evidence of what happened; `isXError()` guards survive duplicate installs.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode } from '../core/index.js';

/** Error code of {@link TimeoutError}. */
export const TIMEOUT = 'KEEL_TIMEOUT';
/** Error code of {@link BulkheadRejectedError}. */
export const BULKHEAD_REJECTED = 'KEEL_BULKHEAD_REJECTED';
/** Error code of {@link ResilientCallError}. */
export const CALL_FAILED = 'KEEL_CALL_FAILED';

/**
 * A call ran past a `timeout()` policy's `ms`. It is the reason the call's signal was aborted
 * with, and (strategy `aggressive`) what the call rejects with at the deadline.
 */
export class TimeoutError extends KeelError {
  override readonly name: string = 'TimeoutError';
  declare readonly code: typeof TIMEOUT;
  /** The timeout exceeded (ms). */
  readonly timeoutMs: number;
  /** How the timeout acted: abort the signal only, or also reject at once. */
  readonly strategy: 'cooperative' | 'aggressive';

  constructor(timeoutMs: number, strategy: 'cooperative' | 'aggressive') {
    super(TIMEOUT, `call timed out after ${timeoutMs} ms (${strategy} timeout)`);
    this.timeoutMs = timeoutMs;
    this.strategy = strategy;
  }
}

/** True when `value` is a {@link TimeoutError} from any copy of Keel. */
export function isTimeoutError(value: unknown): value is TimeoutError {
  return hasKeelCode<TimeoutError>(value, TIMEOUT);
}

/** Why a bulkhead turned a call away. */
export type BulkheadRejection = 'full' | 'queue-timeout';

/**
 * A `bulkhead()` turned the call away without running it: every slot and queue place was taken
 * (`full`), or the call waited `queueTimeoutMs` in the queue (`queue-timeout`).
 */
export class BulkheadRejectedError extends KeelError {
  override readonly name: string = 'BulkheadRejectedError';
  declare readonly code: typeof BULKHEAD_REJECTED;
  /** Why the call was turned away. */
  readonly reason: BulkheadRejection;
  /** The bulkhead's `maxConcurrent`. */
  readonly maxConcurrent: number;
  /** The bulkhead's `maxQueue`. */
  readonly maxQueue: number;

  constructor(reason: BulkheadRejection, maxConcurrent: number, maxQueue: number) {
    super(
      BULKHEAD_REJECTED,
      reason === 'full'
        ? `bulkhead full: ${maxConcurrent} calls running and ${maxQueue} queued`
        : `bulkhead queue timeout: no slot of ${maxConcurrent} came free in time`,
    );
    this.reason = reason;
    this.maxConcurrent = maxConcurrent;
    this.maxQueue = maxQueue;
  }
}

/** True when `value` is a {@link BulkheadRejectedError} from any copy of Keel. */
export function isBulkheadRejectedError(value: unknown): value is BulkheadRejectedError {
  return hasKeelCode<BulkheadRejectedError>(value, BULKHEAD_REJECTED);
}

/** One attempt of a {@link keel/resilience!ResilientCaller} call, in the order they started. */
export interface TriedEndpoint {
  /** The endpoint's id. */
  readonly id: string;
  /**
   * `success`; `failure` (the call failed or timed out); `rejected` (its breaker was open, so
   * nothing was sent); `aborted` (lost a hedge race or the caller gave up).
   */
  readonly outcome: 'success' | 'failure' | 'rejected' | 'aborted';
  /** Whether it was a hedge (a backup request started while another attempt ran). */
  readonly hedge: boolean;
  /** How long it ran (ms, on the caller's clock); 0 for `rejected`. */
  readonly latencyMs: number;
}

/**
 * A `ResilientCaller` call failed: every attempt it was allowed failed, or there was nothing
 * to call. `cause` is the last attempt's error (a `NoEndpointError` or `BreakerOpenError` when
 * nothing could be called); `tried` lists every endpoint tried and how it went.
 */
export class ResilientCallError extends KeelError {
  override readonly name: string = 'ResilientCallError';
  declare readonly code: typeof CALL_FAILED;
  /** The attempts, in the order they started. */
  readonly tried: readonly TriedEndpoint[];
  /** Why no further attempt was made. */
  readonly stoppedBy:
    | 'not-idempotent'
    | 'max-attempts'
    | 'budget'
    | 'not-retryable'
    | 'no-endpoint'
    | 'breakers-open'
    | 'pushback';

  constructor(
    tried: readonly TriedEndpoint[],
    stoppedBy: ResilientCallError['stoppedBy'],
    cause: unknown,
  ) {
    const ids = tried.map((t) => `${t.id}:${t.outcome}`).join(', ');
    super(
      CALL_FAILED,
      `call failed after ${tried.length} attempt${tried.length === 1 ? '' : 's'} ` +
        `(${ids === '' ? 'none' : ids}); stopped: ${stoppedBy}`,
      { cause },
    );
    this.tried = tried;
    this.stoppedBy = stoppedBy;
  }
}

/** True when `value` is a {@link ResilientCallError} from any copy of Keel. */
export function isResilientCallError(value: unknown): value is ResilientCallError {
  return hasKeelCode<ResilientCallError>(value, CALL_FAILED);
}

/** Error code of {@link HedgeLostError}. */
export const HEDGE_LOST = 'KEEL_HEDGE_LOST';

/**
 * The reason a hedged attempt's signal is aborted with when another attempt of the same call
 * won (or the call ended): the attempt's result is no longer wanted.
 */
export class HedgeLostError extends KeelError {
  override readonly name: string = 'HedgeLostError';
  declare readonly code: typeof HEDGE_LOST;
  constructor() {
    super(HEDGE_LOST, 'another attempt of this hedged call settled it first');
  }
}

/** True when `value` is a {@link HedgeLostError} from any copy of Keel. */
export function isHedgeLostError(value: unknown): value is HedgeLostError {
  return hasKeelCode<HedgeLostError>(value, HEDGE_LOST);
}
