/**
 * Errors thrown by `keel/saga`: each has a stable `code`, an explicit `name`, an `isXError()`
 * guard that works across duplicate installs, and the evidence behind it (saga, id, step, the
 * fence and version Redis holds).
 *
 * @packageDocumentation
 */
import { KeelError, hasKeelCode, type KeelErrorOptions } from '../core/index.js';

/** Error code of {@link SagaFencedError}. */
export const SAGA_FENCED = 'KEEL_SAGA_FENCED';
/** Error code of {@link SagaConflictError}. */
export const SAGA_CONFLICT = 'KEEL_SAGA_CONFLICT';
/** Error code of {@link SagaUnknownError}. */
export const SAGA_UNKNOWN = 'KEEL_SAGA_UNKNOWN';
/** Error code of {@link SagaStepTimeoutError}. */
export const SAGA_STEP_TIMEOUT = 'KEEL_SAGA_STEP_TIMEOUT';
/** Error code of {@link SagaTimeoutError}. */
export const SAGA_TIMEOUT = 'KEEL_SAGA_TIMEOUT';
/** Error code of {@link SagaClosedError}. */
export const SAGA_CLOSED = 'KEEL_SAGA_CLOSED';
/** Error code of {@link SagaStoreError}. */
export const SAGA_STORE = 'KEEL_SAGA_STORE';
/** Error code of {@link IdempotencyConflictError}. */
export const IDEMPOTENCY_CONFLICT = 'KEEL_IDEMPOTENCY_CONFLICT';
/** Error code of {@link IdempotencyCancelledError}. */
export const IDEMPOTENCY_CANCELLED = 'KEEL_IDEMPOTENCY_CANCELLED';
/** Error code of {@link IdempotencyLostError}. */
export const IDEMPOTENCY_LOST = 'KEEL_IDEMPOTENCY_LOST';

/**
 * A transition was refused because this coordinator no longer owns the saga instance: another
 * process claimed it after this one's lease ran out (its fence is higher), or the instance moved
 * on (`version` differs). The late write changed nothing.
 */
export class SagaFencedError extends KeelError {
  override readonly name: string = 'SagaFencedError';
  declare readonly code: typeof SAGA_FENCED;
  /** The saga definition's name. */
  readonly saga: string;
  /** The instance id. */
  readonly id: string;
  /** The fence this coordinator wrote with, and the one Redis holds. */
  readonly fence: {
    /** The fence this coordinator wrote with. */
    readonly mine: number;
    /** The fence Redis holds. */
    readonly current: number;
  };
  /** The version this coordinator expected, and the one Redis holds. */
  readonly version: {
    /** The version this coordinator expected. */
    readonly mine: number;
    /** The version Redis holds. */
    readonly current: number;
  };
  constructor(
    saga: string,
    id: string,
    fence: { mine: number; current: number },
    version: { mine: number; current: number },
  ) {
    super(
      SAGA_FENCED,
      `saga ${saga}/${id}: transition refused, this coordinator no longer owns it ` +
        `(fence ${fence.mine} vs ${fence.current}, version ${version.mine} vs ${version.current})`,
    );
    this.saga = saga;
    this.id = id;
    this.fence = fence;
    this.version = version;
  }
}

/** A saga id was started again with a different input than the one it was first started with. */
export class SagaConflictError extends KeelError {
  override readonly name: string = 'SagaConflictError';
  declare readonly code: typeof SAGA_CONFLICT;
  /** The saga definition's name. */
  readonly saga: string;
  /** The instance id. */
  readonly id: string;
  constructor(saga: string, id: string) {
    super(
      SAGA_CONFLICT,
      `saga ${saga}/${id} already exists with a different input (a saga id names one input)`,
    );
    this.saga = saga;
    this.id = id;
  }
}

/** A saga name this coordinator has no definition for, or an instance id that does not exist. */
export class SagaUnknownError extends KeelError {
  override readonly name: string = 'SagaUnknownError';
  declare readonly code: typeof SAGA_UNKNOWN;
  /** The saga name. */
  readonly saga: string;
  /** The instance id, when the instance was missing; `undefined` when the definition was. */
  readonly id: string | undefined;
  constructor(saga: string, id?: string) {
    super(
      SAGA_UNKNOWN,
      id === undefined
        ? `no saga definition named ${JSON.stringify(saga)} was given to this coordinator`
        : `saga ${saga}/${id} does not exist (never started, or expired after finishing)`,
    );
    this.saga = saga;
    this.id = id;
  }
}

/** A step attempt (the `signal` given to `run` or `compensate`) ran past the step's `timeoutMs`. */
export class SagaStepTimeoutError extends KeelError {
  override readonly name: string = 'SagaStepTimeoutError';
  declare readonly code: typeof SAGA_STEP_TIMEOUT;
  /** The step's name. */
  readonly step: string;
  /** The step's timeout (ms). */
  readonly timeoutMs: number;
  constructor(step: string, timeoutMs: number) {
    super(SAGA_STEP_TIMEOUT, `step ${step} did not finish within its timeoutMs (${timeoutMs} ms)`);
    this.step = step;
    this.timeoutMs = timeoutMs;
  }
}

/** The saga ran past its own `timeoutMs` (its deadline, on the Redis server's clock). */
export class SagaTimeoutError extends KeelError {
  override readonly name: string = 'SagaTimeoutError';
  declare readonly code: typeof SAGA_TIMEOUT;
  /** The saga definition's name. */
  readonly saga: string;
  /** The saga's timeout (ms). */
  readonly timeoutMs: number;
  constructor(saga: string, timeoutMs: number) {
    super(SAGA_TIMEOUT, `saga ${saga} did not finish within its timeoutMs (${timeoutMs} ms)`);
    this.saga = saga;
    this.timeoutMs = timeoutMs;
  }
}

/** The coordinator was closed; it starts nothing new. */
export class SagaClosedError extends KeelError {
  override readonly name: string = 'SagaClosedError';
  declare readonly code: typeof SAGA_CLOSED;
  constructor(what: string) {
    super(SAGA_CLOSED, `${what}: the saga coordinator is closed`);
  }
}

/**
 * Redis failed a saga or idempotency operation (refused, timed out, script error); `cause` is
 * the client's error. The state in Redis is whatever the last accepted script left. Also what
 * Redis holds cannot be read: an instance's stored input or step output that is not JSON (a
 * foreign write), from `get`, `list` or `run`; `cause` is the parser's error.
 */
export class SagaStoreError extends KeelError {
  override readonly name: string = 'SagaStoreError';
  declare readonly code: typeof SAGA_STORE;
  /** What was being done, e.g. `begin step charge of order/42`. */
  readonly operation: string;
  /** @param problem - what went wrong, before the cause's message (`Redis failed`). */
  constructor(operation: string, options: KeelErrorOptions, problem = 'Redis failed') {
    const reason = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(SAGA_STORE, `${operation}: ${problem}: ${reason}`, options);
    this.operation = operation;
  }
}

/**
 * An idempotency key was used again with a different payload (fingerprint) than its first use,
 * as Stripe answers a reused key with different parameters.
 */
export class IdempotencyConflictError extends KeelError {
  override readonly name: string = 'IdempotencyConflictError';
  declare readonly code: typeof IDEMPOTENCY_CONFLICT;
  /** The idempotency key. */
  readonly key: string;
  constructor(key: string) {
    super(
      IDEMPOTENCY_CONFLICT,
      `idempotency key ${JSON.stringify(key)} was first used with a different payload`,
    );
    this.key = key;
  }
}

/**
 * The action of an idempotency key arrived after its compensation had run (Seata's
 * "suspension" anomaly): it was refused and did not run.
 */
export class IdempotencyCancelledError extends KeelError {
  override readonly name: string = 'IdempotencyCancelledError';
  declare readonly code: typeof IDEMPOTENCY_CANCELLED;
  /** The idempotency key. */
  readonly key: string;
  constructor(key: string) {
    super(
      IDEMPOTENCY_CANCELLED,
      `idempotency key ${JSON.stringify(key)} was compensated; its action may no longer run`,
    );
    this.key = key;
  }
}

/**
 * This call ran the function, but lost the key's in-progress lease before it could store the
 * result (it took longer than the lease and another caller took over, or the key was
 * compensated meanwhile). The result was not stored.
 */
export class IdempotencyLostError extends KeelError {
  override readonly name: string = 'IdempotencyLostError';
  declare readonly code: typeof IDEMPOTENCY_LOST;
  /** The idempotency key. */
  readonly key: string;
  constructor(key: string) {
    super(
      IDEMPOTENCY_LOST,
      `idempotency key ${JSON.stringify(key)}: the in-progress lease was lost before the result was stored`,
    );
    this.key = key;
  }
}

/** True for a {@link SagaFencedError} from any copy of Keel. */
export const isSagaFencedError = (value: unknown): value is SagaFencedError =>
  hasKeelCode<SagaFencedError>(value, SAGA_FENCED);
/** True for a {@link SagaConflictError} from any copy of Keel. */
export const isSagaConflictError = (value: unknown): value is SagaConflictError =>
  hasKeelCode<SagaConflictError>(value, SAGA_CONFLICT);
/** True for a {@link SagaUnknownError} from any copy of Keel. */
export const isSagaUnknownError = (value: unknown): value is SagaUnknownError =>
  hasKeelCode<SagaUnknownError>(value, SAGA_UNKNOWN);
/** True for a {@link SagaStepTimeoutError} from any copy of Keel. */
export const isSagaStepTimeoutError = (value: unknown): value is SagaStepTimeoutError =>
  hasKeelCode<SagaStepTimeoutError>(value, SAGA_STEP_TIMEOUT);
/** True for a {@link SagaTimeoutError} from any copy of Keel. */
export const isSagaTimeoutError = (value: unknown): value is SagaTimeoutError =>
  hasKeelCode<SagaTimeoutError>(value, SAGA_TIMEOUT);
/** True for a {@link SagaClosedError} from any copy of Keel. */
export const isSagaClosedError = (value: unknown): value is SagaClosedError =>
  hasKeelCode<SagaClosedError>(value, SAGA_CLOSED);
/** True for a {@link SagaStoreError} from any copy of Keel. */
export const isSagaStoreError = (value: unknown): value is SagaStoreError =>
  hasKeelCode<SagaStoreError>(value, SAGA_STORE);
/** True for an {@link IdempotencyConflictError} from any copy of Keel. */
export const isIdempotencyConflictError = (value: unknown): value is IdempotencyConflictError =>
  hasKeelCode<IdempotencyConflictError>(value, IDEMPOTENCY_CONFLICT);
/** True for an {@link IdempotencyCancelledError} from any copy of Keel. */
export const isIdempotencyCancelledError = (value: unknown): value is IdempotencyCancelledError =>
  hasKeelCode<IdempotencyCancelledError>(value, IDEMPOTENCY_CANCELLED);
/** True for an {@link IdempotencyLostError} from any copy of Keel. */
export const isIdempotencyLostError = (value: unknown): value is IdempotencyLostError =>
  hasKeelCode<IdempotencyLostError>(value, IDEMPOTENCY_LOST);
