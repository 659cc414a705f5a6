/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, "Consistent
 * Hashing with Bounded Loads", SODA 2018): a key goes to the first node clockwise from its
 * hash whose load is below a cap of `ceil(c · (m + 1) / n)` — m keys already placed, n nodes,
 * c > 1 the allowed imbalance. No node ever exceeds the cap, and keys still move little when
 * nodes come and go. With weights, node i's cap is `ceil(c · (m + 1) · wᵢ / W)`.
 *
 * @packageDocumentation
 */
import { InvalidOptionError, describeValue, numberOption, resolveOptions } from '../core/index.js';
import { checkKey } from './nodes.js';
import { HashRing } from './ring.js';
import type { Key, RingNode } from './types.js';

/** Options of {@link BoundedLoads}. */
export interface BoundedLoadsOptions {
  /**
   * The load factor c > 1: no node takes more than c times its fair share (rounded up). Lower
   * is tighter balance but more keys diverted from their ring owner; the paper's analysis
   * and Vimeo's production use settle around 1.25.
   * @defaultValue 1.25
   */
  readonly c?: number;
}

const OWNER = 'BoundedLoads';
const spec = {
  c: /* @__PURE__ */ numberOption({ min: 1, minExclusive: true, max: 100, default: 1.25 }),
};

/**
 * The cap for a node of weight `weight` when `totalLoad` keys are placed and one more is
 * coming: `ceil(c · (totalLoad + 1) · weight / totalWeight)`.
 */
export function boundedCap(
  c: number,
  totalLoad: number,
  weight: number,
  totalWeight: number,
): number {
  const checks: [string, unknown, boolean][] = [
    ['c', c, typeof c === 'number' && c > 1 && c <= 100],
    [
      'totalLoad',
      totalLoad,
      typeof totalLoad === 'number' && totalLoad >= 0 && totalLoad < Infinity,
    ],
    ['weight', weight, typeof weight === 'number' && weight > 0 && weight < Infinity],
    [
      'totalWeight',
      totalWeight,
      typeof totalWeight === 'number' &&
        totalWeight < Infinity &&
        (typeof weight !== 'number' || totalWeight >= weight),
    ],
  ];
  for (const [option, value, ok] of checks) {
    if (!ok) {
      throw new InvalidOptionError(
        'boundedCap',
        option,
        'c in (1, 100], a finite totalLoad >= 0, and finite weight > 0 <= totalWeight',
        value,
      );
    }
  }
  return capFor(c, totalLoad, weight, totalWeight);
}

/** {@link boundedCap} without the checks, for callers whose inputs are known good. */
function capFor(c: number, totalLoad: number, weight: number, totalWeight: number): number {
  return Math.ceil((c * (totalLoad + 1) * weight) / totalWeight);
}

/**
 * Picks the node for `key` under bounded loads, given the current load of each node (a
 * stateless helper; {@link BoundedLoads} keeps the loads for you). Walks the ring clockwise
 * from the key and returns the first node whose load is below its cap. It never loops: it
 * visits each node at most once, and if every node is at or over its cap (possible only when
 * the loads given are inconsistent with the ring) it returns the node with the lowest
 * load-to-cap ratio, the first such clockwise. `undefined` only for an empty ring.
 */
export function boundedGet<T>(
  ring: HashRing<T>,
  key: Key,
  loadOf: (node: RingNode<T>) => number,
  c = 1.25,
): RingNode<T> | undefined {
  const { c: factor } = resolveOptions('boundedGet', { c }, spec);
  if (!(ring instanceof HashRing)) {
    throw new InvalidOptionError('boundedGet', 'ring', 'a HashRing', ring);
  }
  checkKey('boundedGet', key);
  if (typeof loadOf !== 'function') {
    throw new InvalidOptionError('boundedGet', 'loadOf', 'a function (node) => load', loadOf);
  }
  // Every load is checked where it is read: the walk compares them with caps.
  const checkedLoad = (node: RingNode<T>): number => {
    const load: unknown = loadOf(node);
    if (typeof load !== 'number' || !(load >= 0 && load < Infinity)) {
      throw new InvalidOptionError(
        'boundedGet',
        'loadOf',
        'a function returning finite loads >= 0',
        load,
        `for node ${JSON.stringify(node.id)}`,
      );
    }
    return load;
  };
  let totalLoad = 0;
  for (const node of ring.nodes()) totalLoad += checkedLoad(node);
  return pickBounded(ring, key, checkedLoad, factor, totalLoad);
}

function pickBounded<T>(
  ring: HashRing<T>,
  key: Key,
  loadOf: (node: RingNode<T>) => number,
  factor: number,
  totalLoad: number,
): RingNode<T> | undefined {
  const totalWeight = ring.totalWeight;
  let fallback: RingNode<T> | undefined;
  let fallbackRatio = Infinity;
  const chosen = ring.findFrom(key, (node) => {
    const cap = capFor(factor, totalLoad, node.weight, totalWeight);
    const load = loadOf(node);
    if (load < cap) return true;
    if (load / cap < fallbackRatio) {
      fallback = node;
      fallbackRatio = load / cap;
    }
    return false;
  });
  return chosen ?? fallback;
}

/**
 * Assigns keys to a ring's nodes under bounded loads and keeps the per-node counts. Use it for
 * sticky assignments with a lifetime — sessions, connections, jobs — calling `release` when one
 * ends, so every node stays within c times its share.
 *
 * @example
 * ```ts
 * import { BoundedLoads, HashRing } from 'keel/hashring';
 *
 * const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] });
 * const loads = new BoundedLoads(ring, { c: 1.25 });
 * const node = loads.assign('session:42'); // never pushes a node past its cap
 * console.log(node?.id, loads.load(node?.id ?? ''), loads.capOf(node?.id ?? ''));
 * loads.release(node?.id ?? '');
 * ```
 */
export class BoundedLoads<T = unknown> {
  readonly #ring: HashRing<T>;
  readonly #c: number;
  readonly #loads = new Map<string, number>();
  #total = 0;
  #revision = -1;

  constructor(ring: HashRing<T>, options: BoundedLoadsOptions = {}) {
    if (!((ring as unknown) instanceof HashRing)) {
      throw new InvalidOptionError(OWNER, 'ring', 'a HashRing', ring);
    }
    this.#ring = ring;
    this.#c = resolveOptions(OWNER, options, spec).c;
  }

  /** The load factor c. */
  get c(): number {
    return this.#c;
  }

  /** Keys currently assigned, over all nodes. */
  get totalLoad(): number {
    return this.#total;
  }

  /** Keys currently assigned to a node (0 for unknown ids). */
  load(id: string): number {
    return this.#loads.get(id) ?? 0;
  }

  /** The cap a node has for the next assignment; 0 for an id not on the ring. */
  capOf(id: string): number {
    const node = this.#ring.node(id);
    if (node === undefined) return 0;
    return capFor(this.#c, this.#total, node.weight, this.#ring.totalWeight);
  }

  /** For equal weights: the cap every node has for the next assignment. */
  get cap(): number {
    const size = this.#ring.size;
    return size === 0 ? 0 : Math.ceil((this.#c * (this.#total + 1)) / size);
  }

  /**
   * Assigns `key` to the first node clockwise below its cap and counts it; `undefined` only
   * on an empty ring. Loads of nodes that left the ring are forgotten first.
   */
  assign(key: Key): RingNode<T> | undefined {
    this.#forgetDeparted();
    const node = pickBounded(
      this.#ring,
      key,
      (n) => this.#loads.get(n.id) ?? 0,
      this.#c,
      this.#total,
    );
    if (node !== undefined) {
      this.#loads.set(node.id, (this.#loads.get(node.id) ?? 0) + 1);
      this.#total++;
    }
    return node;
  }

  /**
   * Ends `count` assignments on node `id`. Releasing more than a node on the ring holds is an
   * error: it would mean the caller's bookkeeping and ours disagree. Releasing from a node that
   * is not on the ring (it left since the assignment) does nothing: its load left with it —
   * whether or not an `assign()` has forgotten it yet, so the answer does not depend on that.
   */
  release(id: string, count = 1): void {
    this.#forgetDeparted();
    const current = this.#loads.get(id) ?? 0;
    const departed = current === 0 && !this.#ring.has(id);
    if (!Number.isInteger(count) || count < 1 || (count > current && !departed)) {
      throw new InvalidOptionError(
        OWNER,
        'count',
        `an integer from 1 to ${current} (the load of ${describeValue(id)})`,
        count,
        'release(id, count)',
      );
    }
    if (departed) return;
    if (current === count) this.#loads.delete(id);
    else this.#loads.set(id, current - count);
    this.#total -= count;
  }

  /** Forgets every assignment. */
  reset(): void {
    this.#loads.clear();
    this.#total = 0;
  }

  #forgetDeparted(): void {
    if (this.#revision === this.#ring.revision) return;
    this.#revision = this.#ring.revision;
    for (const [id, load] of this.#loads) {
      if (!this.#ring.has(id)) {
        this.#loads.delete(id);
        this.#total -= load;
      }
    }
  }
}
