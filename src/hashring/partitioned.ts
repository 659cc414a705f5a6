/**
 * A partitioned ring: keys hash into a fixed number of partitions, and partitions — not keys —
 * are placed on a consistent-hash ring under a load cap (bounded loads applied to partitions,
 * the design of Go's buraksezer/consistent). No node owns more than ⌈c · share⌉ partitions —
 * a hard cap on the busiest node even with few nodes — ownership is stable (a partition moves
 * only when the walk that placed it changes), and a lookup is one hash, one modulo and one
 * array read. Nodes below the cap are not topped up, so pick c close to 1 (1.05–1.1) when the
 * spread below the cap matters too.
 *
 * @packageDocumentation
 */
import { InvalidOptionError, integerOption, numberOption, resolveOptions } from '../core/index.js';
import { checkCount, checkKey, checkOptionsShape, resolveNode } from './nodes.js';
import { HashRing } from './ring.js';
import { DuplicateNodeError } from './errors.js';
import type { Key, KeyRouter, NodeSpec, RingNode } from './types.js';

/** Options of {@link PartitionedRing}. */
export interface PartitionedRingOptions<T = unknown> {
  /** Initial nodes. */
  readonly nodes?: Iterable<NodeSpec<T>>;
  /**
   * Number of partitions; fixed for the ring's life (changing it remaps every key). Pick it
   * well above the node count — a prime spreads `hash mod P` best.
   * @defaultValue 271
   */
  readonly partitionCount?: number;
  /** Load factor c > 1 for partitions per node. @defaultValue 1.25 */
  readonly c?: number;
  /** Virtual nodes per unit of weight on the underlying ring. @defaultValue 160 */
  readonly pointsPerWeight?: number;
}

const OWNER = 'PartitionedRing';
// 16_777_216 = 2²⁴, written as a literal: bundlers keep `1 << 24` (an operator they do not
// evaluate) and with it this whole object in bundles that never use PartitionedRing.
const spec = {
  partitionCount: /* @__PURE__ */ integerOption({ min: 1, max: 16_777_216, default: 271 }),
  c: /* @__PURE__ */ numberOption({ min: 1, minExclusive: true, max: 100, default: 1.25 }),
  pointsPerWeight: /* @__PURE__ */ integerOption({ min: 1, max: 100_000, default: 160 }),
};

/**
 * Keys → partitions → nodes, with every node's partition count capped at c times its share.
 *
 * @example
 * ```ts
 * import { PartitionedRing } from 'keel/hashring';
 *
 * const ring = new PartitionedRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }], partitionCount: 271 });
 * const owner = ring.get('order:7');
 * console.log(owner?.id, ring.partitionOf('order:7'), ring.partitionsOf('a').length);
 * ```
 */
export class PartitionedRing<T = unknown> implements KeyRouter<T> {
  readonly #ring: HashRing<T>;
  readonly #partitions: number;
  readonly #c: number;
  /** Owner slot per partition, an index into #owners. */
  #assignment: Uint32Array;
  #owners: RingNode<T>[] = [];

  constructor(options: PartitionedRingOptions<T> = {}) {
    checkOptionsShape(OWNER, options);
    const { nodes, ...rest } = options;
    const resolved = resolveOptions(OWNER, rest, spec);
    this.#partitions = resolved.partitionCount;
    this.#c = resolved.c;
    this.#ring = new HashRing<T>({
      pointsPerWeight: resolved.pointsPerWeight,
      ...(nodes === undefined ? {} : { nodes }),
    });
    this.#assignment = new Uint32Array(this.#partitions);
    this.#distribute();
  }

  get size(): number {
    return this.#ring.size;
  }

  /** Number of partitions. */
  get partitionCount(): number {
    return this.#partitions;
  }

  /** The most partitions any node may own: `ceil(c · P · w / W)` for weight w. */
  capOf(id: string): number {
    const node = this.#ring.node(id);
    return node === undefined
      ? 0
      : Math.ceil((this.#c * this.#partitions * node.weight) / this.#ring.totalWeight);
  }

  has(id: string): boolean {
    return this.#ring.has(id);
  }

  nodes(): RingNode<T>[] {
    return this.#ring.nodes();
  }

  /** The partition a key falls in: `hash(key) mod partitionCount`. */
  partitionOf(key: Key): number {
    checkKey(OWNER, key);
    return this.#ring.hashKey(key) % this.#partitions;
  }

  /** The node owning a partition, or `undefined` when there are no nodes. */
  ownerOf(partition: number): RingNode<T> | undefined {
    if (!Number.isInteger(partition) || partition < 0 || partition >= this.#partitions) {
      throw new InvalidOptionError(
        OWNER,
        'partition',
        `an integer from 0 to ${this.#partitions - 1}`,
        partition,
        'ownerOf(partition)',
      );
    }
    if (this.#ring.size === 0) return undefined;
    return this.#owners[this.#assignment[partition] ?? 0];
  }

  /** The partitions a node owns, in increasing order. */
  partitionsOf(id: string): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.#partitions; p++)
      if (this.#owners[this.#assignment[p] as number]?.id === id) out.push(p);
    return out;
  }

  get(key: Key): RingNode<T> | undefined {
    if (typeof key !== 'string') checkKey(OWNER, key);
    if (this.#ring.size === 0) return undefined;
    return this.#owners[this.#assignment[this.#ring.hashKey(key) % this.#partitions] as number];
  }

  /** The partition's owner first, then further distinct nodes clockwise from the partition. */
  getN(key: Key, n: number): RingNode<T>[] {
    checkCount(OWNER, n);
    const owner = this.get(key);
    if (owner === undefined || n === 0) return [];
    const out = [owner];
    const want = Math.min(n, this.size);
    this.#ring.findFrom(partitionKey(this.partitionOf(key)), (node) => {
      if (node !== owner) out.push(node);
      return out.length >= want;
    });
    return out;
  }

  /**
   * Adds a node and redistributes the partitions. Throws {@link DuplicateNodeError} if the id
   * is present.
   */
  add(spec: NodeSpec<T>): this {
    const node = resolveNode<T>(OWNER, spec, 'node');
    if (this.#ring.has(node.id)) throw new DuplicateNodeError(OWNER, node.id);
    this.#ring.add(node);
    this.#distribute();
    return this;
  }

  /**
   * Removes the node with this id and redistributes the partitions; `false` (and no change) when
   * the id is not on the ring.
   */
  remove(id: string): boolean {
    const removed = this.#ring.remove(id);
    if (removed) this.#distribute();
    return removed;
  }

  /** Changes a node's weight (its partition cap) and redistributes. Throws for an unknown id. */
  setWeight(id: string, weight: number): this {
    this.#ring.setWeight(id, weight);
    this.#distribute();
    return this;
  }

  /**
   * Places every partition on the first node clockwise from the partition's own hash that is
   * still below its cap. Partitions are placed in index order, so the result is deterministic.
   */
  #distribute(): void {
    const nodes = this.#ring.nodes();
    this.#owners = nodes;
    if (nodes.length === 0) return;
    const index = new Map(nodes.map((node, i) => [node.id, i]));
    const loads = new Uint32Array(nodes.length);
    const caps = nodes.map((node) => this.capOf(node.id));
    for (let p = 0; p < this.#partitions; p++) {
      // Σ caps ≥ c·P > P, so some node always has room; the walk visits each node once.
      const chosen = this.#ring.findFrom(partitionKey(p), (node) => {
        const i = index.get(node.id) as number;
        return (loads[i] as number) < (caps[i] as number);
      }) as RingNode<T>;
      const i = index.get(chosen.id) as number;
      loads[i] = (loads[i] as number) + 1;
      this.#assignment[p] = i;
    }
  }
}

/** The ring key a partition is placed by. */
function partitionKey(partition: number): string {
  return `partition:${partition}`;
}
