/**
 * Jump consistent hash: John Lamping and Eric Veach, "A Fast, Minimal Memory, Consistent Hash
 * Algorithm" (2014, arXiv:1406.2294). Keys map to numbered buckets `0 … N−1`; growing from N to
 * N+1 buckets moves exactly the keys that land in the new bucket (about 1/(N+1) of them) and no
 * others, with no memory beyond the bucket list and O(ln N) work per lookup.
 *
 * @packageDocumentation
 */
import { InvalidOptionError, resolveOptions, type OptionRule } from '../core/index.js';
import { DuplicateNodeError } from './errors.js';
import { murmur3Int, murmur3StringInt } from './murmur3.js';
import {
  checkCount,
  checkKey,
  checkOptionsShape,
  compareIds,
  resolveNode,
  resolveNodes,
} from './nodes.js';
import type { Key, KeyRouter, NodeSpec, RingNode } from './types.js';

const OWNER = 'JumpHash';

/** Seed of the murmur3 run giving the high 32 bits of a key's 64-bit hash. */
const SEED_HI = 0;
/** Seed of the murmur3 run giving the low 32 bits (the 32-bit golden ratio, 2³²/φ). */
const SEED_LO = 0x9e3779b9;

// The paper's 64-bit LCG multiplier 2862933555777941757 = 0x27BB2EE6_87B0B0FD, as 32-bit halves.
const LCG_HI = 0x27bb2ee6;
const LCG_LO = 0x87b0b0fd;
const TWO_31 = 2147483648;

// SplitMix64 constants (Steele, Lea & Flood, "Fast Splittable Pseudorandom Number Generators",
// OOPSLA 2014): the increment γ = 0x9E3779B97F4A7C15 and the two finaliser multipliers.
const GAMMA_HI = 0x9e3779b9;
const GAMMA_LO = 0x7f4a7c15;
const MIX1_HI = 0xbf58476d;
const MIX1_LO = 0x1ce4e5b9;
const MIX2_HI = 0x94d049bb;
const MIX2_LO = 0x133111eb;

/**
 * Results of the 64-bit helpers below. JavaScript has no unsigned 64-bit integer short of
 * BigInt, which allocates; the arithmetic is done on 32-bit halves and the two result words
 * are passed back through these module variables, so a lookup allocates nothing. They hold
 * the words as signed int32 (read them with `>>> 0`): a module variable holding an unsigned
 * value above 2³¹ is a boxed heap number, allocated on every store.
 */
let outHi = 0;
let outLo = 0;

/** (aHi:aLo × bHi:bLo) mod 2⁶⁴, all words unsigned 32-bit; result in outHi:outLo. */
function mul64(aHi: number, aLo: number, bHi: number, bLo: number): void {
  // The high word of the full 64-bit product aLo × bLo, from 16-bit limbs: every partial
  // product is < 2³² and every sum < 2³⁴, so all of it is exact in a double.
  const a0 = aLo & 0xffff;
  const a1 = aLo >>> 16;
  const b0 = bLo & 0xffff;
  const b1 = bLo >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const carry = ((p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff)) >>> 16;
  const high = a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + carry;
  outLo = Math.imul(aLo, bLo);
  // The cross terms only reach the high word, and only modulo 2³² (aHi × bHi vanishes mod 2⁶⁴).
  outHi = (high + Math.imul(aHi, bLo) + Math.imul(aLo, bHi)) | 0;
}

/**
 * `JumpConsistentHash(key, buckets)` from the paper's C++ listing, bit-for-bit, for the 64-bit key
 * `hi:lo`: iterate the LCG `key = key × 2862933555777941757 + 1 (mod 2⁶⁴)` and jump forward to
 * `floor((b + 1) × 2³¹ / ((key >>> 33) + 1))` until the jump passes the last bucket. The
 * division is done in doubles in the same order as the reference C++, so results are identical.
 *
 * @param hi - high 32 bits of the key, unsigned
 * @param lo - low 32 bits of the key, unsigned
 * @param buckets - number of buckets, >= 1
 * @returns the bucket, 0 … buckets − 1
 */
export function jumpConsistentHash(hi: number, lo: number, buckets: number): number {
  for (const [option, word] of [
    ['hi', hi],
    ['lo', lo],
  ] as const) {
    if (!Number.isInteger(word) || word < -(2 ** 31) || word >= 2 ** 32) {
      throw new InvalidOptionError(
        'jumpConsistentHash',
        option,
        'a 32-bit integer word of the key (uint32 or int32)',
        word,
      );
    }
  }
  // The paper's num_buckets is an int32; more would also make the loop's j lose precision.
  if (!Number.isInteger(buckets) || buckets < 1 || buckets > 2 ** 31 - 1) {
    throw new InvalidOptionError(
      'jumpConsistentHash',
      'buckets',
      'an integer from 1 to 2^31 - 1',
      buckets,
    );
  }
  return jumpBucket(hi, lo, buckets);
}

/** {@link jumpConsistentHash} without the checks, for the router's own calls. */
function jumpBucket(hi: number, lo: number, buckets: number): number {
  // Callers may pass the words as int32 (see outHi/outLo); work on them unsigned.
  hi >>>= 0;
  lo >>>= 0;
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    mul64(hi, lo, LCG_HI, LCG_LO);
    lo = ((outLo >>> 0) + 1) >>> 0;
    hi = lo === 0 ? ((outHi >>> 0) + 1) >>> 0 : outHi >>> 0;
    // key >> 33 of the 64-bit key is the top 31 bits of its high word.
    j = Math.floor((b + 1) * (TWO_31 / ((hi >>> 1) + 1)));
  }
  return b;
}

/**
 * SplitMix64's output function applied to `hi:lo` (Steele, Lea & Flood 2014):
 * `z ^= z >>> 30; z *= MIX1; z ^= z >>> 27; z *= MIX2; z ^= z >>> 31`. Result in outHi:outLo.
 */
function splitMix64(hi: number, lo: number): void {
  lo = (lo ^ ((lo >>> 30) | (hi << 2))) >>> 0;
  hi = (hi ^ (hi >>> 30)) >>> 0;
  mul64(hi, lo, MIX1_HI, MIX1_LO);
  hi = outHi >>> 0;
  lo = outLo >>> 0;
  lo = (lo ^ ((lo >>> 27) | (hi << 5))) >>> 0;
  hi = (hi ^ (hi >>> 27)) >>> 0;
  mul64(hi, lo, MIX2_HI, MIX2_LO);
  hi = outHi >>> 0;
  lo = outLo >>> 0;
  outLo = lo ^ ((lo >>> 31) | (hi << 1));
  outHi = hi ^ (hi >>> 31);
}

/** Options of {@link JumpHash}. */
export interface JumpHashOptions<T = unknown> {
  /**
   * The buckets, in order: bucket `i` is the `i`-th node. Ids must be unique and every weight
   * must be 1 (jump hash has no notion of weight).
   *
   * @defaultValue no nodes
   */
  readonly nodes?: Iterable<NodeSpec<T>>;
}

/** Rejects any weight but 1: jump hash gives every bucket the same share. */
function checkUnitWeight(node: RingNode, where: string): void {
  if (node.weight !== 1) {
    throw new InvalidOptionError(
      OWNER,
      `${where}.weight`,
      '1 (jump hash does not support weights; use RendezvousHash or MaglevHash)',
      node.weight,
      `node ${JSON.stringify(node.id)}`,
    );
  }
}

const nodesRule: OptionRule<RingNode[]> = {
  parse(value, owner, option) {
    const nodes = resolveNodes(owner, value, option);
    nodes.forEach((node, i) => {
      checkUnitWeight(node, `${option}[${i}]`);
    });
    return nodes;
  },
};

const optionSpec = { nodes: nodesRule };

/**
 * Jump consistent hash (Lamping & Veach 2014) over numbered buckets: bucket `i` is the `i`-th
 * node given. A key's 64-bit hash is `murmur3(key, 0) · 2³² + murmur3(key, 0x9E3779B9)` over
 * its UTF-8 bytes (so a string and its UTF-8 bytes map alike), and the paper's algorithm maps it
 * to a bucket exactly as the reference C++ does.
 *
 * **When to pick this.** Your nodes are numbered shards (database partitions, cache slots)
 * that only ever grow by appending and shrink by dropping the last one, all of equal capacity,
 * and you want tiny memory (one array of nodes) and perfectly even, minimal key movement. It
 * has no weights and cannot remove a node from the middle without remapping other keys; pick
 * {@link RendezvousHash} or {@link MaglevHash} when nodes come and go arbitrarily.
 *
 * - `add(node)` appends a bucket: only keys that now land in it move (about 1/(N+1) of them).
 * - `removeLast()` drops the last bucket: only its keys move. `remove(id)` accepts only the
 *   last bucket's id and throws an {@link keel!InvalidOptionError} for any other node, because
 *   removing bucket `i < N−1` would renumber every later bucket and move their keys too.
 * - Weights other than 1 are rejected with an {@link keel!InvalidOptionError} naming
 *   `nodes[i].weight` (or `node.weight` from `add`).
 * - `getN(key, n)` returns the owner, then further distinct buckets drawn by jumping with keys
 *   derived from the key's hash by SplitMix64 (skipping buckets already chosen). Each draw is
 *   itself a jump hash, so appending a bucket changes a draw only to the new bucket and replica
 *   sets change little. If draws keep repeating buckets (possible when `n` is close to the
 *   size), the rest are filled with the buckets following the owner, in bucket order.
 *
 * `get` allocates nothing and takes O(ln N) time.
 *
 * @example
 * ```ts
 * import { JumpHash } from 'keel/hashring';
 *
 * const shards = new JumpHash({ nodes: [{ id: 'db-0' }, { id: 'db-1' }, { id: 'db-2' }] });
 * console.log(shards.get('user:42')?.id); // one of db-0, db-1, db-2
 * shards.add({ id: 'db-3' }); // only keys that move to db-3 change owner
 * ```
 */
export class JumpHash<T = unknown> implements KeyRouter<T> {
  /** The buckets, in bucket order. */
  #buckets: RingNode<T>[] = [];
  /** id → bucket number. */
  #index = new Map<string, number>();
  /** Nodes in id order, rebuilt lazily after a change. */
  #sorted: RingNode<T>[] | undefined;
  /** getN scratch: `#marks[b] === #epoch` when bucket b is already in the result. */
  #marks = new Uint32Array(0);
  #epoch = 0;

  /**
   * @param options - the initial buckets; see {@link JumpHashOptions}
   * @throws {@link keel!InvalidOptionError} for a malformed node or a weight other than 1
   * @throws {@link DuplicateNodeError} when two nodes share an id
   */
  constructor(options: JumpHashOptions<T> = {}) {
    checkOptionsShape(OWNER, options);
    const resolved = resolveOptions(OWNER, options, optionSpec);
    for (const node of resolved.nodes as RingNode<T>[]) this.#append(node);
  }

  /** Number of buckets. */
  get size(): number {
    return this.#buckets.length;
  }

  /**
   * The node owning `key`, or `undefined` when there are no buckets. Allocates nothing.
   *
   * @throws {@link keel!InvalidOptionError} when `key` is not a string or Uint8Array
   */
  get(key: Key): RingNode<T> | undefined {
    checkKey(OWNER, key);
    const size = this.#buckets.length;
    if (size === 0) return undefined;
    return this.#buckets[jumpBucket(hashHi(key), hashLo(key), size)];
  }

  /**
   * Up to `n` distinct nodes for `key`, the owner first: `min(n, size)` nodes.
   *
   * @param n - how many nodes: an integer >= 0, or `Infinity` for all of them
   * @throws {@link keel!InvalidOptionError} for a bad key or `n`
   */
  getN(key: Key, n: number): RingNode<T>[] {
    checkKey(OWNER, key);
    const want = Math.min(checkCount(OWNER, n), this.#buckets.length);
    const out: RingNode<T>[] = [];
    if (want === 0) return out;
    const size = this.#buckets.length;
    const marks = this.#marks;
    const epoch = this.#nextEpoch();

    let stateHi = hashHi(key);
    let stateLo = hashLo(key);
    const owner = jumpBucket(stateHi, stateLo, size);
    out.push(this.#buckets[owner] as RingNode<T>);
    marks[owner] = epoch;

    // Further candidates: the SplitMix64 sequence seeded with the key's hash (state += γ, then
    // the output function). Successive LCG states of the key itself would not do: jumping from
    // LCG(key) replays the same random sequence shifted by one step, so it would correlate with
    // the owner. The attempt cap keeps getN bounded when n is close to size (collecting every
    // bucket by random draws takes about N·ln N of them).
    const maxDraws = 8 * want + 32;
    for (let draw = 0; out.length < want && draw < maxDraws; draw++) {
      stateLo += GAMMA_LO;
      const carry = stateLo > 0xffffffff ? 1 : 0;
      stateLo >>>= 0;
      stateHi = (stateHi + GAMMA_HI + carry) >>> 0;
      splitMix64(stateHi, stateLo);
      const b = jumpBucket(outHi >>> 0, outLo >>> 0, size);
      if (marks[b] !== epoch) {
        marks[b] = epoch;
        out.push(this.#buckets[b] as RingNode<T>);
      }
    }
    for (let step = 1; out.length < want; step++) {
      const b = (owner + step) % size;
      if (marks[b] !== epoch) {
        marks[b] = epoch;
        out.push(this.#buckets[b] as RingNode<T>);
      }
    }
    return out;
  }

  /** Whether a node with this id is present. */
  has(id: string): boolean {
    return this.#index.has(id);
  }

  /** The node with this id, or `undefined`. */
  node(id: string): RingNode<T> | undefined {
    const bucket = this.#index.get(id);
    return bucket === undefined ? undefined : this.#buckets[bucket];
  }

  /** The bucket number of the node with this id, or `undefined`. */
  bucketOf(id: string): number | undefined {
    return this.#index.get(id);
  }

  /** Every node, in id order (a new array). */
  nodes(): RingNode<T>[] {
    this.#sorted ??= [...this.#buckets].sort((a, b) => compareIds(a.id, b.id));
    return [...this.#sorted];
  }

  /** Every node in bucket order: element `i` is bucket `i` (a new array). */
  buckets(): RingNode<T>[] {
    return [...this.#buckets];
  }

  /**
   * Appends a bucket (number `size`). Only keys that now hash to it move — about 1/(N+1) of
   * them — and they move from every other bucket evenly.
   *
   * @returns this router, for chaining
   * @throws {@link keel!InvalidOptionError} for a malformed node or a weight other than 1
   * @throws {@link DuplicateNodeError} when the id is already present
   */
  add(node: NodeSpec<T>): this {
    const resolved = resolveNode<T>(OWNER, node, 'node');
    checkUnitWeight(resolved, 'node');
    if (this.#index.has(resolved.id)) throw new DuplicateNodeError(OWNER, resolved.id);
    this.#append(resolved);
    return this;
  }

  /**
   * Removes the node with this id, which must be the last bucket: jump hash can only shrink
   * from the end without remapping other keys.
   *
   * @returns `true` when removed, `false` when no node has this id
   * @throws {@link keel!InvalidOptionError} (option `id`) when the node exists but is not the last
   *   bucket; use {@link JumpHash.removeLast}, or build a new `JumpHash` and accept that the
   *   keys of every later bucket move
   */
  remove(id: string): boolean {
    const bucket = this.#index.get(id);
    if (bucket === undefined) return false;
    const last = this.#buckets.length - 1;
    if (bucket !== last) {
      const lastId = (this.#buckets[last] as RingNode<T>).id;
      throw new InvalidOptionError(
        OWNER,
        'id',
        `the id of the last bucket (${JSON.stringify(lastId)})`,
        id,
        `remove(id): node ${JSON.stringify(id)} is bucket ${bucket} of ${last + 1}; jump hash ` +
          'can only remove the last bucket without moving other keys',
      );
    }
    this.removeLast();
    return true;
  }

  /**
   * Removes the last bucket. Only its keys move, spread evenly over the others.
   *
   * @returns the removed node, or `undefined` when there are no buckets
   */
  removeLast(): RingNode<T> | undefined {
    const node = this.#buckets.pop();
    if (node === undefined) return undefined;
    this.#index.delete(node.id);
    this.#sorted = undefined;
    return node;
  }

  #append(node: RingNode<T>): void {
    this.#index.set(node.id, this.#buckets.length);
    this.#buckets.push(node);
    this.#sorted = undefined;
    if (this.#marks.length < this.#buckets.length) {
      this.#marks = new Uint32Array(Math.max(16, this.#buckets.length * 2));
      this.#epoch = 0;
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

/** High word of the key's 64-bit hash, as int32 (unboxed; see outHi/outLo). */
function hashHi(key: Key): number {
  return typeof key === 'string' ? murmur3StringInt(key, SEED_HI) : murmur3Int(key, SEED_HI);
}

/** Low word of the key's 64-bit hash, as int32. */
function hashLo(key: Key): number {
  return typeof key === 'string' ? murmur3StringInt(key, SEED_LO) : murmur3Int(key, SEED_LO);
}
