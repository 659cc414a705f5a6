/**
 * Errors thrown by `keel/lock`. Each carries the per-node evidence behind it.
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode } from '../core/index.js';

/**
 * What became of one node's call in a lock round, finer than {@link NodeVote.vote}:
 *
 * - `granted`: the node granted the attempt.
 * - `held-by-another`: the node refused: someone else (another process, or a lock this
 *   Redlock does not know as its own) holds it — for a semaphore, the permits asked for.
 * - `held-by-this-process`: the node refused because a lock of this very `Redlock` holds it.
 * - `connection-refused`: the client is not connected and its last attempt to connect was
 *   refused (`ECONNREFUSED`: nothing listens there — Redis is down).
 * - `not-connected`: the client is not connected for another reason (connecting, reconnecting
 *   after a reset, closed); `cause` holds the last connection error when there is one.
 * - `timed-out`: connected, but no answer within `nodeTimeoutMs` (a paused or overloaded node).
 * - `script-error`: Redis answered the script with an error (`cause` is the ioredis
 *   `ReplyError`), e.g. a key of the wrong type.
 * - `failed`: the client failed the call for another reason (see `error` and `cause`).
 * - `pending`: the round was decided before this node answered (not a failure of the node).
 */
export type NodeOutcome =
  | 'granted'
  | 'held-by-another'
  | 'held-by-this-process'
  | 'connection-refused'
  | 'not-connected'
  | 'timed-out'
  | 'script-error'
  | 'failed'
  | 'pending';

/** What one Redis node answered in a lock round. */
export interface NodeVote {
  /** Index of the node in the client list. */
  readonly node: number;
  /**
   * The node as `host:port` (a Unix socket path for a socket client), from the client's
   * options; `sentinel <name> via host:port,…` for a Sentinel client and `cluster via
   * host:port,…` for a Cluster client. `memory` for `MemoryLock`.
   */
  readonly address: string;
  /** `granted`, `taken` (held by someone), `error` (failed, timed out, or not waited for). */
  readonly vote: 'granted' | 'taken' | 'error';
  /** What exactly happened on this node. */
  readonly kind: NodeOutcome;
  /** For `error`: what went wrong, in words. */
  readonly error?: string;
  /** For `error`: the client's own error (an ioredis error), when there is one. */
  readonly cause?: unknown;
}

/** Error code of {@link LockTakenError}. */
export const LOCK_TAKEN = 'KEEL_LOCK_TAKEN';
/** Error code of {@link QuorumUnavailableError}. */
export const QUORUM_UNAVAILABLE = 'KEEL_QUORUM_UNAVAILABLE';
/** Error code of {@link LockLostError}. */
export const LOCK_LOST = 'KEEL_LOCK_LOST';
/** Error code of {@link LockReleasedError}. */
export const LOCK_RELEASED = 'KEEL_LOCK_RELEASED';
/** Error code of {@link LockCrossSlotError}. */
export const LOCK_CROSS_SLOT = 'KEEL_LOCK_CROSS_SLOT';
/** Error code of {@link LockTooSlowError}. */
export const LOCK_TOO_SLOW = 'KEEL_LOCK_TOO_SLOW';

/** Who holds what a {@link LockTakenError} could not get. */
export type TakenBy = 'another' | 'this-process';

/** Describes one node's vote for a message: `host:port kind (error)`. */
const describeVote = (v: NodeVote): string =>
  `${v.address} ${v.kind}${v.error === undefined ? '' : ` (${v.error})`}`;
/** Error code of {@link FencingLostError}. */
export const FENCING_LOST = 'KEEL_LOCK_FENCING_LOST';

/** Resource names for a message: all of them, or the first few and how many more. */
const named = (resources: readonly string[]): string =>
  resources.length <= 5
    ? resources.join(', ')
    : `${resources.slice(0, 3).join(', ')} and ${resources.length - 3} more`;

/**
 * The `cause` of an error over several nodes' votes: the one client error there is, an
 * `AggregateError` of them when several nodes failed, else nothing.
 */
function causeOf(votes: readonly NodeVote[]): { cause?: unknown } {
  const causes: unknown[] = [];
  for (const v of votes) if (v.cause !== undefined) causes.push(v.cause);
  if (causes.length === 0) return {};
  if (causes.length === 1) return { cause: causes[0] };
  return { cause: new AggregateError(causes, `${causes.length} Redis nodes failed`) };
}

/**
 * The resources are held — or a semaphore has no free permits (a quorum of nodes said so, or
 * no quorum granted) — as opposed to the nodes being down ({@link QuorumUnavailableError}) or
 * too slow ({@link LockTooSlowError}). `takenBy` says whether a lock of this very `Redlock`
 * holds them (`this-process`: another acquisition of your own, e.g. a re-entrant call) or
 * someone else does (`another`).
 */
export class LockTakenError extends KeelError {
  override readonly name: string = 'LockTakenError';
  declare readonly code: typeof LOCK_TAKEN;
  /** The resources asked for, in the order given. */
  readonly resources: readonly string[];
  /**
   * Each node's answer in the last round, in client order (empty when the wait ended behind
   * another acquisition of this `Redlock` before any round was sent).
   */
  readonly votes: readonly NodeVote[];
  /**
   * Attempts counted against `retryCount`: the first and each retry (quick attempts within a
   * retry's delay after a split vote, and informed re-attempts, are not counted).
   */
  readonly attempts: number;
  /** Who holds them: a lock of this `Redlock` (`this-process`) or someone else (`another`). */
  readonly takenBy: TakenBy;
  constructor(
    resources: readonly string[],
    votes: readonly NodeVote[],
    attempts: number,
    detail?: string,
    takenBy: TakenBy = 'another',
  ) {
    const what =
      detail ??
      `lock on ${named(resources)} is held by ` +
        (takenBy === 'this-process'
          ? 'another acquisition of this Redlock (this process)'
          : 'someone else');
    const held = votes.filter((v) => v.vote !== 'granted');
    super(
      LOCK_TAKEN,
      `${what} (after ${attempts} attempt(s))` +
        (held.length === 0 ? '' : `: ${held.map(describeVote).join('; ')}`),
      causeOf(votes),
    );
    this.resources = resources;
    this.votes = votes;
    this.attempts = attempts;
    this.takenBy = takenBy;
  }
}

/**
 * A quorum granted the lock, but the round took so long that too little validity was left
 * (not more than `minValidityMs` after the ttl, the time the round took and the drift
 * allowance): slow or distant nodes, or a ttl too short for them. The lock was undone, not
 * returned. Raise `ttlMs`, or lower `nodeTimeoutMs` so slow nodes are not waited for. (A ttl
 * that cannot leave enough validity even with no time spent is refused before any round, with
 * an `InvalidOptionError`.)
 */
export class LockTooSlowError extends KeelError {
  override readonly name: string = 'LockTooSlowError';
  declare readonly code: typeof LOCK_TOO_SLOW;
  /** The resources asked for, in the order given. */
  readonly resources: readonly string[];
  /** Each node's answer in the last round, in client order. */
  readonly votes: readonly NodeVote[];
  /** Rounds tried, the first one included. */
  readonly attempts: number;
  /** How long the last granted round took (ms). */
  readonly elapsedMs: number;
  /** The ttl asked for (ms). */
  readonly ttlMs: number;
  constructor(
    resources: readonly string[],
    votes: readonly NodeVote[],
    attempts: number,
    elapsedMs: number,
    ttlMs: number,
    minValidityMs: number,
  ) {
    const slow = votes.filter((v) => v.vote !== 'granted');
    super(
      LOCK_TOO_SLOW,
      `lock on ${named(resources)} was granted by a quorum, but the round took ` +
        `${Math.round(elapsedMs)} ms of the ${ttlMs} ms ttl and left no more than the minimum ` +
        `validity of ${minValidityMs} ms (after ${attempts} attempt(s)); raise ttlMs or lower ` +
        'nodeTimeoutMs' +
        (slow.length === 0 ? '' : `: ${slow.map(describeVote).join('; ')}`),
      causeOf(votes),
    );
    this.resources = resources;
    this.votes = votes;
    this.attempts = attempts;
    this.elapsedMs = elapsedMs;
    this.ttlMs = ttlMs;
  }
}

/**
 * Too many nodes failed or timed out for any quorum: the lock service itself is unavailable.
 * Each failed node is named (`host:port`) with what happened to it (see {@link NodeOutcome});
 * `cause` is the client's error (an `AggregateError` when several nodes failed).
 */
export class QuorumUnavailableError extends KeelError {
  override readonly name: string = 'QuorumUnavailableError';
  declare readonly code: typeof QUORUM_UNAVAILABLE;
  /** The resources asked for, in the order given. */
  readonly resources: readonly string[];
  /** Each node's answer in the last round, in client order. */
  readonly votes: readonly NodeVote[];
  constructor(resources: readonly string[], votes: readonly NodeVote[], quorum: number) {
    const failed = votes.filter((v) => v.vote === 'error' && v.kind !== 'pending');
    super(
      QUORUM_UNAVAILABLE,
      `no quorum (${quorum} of ${votes.length}) for ${named(resources)}: ` +
        failed.map(describeVote).join('; '),
      causeOf(votes),
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
  /** The resources asked for, in the order given. */
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
  /** The resources asked for, in the order given. */
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
  /** The resources asked for, in the order given. */
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
  /** The resources asked for, in the order given. */
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
    const nodeNames = (nodes: readonly number[]): string =>
      nodes.length === 0 ? 'none' : nodes.map((n) => names[n] ?? `node ${n}`).join(', ');
    super(
      FENCING_LOST,
      `no fencing token for ${named(resources)}: only ${intact.length} node(s) still have ` +
        `their fencing counters (${nodeNames(intact)}), fewer than the quorum of ${quorum}, and ` +
        `${nodeNames(emptied)} came back without them (restarted without persistence or flushed). ` +
        'A token issued now could repeat an earlier one; to go on, see "Fencing across restarts" ' +
        'in the README.',
    );
    this.resources = resources;
    this.intact = intact;
    this.emptied = emptied;
  }
}

/** True for a {@link LockTakenError} from any copy of Keel (checks the stable `code`). */
export const isLockTakenError = (value: unknown): value is LockTakenError =>
  hasKeelCode<LockTakenError>(value, LOCK_TAKEN);
/** True for a {@link QuorumUnavailableError} from any copy of Keel (checks the stable `code`). */
export const isQuorumUnavailableError = (value: unknown): value is QuorumUnavailableError =>
  hasKeelCode<QuorumUnavailableError>(value, QUORUM_UNAVAILABLE);
/** True for a {@link LockLostError} from any copy of Keel (checks the stable `code`). */
export const isLockLostError = (value: unknown): value is LockLostError =>
  hasKeelCode<LockLostError>(value, LOCK_LOST);
/** True for a {@link LockReleasedError} from any copy of Keel (checks the stable `code`). */
export const isLockReleasedError = (value: unknown): value is LockReleasedError =>
  hasKeelCode<LockReleasedError>(value, LOCK_RELEASED);
/** True for a {@link LockCrossSlotError} from any copy of Keel (checks the stable `code`). */
export const isLockCrossSlotError = (value: unknown): value is LockCrossSlotError =>
  hasKeelCode<LockCrossSlotError>(value, LOCK_CROSS_SLOT);
/** True for a {@link LockTooSlowError} from any copy of Keel (checks the stable `code`). */
export const isLockTooSlowError = (value: unknown): value is LockTooSlowError =>
  hasKeelCode<LockTooSlowError>(value, LOCK_TOO_SLOW);
/** True for a {@link FencingLostError} from any copy of Keel (checks the stable `code`). */
export const isFencingLostError = (value: unknown): value is FencingLostError =>
  hasKeelCode<FencingLostError>(value, FENCING_LOST);
