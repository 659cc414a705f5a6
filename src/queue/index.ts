/**
 * `keel/queue`: reliable messaging on Redis Streams — acknowledged after the handler resolves,
 * retried with backoff, reclaimed after a visibility timeout, dead-lettered atomically with the
 * ack, optionally ordered per key across a consumer group, with an idempotent-consumer helper
 * and a transactional outbox.
 *
 * @module keel/queue
 */
export { Queue } from './queue.js';
export type {
  QueueOptions,
  RetentionOptions,
  SendOptions,
  SendItem,
  SendResult,
  DeadLetter,
  ReplayOptions,
  CloseOnSignalsOptions,
} from './queue.js';
export { Consumer } from './consumer.js';
export type {
  ConsumerOptions,
  BackoffOptions,
  Handler,
  Message,
  DeadLetterEvent,
} from './consumer.js';
export { idempotent, hashTagOf } from './idempotent.js';
export type { Effect, IdempotentOptions } from './idempotent.js';
export { Outbox } from './outbox.js';
export type { Transaction, StagedMessage } from './outbox.js';
export type { QueueRedisClient } from './client.js';
export {
  QueueClosedError,
  QueueRedisError,
  LeaseExpiredError,
  InvalidMessageError,
  PayloadError,
  isQueueClosedError,
  isQueueRedisError,
  isLeaseExpiredError,
  isInvalidMessageError,
  isPayloadError,
  QUEUE_CLOSED,
  QUEUE_REDIS,
  LEASE_EXPIRED,
  INVALID_MESSAGE,
  PAYLOAD,
} from './errors.js';
export type { QueueRedisFailure } from './errors.js';
