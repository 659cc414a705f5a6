/**
 * Keel: distributed-systems primitives for Node.js services.
 *
 * The root entry holds what every component shares — errors, clocks, events. Each component
 * has its own subpath: `keel/hashring`, `keel/lock`, `keel/balancer`, `keel/breaker`,
 * `keel/discovery`.
 *
 * @module keel
 */
export {
  KeelError,
  isKeelError,
  ClosedError,
  isClosedError,
  CLOSED,
  InvalidOptionError,
  isInvalidOptionError,
  INVALID_OPTION,
  systemClock,
  ManualClock,
  EventChannel,
  silentLogger,
  isLogger,
} from './core/index.js';
export type {
  KeelErrorOptions,
  Clock,
  Timer,
  Listener,
  Subscription,
  Logger,
  LogMethod,
  LogLevel,
  KeelChannel,
  KeelComponent,
} from './core/index.js';
