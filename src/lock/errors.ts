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
export const LOCK_CROSS_SLOT = 'KEEL_LOCK_CROSS_SLOT';
export const FENCING_LOST = 'KEEL_LOCK_FENCING_LOST';

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
    detail = `lock on ${resources.join(', ')} is held by someone else`,
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
      `no quorum (${quorum} of ${votes.length}) for ${resources.join(', ')}: ` +
        failed.map((v) => `node ${v.node}: ${v.error ?? 'error'}`).join('; '),
    );
    this.resources = resources;
    this.votes = votes;
  }
}

/** A held lock was lost: its validity ran out without an extension, or an extension failed. */
export class LockLostError extends KeelError {
  override readonly name: string = 'LockLostError';
  declare readonly code: typeof LOCK_LOST;
  readonly resources: readonly string[];
  constructor(resources: readonly string[], why: string) {
    super(LOCK_LOST, `lock on ${resources.join(', ')} lost: ${why}`);
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

/**
 * The fencing counters can no longer be trusted: fewer than a quorum of the nodes still have
 * them (their incarnation key), while the others came back without them — a majority lost its
 * data at once (restarts without persistence, flushes). Any token issued now could repeat one
 * issued before, so none is: the acquisition was undone. Mutual exclusion is not what failed;
 * fencing is. To go on anyway (accepting that tokens may repeat once), delete the incarnation
 * key (`<keyPrefix>incarnation`) on the intact nodes: the next acquisition rebuilds every
 * counter from the maximum over all nodes.
 */
export class FencingLostError extends KeelError {
  override readonly name: string = 'FencingLostError';
  declare readonly code: typeof FENCING_LOST;
  readonly resources: readonly string[];
  /** Nodes (indexes) that still have their counters. */
  readonly intact: readonly number[];
  /** Nodes (indexes) that answered without them. */
  readonly emptied: readonly number[];
  constructor(
    resources: readonly string[],
    intact: readonly number[],
    emptied: readonly number[],
    names: readonly string[],
    quorum: number,
  ) {
    const named = (nodes: readonly number[]): string =>
      nodes.length === 0 ? 'none' : nodes.map((n) => names[n] ?? `node ${n}`).join(', ');
    super(
      FENCING_LOST,
      `no fencing token for ${resources.join(', ')}: only ${intact.length} node(s) still have ` +
        `their fencing counters (${named(intact)}), fewer than the quorum of ${quorum}, and ` +
        `${named(emptied)} came back without them (restarted without persistence or flushed). ` +
        'A token issued now could repeat an earlier one; to go on, see "Fencing across restarts" ' +
        'in the README.',
    );
    this.resources = resources;
    this.intact = intact;
    this.emptied = emptied;
  }
}

export const isLockTakenError = (value: unknown): value is LockTakenError =>
  hasKeelCode<LockTakenError>(value, LOCK_TAKEN);
export const isQuorumUnavailableError = (value: unknown): value is QuorumUnavailableError =>
  hasKeelCode<QuorumUnavailableError>(value, QUORUM_UNAVAILABLE);
export const isLockLostError = (value: unknown): value is LockLostError =>
  hasKeelCode<LockLostError>(value, LOCK_LOST);
export const isLockCrossSlotError = (value: unknown): value is LockCrossSlotError =>
  hasKeelCode<LockCrossSlotError>(value, LOCK_CROSS_SLOT);
export const isFencingLostError = (value: unknown): value is FencingLostError =>
  hasKeelCode<FencingLostError>(value, FENCING_LOST);
