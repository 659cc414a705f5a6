/**
 * Maglev hashing: Daniel E. Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
 * Balancer" (NSDI 2016), section 3.4. Each node walks its own permutation of a prime-sized
 * lookup table and the nodes take turns claiming their next free slot until the table is full;
 * a key is routed by one table read.
 *
 * @packageDocumentation
 */
import { InvalidOptionError, resolveOptions, type OptionRule } from '../core/index.js';
import { murmur3Int, murmur3String, murmur3StringInt } from './murmur3.js';
import { SortedNodes, checkCount, checkKey, checkOptionsShape, resolveNodes } from './nodes.js';
import type { Key, KeyRouter, NodeSpec, RingNode } from './types.js';

const OWNER = 'MaglevHash';

/** Seed of the key hash. */
const KEY_SEED = 0;
/** Seeds of h1 (a node's offset) and h2 (its skip): two independent murmur3 runs. */
const OFFSET_SEED = 0x4d41474c;
const SKIP_SEED = 0x45565f32;
/** The table size the paper evaluates with, and Keel's smallest default. */
const MIN_DEFAULT_TABLE_SIZE = 65537;
/** Default slots per node: the paper asks for M ≫ N, e.g. M > 100·N. */
const SLOTS_PER_NODE = 101;
/** Largest table size: slot numbers must fit an Int32Array index and int32 arithmetic. */
const MAX_TABLE_SIZE = 2147483647;

/**
 * Deterministic primality test by trial division over 6k ± 1 (at most ~15 000 divisions for
 * n < 2³¹); runs only when options are validated or the default size is chosen.
 */
function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  if (n % 3 === 0) return n === 3;
  for (let d = 5; d * d <= n; d += 6) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
  }
  return true;
}

/** The default table size for `count` nodes: the smallest prime >= max(65537, 101·count). */
function defaultTableSize(count: number): number {
  let m = Math.max(MIN_DEFAULT_TABLE_SIZE, SLOTS_PER_NODE * count);
  while (!isPrime(m)) m++;
  return m;
}

/** The key's murmur3 hash, unsigned. Computed as int32 and converted here, where it is inlined. */
function keyHash(key: Key): number {
  return (
    (typeof key === 'string' ? murmur3StringInt(key, KEY_SEED) : murmur3Int(key, KEY_SEED)) >>> 0
  );
}

/** Options of {@link MaglevHash}. */
export interface MaglevHashOptions<T = unknown> {
  /**
   * The initial nodes. Ids must be unique; weights are relative capacities.
   *
   * @defaultValue no nodes
   */
  readonly nodes?: Iterable<NodeSpec<T>>;
  /**
   * Lookup-table size M: a prime, at least the number of nodes. Larger tables balance better
   * and disrupt less on changes, at 4 bytes a slot; the paper asks for M ≫ N (M > 100·N).
   * M is fixed for the router's life — a different M would remap nearly every key — so set it
   * explicitly when the node count may grow well past the initial one (M should stay > 100·N).
   *
   * @defaultValue the smallest prime >= max(65537, 101 × the initial number of nodes)
   */
  readonly tableSize?: number;
}

const nodesRule: OptionRule<RingNode[]> = {
  parse: (value, owner, option) => resolveNodes(owner, value, option),
};

const tableSizeRule: OptionRule<number | undefined> = {
  parse(value, owner, option) {
    if (value === undefined) return undefined;
    if (
      typeof value !== 'number' ||
      !Number.isInteger(value) ||
      value > MAX_TABLE_SIZE ||
      !isPrime(value)
    ) {
      throw new InvalidOptionError(owner, option, `a prime number <= ${MAX_TABLE_SIZE}`, value);
    }
    return value;
  },
};

const optionSpec = { nodes: nodesRule, tableSize: tableSizeRule };

const EMPTY_TABLE = /* @__PURE__ */ new Int32Array(0);

/**
 * Maglev hashing (Eisenbud et al., NSDI 2016, §3.4): a prime-sized lookup table filled by the
 * paper's round-robin, where each node claims the next free slot of its own permutation
 * `(offset + j · skip) mod M`, with `offset = h1(id) mod M` and `skip = h2(id) mod (M − 1) + 1`
 * (h1, h2: murmur3 of the id's UTF-8 bytes with two seeds). Nodes take turns in id order, so the
 * table depends only on the set of nodes, never on insertion order. A key is routed to
 * `table[murmur3(key) mod M]`: one hash and one array read, no allocation.
 *
 * **Weights** are Keel's extension of the round-robin: node `i` takes a turn in round `r` only
 * while it holds fewer than `r · wᵢ / w_max` slots, so the heaviest nodes take a turn every
 * round and a node of half their weight every other round. With equal weights this is exactly
 * the paper's algorithm. Every node claims a slot in round 1, so each owns at least one slot,
 * and a node's slot count lies within `wᵢ / w̄ + 1` slots below and 2 slots above its exact
 * share `M · wᵢ / Σw` (w̄ the mean weight) — with equal weights the counts differ by at most one.
 *
 * **Changes rebuild the table**, as in Maglev: `add`, `remove` and `setWeight` refill all M
 * slots — O(M log M) probes expected (finding the last free slots by permutation is a coupon
 * collector; a few milliseconds at the default 65537), plus O(rounds · N) turn checks, which
 * dominate only when weights are very unequal. Build one router with all nodes rather than
 * adding them one by one. Disruption is near minimal but not minimal: the removed node's slots
 * move, plus a small fraction of other slots whose owners' turns shift (under 1% of the other
 * keys at M = 65537 with up to 30 nodes in Keel's tests; with the minimum M ≈ 100·N, up to
 * ~10% at 15 nodes and ~20% with a handful of nodes — keep M large when churn matters).
 *
 * **When to pick this.** You want O(1) lookups that stay fast with hundreds or thousands of
 * nodes and near-perfect balance (with weights), and can afford a table rebuild on each change
 * and a little more key movement than the theoretical minimum — for example load balancing
 * connections or requests across backends. For top-k replica sets with minimal disruption on
 * small N, pick {@link RendezvousHash}; for numbered shards, {@link JumpHash}.
 *
 * `getN(key, n)` returns the owner, then the owners of the following table slots, skipping
 * nodes already chosen (the walk wraps around; every node owns a slot, so it finds them all).
 *
 * @example
 * ```ts
 * import { MaglevHash } from 'keel/hashring';
 *
 * const backends = new MaglevHash({
 *   nodes: [{ id: 'be-1' }, { id: 'be-2' }, { id: 'be-3', weight: 2 }],
 * });
 * const target = backends.get('10.1.2.3:5555'); // one table read
 * console.log(target?.id, backends.tableSize); // e.g. be-3 65537
 * ```
 */
export class MaglevHash<T = unknown> implements KeyRouter<T> {
  /** The explicit table size, or undefined for the node-count-based default. */
  readonly #fixedTableSize: number;
  /** Nodes in id order; a table entry is an index into this array. */
  readonly #set: SortedNodes<T>;
  /** The same array as `#set.list` (id order), kept as a field for the hot path. */
  readonly #nodes: RingNode<T>[];
  #tableSize: number;
  /** The lookup table: node index per slot; empty when there are no nodes. */
  #table: Int32Array = EMPTY_TABLE;
  /** getN scratch: `#marks[i] === #epoch` when node i is already in the result. */
  #marks = new Uint32Array(0);
  #epoch = 0;

  /**
   * @param options - nodes and table size; see {@link MaglevHashOptions}
   * @throws {@link keel!InvalidOptionError} for a malformed node, a `tableSize` that is not a
   *   prime, or fewer table slots than nodes
   * @throws {@link DuplicateNodeError} when two nodes share an id
   */
  constructor(options: MaglevHashOptions<T> = {}) {
    checkOptionsShape(OWNER, options);
    const resolved = resolveOptions(OWNER, options, optionSpec);
    this.#set = new SortedNodes(OWNER, resolved.nodes as RingNode<T>[]);
    this.#nodes = this.#set.list;
    // Chosen once: a table that resized with the node count would remap nearly every key.
    this.#fixedTableSize = resolved.tableSize ?? defaultTableSize(this.#nodes.length);
    this.#checkCapacity(this.#nodes.length, 'constructor');
    this.#tableSize = this.#fixedTableSize;
    this.#rebuild();
  }

  /** Number of nodes. */
  get size(): number {
    return this.#nodes.length;
  }

  /** The current lookup-table size M (a prime). */
  get tableSize(): number {
    return this.#tableSize;
  }

  /**
   * The node owning `key`'s table slot, or `undefined` when there are no nodes. O(1); allocates
   * nothing.
   *
   * @throws {@link keel!InvalidOptionError} when `key` is not a string or Uint8Array
   */
  get(key: Key): RingNode<T> | undefined {
    checkKey(OWNER, key);
    if (this.#nodes.length === 0) return undefined;
    return this.#nodes[this.#table[keyHash(key) % this.#tableSize] as number];
  }

  /**
   * Up to `n` distinct nodes for `key`: the owner, then the owners of the following slots not
   * yet chosen. Returns `min(n, size)` nodes.
   *
   * @param n - how many nodes: an integer >= 0, or `Infinity` for all of them
   * @throws {@link keel!InvalidOptionError} for a bad key or `n`
   */
  getN(key: Key, n: number): RingNode<T>[] {
    checkKey(OWNER, key);
    const want = Math.min(checkCount(OWNER, n), this.#nodes.length);
    const out: RingNode<T>[] = [];
    if (want === 0) return out;
    const table = this.#table;
    const m = this.#tableSize;
    const marks = this.#marks;
    const epoch = this.#nextEpoch();
    let slot = keyHash(key) % m;
    // Every node owns at least one slot (see the class notes), so one lap finds all of them.
    for (let steps = 0; steps < m && out.length < want; steps++) {
      const owner = table[slot] as number;
      if (marks[owner] !== epoch) {
        marks[owner] = epoch;
        out.push(this.#nodes[owner] as RingNode<T>);
      }
      slot = slot + 1 === m ? 0 : slot + 1;
    }
    return out;
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
   * How many table slots each node owns, in id order: a node's share of keys is its count over
   * {@link MaglevHash.tableSize}. Counts the table itself (O(M)), so the counts sum to M.
   */
  slotCounts(): Map<string, number> {
    const counts = new Uint32Array(this.#nodes.length);
    for (const owner of this.#table) counts[owner] = (counts[owner] ?? 0) + 1;
    return new Map(this.#nodes.map((node, i) => [node.id, counts[i] ?? 0]));
  }

  /**
   * Adds a node and rebuilds the table (O(M log M) expected; see the class notes).
   *
   * @returns this router, for chaining
   * @throws {@link keel!InvalidOptionError} for a malformed node, or when a fixed `tableSize`
   *   has no room for another node
   * @throws {@link DuplicateNodeError} when the id is already present
   */
  add(node: NodeSpec<T>): this {
    const resolved = this.#set.prepare(node);
    this.#checkCapacity(this.#set.size + 1, 'add(node)');
    this.#set.insert(resolved);
    this.#rebuild();
    return this;
  }

  /**
   * Removes a node and rebuilds the table. Its slots go to the other nodes; a small fraction of
   * other slots change owner too.
   *
   * @returns `true` when removed, `false` when no node has this id
   */
  remove(id: string): boolean {
    if (!this.#set.remove(id)) return false;
    this.#rebuild();
    return true;
  }

  /**
   * Changes a node's weight and rebuilds the table. The node object is replaced by a new frozen
   * one with the new weight.
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

  /** A fixed table must have a slot for every node, or some nodes would own none. */
  #checkCapacity(count: number, where: string): void {
    const m = this.#fixedTableSize;
    if (count > m) {
      throw new InvalidOptionError(
        OWNER,
        'tableSize',
        `a prime >= the number of nodes (${count})`,
        m,
        `${where}: Maglev needs at least one table slot per node`,
      );
    }
  }

  /**
   * Refills the lookup table: the population loop of §3.4 (the paper's Pseudocode 1), with the
   * weighted turn rule described on the class. Permutations are walked incrementally
   * (`slot += skip` mod M) rather than stored, so the build needs O(N) memory besides the table.
   */
  #rebuild(): void {
    const nodes = this.#nodes;
    const count = nodes.length;
    const m = this.#fixedTableSize;
    this.#tableSize = m;
    if (this.#marks.length < count) {
      this.#marks = new Uint32Array(count);
      this.#epoch = 0;
    }
    if (count === 0) {
      this.#table = EMPTY_TABLE;
      return;
    }

    const next = new Float64Array(count); // the next slot of each node's permutation
    const skip = new Float64Array(count);
    const turnRate = new Float64Array(count); // wᵢ / w_max, in (0, 1]
    const held = new Float64Array(count); // slots claimed so far
    let maxWeight = 0;
    for (const node of nodes) maxWeight = Math.max(maxWeight, node.weight);
    for (let i = 0; i < count; i++) {
      const node = nodes[i] as RingNode<T>;
      const h1 = murmur3String(node.id, OFFSET_SEED);
      const h2 = murmur3String(node.id, SKIP_SEED);
      next[i] = h1 % m;
      // M is prime, so every skip in 1 … M−1 is coprime with M and the walk visits every slot.
      skip[i] = m === 2 ? 1 : (h2 % (m - 1)) + 1;
      turnRate[i] = node.weight === maxWeight ? 1 : node.weight / maxWeight;
    }

    const table = this.#table.length === m ? this.#table : new Int32Array(m);
    table.fill(-1);
    let filled = 0;
    for (let round = 1; ; round++) {
      for (let i = 0; i < count; i++) {
        // Weighted turns: node i takes a turn in round r only while it holds fewer than
        // r·wᵢ/w_max slots. Nodes of the maximum weight (rate exactly 1) take a turn every
        // round, as in the paper; every node takes one in round 1.
        if ((held[i] as number) >= round * (turnRate[i] as number)) continue;
        const step = skip[i] as number;
        let slot = next[i] as number;
        while ((table[slot] as number) !== -1) {
          slot += step;
          if (slot >= m) slot -= m;
        }
        table[slot] = i;
        held[i] = (held[i] as number) + 1;
        slot += step;
        next[i] = slot >= m ? slot - m : slot;
        filled++;
        if (filled === m) {
          this.#table = table;
          return;
        }
      }
    }
  }

  /** A fresh mark for getN; clears the marks when the counter would wrap. */
  #nextEpoch(): number {
    if (this.#epoch === 0xffffffff) {
      this.#marks.fill(0);
      this.#epoch = 0;
    }
    return ++this.#epoch;
  }
}
