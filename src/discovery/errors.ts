/**
 * Errors thrown (or reported through events) by `keel/discovery`.
 *
 * @packageDocumentation
 */
import { KeelError, describeValue, hasKeelCode, type KeelErrorOptions } from '../core/index.js';

/** Error code of {@link InvalidInstanceError}. */
export const INVALID_INSTANCE = 'KEEL_INVALID_INSTANCE';
/** Error code of {@link UnknownServiceError}. */
export const UNKNOWN_SERVICE = 'KEEL_UNKNOWN_SERVICE';
/** Error code of {@link RegistryUnavailableError}. */
export const REGISTRY_UNAVAILABLE = 'KEEL_REGISTRY_UNAVAILABLE';
/** Error code of {@link RegistrationClosedError}. */
export const REGISTRATION_CLOSED = 'KEEL_REGISTRATION_CLOSED';
/** Error code of {@link RegistrationReplacedError}. */
export const REGISTRATION_REPLACED = 'KEEL_REGISTRATION_REPLACED';

/** One problem found in instance data. */
export interface InstanceProblem {
  /** Dotted path of the field, e.g. `port` or `metadata.region`. */
  readonly path: string;
  /** What is wrong with it. */
  readonly message: string;
}

/** Registration data failed the instance schema. Names the first bad field; lists them all. */
export class InvalidInstanceError extends KeelError {
  override readonly name: string = 'InvalidInstanceError';
  declare readonly code: typeof INVALID_INSTANCE;
  /** The first bad field, e.g. `port`. */
  readonly field: string;
  /** A short description of the value given for that field. */
  readonly received: string;
  /** Every problem found. */
  readonly problems: readonly InstanceProblem[];

  constructor(
    where: string,
    field: string,
    message: string,
    received: unknown,
    problems: readonly InstanceProblem[],
  ) {
    const got = describeValue(received);
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem(s))` : '';
    // A wrong-type problem already says what kind of value came ("expected a number, received a
    // string"): the value follows in brackets where it adds something (a string, a number, a
    // boolean), not as a second "received" (issue 16).
    const saysReceived = /, received [^,]*$/.test(message);
    const shown =
      typeof received === 'number'
        ? Number.isFinite(received)
        : ['string', 'bigint', 'boolean'].includes(typeof received);
    const tail = !saysReceived ? `, received ${got}` : shown ? ` (${got})` : '';
    super(
      INVALID_INSTANCE,
      `${where}: invalid instance field "${field}": ${message}${tail}${more}`,
    );
    this.field = field;
    this.received = got;
    this.problems = problems;
  }
}

/**
 * Why a service is unknown: `not-declared` — outside a strict registry's `services` (thrown);
 * `never-registered` — the store has never had an instance of it, by the first snapshot a
 * non-strict registry took (reported once through `Registry.onError`; a misspelt name?).
 */
export type UnknownServiceReason = 'not-declared' | 'never-registered';

/**
 * A service name that looks wrong. Thrown by a `strict` registry for a name outside its
 * `services` (`reason: 'not-declared'`); reported once through `Registry.onError` by any other
 * registry when the store has never had the service it was asked about
 * (`reason: 'never-registered'`) — it keeps watching, so a first instance still shows up.
 */
export class UnknownServiceError extends KeelError {
  override readonly name: string = 'UnknownServiceError';
  declare readonly code: typeof UNKNOWN_SERVICE;
  /** The service name that was asked for. */
  readonly service: string;
  /** The services the registry knows (declared in `services`, or registered through it). */
  readonly known: readonly string[];
  /** Why the service is unknown. */
  readonly reason: UnknownServiceReason;
  constructor(
    service: string,
    known: readonly string[],
    reason: UnknownServiceReason = 'not-declared',
  ) {
    const names = known.join(', ') || 'none';
    super(
      UNKNOWN_SERVICE,
      reason === 'not-declared'
        ? `unknown service ${JSON.stringify(service)} (strict registry; known: ${names})`
        : `service ${JSON.stringify(service)} never had an instance in the store: a typo? ` +
            `(known: ${names}; still watched)`,
    );
    this.service = service;
    this.known = known;
    this.reason = reason;
  }
}

/** The backend (Redis) failed or did not answer in time. `cause` holds the underlying error. */
export class RegistryUnavailableError extends KeelError {
  override readonly name: string = 'RegistryUnavailableError';
  declare readonly code: typeof REGISTRY_UNAVAILABLE;
  /** What was being done, e.g. `register orders/orders-1` or `snapshot orders`. */
  readonly operation: string;
  /**
   * The store that failed, where known: e.g. `redis at 127.0.0.1:6379` (the backend's kind
   * and address) — not to be confused with the host:port in an instance id.
   */
  readonly store: string | undefined;
  constructor(
    operation: string,
    why: string,
    options?: KeelErrorOptions & { readonly store?: string | undefined },
  ) {
    const store = options?.store;
    super(
      REGISTRY_UNAVAILABLE,
      `registry unavailable during ${operation}` +
        (store === undefined ? '' : ` (${store})`) +
        `: ${why}`,
      options,
    );
    this.operation = operation;
    this.store = store;
  }
}

/** The registration was deregistered (or its registry closed); it can no longer be changed. */
export class RegistrationClosedError extends KeelError {
  override readonly name: string = 'RegistrationClosedError';
  declare readonly code: typeof REGISTRATION_CLOSED;
  /** Service of the closed registration. */
  readonly service: string;
  /** Instance id of the closed registration. */
  readonly id: string;
  constructor(service: string, id: string) {
    super(REGISTRATION_CLOSED, `registration ${service}/${id} is closed`);
    this.service = service;
    this.id = id;
  }
}

/**
 * Another registration took over this instance id (a second process registered the same
 * `service`/`id`). The older handle stops heartbeating rather than fight over the record.
 */
export class RegistrationReplacedError extends KeelError {
  override readonly name: string = 'RegistrationReplacedError';
  declare readonly code: typeof REGISTRATION_REPLACED;
  /** Service of the replaced registration. */
  readonly service: string;
  /** Instance id both registrations claimed. */
  readonly id: string;
  constructor(service: string, id: string) {
    super(
      REGISTRATION_REPLACED,
      `registration ${service}/${id} was replaced by another registration of the same id`,
    );
    this.service = service;
    this.id = id;
  }
}

/** True when `value` is an {@link InvalidInstanceError} from any copy of Keel. */
export const isInvalidInstanceError = (value: unknown): value is InvalidInstanceError =>
  hasKeelCode<InvalidInstanceError>(value, INVALID_INSTANCE);
/** True when `value` is an {@link UnknownServiceError} from any copy of Keel. */
export const isUnknownServiceError = (value: unknown): value is UnknownServiceError =>
  hasKeelCode<UnknownServiceError>(value, UNKNOWN_SERVICE);
/** True when `value` is a {@link RegistryUnavailableError} from any copy of Keel. */
export const isRegistryUnavailableError = (value: unknown): value is RegistryUnavailableError =>
  hasKeelCode<RegistryUnavailableError>(value, REGISTRY_UNAVAILABLE);
/** True when `value` is a {@link RegistrationClosedError} from any copy of Keel. */
export const isRegistrationClosedError = (value: unknown): value is RegistrationClosedError =>
  hasKeelCode<RegistrationClosedError>(value, REGISTRATION_CLOSED);
/** True when `value` is a {@link RegistrationReplacedError} from any copy of Keel. */
export const isRegistrationReplacedError = (value: unknown): value is RegistrationReplacedError =>
  hasKeelCode<RegistrationReplacedError>(value, REGISTRATION_REPLACED);
