/**
 * `keel/discovery` — a service-registry client: register an instance that keeps itself
 * registered, discover peers from a local cache, watch a service's live view (typed change
 * events, an async iterator, staleness during outages), and balance over it with
 * `keel/balancer`. Backends: Redis (shared by many processes, no change ever missed) and
 * in-memory (embedded default, tests).
 *
 * @module keel/discovery
 */
export { Registry } from './registry.js';
export type {
  RegistryOptions,
  RegisterOptions,
  InstanceEndpoint,
  InstanceEndpointSpec,
  InstanceLease,
  SignalOptions,
  RegistryError,
  RegistryStats,
  ViewStats,
} from './registry.js';
export type {
  RegisterContext,
  ResyncContext,
  ViewChangedMessage,
  StaleMessage,
  EpochChangedMessage,
  QuarantinedMessage,
  RegistrationMessage,
} from './channels.js';
export { Registration } from './registration.js';
export type { RegistrationState, RegistrationStateChange, InstancePatch } from './registration.js';
export { ServiceWatch } from './watch.js';
export type { ChangesOptions, WhenReadyOptions } from './watch.js';
export type {
  WatchChange,
  InstanceAdded,
  InstanceUpdated,
  InstanceRemoved,
  RemovalReason,
  ChangeSource,
  QuarantinedRecord,
  StaleChange,
  WatchError,
} from './view.js';
export { INSTANCE_STATUSES } from './instance.js';
export type { Instance, InstanceSpec, InstanceStatus } from './instance.js';
export type { InstanceFilter } from './filter.js';
export { MemoryBackend } from './memory.js';
export type { MemoryBackendOptions } from './memory.js';
export type {
  DiscoveryBackend,
  ChangeEntry,
  ChangeType,
  ChangeFeed,
  FeedListener,
  RawRecord,
  LogPoint,
  Snapshot,
  SnapshotOptions,
  RegisterOutcome,
  HeartbeatOutcome,
  WriteOptions,
} from './backend.js';
export {
  InvalidInstanceError,
  UnknownServiceError,
  RegistryUnavailableError,
  RegistrationClosedError,
  RegistrationReplacedError,
  isInvalidInstanceError,
  isUnknownServiceError,
  isRegistryUnavailableError,
  isRegistrationClosedError,
  isRegistrationReplacedError,
  INVALID_INSTANCE,
  UNKNOWN_SERVICE,
  REGISTRY_UNAVAILABLE,
  REGISTRATION_CLOSED,
  REGISTRATION_REPLACED,
} from './errors.js';
export type { InstanceProblem, UnknownServiceReason } from './errors.js';
export { RedisBackend } from './redis.js';
export type { RedisBackendOptions, DiscoveryRedisClient, ServiceKeys } from './redis.js';
