/**
 * Discovery's `node:diagnostics_channel` channels (issue 15; naming in core/diagnostics.ts).
 * Operations, as `TracingChannel`s (`tracing:keel:discovery:<op>:start` / `end` / `asyncStart`
 * / `asyncEnd` / `error`):
 *
 * - `keel:discovery:register` — `Registry.register()`'s write to the store
 *   ({@link RegisterContext});
 * - `keel:discovery:resync` — a view's snapshot read ({@link ResyncContext}).
 *
 * Events, on plain channels (every message has `service` and `time`, epoch ms):
 *
 * - `keel:discovery:view-changed` — a view applied a batch (log entries or a resync);
 * - `keel:discovery:stale` / `keel:discovery:fresh` — a view went stale (store unreachable, a
 *   resync failing) / is fresh again;
 * - `keel:discovery:epoch-changed` — a resync found the store lost its data (a new epoch);
 * - `keel:discovery:quarantined` — a record or log entry failed the schema and was skipped;
 * - `keel:discovery:re-registered` — a registration the store had lost was written again;
 * - `keel:discovery:heartbeat-failed` — a background heartbeat did not reach the store.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import type { TracingChannel } from 'node:diagnostics_channel';
import { KeelChannel, operationChannel } from '../core/index.js';

/** The context of a traced registration. */
export interface RegisterContext {
  /** The instance's service. */
  readonly service: string;
  /** The instance id. */
  readonly id: string;
  /** The registration's ttl (ms). */
  readonly ttlMs: number;
  /** Wall-clock time the registration started (epoch ms). */
  readonly time: number;
  /** Set by Node when it fails. */
  error?: unknown;
}

/** The context of a traced resync (one snapshot read). */
export interface ResyncContext {
  /** The watched service. */
  readonly service: string;
  /** Why the view resyncs: `initial snapshot`, `gap in the change log …`, a reconnect, … */
  readonly reason: string;
  /** Wall-clock time the read started (epoch ms). */
  readonly time: number;
  /** Set by Node: the snapshot read (`epoch`, `revision`, `records`). */
  result?: unknown;
  /** Set by Node when it fails. */
  error?: unknown;
}

/** Published on `keel:discovery:view-changed`. */
export interface ViewChangedMessage {
  /** The watched service. */
  readonly service: string;
  /** The store revision the view reflects. */
  readonly revision: number;
  /** The store epoch the view reflects. */
  readonly epoch: string;
  /** Instances in the view (any status). */
  readonly instances: number;
  /** Instances `up`. */
  readonly up: number;
  /** Snapshots the view has taken so far. */
  readonly resyncs: number;
  /** Wall-clock time of the event (epoch ms). */
  readonly time: number;
}

/** Published on `keel:discovery:stale` and `keel:discovery:fresh`. */
export interface StaleMessage {
  /** The service. */
  readonly service: string;
  /** Why it went stale (on `stale` only). */
  readonly reason?: string | undefined;
  /** On `fresh`: how long the view was stale (ms). */
  readonly staleMs?: number;
  /** Wall-clock time of the event (epoch ms). */
  readonly time: number;
}

/** Published on `keel:discovery:epoch-changed`. */
export interface EpochChangedMessage {
  /** The service. */
  readonly service: string;
  /** The epoch before. */
  readonly from: string;
  /**
   * The store's epoch as the resync found it: `''` when the store had no data for the service
   * yet (nobody has re-registered), else the new epoch.
   */
  readonly to: string;
  /** Wall-clock time of the event (epoch ms). */
  readonly time: number;
}

/** Published on `keel:discovery:quarantined`. */
export interface QuarantinedMessage {
  /** The service. */
  readonly service: string;
  /** The id it was stored under. */
  readonly id: string;
  /** What is wrong with it. */
  readonly reason: string;
  /** For a change-log entry: its position in the log. */
  readonly entry?: string | undefined;
  /** Wall-clock time of the event (epoch ms). */
  readonly time: number;
}

/** Published on `keel:discovery:re-registered` and `keel:discovery:heartbeat-failed`. */
export interface RegistrationMessage {
  /** The service. */
  readonly service: string;
  /** The instance id. */
  readonly id: string;
  /** For a failed heartbeat: failures in a row, this one included. */
  readonly failures?: number;
  /** For a failed heartbeat: the error. */
  readonly error?: Error;
  /** Wall-clock time of the event (epoch ms). */
  readonly time: number;
}

/** @internal */
export const registerChannel = operationChannel<RegisterContext>('discovery', 'register');
/** @internal */
export const resyncChannel = operationChannel<ResyncContext>('discovery', 'resync');
/** @internal */
export const viewChangedChannel = new KeelChannel<ViewChangedMessage>('discovery', 'view-changed');
/** @internal */
export const staleChannel = new KeelChannel<StaleMessage>('discovery', 'stale');
/** @internal */
export const freshChannel = new KeelChannel<StaleMessage>('discovery', 'fresh');
/** @internal */
export const epochChangedChannel = new KeelChannel<EpochChangedMessage>(
  'discovery',
  'epoch-changed',
);
/** @internal */
export const quarantinedChannel = new KeelChannel<QuarantinedMessage>('discovery', 'quarantined');
/** @internal */
export const reregisteredChannel = new KeelChannel<RegistrationMessage>(
  'discovery',
  're-registered',
);
/** @internal */
export const heartbeatFailedChannel = new KeelChannel<RegistrationMessage>(
  'discovery',
  'heartbeat-failed',
);

/**
 * Runs `fn` as a traced operation on `channel` when someone subscribes to it, else just runs it
 * (one property read).
 */
export function traced<C extends object, R>(
  channel: TracingChannel<unknown, C>,
  context: () => C,
  fn: () => Promise<R>,
): Promise<R> {
  if (!channel.hasSubscribers) return fn();
  return channel.tracePromise(fn, context());
}
