/**
 * `keel/hashring` — consistent hashing: the ring with virtual nodes (and its ketama-compatible
 * modes), bounded loads, and alternatives under the same interface.
 *
 * @module keel/hashring
 */
export { HashRing, ketamaDigests, MAX_RING_POINTS } from './ring.js';
export type {
  HashRingOptions,
  RingMode,
  RingStats,
  NodeShare,
  RangeMove,
  RingDiff,
  RingSnapshot,
  GetNOptions,
} from './ring.js';
export { murmur3, murmur3String, murmur3Hasher } from './murmur3.js';
export {
  DuplicateNodeError,
  isDuplicateNodeError,
  InvalidSnapshotError,
  isInvalidSnapshotError,
  DUPLICATE_NODE,
  INVALID_SNAPSHOT,
} from './errors.js';
export type { Key, NodeSpec, RingNode, KeyRouter, HashFunction, KeyHasher } from './types.js';
export { loadXxhash } from './xxhash.js';
export type { XxHashers } from './xxhash.js';
export { BoundedLoads, boundedGet, boundedCap } from './bounded.js';
export type { BoundedLoadsOptions } from './bounded.js';
export { PartitionedRing } from './partitioned.js';
export type { PartitionedRingOptions } from './partitioned.js';
export { JumpHash, jumpConsistentHash } from './jump.js';
export type { JumpHashOptions } from './jump.js';
export { RendezvousHash } from './rendezvous.js';
export type { RendezvousHashOptions } from './rendezvous.js';
export { MaglevHash } from './maglev.js';
export type { MaglevHashOptions } from './maglev.js';
export type { RingRebuiltMessage } from './channels.js';
