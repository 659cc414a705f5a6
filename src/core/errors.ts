/**
 * Keel's error base. Every error Keel throws on purpose is a {@link KeelError} with a stable
 * string `code`, so callers can branch on `error.code` rather than on messages or classes.
 *
 * @packageDocumentation
 */

/**
 * Brand shared by every copy of Keel loaded in one process. `instanceof` fails when two copies of
 * the package are installed (a common npm situation), so {@link isKeelError} checks this
 * registry symbol instead.
 */
const KEEL_ERROR_BRAND: unique symbol = Symbol.for('keel.error') as never;

/** Options accepted by every {@link KeelError} constructor. */
export interface KeelErrorOptions {
  /** The underlying error, if any; exposed as the standard `error.cause`. */
  readonly cause?: unknown;
}

/**
 * Base class of every error Keel throws on purpose.
 *
 * - `code` is stable across versions (for example `KEEL_INVALID_OPTION`); messages are not.
 * - `name` is set explicitly by each subclass, never derived from `constructor.name`, so it
 *   survives minification.
 * - `cause` is the standard `Error.cause` when the error wraps another one.
 *
 * @example
 * ```ts
 * import { KeelError, isKeelError } from 'keel';
 *
 * try {
 *   throw new KeelError('KEEL_EXAMPLE', 'something went wrong');
 * } catch (error) {
 *   if (isKeelError(error)) console.log(error.code); // 'KEEL_EXAMPLE'
 * }
 * ```
 */
export class KeelError extends Error {
  /**
   * The error class's name, set explicitly (never derived from `constructor.name`, which
   * minifiers rename): `'KeelError'` here, the subclass's own name in each subclass.
   */
  override readonly name: string = 'KeelError';

  /** Stable, machine-readable error code, e.g. `KEEL_INVALID_OPTION`. */
  readonly code: string;

  constructor(code: string, message: string, options?: KeelErrorOptions) {
    super(message, options !== undefined && 'cause' in options ? { cause: options.cause } : {});
    this.code = code;
    Object.defineProperty(this, KEEL_ERROR_BRAND, { value: true, enumerable: false });
  }
}

/**
 * True when `value` is an error thrown by Keel — by this copy of Keel or by any other copy
 * loaded in the same process — and, when `code` is given, one with that `code` (for example
 * `isKeelError(error, 'KEEL_CLOSED')`).
 *
 * @example
 * ```ts
 * import { isKeelError } from 'keel';
 *
 * function describe(error: unknown): string {
 *   return isKeelError(error) ? `keel:${error.code}` : String(error);
 * }
 * ```
 */
export function isKeelError(value: unknown, code?: string): value is KeelError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { [KEEL_ERROR_BRAND]?: unknown })[KEEL_ERROR_BRAND] === true &&
    (code === undefined || (value as KeelError).code === code)
  );
}

/**
 * Checks that `value` is a Keel error with the given code, across duplicate installs.
 * The building block for each component's `isXError()` guard.
 *
 * @internal
 */
export function hasKeelCode<E extends KeelError>(value: unknown, code: E['code']): value is E {
  return isKeelError(value) && value.code === code;
}

/** Error code of {@link ClosedError}. */
export const CLOSED = 'KEEL_CLOSED';

/**
 * A method was called on an object after its `close()` (or `await using` disposal): a
 * `Redlock`, `Semaphore`, `MemoryLock`, `Registry`, `ServiceWatch`, `FollowingBalancer`,
 * backend or `BreakerRegistry`. `object` names which one, `operation` the method called.
 *
 * @example
 * ```ts
 * import { isClosedError } from 'keel';
 * import { MemoryLock } from 'keel/lock';
 *
 * const locks = new MemoryLock();
 * await locks.close();
 * const error = await locks.acquire('sku:1').catch((e: unknown) => e);
 * if (isClosedError(error)) console.log(error.object, error.operation); // MemoryLock acquire
 * ```
 */
export class ClosedError extends KeelError {
  override readonly name: string = 'ClosedError';
  declare readonly code: typeof CLOSED;
  /** The closed object, e.g. `Redlock` or `ServiceWatch "payments"`. */
  readonly object: string;
  /** The method called after close, e.g. `acquire`. */
  readonly operation: string;

  constructor(object: string, operation: string) {
    super(CLOSED, `${object} is closed: ${operation}() cannot be called after close()`);
    this.object = object;
    this.operation = operation;
  }
}

/** True when `value` is a {@link ClosedError} from any copy of Keel. */
export const isClosedError = (value: unknown): value is ClosedError =>
  hasKeelCode<ClosedError>(value, CLOSED);
