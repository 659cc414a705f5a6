/**
 * `keel/balancer` — client-side load balancers that stay correct as endpoints come, go and
 * fail: one {@link LoadBalancer} with a shared health layer (outlier ejection, panic
 * threshold, slow start) and pluggable pick strategies.
 *
 * @module keel/balancer
 */
export {
  LoadBalancer,
  NoEndpointError,
  DuplicateEndpointError,
  isNoEndpointError,
  isDuplicateEndpointError,
  NO_ENDPOINT,
  DUPLICATE_ENDPOINT,
  MAX_TOTAL_WEIGHT,
  FollowingBalancer,
} from './balancer.js';
export type {
  LoadBalancerOptions,
  NoEndpointReason,
  OutlierEjectionOptions,
  SlowStartOptions,
  FollowedInstance,
  FollowedWatch,
  FollowingBalancerOptions,
  FollowingEndpoint,
  FollowingEndpointSpec,
  FollowingLease,
  WatchFilter,
  WatchInstance,
} from './balancer.js';
export type { Strategy, PickContext } from './strategy.js';
export type { EndpointHealthMessage, PanicMessage, PickMessage } from './channels.js';
export type { EndpointState } from './state.js';
export type {
  Endpoint,
  EndpointSpec,
  EndpointStats,
  HealthChange,
  Lease,
  Outcome,
  PickOptions,
  RunOptions,
} from './types.js';
export { roundRobin } from './strategies/round-robin.js';
export { random, weightedRandom } from './strategies/random.js';
export { leastConnections } from './strategies/least-connections.js';
export { leastRequest, p2c } from './strategies/least-request.js';
export type { LeastRequestOptions } from './strategies/least-request.js';
export { peakEwma } from './strategies/peak-ewma.js';
export { consistentHash } from './strategies/consistent-hash.js';
export { smoothWeightedRoundRobin } from './strategies/swrr.js';
export type { SmoothWeightedRoundRobinStrategy } from './strategies/swrr.js';
export type { ConsistentHashOptions } from './strategies/consistent-hash.js';
