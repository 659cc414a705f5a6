/**
 * Errors thrown by `keel/breaker`.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode } from '../core/index.js';
import type { BreakerState } from './types.js';

/** Error code of {@link BreakerOpenError}. */
export const BREAKER_OPEN = 'KEEL_BREAKER_OPEN';
/** Error code of {@link BreakerTimeoutError}. */
export const BREAKER_TIMEOUT = 'KEEL_BREAKER_TIMEOUT';

/**
 * A call was rejected without running because the breaker does not let calls through now.
 * `retryAfterMs` says when it may (0 when unknown, e.g. half-open with no free trial).
 */
export class BreakerOpenError extends KeelError {
  override readonly name: string = 'BreakerOpenError';
  declare readonly code: typeof BREAKER_OPEN;
  /** The breaker's name. */
  readonly breaker: string;
  /** The state that rejected the call. */
  readonly state: BreakerState;
  /**
   * Whole milliseconds until the breaker lets a trial call through, as far as it knows:
   * rounded up, so waiting this long finds the open duration over.
   */
  readonly retryAfterMs: number;

  constructor(breaker: string, state: BreakerState, retryAfterMs: number) {
    super(
      BREAKER_OPEN,
      `circuit breaker "${breaker}" is ${state}; call rejected${retryAfterMs > 0 ? `, retry after ${Math.ceil(retryAfterMs)} ms` : ''}`,
    );
    this.breaker = breaker;
    this.state = state;
    this.retryAfterMs = Math.ceil(retryAfterMs);
  }
}

/** True when `value` is a {@link BreakerOpenError} from any copy of Keel. */
export function isBreakerOpenError(value: unknown): value is BreakerOpenError {
  return hasKeelCode<BreakerOpenError>(value, BREAKER_OPEN);
}

/** A call ran past its `timeoutMs`; its signal was aborted with this error. Counts as a failure. */
export class BreakerTimeoutError extends KeelError {
  override readonly name: string = 'BreakerTimeoutError';
  declare readonly code: typeof BREAKER_TIMEOUT;
  /** The breaker's name. */
  readonly breaker: string;
  /** The timeout the call exceeded (ms). */
  readonly timeoutMs: number;
  constructor(breaker: string, timeoutMs: number) {
    super(
      BREAKER_TIMEOUT,
      `call through circuit breaker "${breaker}" timed out after ${timeoutMs} ms`,
    );
    this.breaker = breaker;
    this.timeoutMs = timeoutMs;
  }
}

/** True when `value` is a {@link BreakerTimeoutError} from any copy of Keel. */
export function isBreakerTimeoutError(value: unknown): value is BreakerTimeoutError {
  return hasKeelCode<BreakerTimeoutError>(value, BREAKER_TIMEOUT);
}
