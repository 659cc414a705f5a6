/**
 * `keel/hashring` — consistent hashing: the ring with virtual nodes (and its ketama-compatible
 * modes), bounded loads, and alternatives under the same interface.
 *
 * @packageDocumentation
 */
export { HashRing, ketamaDigests } from './ring.js';
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
