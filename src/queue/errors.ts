/**
 * Errors thrown (or handed to handlers and listeners) by `keel/queue`. Each has a stable `code`
 * and an explicit `name`, and carries its evidence.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode, isOutOfMemoryError, redisAddress } from '../core/index.js';

/** Error code of {@link QueueClosedError}. */
export const QUEUE_CLOSED = 'KEEL_QUEUE_CLOSED';
/** Error code of {@link QueueRedisError}. */
export const QUEUE_REDIS = 'KEEL_QUEUE_REDIS';
/** Error code of {@link LeaseExpiredError}. */
export const LEASE_EXPIRED = 'KEEL_QUEUE_LEASE_EXPIRED';
/** Error code of {@link InvalidMessageError}. */
export const INVALID_MESSAGE = 'KEEL_QUEUE_INVALID_MESSAGE';
/** Error code of {@link PayloadError}. */
export const PAYLOAD = 'KEEL_QUEUE_PAYLOAD';

/** A producer or consumer was used after `close()`. */
export class QueueClosedError extends KeelError {
  override readonly name: string = 'QueueClosedError';
  declare readonly code: typeof QUEUE_CLOSED;
  constructor(what: string) {
    super(QUEUE_CLOSED, `${what} is closed`);
  }
}

/**
 * What went wrong talking to Redis: `refused` (nothing listens), `timed-out`, `out-of-memory`
 * (Redis reached `maxmemory` under `noeviction` and refused a write: nothing was written — try
 * again once memory is freed), `script-error` (Redis answered the script with an error) or
 * `failed` (anything else the client reported).
 */
export type QueueRedisFailure =
  'refused' | 'timed-out' | 'out-of-memory' | 'script-error' | 'failed';

/** A Redis call of the queue failed. Names the node and what happened; `cause` is the client's error. */
export class QueueRedisError extends KeelError {
  override readonly name: string = 'QueueRedisError';
  declare readonly code: typeof QUEUE_REDIS;
  /** `host:port` of the node (or `cluster via …`), `unknown` when the client does not say. */
  readonly address: string;
  /** What the queue was doing, e.g. `send orders`. */
  readonly operation: string;
  /** Which kind of failure. */
  readonly failure: QueueRedisFailure;
  constructor(operation: string, client: unknown, cause: unknown) {
    const address = redisAddress(client) ?? 'unknown';
    const text = cause instanceof Error ? cause.message : String(cause);
    const failure: QueueRedisFailure = /ECONNREFUSED/.test(text)
      ? 'refused'
      : /timed? ?out|ETIMEDOUT/i.test(text)
        ? 'timed-out'
        : isOutOfMemoryError(text)
          ? 'out-of-memory'
          : /^(ERR|WRONGTYPE|NOSCRIPT|BUSY|CROSSSLOT)|script/i.test(text)
            ? 'script-error'
            : 'failed';
    super(QUEUE_REDIS, `${operation} on ${address}: ${failure}: ${text}`, { cause });
    this.address = address;
    this.operation = operation;
    this.failure = failure;
  }
}

/**
 * The message's visibility timeout (or, in per-key ordered mode, the partition lease) ran out
 * while the handler was still running: the handler's `signal` aborts with this reason, and the
 * message may be delivered to another consumer. An ack that arrives after another consumer
 * reclaimed the message is refused.
 */
export class LeaseExpiredError extends KeelError {
  override readonly name: string = 'LeaseExpiredError';
  declare readonly code: typeof LEASE_EXPIRED;
  /** The Keel message id. */
  readonly messageId: string;
  constructor(messageId: string, why: string) {
    super(LEASE_EXPIRED, `message ${messageId}: ${why}`);
    this.messageId = messageId;
  }
}

/**
 * A stream entry that is not a Keel message (foreign data written by something else): it is
 * moved to the dead-letter stream with this reason, never handed to the handler. Also what
 * `Consumer.onError` reports for a pending message that another program deleted from the stream
 * (`XDEL`, `XTRIM`) before it was acked: nothing is left to deliver or dead-letter.
 */
export class InvalidMessageError extends KeelError {
  override readonly name: string = 'InvalidMessageError';
  declare readonly code: typeof INVALID_MESSAGE;
  /** The stream entry id. */
  readonly entryId: string;
  /** Why it is not a Keel message. */
  readonly reason: string;
  constructor(entryId: string, reason: string) {
    super(INVALID_MESSAGE, `stream entry ${entryId} is not a Keel message: ${reason}`);
    this.entryId = entryId;
    this.reason = reason;
  }
}

/** A payload or header set that cannot be sent (not JSON-serialisable, or too large). */
export class PayloadError extends KeelError {
  override readonly name: string = 'PayloadError';
  declare readonly code: typeof PAYLOAD;
  constructor(topic: string, reason: string, cause?: unknown) {
    super(PAYLOAD, `send ${topic}: ${reason}`, cause === undefined ? undefined : { cause });
  }
}

/** True for a {@link QueueClosedError} from any copy of Keel. */
export const isQueueClosedError = (v: unknown): v is QueueClosedError =>
  hasKeelCode<QueueClosedError>(v, QUEUE_CLOSED);
/** True for a {@link QueueRedisError} from any copy of Keel. */
export const isQueueRedisError = (v: unknown): v is QueueRedisError =>
  hasKeelCode<QueueRedisError>(v, QUEUE_REDIS);
/** True for a {@link LeaseExpiredError} from any copy of Keel. */
export const isLeaseExpiredError = (v: unknown): v is LeaseExpiredError =>
  hasKeelCode<LeaseExpiredError>(v, LEASE_EXPIRED);
/** True for an {@link InvalidMessageError} from any copy of Keel. */
export const isInvalidMessageError = (v: unknown): v is InvalidMessageError =>
  hasKeelCode<InvalidMessageError>(v, INVALID_MESSAGE);
/** True for a {@link PayloadError} from any copy of Keel. */
export const isPayloadError = (v: unknown): v is PayloadError =>
  hasKeelCode<PayloadError>(v, PAYLOAD);
