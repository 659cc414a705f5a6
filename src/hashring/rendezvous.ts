/**
 * Rendezvous (highest-random-weight) hashing: David Thaler and Chinya Ravishankar, "Using
 * Name-Based Mappings to Increase Hit Rates" (IEEE/ACM ToN, 1998). Every node draws a
 * pseudo-random score for the key and the highest score wins; the top-n scores form a replica
 * set. Weighted with the logarithmic method of Christian Schindelhauer and Gunnar Schomaker,
 * "Weighted Distributed Hash Tables" (SPAA 2005).
 *
 * @packageDocumentation
 */
import { resolveOptions, type OptionRule } from '../core/index.js';
import { fmix32, murmur3Int, murmur3String, murmur3StringInt } from './murmur3.js';
import { SortedNodes, checkCount, checkKey, checkOptionsShape, resolveNodes } from './nodes.js';
import type { Key, KeyRouter, NodeSpec, RingNode } from './types.js';

const OWNER = 'RendezvousHash';

/** Seed of the key hash. */
const KEY_SEED = 0;
/** Seeds of the two per-node hashes mixed with the key hash (arbitrary odd constants). */
const NODE_SEED_A = 0x5bd1e995;
const NODE_SEED_B = 0x27d4eb2f;
const TWO_NEG_32 = 2 ** -32;

/**
 * The node's 32-bit draw for a key: two finaliser rounds over the key hash and the node's two
 * precomputed hashes. One round of `fmix32(key ^ nodeA)` alone would depend only on the XOR of
 * key and node hashes, so two keys whose hashes differ by the XOR of two nodes' hashes would get
 * those nodes' draws swapped; the second round, salted per node, removes that symmetry. For a
 * fixed node the draw is a bijection of the key hash, hence uniform over keys.
 */
function draw(keyHash: number, nodeA: number, nodeB: number): number {
  return fmix32(fmix32(keyHash ^ nodeA) ^ nodeB);
}

/**
 * Weighted score by the logarithmic method: with `u = (x + 0.5) / 2³²` in (0, 1), the score
 * `−w / ln u` is the reciprocal of an exponential variable with rate `w`, so the node with the
 * highest score wins with probability `w / Σw` — exactly proportional to weight — and changing
 * one node's weight moves keys only to or from that node.
 */
function weightedScore(x: number, weight: number): number {
  return weight / -Math.log((x + 0.5) * TWO_NEG_32);
}

/** The key's murmur3 hash, unsigned. Computed as int32 and converted here, where it is inlined. */
function keyHash(key: Key): number {
  return (
    (typeof key === 'string' ? murmur3StringInt(key, KEY_SEED) : murmur3Int(key, KEY_SEED)) >>> 0
  );
}

/** Options of {@link RendezvousHash}. */
export interface RendezvousHashOptions<T = unknown> {
  /**
   * The initial nodes. Ids must be unique; weights are relative capacities.
   *
   * @defaultValue no nodes
   */
  readonly nodes?: Iterable<NodeSpec<T>>;
}

const nodesRule: OptionRule<RingNode[]> = {
  parse: (value, owner, option) => resolveNodes(owner, value, option),
};

const optionSpec = { nodes: nodesRule };

/**
 * Rendezvous, or highest-random-weight, hashing (Thaler & Ravishankar 1998). For each key every
 * node draws a 32-bit pseudo-random number `x` from the key's murmur3 hash and two hashes of its
 * id; the node with the highest score owns the key, and `getN(key, n)` returns the `n` highest.
 * Weighted nodes score `−weight / ln((x + 0.5) / 2³²)` (the logarithmic method, Schindelhauer
 * & Schomaker 2005), which gives each node a share of keys proportional to its weight. When all
 * weights are equal the raw draws are compared, which orders nodes the same way without a
 * logarithm. Ties are broken by the smaller id.
 *
 * **When to pick this.** The node count is small (tens, perhaps a few hundred), you want
 * top-k replica sets with a clean guarantee, or you need weights — and O(N) work per lookup is
 * acceptable. It needs no tuning and no table, and every change is minimal: adding a node moves
 * keys only to it, removing one moves only its keys, and changing a weight moves keys only to
 * or from that node. For large N prefer {@link MaglevHash} (O(1) lookup); for numbered shards
 * with no weights, {@link JumpHash}.
 *
 * Replica sets are nested: `getN(key, n)` is a prefix of `getN(key, n + 1)`, and removing a
 * node drops it from each replica set and promotes the next one.
 *
 * `get` allocates nothing; `getN` costs O(N log n).
 *
 * @example
 * ```ts
 * import { RendezvousHash } from 'keel/hashring';
 *
 * const caches = new RendezvousHash({
 *   nodes: [{ id: 'a' }, { id: 'b', weight: 2 }, { id: 'c' }],
 * });
 * const [primary, backup] = caches.getN('session:7', 2);
 * console.log(primary?.id === caches.get('session:7')?.id, backup?.id); // true, another node
 * ```
 */
export class RendezvousHash<T = unknown> implements KeyRouter<T> {
  /** Nodes in id order; index i here is index i in the typed arrays below. */
  readonly #set: SortedNodes<T>;
  /** The same array as `#set.list` (id order), kept as a field for the hot path. */
  readonly #nodes: RingNode<T>[];
  #hashA = new Uint32Array(0);
  #hashB = new Uint32Array(0);
  #weights = new Float64Array(0);
  /** All weights equal: compare raw draws (same order as the scores, no logarithm). */
  #uniform = true;
  /** getN scratch: per-node scores and a binary heap of node indices. */
  #scores = new Float64Array(0);
  #heap = new Int32Array(0);

  /**
   * @param options - the initial nodes; see {@link RendezvousHashOptions}
   * @throws {@link keel!InvalidOptionError} for a malformed node
   * @throws {@link DuplicateNodeError} when two nodes share an id
   */
  constructor(options: RendezvousHashOptions<T> = {}) {
    checkOptionsShape(OWNER, options);
    const resolved = resolveOptions(OWNER, options, optionSpec);
    this.#set = new SortedNodes(OWNER, resolved.nodes as RingNode<T>[]);
    this.#nodes = this.#set.list;
    this.#rebuild();
  }

  /** Number of nodes. */
  get size(): number {
    return this.#nodes.length;
  }

  /**
   * The node with the highest score for `key`, or `undefined` when there are no nodes.
   * Allocates nothing; O(N).
   *
   * @throws {@link keel!InvalidOptionError} when `key` is not a string or Uint8Array
   */
  get(key: Key): RingNode<T> | undefined {
    checkKey(OWNER, key);
    const size = this.#nodes.length;
    if (size === 0) return undefined;
    const k = keyHash(key);
    const hashA = this.#hashA;
    const hashB = this.#hashB;
    let best = 0;
    let bestScore = -1;
    // Strict `>` keeps the earlier index on a tie: nodes are in id order, so the smaller id wins.
    if (this.#uniform) {
      for (let i = 0; i < size; i++) {
        const x = draw(k, hashA[i] as number, hashB[i] as number);
        if (x > bestScore) {
          bestScore = x;
          best = i;
        }
      }
    } else {
      const weights = this.#weights;
      for (let i = 0; i < size; i++) {
        const score = weightedScore(
          draw(k, hashA[i] as number, hashB[i] as number),
          weights[i] as number,
        );
        if (score > bestScore) {
          bestScore = score;
          best = i;
        }
      }
    }
    return this.#nodes[best];
  }

  /**
   * The `min(n, size)` nodes with the highest scores for `key`, best first (so the first is
   * {@link RendezvousHash.get}'s answer). O(N log n).
   *
   * @param n - how many nodes: an integer >= 0, or `Infinity` for all of them
   * @throws {@link keel!InvalidOptionError} for a bad key or `n`
   */
  getN(key: Key, n: number): RingNode<T>[] {
    checkKey(OWNER, key);
    const size = this.#nodes.length;
    const want = Math.min(checkCount(OWNER, n), size);
    const out: RingNode<T>[] = [];
    if (want === 0) return out;
    const k = keyHash(key);
    const scores = this.#scores;
    const hashA = this.#hashA;
    const hashB = this.#hashB;
    if (this.#uniform) {
      for (let i = 0; i < size; i++) scores[i] = draw(k, hashA[i] as number, hashB[i] as number);
    } else {
      const weights = this.#weights;
      for (let i = 0; i < size; i++) {
        const x = draw(k, hashA[i] as number, hashB[i] as number);
        scores[i] = weightedScore(x, weights[i] as number);
      }
    }
    // Keep the best `want` in a min-heap whose root is the worst kept node.
    const heap = this.#heap;
    let length = 0;
    for (let i = 0; i < size; i++) {
      if (length < want) {
        heap[length] = i;
        siftUp(heap, scores, length);
        length++;
      } else if (worse(scores, heap[0] as number, i)) {
        heap[0] = i;
        siftDown(heap, scores, 0, length);
      }
    }
    while (length > 0) {
      out.push(this.#nodes[heap[0] as number] as RingNode<T>);
      length--;
      heap[0] = heap[length] as number;
      siftDown(heap, scores, 0, length);
    }
    return out.reverse();
  }

  /** Whether a node with this id is present. */
  has(id: string): boolean {
    return this.#set.has(id);
  }

  /** The node with this id, or `undefined`. */
  node(id: string): RingNode<T> | undefined {
    return this.#set.get(id);
  }

  /** Every node, in id order (a new array). */
  nodes(): RingNode<T>[] {
    return [...this.#nodes];
  }

  /**
   * Adds a node. Only keys whose new highest score is this node's move, and they move to it.
   *
   * @returns this router, for chaining
   * @throws {@link keel!InvalidOptionError} for a malformed node
   * @throws {@link DuplicateNodeError} when the id is already present
   */
  add(node: NodeSpec<T>): this {
    this.#set.insert(this.#set.prepare(node));
    this.#rebuild();
    return this;
  }

  /**
   * Removes a node. Only the keys it owned move, each to its second-highest scorer.
   *
   * @returns `true` when removed, `false` when no node has this id
   */
  remove(id: string): boolean {
    if (!this.#set.remove(id)) return false;
    this.#rebuild();
    return true;
  }

  /**
   * Changes a node's weight. Raising it moves keys only to this node; lowering it moves keys
   * only away from it. The node object is replaced by a new frozen one with the new weight.
   *
   * @param weight - a finite number > 0
   * @returns this router, for chaining
   * @throws {@link keel!InvalidOptionError} for a bad weight (option `weight`) or an unknown id
   *   (option `id`)
   */
  setWeight(id: string, weight: number): this {
    if (this.#set.setWeight(id, weight)) this.#rebuild();
    return this;
  }

  /** Recomputes the per-node arrays after a change (cold path: O(N) hashes). */
  #rebuild(): void {
    const size = this.#nodes.length;
    this.#hashA = new Uint32Array(size);
    this.#hashB = new Uint32Array(size);
    this.#weights = new Float64Array(size);
    this.#scores = new Float64Array(size);
    this.#heap = new Int32Array(size);
    let uniform = true;
    for (let i = 0; i < size; i++) {
      const node = this.#nodes[i] as RingNode<T>;
      this.#hashA[i] = murmur3String(node.id, NODE_SEED_A);
      this.#hashB[i] = murmur3String(node.id, NODE_SEED_B);
      this.#weights[i] = node.weight;
      if (node.weight !== (this.#nodes[0] as RingNode<T>).weight) uniform = false;
    }
    this.#uniform = uniform;
  }
}

/** Whether node `a` ranks below node `b`: a lower score, or an equal score and a larger id. */
function worse(scores: Float64Array, a: number, b: number): boolean {
  const sa = scores[a] as number;
  const sb = scores[b] as number;
  return sa < sb || (sa === sb && a > b);
}

function siftUp(heap: Int32Array, scores: Float64Array, at: number): void {
  const item = heap[at] as number;
  while (at > 0) {
    const parent = (at - 1) >>> 1;
    const above = heap[parent] as number;
    if (!worse(scores, item, above)) break;
    heap[at] = above;
    at = parent;
  }
  heap[at] = item;
}

function siftDown(heap: Int32Array, scores: Float64Array, at: number, length: number): void {
  const item = heap[at] as number;
  for (;;) {
    let child = 2 * at + 1;
    if (child >= length) break;
    const right = child + 1;
    if (right < length && worse(scores, heap[right] as number, heap[child] as number)) {
      child = right;
    }
    const below = heap[child] as number;
    if (!worse(scores, below, item)) break;
    heap[at] = below;
    at = child;
  }
  heap[at] = item;
}
