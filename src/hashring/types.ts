/**
 * Types shared by every key-to-node mapping in `keel/hashring`.
 *
 * @packageDocumentation
 */

/** A key: a string (hashed as its UTF-8 bytes) or raw bytes. */
export type Key = string | Uint8Array;

/** A node as the caller describes it. */
export interface NodeSpec<T = unknown> {
  /** Unique, non-empty id; it decides where the node's points land, so keep it stable. */
  readonly id: string;
  /** Relative capacity: a finite number > 0. @defaultValue 1 */
  readonly weight?: number | undefined;
  /** Failure domain (rack, availability zone) for zone-aware replica sets. */
  readonly zone?: string | undefined;
  /** Anything the caller wants back with the node: an address, a client. Never inspected. */
  readonly data?: T | undefined;
}

/** A node as Keel hands it back: resolved and frozen. The same object on every lookup. */
export interface RingNode<T = unknown> {
  /** The node's id, unique in its ring. */
  readonly id: string;
  /** Its weight (1 unless given). */
  readonly weight: number;
  /** Its zone, when given. */
  readonly zone: string | undefined;
  /** The caller's data attached to it, when given. */
  readonly data: T | undefined;
}

/**
 * What every key router in `keel/hashring` offers — the consistent-hash ring and the
 * alternatives (jump, rendezvous, Maglev) — so callers can swap one for another.
 */
export interface KeyRouter<T = unknown> {
  /** Number of nodes. */
  readonly size: number;
  /** The node owning `key`, or `undefined` when there are no nodes. */
  get(key: Key): RingNode<T> | undefined;
  /**
   * Up to `n` distinct nodes for `key`, the owner first (a replica set). Returns
   * `min(n, size)` nodes.
   */
  getN(key: Key, n: number): RingNode<T>[];
  /** Whether a node with this id is present. */
  has(id: string): boolean;
  /** Every node, in id order. */
  nodes(): RingNode<T>[];
}

/**
 * A 32-bit hash of a key's bytes, as an unsigned integer (0 … 2³²−1). Supply your own to
 * match another system's placement; it must be deterministic and well mixed.
 */
export type HashFunction = (bytes: Uint8Array) => number;

/**
 * A key hasher with a string fast path. Keel's built-in hashers hash a string's UTF-8 bytes
 * without encoding it first; `string(s)` must always equal `bytes(utf8(s))`.
 */
export interface KeyHasher {
  /** Stable name recorded in snapshots and fingerprints, e.g. `murmur3`. */
  readonly name: string;
  /** Hash of the UTF-8 bytes of `key`. */
  string(key: string): number;
  /** Hash of `bytes`. */
  bytes(bytes: Uint8Array): number;
}
