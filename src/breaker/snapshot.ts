/**
 * Reading a {@link BreakerSnapshot} back: every field checked, each read once (so a getter
 * cannot pass the check and then say something else), a typed error naming the bad one.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * (No internal tag on this header: `stripInternal` would strip the first statement with it.)
 * @packageDocumentation
 */
import { InvalidOptionError, numberProblem } from '../core/index.js';
import type { BreakerState } from './types.js';

const OWNER = 'CircuitBreaker.fromJSON';

/** Every state a snapshot may record. @internal */
export const STATES: readonly BreakerState[] = [
  'closed',
  'open',
  'half-open',
  'forced-open',
  'disabled',
  'metrics-only',
];

/** Longest open time any breaker can record: a day's cap plus 100 % jitter. */
const MAX_REMAINING_MS = 2 * 86_400_000;

/** The checked fields of a snapshot. @internal */
export interface SnapshotFields {
  readonly name: string | undefined;
  readonly state: BreakerState;
  readonly openRemainingMs: number;
  readonly consecutiveOpens: number;
}

/** Checks the shape and every field of a snapshot from `CircuitBreaker#toJSON()`. @internal */
export function readSnapshot(snapshot: unknown): SnapshotFields {
  if (typeof snapshot !== 'object' || snapshot === null) {
    throw new InvalidOptionError(OWNER, 'snapshot', 'a snapshot from toJSON()', snapshot);
  }
  const s = snapshot as Record<string, unknown>;
  const format = s.format;
  const version = s.version;
  if (format !== 'keel.breaker' || version !== 1) {
    throw new InvalidOptionError(
      OWNER,
      'snapshot',
      'a snapshot from CircuitBreaker#toJSON() (format "keel.breaker", version 1)',
      snapshot,
    );
  }
  const name = s.name;
  if (name !== undefined && (typeof name !== 'string' || name === '')) {
    throw new InvalidOptionError(OWNER, 'snapshot.name', 'a non-empty string', name);
  }
  const state = s.state;
  if (typeof state !== 'string' || !(STATES as readonly string[]).includes(state)) {
    throw new InvalidOptionError(OWNER, 'snapshot.state', `one of ${STATES.join(', ')}`, state);
  }
  const remaining = s.openRemainingMs;
  const remainingProblem = numberProblem(remaining, false, { min: 0, max: MAX_REMAINING_MS });
  if (remainingProblem !== undefined) {
    throw new InvalidOptionError(OWNER, 'snapshot.openRemainingMs', remainingProblem, remaining);
  }
  const opens = s.consecutiveOpens;
  const opensProblem = numberProblem(opens, true, { min: 0 });
  if (opensProblem !== undefined) {
    throw new InvalidOptionError(OWNER, 'snapshot.consecutiveOpens', opensProblem, opens);
  }
  return {
    name,
    state: state as BreakerState,
    openRemainingMs: remaining as number,
    consecutiveOpens: opens as number,
  };
}

/**
 * Checks a recorded open time against the restoring breaker's options: at most the longest
 * it could have set itself, its cap plus the jitter on top. @internal
 */
export function checkOpenRemaining(
  openRemainingMs: number,
  backoff: { readonly maxOpenDurationMs: number; readonly jitter: number },
): void {
  const { maxOpenDurationMs, jitter } = backoff;
  const longest = maxOpenDurationMs + jitter * maxOpenDurationMs;
  if (openRemainingMs > longest) {
    throw new InvalidOptionError(
      OWNER,
      'snapshot.openRemainingMs',
      `at most backoff.maxOpenDurationMs × (1 + backoff.jitter) = ${longest}`,
      openRemainingMs,
    );
  }
}
