/**
 * `keel/lock` — Redlock distributed locks over several independent Redis masters, with fencing
 * tokens. (In progress: `using()`, release notifications, the semaphore and `MemoryLock` land
 * next.)
 *
 * @packageDocumentation
 */
export { Redlock, Lock } from './redlock.js';
export type {
  RedlockOptions,
  AcquireOptions,
  UsingOptions,
  ReleaseResult,
  LockClient,
} from './redlock.js';
export {
  LockTakenError,
  QuorumUnavailableError,
  LockLostError,
  isLockTakenError,
  isQuorumUnavailableError,
  isLockLostError,
  LOCK_TAKEN,
  QUORUM_UNAVAILABLE,
  LOCK_LOST,
} from './errors.js';
export type { NodeVote } from './errors.js';
