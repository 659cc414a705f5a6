/**
 * Option validation shared by every component. Options are validated once, at construction,
 * into a frozen copy; a bad option throws an {@link InvalidOptionError} that names the option,
 * what was expected and what was given. Nothing here runs on a hot path.
 *
 * @packageDocumentation
 */
import { describeValue } from './describe.js';
import { KeelError, hasKeelCode } from './errors.js';

/** Error code of {@link InvalidOptionError}. */
export const INVALID_OPTION = 'KEEL_INVALID_OPTION';

/**
 * Thrown when an option or argument is missing, of the wrong type or out of range.
 *
 * @example
 * ```ts
 * import { InvalidOptionError } from 'keel';
 *
 * const error = new InvalidOptionError('Redlock', 'retryCount', 'an integer >= 0', -1);
 * console.log(error.message);
 * // Redlock: invalid option "retryCount": expected an integer >= 0, received -1
 * ```
 */
export class InvalidOptionError extends KeelError {
  override readonly name: string = 'InvalidOptionError';
  declare readonly code: typeof INVALID_OPTION;

  /** Who validated the option: a class or function name such as `Redlock`. */
  readonly owner: string;
  /** Dotted path of the option, e.g. `retry.delayMs` or `nodes[2].weight`. */
  readonly option: string;
  /** What the option must be, in words. */
  readonly expected: string;
  /** A short description of what was given. */
  readonly received: string;

  constructor(owner: string, option: string, expected: string, received: unknown, hint?: string) {
    const got = describeValue(received);
    super(
      INVALID_OPTION,
      `${owner}: invalid option "${option}": expected ${expected}, received ${got}` +
        (hint === undefined ? '' : ` (${hint})`),
    );
    this.owner = owner;
    this.option = option;
    this.expected = expected;
    this.received = got;
  }
}

/** True when `value` is an {@link InvalidOptionError} from any copy of Keel. */
export function isInvalidOptionError(value: unknown): value is InvalidOptionError {
  return hasKeelCode<InvalidOptionError>(value, INVALID_OPTION);
}

/**
 * One option's rule: turns the raw value into the resolved one or throws. `undefined` means the
 * option was not given; rules with a default return it then, required rules throw.
 *
 * @internal
 */
export interface OptionRule<T> {
  parse(value: unknown, owner: string, option: string): T;
}

/** @internal */
export type OptionSpec = Record<string, OptionRule<unknown>>;

/** @internal */
export type ResolvedOptions<S extends OptionSpec> = {
  readonly [K in keyof S]: S[K] extends OptionRule<infer T> ? T : never;
};

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Levenshtein distance, for "did you mean" hints on misspelt option names. */
function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] ?? 0;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] ?? 0;
      const left = row[j - 1] ?? 0;
      row[j] = Math.min(above + 1, left + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length] ?? 0;
}

function closest(name: string, candidates: readonly string[]): string | undefined {
  const allowed = Math.max(2, Math.floor(name.length / 3));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    // The distance is at least the difference in length: skip what cannot be close enough
    // (a 1 MB unknown key would otherwise cost a 1 MB × option-name table per candidate).
    const gap = Math.abs(name.length - candidate.length);
    if (gap > allowed || gap >= bestDistance) continue;
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return bestDistance <= allowed ? best : undefined;
}

/**
 * Validates `input` against `spec` and returns a frozen, fully-defaulted copy. The caller's
 * object is never mutated or retained. Unknown keys are rejected (a misspelt option that is
 * silently ignored is a production incident waiting to happen), with a "did you mean" hint.
 * Keys whose value is `undefined` count as not given.
 *
 * @param owner - the class or function the options are for, used in error messages
 * @param input - what the caller passed; `undefined` means no options
 * @param spec - one rule per option
 * @param path - the dotted path of a nested options object (`retry`), empty at the top level
 * @internal
 */
export function resolveOptions<S extends OptionSpec>(
  owner: string,
  input: unknown,
  spec: S,
  path = '',
): ResolvedOptions<S> {
  if (input !== undefined && !isPlainObject(input)) {
    throw new InvalidOptionError(owner, path === '' ? 'options' : path, 'an options object', input);
  }
  const prefix = path === '' ? '' : `${path}.`;
  const given: Record<string, unknown> = input ?? {};
  const known = Object.keys(spec);
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(spec, key) && given[key] !== undefined) {
      const suggestion = closest(key, known);
      throw new InvalidOptionError(
        owner,
        prefix + key,
        `one of the known options (${known.join(', ')})`,
        given[key],
        suggestion === undefined
          ? 'unknown option'
          : `unknown option; did you mean "${suggestion}"?`,
      );
    }
  }
  const out: Record<string, unknown> = {};
  for (const key of known) {
    const rule = spec[key] as OptionRule<unknown>;
    out[key] = rule.parse(given[key], owner, prefix + key);
  }
  return Object.freeze(out) as ResolvedOptions<S>;
}

type Presence<T> =
  { readonly default: T } | { readonly required: true } | { readonly optional: true };
/** Presence that always yields a value: a default, or required. */
type Definite<T> = { readonly default: T } | { readonly required: true };

function absent<T>(
  presence: Presence<T | undefined>,
  owner: string,
  option: string,
  expected: string,
): T {
  if ('default' in presence) return presence.default as T;
  if ('optional' in presence) return undefined as T;
  throw new InvalidOptionError(owner, option, expected, undefined, 'required');
}

/** Bounds for {@link numberOption} and {@link integerOption}; all inclusive unless `exclusive`. */
export interface NumberBounds {
  readonly min?: number;
  readonly max?: number;
  /** When true, `min` itself is not allowed (for "greater than 0"). */
  readonly minExclusive?: boolean;
  /** Allow `Infinity` (for "no limit" options). */
  readonly allowInfinity?: boolean;
}

function describeBounds(kind: string, bounds: NumberBounds): string {
  const parts: string[] = [];
  if (bounds.min !== undefined)
    parts.push(`${bounds.minExclusive === true ? '>' : '>='} ${bounds.min}`);
  if (bounds.max !== undefined) parts.push(`<= ${bounds.max}`);
  const range = parts.length === 0 ? '' : ` ${parts.join(' and ')}`;
  return `${kind}${range}${bounds.allowInfinity === true ? ' (or Infinity)' : ''}`;
}

/**
 * Checks a number against bounds; returns the expected-description when it fails, else
 * `undefined`. Exposed for components that validate arguments outside an options object.
 *
 * @internal
 */
export function numberProblem(
  value: unknown,
  integer: boolean,
  bounds: NumberBounds,
): string | undefined {
  const expected = describeBounds(integer ? 'an integer' : 'a finite number', bounds);
  if (typeof value !== 'number' || Number.isNaN(value)) return expected;
  if (value === Infinity && bounds.allowInfinity === true) return undefined;
  if (!Number.isFinite(value)) return expected;
  if (integer && !Number.isSafeInteger(value)) return expected;
  if (
    bounds.min !== undefined &&
    (bounds.minExclusive === true ? value <= bounds.min : value < bounds.min)
  ) {
    return expected;
  }
  if (bounds.max !== undefined && value > bounds.max) return expected;
  return undefined;
}

/** A finite number option within bounds. @internal */
export function numberOption(bounds: NumberBounds & Definite<number>): OptionRule<number>;
/** @internal */
export function numberOption(
  bounds: NumberBounds & { readonly optional: true },
): OptionRule<number | undefined>;
export function numberOption(
  bounds: NumberBounds & Presence<number | undefined>,
): OptionRule<number | undefined> {
  return makeNumberRule(false, bounds);
}

/** A safe-integer option within bounds. @internal */
export function integerOption(bounds: NumberBounds & Definite<number>): OptionRule<number>;
/** @internal */
export function integerOption(
  bounds: NumberBounds & { readonly optional: true },
): OptionRule<number | undefined>;
export function integerOption(
  bounds: NumberBounds & Presence<number | undefined>,
): OptionRule<number | undefined> {
  return makeNumberRule(true, bounds);
}

function makeNumberRule(
  integer: boolean,
  bounds: NumberBounds & Presence<number | undefined>,
): OptionRule<number | undefined> {
  const expected = describeBounds(integer ? 'an integer' : 'a finite number', bounds);
  return {
    parse(value, owner, option) {
      if (value === undefined) return absent(bounds, owner, option, expected);
      if (numberProblem(value, integer, bounds) !== undefined) {
        throw new InvalidOptionError(owner, option, expected, value);
      }
      return value as number;
    },
  };
}

/** A boolean option. @internal */
export function booleanOption(presence: Presence<boolean>): OptionRule<boolean> {
  return {
    parse(value, owner, option) {
      if (value === undefined) return absent(presence, owner, option, 'a boolean');
      if (typeof value !== 'boolean')
        throw new InvalidOptionError(owner, option, 'a boolean', value);
      return value;
    },
  };
}

/**
 * Whether `text` is well-formed UTF-16: no lone surrogate (a high U+D800–DBFF not followed by a
 * low U+DC00–DFFF, or a low one alone). A lone surrogate is no text: UTF-8 cannot encode it, so
 * it is sent or hashed as U+FFFD, and names that differ only there become one name (one Redis
 * key, one set of ring points). The components that refuse such names check with this.
 * @internal
 */
export function isWellFormedText(text: string): boolean {
  // String.prototype.isWellFormed (ES2024, in Node 20): false exactly when a surrogate is lone.
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}

/** A string option, optionally non-empty. @internal */
export function stringOption(
  presence: Presence<string> & { readonly nonEmpty?: boolean },
): OptionRule<string> {
  const expected = presence.nonEmpty === true ? 'a non-empty string' : 'a string';
  return {
    parse(value, owner, option) {
      if (value === undefined) return absent(presence, owner, option, expected);
      if (typeof value !== 'string' || (presence.nonEmpty === true && value === '')) {
        throw new InvalidOptionError(owner, option, expected, value);
      }
      return value;
    },
  };
}

/** One of a fixed set of string literals. @internal */
export function oneOfOption<const C extends readonly string[]>(
  choices: C,
  presence: Presence<C[number]>,
): OptionRule<C[number]> {
  const expected = `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`;
  return {
    parse(value, owner, option) {
      if (value === undefined) return absent(presence, owner, option, expected);
      if (typeof value !== 'string' || !choices.includes(value)) {
        throw new InvalidOptionError(owner, option, expected, value);
      }
      return value;
    },
  };
}

/** A function option (callbacks, hooks, RNGs). @internal */
export function functionOption<F extends (...args: never[]) => unknown>(
  presence: Definite<F>,
): OptionRule<F>;
/** @internal */
export function functionOption<F extends (...args: never[]) => unknown>(presence: {
  readonly optional: true;
}): OptionRule<F | undefined>;
export function functionOption<F extends (...args: never[]) => unknown>(
  presence: Presence<F | undefined>,
): OptionRule<F | undefined> {
  return {
    parse(value, owner, option) {
      if (value === undefined) return absent(presence, owner, option, 'a function');
      if (typeof value !== 'function')
        throw new InvalidOptionError(owner, option, 'a function', value);
      return value as F;
    },
  };
}

/**
 * An option checked by a type guard, for structured values such as a `Clock` or an
 * `AbortSignal`. @internal
 */
export function guardedOption<T>(
  guard: (value: unknown) => value is T,
  expected: string,
  presence: Definite<T>,
): OptionRule<T>;
/** @internal */
export function guardedOption<T>(
  guard: (value: unknown) => value is T,
  expected: string,
  presence: { readonly optional: true },
): OptionRule<T | undefined>;
export function guardedOption<T>(
  guard: (value: unknown) => value is T,
  expected: string,
  presence: Presence<T | undefined>,
): OptionRule<T | undefined> {
  return {
    parse(value, owner, option) {
      if (value === undefined) return absent(presence, owner, option, expected);
      if (!guard(value)) throw new InvalidOptionError(owner, option, expected, value);
      return value;
    },
  };
}

/** A nested options object validated by its own spec. @internal */
export function nestedOption<S extends OptionSpec>(spec: S): OptionRule<ResolvedOptions<S>> {
  return {
    parse(value, owner, option) {
      return resolveOptions(owner, value, spec, option);
    },
  };
}

/** True for an `AbortSignal` (checked structurally, so polyfills and other realms pass). @internal */
export function isAbortSignal(value: unknown): value is AbortSignal {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as AbortSignal).aborted === 'boolean' &&
    typeof (value as AbortSignal).addEventListener === 'function' &&
    typeof (value as AbortSignal).removeEventListener === 'function'
  );
}

/** True for a function, the shape of an injected random source `() => number` in [0, 1). @internal */
export function isRandomSource(value: unknown): value is () => number {
  return typeof value === 'function';
}
