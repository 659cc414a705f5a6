/**
 * Errors thrown by `keel/lock`. Each carries the per-node evidence behind it.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode } from '../core/index.js';

/** What one Redis node answered in a lock round. */
export interface NodeVote {
  /** Index of the node in the client list. */
  readonly node: number;
  /** `granted`, `taken` (held by someone else), `error` (failed or timed out). */
  readonly vote: 'granted' | 'taken' | 'error';
  /** For `error`: what went wrong. */
  readonly error?: string;
}

export const LOCK_TAKEN = 'KEEL_LOCK_TAKEN';
export const QUORUM_UNAVAILABLE = 'KEEL_QUORUM_UNAVAILABLE';
export const LOCK_LOST = 'KEEL_LOCK_LOST';
export const LOCK_RELEASED = 'KEEL_LOCK_RELEASED';
export const LOCK_CROSS_SLOT = 'KEEL_LOCK_CROSS_SLOT';

/** Resource names for a message: all of them, or the first few and how many more. */
const named = (resources: readonly string[]): string =>
  resources.length <= 5
    ? resources.join(', ')
    : `${resources.slice(0, 3).join(', ')} and ${resources.length - 3} more`;

/**
 * The resources are held by someone else — or a semaphore has no free permits (a quorum of
 * nodes said so, or no quorum granted) — as opposed to the nodes being down.
 */
export class LockTakenError extends KeelError {
  override readonly name: string = 'LockTakenError';
  declare readonly code: typeof LOCK_TAKEN;
  readonly resources: readonly string[];
  readonly votes: readonly NodeVote[];
  readonly attempts: number;
  constructor(
    resources: readonly string[],
    votes: readonly NodeVote[],
    attempts: number,
    detail = `lock on ${named(resources)} is held by someone else`,
  ) {
    super(LOCK_TAKEN, `${detail} (after ${attempts} attempt(s))`);
    this.resources = resources;
    this.votes = votes;
    this.attempts = attempts;
  }
}

/** Too many nodes failed or timed out for any quorum: the lock service itself is unavailable. */
export class QuorumUnavailableError extends KeelError {
  override readonly name: string = 'QuorumUnavailableError';
  declare readonly code: typeof QUORUM_UNAVAILABLE;
  readonly resources: readonly string[];
  readonly votes: readonly NodeVote[];
  constructor(resources: readonly string[], votes: readonly NodeVote[], quorum: number) {
    const failed = votes.filter((v) => v.vote === 'error');
    super(
      QUORUM_UNAVAILABLE,
      `no quorum (${quorum} of ${votes.length}) for ${named(resources)}: ` +
        failed.map((v) => `node ${v.node}: ${v.error ?? 'error'}`).join('; '),
    );
    this.resources = resources;
    this.votes = votes;
  }
}

/**
 * How a lock was lost: its validity ran out without an extension (`deadline`), a quorum
 * refused an extension (`extension-refused`), an extension round granted too little validity
 * to count on (`extension-too-short`: less than `minValidityMs`, or not past the loss margin),
 * or its release found too few nodes still holding it for a quorum (`not-held`: the keys
 * expired, were deleted, or their nodes restarted empty).
 */
export type LockLossKind = 'deadline' | 'extension-refused' | 'extension-too-short' | 'not-held';

/**
 * A held lock was lost: its validity ran out without an extension, or an extension failed. A
 * voluntary release is not a loss: it is a {@link LockReleasedError}.
 */
export class LockLostError extends KeelError {
  override readonly name: string = 'LockLostError';
  declare readonly code: typeof LOCK_LOST;
  readonly resources: readonly string[];
  /** How it was lost. */
  readonly kind: LockLossKind;
  constructor(resources: readonly string[], why: string, kind: LockLossKind = 'deadline') {
    super(LOCK_LOST, `lock on ${named(resources)} lost: ${why}`);
    this.resources = resources;
    this.kind = kind;
  }
}

/**
 * The reason `lock.signal` aborts with when its holder released the lock (and it was not lost
 * before), and what `extend()` throws on a released handle — so code that counts lost locks by
 * `isLockLostError(signal.reason)` does not count releases.
 */
export class LockReleasedError extends KeelError {
  override readonly name: string = 'LockReleasedError';
  declare readonly code: typeof LOCK_RELEASED;
  readonly resources: readonly string[];
  constructor(resources: readonly string[]) {
    super(LOCK_RELEASED, `lock on ${named(resources)} was released by its holder`);
    this.resources = resources;
  }
}

/**
 * A multi-resource lock on a Redis Cluster client whose keys fall in different hash slots: one
 * script cannot touch them atomically (the server would answer CROSSSLOT). Give the resources a
 * common hash tag, e.g. `{order:42}:stock` and `{order:42}:payment`.
 */
export class LockCrossSlotError extends KeelError {
  override readonly name: string = 'LockCrossSlotError';
  declare readonly code: typeof LOCK_CROSS_SLOT;
  readonly resources: readonly string[];
  /** Cluster slot of each resource's key, in order. */
  readonly slots: readonly number[];
  constructor(resources: readonly string[], slots: readonly number[]) {
    super(
      LOCK_CROSS_SLOT,
      `the keys of ${resources.map((r, i) => `${r} (slot ${slots[i] ?? '?'})`).join(', ')} are in different ` +
        'Redis Cluster slots, so one script cannot lock them together; give the resources a common ' +
        'hash tag, e.g. "{order:42}:stock" and "{order:42}:payment"',
    );
    this.resources = resources;
    this.slots = slots;
  }
}

export const isLockTakenError = (value: unknown): value is LockTakenError =>
  hasKeelCode<LockTakenError>(value, LOCK_TAKEN);
export const isQuorumUnavailableError = (value: unknown): value is QuorumUnavailableError =>
  hasKeelCode<QuorumUnavailableError>(value, QUORUM_UNAVAILABLE);
export const isLockLostError = (value: unknown): value is LockLostError =>
  hasKeelCode<LockLostError>(value, LOCK_LOST);
export const isLockReleasedError = (value: unknown): value is LockReleasedError =>
  hasKeelCode<LockReleasedError>(value, LOCK_RELEASED);
export const isLockCrossSlotError = (value: unknown): value is LockCrossSlotError =>
  hasKeelCode<LockCrossSlotError>(value, LOCK_CROSS_SLOT);
