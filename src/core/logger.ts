/**
 * The logger hook (issue 15): components that have operational events worth a line in a log —
 * a quarantined record, a resync, a store that lost its data, a re-registration, a breaker that
 * opened — take an optional `logger`. Its shape is pino's: one method per level, each called
 * as `(obj, msg)` with a plain object of fields first and the message second
 * (https://getpino.io/#/docs/api?id=logging-method-parameters), which bunyan and winston's
 * `child` loggers also accept. Silent by default, and never called per operation: only for
 * events an operator would want to see, each at most once per occurrence.
 *
 * Internal module: not an entry point; only what an entry point re-exports from it is API.
 * @packageDocumentation
 */
import { guardedOption, type OptionRule } from './options.js';

/** One level's method: structured fields first, then the message (pino's order). */
export type LogMethod = (obj: Readonly<Record<string, unknown>>, msg: string) => void;

/**
 * What a `logger` option takes: pino, or anything with the same four methods.
 *
 * @example
 * ```ts
 * import type { Logger } from 'keel';
 *
 * const logger: Logger = {
 *   debug: () => undefined,
 *   info: (obj, msg) => console.log(msg, obj),
 *   warn: (obj, msg) => console.warn(msg, obj),
 *   error: (obj, msg) => console.error(msg, obj),
 * };
 * ```
 */
export interface Logger {
  /** Routine detail: a resync that found nothing new, a sweep. */
  readonly debug: LogMethod;
  /** Something changed as designed: a view became fresh again, a breaker closed. */
  readonly info: LogMethod;
  /** Something is wrong but handled: a quarantined record, a data loss, a breaker opening. */
  readonly warn: LogMethod;
  /** A failure that keeps happening or that Keel cannot handle by itself. */
  readonly error: LogMethod;
}

/** The log levels, lowest first. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const nothing = (): void => undefined;

/** The default logger: says nothing. */
export const silentLogger: Logger = Object.freeze({
  debug: nothing,
  info: nothing,
  warn: nothing,
  error: nothing,
});

/** Whether `value` has the four methods of a {@link Logger}. */
export function isLogger(value: unknown): value is Logger {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.debug === 'function' &&
    typeof v.info === 'function' &&
    typeof v.warn === 'function' &&
    typeof v.error === 'function'
  );
}

/** The option rule for `logger`: a {@link Logger}, {@link silentLogger} when not given. @internal */
export function loggerOption(): OptionRule<Logger> {
  return guardedOption(
    isLogger,
    'a logger with debug, info, warn and error methods taking (obj, msg), such as pino',
    { default: silentLogger },
  );
}

/**
 * Writes one line at `level`. A logger that throws must not break the component that logs (a
 * view's resync, a breaker's transition): its error is dropped. The call keeps the logger as
 * `this`, which pino's methods need.
 */
export function log(
  logger: Logger,
  level: LogLevel,
  obj: Readonly<Record<string, unknown>>,
  msg: string,
): void {
  if (logger === silentLogger) return;
  try {
    logger[level](obj, msg);
  } catch {
    // A broken logger is the application's to notice; Keel keeps running.
  }
}
