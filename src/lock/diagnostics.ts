/**
 * The lock's `node:diagnostics_channel` channels (issue 15; naming and helpers in
 * core/diagnostics.ts). Operations that take time are traced — `keel:lock:acquire`,
 * `keel:lock:extend`, `keel:lock:release` (Node's `tracing:keel:lock:<op>:start` / `end` /
 * `asyncStart` / `asyncEnd` / `error`) — and events are plain channels: `keel:lock:lost`,
 * `keel:lock:quorum-failed`, `keel:lock:contended`.
 *
 * Every publish is guarded by `hasSubscribers` (a property read), and no message is built
 * without a subscriber: the uncontended acquire + release does no diagnostics work at all
 * unless someone listens. The trace contexts are filled in as the operation goes (attempts,
 * votes, fencing token) and carry `result` or `error` when they end, as `tracePromise` sets
 * them. Every message has `time`, wall-clock epoch milliseconds, beside monotonic durations.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { KeelChannel, operationChannel } from '../core/index.js';
import type { LockLossKind, NodeVote, TakenBy } from './errors.js';
import type { ReleaseResult } from './lock.js';

/** The context of a `keel:lock:acquire` trace. */
export interface LockAcquireMessage {
  /** The resources asked for (as given; checked when the acquisition starts). */
  resources: readonly string[];
  /** The Redis nodes, as `host:port`, and how many must agree. */
  readonly nodes: readonly string[];
  readonly quorum: number;
  /** When `acquire()` was called: wall-clock epoch ms. */
  readonly time: number;
  /** Rounds made (each an attempt on every node). */
  attempts: number;
  /** From the call to its outcome (ms, monotonic clock). */
  waitMs: number;
  /** Fencing token(s) of the lock acquired. */
  fencingToken?: number;
  fencingTokens?: Readonly<Record<string, number>>;
  /** Each node's vote in the last round (for a failure: the error's evidence). */
  votes?: readonly NodeVote[];
  /** Set by the trace: the lock, or the error. */
  result?: unknown;
  error?: unknown;
}

/** The context of a `keel:lock:extend` trace. */
export interface LockExtendMessage {
  readonly resources: readonly string[];
  readonly nodes: readonly string[];
  readonly quorum: number;
  readonly fencingToken: number;
  readonly ttlMs: number;
  readonly time: number;
  /** How long the lock had been held when the extension was asked for (ms). */
  readonly holdMs: number;
  /** The new validity deadline (monotonic clock), once extended. */
  validUntil?: number;
  result?: unknown;
  error?: unknown;
}

/** The context of a `keel:lock:release` trace. */
export interface LockReleaseMessage {
  readonly resources: readonly string[];
  readonly nodes: readonly string[];
  readonly quorum: number;
  readonly fencingToken: number;
  readonly time: number;
  /** From the grant to this release (ms). */
  readonly holdMs: number;
  /** Set by the trace: what `release()` answered. */
  result?: ReleaseResult;
  error?: unknown;
}

/** A `keel:lock:lost` message: a held lock is lost (not released). */
export interface LockLostMessage {
  readonly resources: readonly string[];
  readonly nodes: readonly string[];
  readonly fencingToken: number;
  /** What happened (see `LockLostError.kind`) and the error the lock's signal aborts with. */
  readonly kind: LockLossKind;
  readonly reason: string;
  readonly error: Error;
  /** From the grant to the loss being seen (ms). */
  readonly holdMs: number;
  /** The validity deadline it had (monotonic clock). */
  readonly validUntil: number;
  readonly time: number;
}

/** A `keel:lock:quorum-failed` message: too many nodes failed for a quorum in one round. */
export interface LockQuorumFailedMessage {
  readonly operation: 'acquire' | 'extend' | 'release';
  readonly resources: readonly string[];
  readonly nodes: readonly string[];
  readonly quorum: number;
  /** The acquisition's round (1 for the first), for `acquire`. */
  readonly attempt?: number;
  /** Each node's vote: failures name what happened (`connection-refused`, `timed-out`, …). */
  readonly votes: readonly NodeVote[];
  readonly time: number;
}

/** A `keel:lock:contended` message: an acquisition found the resource held (once per acquisition). */
export interface LockContendedMessage {
  readonly resources: readonly string[];
  readonly nodes: readonly string[];
  /** The round that was refused (1 for the first); 0: waiting behind this process's own acquisitions. */
  readonly attempt: number;
  /** Who holds it, as far as the refusing nodes said (a quorum naming one of this Redlock's locks: `this-process`). */
  readonly takenBy: TakenBy;
  /** The soonest a refusing node said the hold expires (ms), if one said. */
  readonly freesInMs?: number;
  readonly votes: readonly NodeVote[];
  readonly time: number;
}

/** `keel:lock:acquire` (tracing). */
export const acquireChannel = operationChannel<LockAcquireMessage>('lock', 'acquire');
/** `keel:lock:extend` (tracing). */
export const extendChannel = operationChannel<LockExtendMessage>('lock', 'extend');
/** `keel:lock:release` (tracing). */
export const releaseChannel = operationChannel<LockReleaseMessage>('lock', 'release');
/** `keel:lock:lost`. */
export const lostChannel = new KeelChannel<LockLostMessage>('lock', 'lost');
/** `keel:lock:quorum-failed`. */
export const quorumFailedChannel = new KeelChannel<LockQuorumFailedMessage>(
  'lock',
  'quorum-failed',
);
/** `keel:lock:contended`. */
export const contendedChannel = new KeelChannel<LockContendedMessage>('lock', 'contended');
