/**
 * Shared, I/O-free building blocks used by every component. Internal: the public names are
 * re-exported from the package root (`keel`).
 *
 * @packageDocumentation
 */
export {
  KeelError,
  isKeelError,
  hasKeelCode,
  ClosedError,
  isClosedError,
  CLOSED,
} from './errors.js';
export type { KeelErrorOptions } from './errors.js';
export { systemClock, ManualClock, isClock } from './clock.js';
export type { Clock, Timer } from './clock.js';
export { ioTimeout } from './io-timeout.js';
export { onShutdownSignals, signalsOption } from './signals.js';
export {
  throwIfAborted,
  linkSignals,
  onAbort,
  raceAbort,
  sleep,
  wakeableSleep,
  neverAbortingSignal,
} from './abort.js';
export type { LinkedSignal, SleepOptions, WakeableSleep } from './abort.js';
export { EventChannel } from './events.js';
export type { Listener, Subscription } from './events.js';
export { describeValue } from './describe.js';
export { redisAddress } from './redis-address.js';
export { evictionRisk, warnIfEvicting, isOutOfMemoryError } from './eviction.js';
export type { EvictionCheckClient, EvictionRisk } from './eviction.js';
export {
  INVALID_OPTION,
  InvalidOptionError,
  isInvalidOptionError,
  resolveOptions,
  numberProblem,
  numberOption,
  integerOption,
  booleanOption,
  stringOption,
  isWellFormedText,
  oneOfOption,
  functionOption,
  guardedOption,
  nestedOption,
  isAbortSignal,
  isRandomSource,
} from './options.js';
export type { OptionRule, OptionSpec, ResolvedOptions, NumberBounds } from './options.js';
export { compactLua, luaScript, runScript, isNoScriptError } from './lua.js';
export { pending, lastResolvers } from './pending.js';
export type { LuaScript, ScriptClient } from './lua.js';
export { KeelChannel, channelName, operationChannel, wallTime } from './diagnostics.js';
export type { KeelComponent } from './diagnostics.js';
export { silentLogger, isLogger, loggerOption, log } from './logger.js';
export type { Logger, LogMethod, LogLevel } from './logger.js';
export {
  unitRandom,
  exponentialDelay,
  jitter,
  fullJitter,
  equalJitter,
  decorrelatedJitter,
} from './backoff.js';
