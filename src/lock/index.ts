/**
 * `keel/lock` — Redlock distributed locks over several independent Redis masters, with fencing
 * tokens, a lock-lost signal, `using()` with automatic extension, waiters woken by release
 * notifications, a counting semaphore on server time, and `MemoryLock`, the same interface in
 * one process. The README's "lock" section states the safety envelope.
 *
 * @module keel/lock
 */
export { Redlock } from './redlock.js';
export type {
  RedlockOptions,
  LockClient,
  RedlockStats,
  DurationSummary,
  AcquireFailure,
} from './redlock.js';
export type { SubscriberClient } from './notifier.js';
export { Lock } from './lock.js';
export type { AcquireOptions, UsingOptions, ReleaseResult, LockService } from './lock.js';
export {
  LockTakenError,
  QuorumUnavailableError,
  LockLostError,
  LockReleasedError,
  isLockReleasedError,
  LOCK_RELEASED,
  isLockTakenError,
  isQuorumUnavailableError,
  isLockLostError,
  LockCrossSlotError,
  isLockCrossSlotError,
  LockTooSlowError,
  isLockTooSlowError,
  LOCK_TOO_SLOW,
  FencingLostError,
  isFencingLostError,
  FENCING_LOST,
  LOCK_CROSS_SLOT,
  LOCK_TAKEN,
  QUORUM_UNAVAILABLE,
  LOCK_LOST,
} from './errors.js';
export type { NodeVote, NodeOutcome, TakenBy, LockLossKind } from './errors.js';
export { Semaphore, Permit } from './semaphore.js';
export type {
  SemaphoreOptions,
  PermitOptions,
  PermitUsingOptions,
  QuarantineEvent,
} from './semaphore.js';
export { MemoryLock } from './memory.js';
export type { MemoryLockOptions } from './memory.js';
