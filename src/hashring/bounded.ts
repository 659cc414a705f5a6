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
import { HashRing, incarnationOf, isRingNode } from './ring.js';
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

/** What BoundedLoads counts for one id. */
interface Count {
  /** The incarnation of the node `load` counts (`ring` numbering), or -1 when none is live. */
  incarnation: number;
  /** Assignments to that incarnation not yet released. */
  load: number;
  /**
   * Assignments to earlier incarnations of the id (nodes that left the ring) not yet released:
   * a `release(id)` is charged here first (see `release`).
   */
  departed: number;
}

/**
 * Assigns keys to a ring's nodes under bounded loads and keeps the per-node counts. Use it for
 * sticky assignments with a lifetime — sessions, connections, jobs — calling `release` when one
 * ends, so every node stays within c times its share.
 *
 * A node that leaves the ring takes its load with it; one added again under the same id starts
 * empty. Release with the node `assign()` returned to have each release counted against the
 * very node it was assigned to, even across a remove and re-add of its id.
 *
 * @example
 * ```ts
 * import { BoundedLoads, HashRing } from 'keel/hashring';
 *
 * const ring = new HashRing({ nodes: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] });
 * const loads = new BoundedLoads(ring, { c: 1.25 });
 * const node = loads.assign('session:42'); // never pushes a node past its cap
 * if (node !== undefined) {
 *   console.log(node.id, loads.load(node.id), loads.capOf(node.id));
 *   loads.release(node); // when the session ends
 * }
 * ```
 */
export class BoundedLoads<T = unknown> {
  readonly #ring: HashRing<T>;
  readonly #c: number;
  readonly #counts = new Map<string, Count>();
  /** The incarnation of each node object `assign()` returned, for `release(node)`. */
  readonly #issued = new WeakMap<RingNode<T>, number>();
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

  /** Keys currently assigned, over all nodes on the ring. */
  get totalLoad(): number {
    this.#forgetDeparted();
    return this.#total;
  }

  /** Keys currently assigned to the node with this id (0 for ids not on the ring). */
  load(id: string): number {
    this.#forgetDeparted();
    return this.#counts.get(id)?.load ?? 0;
  }

  /** The cap a node has for the next assignment; 0 for an id not on the ring. */
  capOf(id: string): number {
    this.#forgetDeparted();
    const node = this.#ring.node(id);
    if (node === undefined) return 0;
    return capFor(this.#c, this.#total, node.weight, this.#ring.totalWeight);
  }

  /** For equal weights: the cap every node has for the next assignment. */
  get cap(): number {
    this.#forgetDeparted();
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
      (n) => this.#counts.get(n.id)?.load ?? 0,
      this.#c,
      this.#total,
    );
    if (node !== undefined) {
      const incarnation = incarnationOf(this.#ring, node.id) as number;
      let count = this.#counts.get(node.id);
      if (count === undefined) {
        count = { incarnation, load: 0, departed: 0 };
        this.#counts.set(node.id, count);
      }
      count.load++;
      this.#total++;
      if (!this.#issued.has(node)) this.#issued.set(node, incarnation);
    }
    return node;
  }

  /**
   * Ends `count` assignments: pass the node `assign()` returned (exact), or its id. (The ring's
   * node for an id now, as from `ring.node(id)`, counts as that node.)
   *
   * - A release for a node that has left the ring does nothing: its load left with it.
   * - By node, the release is counted against the node it was assigned to, even if its id was
   *   removed and added again since (a new node, which starts empty).
   * - By id, a release cannot say which of the id's nodes it is for. It is charged first to
   *   assignments made to earlier nodes of the id that are not yet released, then to the node
   *   on the ring now. So a count is never below the node's live assignments — the cap holds —
   *   and it is exact again once those earlier assignments are released.
   *
   * Releasing more than a node on the ring holds is an error: it would mean the caller's
   * bookkeeping and ours disagree.
   */
  release(node: string | RingNode<T>, count = 1): void {
    this.#forgetDeparted();
    const given: unknown = node;
    // Only ring nodes are taken (frozen, made by a ring): nothing of a stranger is read. One
    // assign() returned is exact; the ring's node for its id now stands for that node.
    let incarnation: number | undefined;
    if (isRingNode(given)) {
      incarnation = this.#issued.get(given as RingNode<T>);
      if (incarnation === undefined && this.#ring.node(given.id) === given) {
        incarnation = incarnationOf(this.#ring, given.id);
      }
    }
    const id = incarnation === undefined ? given : (given as RingNode<T>).id;
    if (typeof id !== 'string') {
      throw new InvalidOptionError(
        OWNER,
        'id',
        'a node id, or a node assign() returned',
        node,
        'release(id, count)',
      );
    }
    const entry = this.#counts.get(id);
    const current = entry?.load ?? 0;
    const departed = entry?.departed ?? 0;
    const live = incarnationOf(this.#ring, id);
    const byNode = incarnation !== undefined;
    const gone = live === undefined || (byNode && incarnation !== live);
    // By id, assignments to the id's departed nodes are charged first (see above).
    const whole = Number.isInteger(count) && count >= 1;
    const fromDeparted = gone || byNode || !whole ? 0 : Math.min(count, departed);
    if (!whole || (!gone && count - fromDeparted > current)) {
      const most = current + (byNode ? 0 : departed);
      throw new InvalidOptionError(
        OWNER,
        'count',
        `an integer from 1 to ${most} (the load of ${describeValue(id)})`,
        count,
        'release(id, count)',
      );
    }
    if (entry === undefined) return;
    if (gone) {
      // Its load left with it; only the record of what is still out shrinks. If that record
      // is short, releases by id charged it for assignments that were the live node's, whose
      // count is high by just as much: it is corrected here.
      const fromRecord = Math.min(count, departed);
      const fromLoad = Math.min(current, count - fromRecord);
      entry.departed -= fromRecord;
      entry.load -= fromLoad;
      this.#total -= fromLoad;
    } else {
      entry.departed -= fromDeparted;
      entry.load -= count - fromDeparted;
      this.#total -= count - fromDeparted;
    }
    if (entry.load === 0 && entry.departed === 0) this.#counts.delete(id);
  }

  /** Forgets every assignment. */
  reset(): void {
    this.#counts.clear();
    this.#total = 0;
  }

  /**
   * Moves the loads of nodes that left the ring (or were removed and added again: a new
   * incarnation) to their ids' departed counts, once per ring revision.
   */
  #forgetDeparted(): void {
    if (this.#revision === this.#ring.revision) return;
    this.#revision = this.#ring.revision;
    for (const [id, entry] of this.#counts) {
      const live = incarnationOf(this.#ring, id) ?? -1;
      if (entry.incarnation === live) continue;
      entry.departed += entry.load;
      this.#total -= entry.load;
      entry.load = 0;
      entry.incarnation = live;
      if (entry.departed === 0) this.#counts.delete(id);
    }
  }
}
