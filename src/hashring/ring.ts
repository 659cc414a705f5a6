/**
 * The consistent-hash ring (Karger et al., "Consistent Hashing and Random Trees", STOC 1997)
 * with virtual nodes, and its ketama-compatible modes.
 *
 * Layout: two parallel typed arrays sorted by point — `points` (the 32-bit positions) and
 * `owners` (the slot of the node owning each point) — 8 bytes per virtual node. A lookup is
 * one hash and one binary search; it allocates nothing.
 *
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  guardedOption,
  integerOption,
  oneOfOption,
  resolveOptions,
  wallTime,
} from '../core/index.js';
import { rebuiltChannel, type RingRebuiltMessage } from './channels.js';
import { DuplicateNodeError, InvalidSnapshotError } from './errors.js';
import { md5Into, md5StringInto } from './md5.js';
import { murmur3Hasher, murmur3Int, murmur3StringInt, utf8 } from './murmur3.js';
import {
  checkCount,
  checkKey,
  checkOptionsShape,
  checkWeight,
  compareIds,
  resolveNode,
  resolveNodes,
} from './nodes.js';
import type { HashFunction, Key, KeyHasher, KeyRouter, NodeSpec, RingNode } from './types.js';

/**
 * How points are placed and keys hashed.
 *
 * - `keel` (default): `pointsPerWeight × weight` points per node at
 *   `hash(id + "-" + i)`; keys hashed with the ring's hash function (murmur3 unless set).
 * - `libmemcached`: byte-compatible with libmemcached's and twemproxy's weighted ketama.
 * - `libketama`: byte-compatible with last.fm's libketama.
 * - `hashring-legacy`: the placement of npm `hashring` (double-precision point counts), for
 *   users migrating from it.
 *
 * In the three compatibility modes, node ids are the server labels the C libraries hash
 * (`host:port`), keys are hashed with MD5, and the node order is the server order: it breaks
 * ties between equal points, as those libraries do.
 */
export type RingMode = 'keel' | 'libmemcached' | 'libketama' | 'hashring-legacy';

const MODES = ['keel', 'libmemcached', 'libketama', 'hashring-legacy'] as const;

/** Options of {@link HashRing}. */
export interface HashRingOptions<T = unknown> {
  /** Initial nodes. @defaultValue none */
  readonly nodes?: Iterable<NodeSpec<T>>;
  /** Placement and key-hash scheme. @defaultValue `'keel'` */
  readonly mode?: RingMode;
  /**
   * Virtual nodes per unit of weight (mode `keel` only). 160 is what ketama settled on: with
   * N nodes the standard deviation of a node's share is about 1/√160 ≈ 8% of the mean, while
   * the ring stays at 1.3 KB per node (8 bytes a point). Fewer points save memory and build
   * time but balance worse; more balance better with diminishing returns.
   * @defaultValue 160
   */
  readonly pointsPerWeight?: number;
  /**
   * Key hash (mode `keel` only): a {@link KeyHasher} or a plain `(bytes) => uint32`
   * {@link HashFunction}. Every process sharing a ring must use the same one.
   * @defaultValue murmur3 (x86, 32-bit, seed 0)
   */
  readonly hash?: KeyHasher | HashFunction;
  /**
   * Remember the owner of up to this many recent string keys. Off by default: lookups are
   * already ~50 ns, and a cache only pays off for a small set of very hot keys. Cleared on
   * every change to the ring.
   * @defaultValue 0 (off)
   */
  readonly cacheSize?: number;
}

/** One node's share of the ring, from `stats()`. */
export interface NodeShare {
  /** The node's id. */
  readonly id: string;
  /** Points (virtual nodes) the node has. */
  readonly points: number;
  /** Exact fraction of the 2³² hash space the node owns (sum of its arcs). */
  readonly share: number;
  /** Its weight over the total weight: what `share` would be with perfect balance. */
  readonly ideal: number;
}

/** Balance of a ring, computed exactly from arc lengths (no sampling). */
export interface RingStats {
  /** Each node's share of the hash space. */
  readonly nodes: readonly NodeShare[];
  /** Points (virtual nodes) on the ring in all. */
  readonly points: number;
  /** Standard deviation of `share / ideal` over nodes (0 = perfect). */
  readonly stdDev: number;
  /** Largest `share / ideal` (1 = perfect; 1.2 = the busiest node gets 20% more than its due). */
  readonly maxOverIdeal: number;
  /** Smallest `share / ideal`. */
  readonly minOverIdeal: number;
}

/** A hash range that changes owner between two rings, from {@link HashRing.diff}. */
export interface RangeMove {
  /** First hash of the range (inclusive). */
  readonly start: number;
  /** Last hash of the range (inclusive). */
  readonly end: number;
  /** Owner before, or `undefined` if the first ring was empty. */
  readonly from: string | undefined;
  /** Owner after, or `undefined` if the second ring is empty. */
  readonly to: string | undefined;
}

/** The result of {@link HashRing.diff}. */
export interface RingDiff {
  /** Maximal ranges whose owner changes, in hash order. */
  readonly moves: readonly RangeMove[];
  /** Fraction of the hash space (= of uniformly hashed keys) that changes owner. */
  readonly movedFraction: number;
}

/** A JSON-safe description of a ring, from `toJSON()`; `HashRing.fromJSON` rebuilds it. */
export interface RingSnapshot<T = unknown> {
  /** Marks the object as a ring snapshot. */
  readonly format: 'keel.hashring';
  /** Snapshot format version. */
  readonly version: 1;
  /** The ring's {@link RingMode}. */
  readonly mode: RingMode;
  /** The ring's `pointsPerWeight` option. */
  readonly pointsPerWeight: number;
  /** Name of the key hasher (`custom` for a plain function: pass it again to `fromJSON`). */
  readonly hash: string;
  /** Nodes in ring order (insertion order, which matters in the compatibility modes). */
  readonly nodes: readonly NodeSpec<T>[];
  /** {@link HashRing.fingerprint} of the ring this came from, checked on load. */
  readonly fingerprint: string;
}

/** Options of {@link HashRing.getN}. */
export interface GetNOptions {
  /**
   * Prefer nodes in zones not yet chosen: walk the ring taking only new zones first, then fill
   * up with the remaining nodes in ring order. The first node is always `get(key)`.
   * @defaultValue false
   */
  readonly distinctZones?: boolean;
}

const OWNER = 'HashRing';
const TWO_32 = 2 ** 32;
const NO_CACHE: ReadonlyMap<string, number> = new Map();
/** Owners are stored as 16-bit slot numbers: 8 bytes per point with the index. */
const MAX_SLOT = 0xffff;

/**
 * Most points a ring may have in mode `keel`: 2²⁴ (16 777 216), about 100 MB with the index and
 * seconds to build. Each node has `max(1, round(pointsPerWeight × weight))` points; a
 * node, weight or snapshot that would take the ring past this bound is refused with an
 * {@link InvalidOptionError} before anything changes (without it, weight 10⁶ built 160 M points
 * in 28 s and 10³⁰⁰ threw a RangeError). 2²⁴ holds the default 160 points for 100 000 units of
 * weight (65 536 nodes of weight 1.6, or 1 000 nodes of weight 100).
 */
export const MAX_RING_POINTS = 2 ** 24;

/**
 * Largest sum of weights in the compatibility modes: 2³² − 1. libmemcached and libketama keep
 * weights in unsigned 32-bit integers and compute shares in float32, which overflows to
 * infinity near 3.4 × 10³⁸ and left an empty ring; npm `hashring` inherits the same shares.
 */
const MAX_COMPAT_TOTAL_WEIGHT = 2 ** 32 - 1;
/** Smallest weight in the compatibility modes: the least normal float32, 2⁻¹²⁶. */
const MIN_COMPAT_WEIGHT = 2 ** -126;

function isHasher(value: unknown): value is KeyHasher {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as KeyHasher).name === 'string' &&
    typeof (value as KeyHasher).string === 'function' &&
    typeof (value as KeyHasher).bytes === 'function'
  );
}

function isHashOption(value: unknown): value is KeyHasher | HashFunction {
  return typeof value === 'function' || isHasher(value);
}

const spec = {
  mode: /* @__PURE__ */ oneOfOption(MODES, { default: 'keel' }),
  pointsPerWeight: /* @__PURE__ */ integerOption({ min: 1, max: 100_000, default: 160 }),
  hash: /* @__PURE__ */ guardedOption(isHashOption, 'a KeyHasher or a (bytes) => uint32 function', {
    default: murmur3Hasher,
  }),
  cacheSize: /* @__PURE__ */ integerOption({ min: 0, max: 10_000_000, default: 0 }),
};

/**
 * A custom hash function's answer as an unsigned 32-bit integer. Signed 32-bit answers (as
 * from `x | 0`) are taken as their two's complement; anything else — a bigint, a string, NaN,
 * a fraction, a number beyond 32 bits — is an {@link InvalidOptionError} on `hash`, instead of
 * a TypeError deep inside or every point silently coerced to 0.
 */
function hashValue(value: unknown): number {
  if (
    typeof value === 'number' &&
    Number.isInteger(value) &&
    value >= -(2 ** 31) &&
    value < 2 ** 32
  ) {
    return value >>> 0;
  }
  throw new InvalidOptionError(
    OWNER,
    'hash',
    'a function returning an integer from 0 to 2^32 - 1 (or a signed 32-bit integer)',
    value,
  );
}

function toHasher(hash: KeyHasher | HashFunction): KeyHasher {
  if (typeof hash !== 'function') return hash;
  return Object.freeze({
    name: 'custom',
    string: (key: string) => hashValue(hash(utf8(key))),
    bytes: (bytes: Uint8Array) => hashValue(hash(bytes)),
  });
}

/**
 * Sorts points (with their owner slots) by point, keeping input order among equal points.
 * Small rings pack (point, position) into a float64 — exact below 2⁵³ — and use the native
 * typed-array sort; large ones use a radix sort, whose fixed cost only pays off there.
 */
function sortPairs(keys: Uint32Array, values: Uint16Array): [Uint32Array, Uint16Array] {
  const n = keys.length;
  if (n > 2_000) return radixSortPairs(keys, values);
  const packed = new Float64Array(n);
  for (let i = 0; i < n; i++) packed[i] = (keys[i] as number) * 2 ** 21 + i;
  packed.sort();
  const sortedKeys = new Uint32Array(n);
  const sortedValues = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const value = packed[i] as number;
    const key = Math.floor(value / 2 ** 21);
    sortedKeys[i] = key;
    sortedValues[i] = values[value - key * 2 ** 21] as number;
  }
  return [sortedKeys, sortedValues];
}

/**
 * Stable LSD radix sort of 32-bit keys with 16-bit payloads, in two 16-bit passes: O(n), about
 * 10× faster than a comparison sort for a 160 000-point ring.
 */
function radixSortPairs(keys: Uint32Array, values: Uint16Array): [Uint32Array, Uint16Array] {
  const n = keys.length;
  let srcKeys: Uint32Array = keys;
  let srcValues: Uint16Array = values;
  let dstKeys: Uint32Array = new Uint32Array(n);
  let dstValues: Uint16Array = new Uint16Array(n);
  const counts = new Uint32Array(65537);
  for (let shift = 0; shift < 32; shift += 16) {
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const digit = ((srcKeys[i] as number) >>> shift) & 0xffff;
      counts[digit + 1] = (counts[digit + 1] as number) + 1;
    }
    for (let d = 1; d <= 65536; d++) counts[d] = (counts[d] as number) + (counts[d - 1] as number);
    for (let i = 0; i < n; i++) {
      const key = srcKeys[i] as number;
      const digit = (key >>> shift) & 0xffff;
      const at = counts[digit] as number;
      counts[digit] = at + 1;
      dstKeys[at] = key;
      dstValues[at] = srcValues[i] as number;
    }
    [srcKeys, dstKeys] = [dstKeys, srcKeys];
    [srcValues, dstValues] = [dstValues, srcValues];
  }
  return [srcKeys, srcValues];
}

/** Writes the decimal digits of a non-negative integer at `offset`; returns how many. */
function writeDecimal(buffer: Uint8Array, offset: number, value: number): number {
  let digits = 1;
  for (let v = value; v >= 10; v = Math.floor(v / 10)) digits++;
  for (let i = digits - 1, v = value; i >= 0; i--, v = Math.floor(v / 10))
    buffer[offset + i] = 48 + (v % 10);
  return digits;
}

/** The server label the C ketama libraries hash for a node id. */
function ketamaLabel(mode: RingMode, id: string): string {
  // libmemcached and twemproxy omit the default memcached port.
  return mode === 'libmemcached' && id.endsWith(':11211') ? id.slice(0, -':11211'.length) : id;
}

/**
 * Number of MD5 digests (4 points each) a server gets in a compatibility mode, computed with
 * the C libraries' float32 arithmetic (`Math.fround` at every step they round).
 */
export function ketamaDigests(
  mode: Exclude<RingMode, 'keel'>,
  weight: number,
  totalWeight: number,
  servers: number,
): number {
  const given: unknown = mode;
  if (given !== 'libmemcached' && given !== 'libketama' && given !== 'hashring-legacy') {
    throw new InvalidOptionError(
      'ketamaDigests',
      'mode',
      'one of "libmemcached", "libketama", "hashring-legacy"',
      mode,
    );
  }
  const checks: [string, unknown, boolean][] = [
    ['weight', weight, typeof weight === 'number' && weight > 0 && weight < Infinity],
    [
      'totalWeight',
      totalWeight,
      typeof totalWeight === 'number' &&
        totalWeight < Infinity &&
        (typeof weight !== 'number' || totalWeight >= weight),
    ],
    ['servers', servers, Number.isInteger(servers) && servers >= 1 && servers <= MAX_SLOT + 1],
  ];
  for (const [option, value, ok] of checks) {
    if (!ok) {
      throw new InvalidOptionError(
        'ketamaDigests',
        option,
        `finite weight > 0 and <= totalWeight, servers an integer from 1 to ${MAX_SLOT + 1}`,
        value,
      );
    }
  }
  return digestsFor(mode, weight, totalWeight, servers);
}

/** {@link ketamaDigests} without the checks, for the ring's own (validated) calls. */
function digestsFor(
  mode: Exclude<RingMode, 'keel'>,
  weight: number,
  totalWeight: number,
  servers: number,
): number {
  const f = Math.fround;
  switch (mode) {
    case 'libmemcached': {
      // libmemcached hosts.cc / twemproxy nc_ketama.c:
      // floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001)), pct = (float)w / (float)total
      const pct = f(f(weight) / f(totalWeight));
      return Math.floor(f(f(f(f(pct * 160) / 4) * f(servers)) + 1e-10));
    }
    case 'libketama': {
      // libketama ketama.c: floorf(pct * 40.0 * (float)n), pct float, 40.0 a double literal.
      const pct = f(f(weight) / f(totalWeight));
      return Math.floor(f(pct * 40 * f(servers)));
    }
    case 'hashring-legacy':
      // npm hashring: Math.floor(weight / total * 40 * servers) in doubles.
      return Math.floor((weight / totalWeight) * 40 * servers);
  }
}

/**
 * The incarnation of each node object a ring holds: its slot's insertion number, new each time
 * a node is added (`setWeight`'s replacement object keeps it). A module-level map rather than a
 * static block in HashRing, which would keep the class in bundles that never use it.
 */
const incarnations = /* @__PURE__ */ new WeakMap<object, number>();

/**
 * The incarnation of the node with this id: a number that is new each time a node with the id is
 * added (`setWeight` keeps it), `undefined` when no such node is on the ring. Internal: lets
 * `BoundedLoads` tell a node that was removed and re-added from the one it counted.
 */
export function incarnationOf(ring: HashRing, id: string): number | undefined {
  const node = ring.node(id);
  return node === undefined ? undefined : incarnations.get(node);
}

/** Whether `value` is a node object some ring made (frozen: reading it runs no caller code). */
export function isRingNode(value: unknown): value is RingNode {
  return typeof value === 'object' && value !== null && incarnations.has(value);
}

interface Slot<T> {
  node: RingNode<T>;
  /** Position in insertion order: the server index of the compatibility modes. */
  order: number;
}

/**
 * A consistent-hash ring with virtual nodes.
 *
 * - **Deterministic**: in mode `keel` the same set of nodes gives the same ring in every
 *   process, whatever order they were added in. Points that collide are ordered by node id
 *   (UTF-16 code-unit order), so the node with the smaller id owns the shared point.
 * - **Minimal movement**: adding a node only moves keys *to* it; removing one only moves
 *   *its* keys; changing a weight only moves keys to or from that node. `add`, `remove` and
 *   `setWeight` hash only the affected node's points and merge them in — no full rebuild (the
 *   compatibility modes rebuild, because the C libraries' point counts depend on every weight).
 * - **Fast and lean**: lookups are a hash and a binary search over typed arrays, without
 *   allocating; each virtual node costs 8 bytes.
 *
 * `get` on an empty ring returns `undefined` rather than throwing: "no node" is an ordinary
 * state for a ring fed by service discovery.
 *
 * **Bounded**: a ring holds at most {@link MAX_RING_POINTS} points in mode `keel`, and weights
 * the C libraries can hold in the compatibility modes; a constructor, `add`, `setWeight` or
 * `fromJSON` that would pass the bound throws an {@link InvalidOptionError} naming the weight,
 * and a change that throws leaves the ring as it was.
 *
 * @example
 * ```ts
 * import { HashRing } from 'keel/hashring';
 *
 * const ring = new HashRing({
 *   nodes: [
 *     { id: 'cache-a', data: { host: '10.0.0.1' } },
 *     { id: 'cache-b', data: { host: '10.0.0.2' }, weight: 2 },
 *   ],
 * });
 * const owner = ring.get('cart:1234'); // the same node in every process
 * const replicas = ring.getN('cart:1234', 2); // owner first, then the next distinct node
 * ring.add({ id: 'cache-c', data: { host: '10.0.0.3' } }); // keys move only to cache-c
 * console.log(owner?.id, replicas.length, ring.size);
 * ```
 */
export class HashRing<T = unknown> implements KeyRouter<T> {
  readonly #mode: RingMode;
  readonly #pointsPerWeight: number;
  readonly #hasher: KeyHasher;
  /** The hasher is Keel's murmur3: call it directly, without boxing its result. */
  readonly #defaultHash: boolean;
  readonly #cacheSize: number;

  #points: Uint32Array = new Uint32Array(0);
  #owners: Uint16Array = new Uint16Array(0);
  // Bucket index over the points: bucket b holds the points whose top bits equal b, so a
  // lookup scans ~2 points instead of binary-searching the whole ring (a binary search over
  // 16 000 points mispredicts a branch per level and costs ~150 ns; this costs ~10 ns).
  // buckets[b] = index of the first point >= b << shift; buckets[B] = points.length.
  #buckets: Uint32Array = new Uint32Array(2);
  #shift = 31;
  #slots: (Slot<T> | undefined)[] = [];
  #free: number[] = [];
  #byId = new Map<string, number>();
  #nextOrder = 0;
  #cache: Map<string, number> = NO_CACHE as Map<string, number>;
  #fingerprint: string | undefined;
  #totalWeight: number | undefined;
  #revision = 0;
  // Scratch space for getN: a per-slot stamp marks nodes already taken without allocating.
  #seen = new Uint32Array(0);
  #stamp = 0;
  readonly #digest = new Uint32Array(4);

  constructor(options: HashRingOptions<T> = {}) {
    // An array (`new HashRing(['a', 'b'])`) or any other non-options value is refused here,
    // before its indices could be read as unknown options "0", "1"…
    checkOptionsShape(OWNER, options);
    const { nodes, ...rest } = options;
    const resolved = resolveOptions(OWNER, rest, spec);
    this.#mode = resolved.mode;
    this.#pointsPerWeight = resolved.pointsPerWeight;
    this.#cacheSize = resolved.cacheSize;
    if (this.#mode !== 'keel') {
      if (rest.hash !== undefined) {
        throw new InvalidOptionError(
          OWNER,
          'hash',
          `no hash option in mode "${this.#mode}" (it hashes with MD5)`,
          rest.hash,
        );
      }
      if (rest.pointsPerWeight !== undefined) {
        throw new InvalidOptionError(
          OWNER,
          'pointsPerWeight',
          `no pointsPerWeight option in mode "${this.#mode}" (its point counts are fixed by the C library)`,
          rest.pointsPerWeight,
        );
      }
    }
    this.#hasher = toHasher(resolved.hash);
    this.#defaultHash = this.#hasher === murmur3Hasher;
    const initial = resolveNodes<T>(OWNER, nodes);
    let points = 0;
    let weight = 0;
    initial.forEach((node, i) => {
      points = this.#checkSize(node, `nodes[${i}].weight`, points, weight);
      weight += node.weight;
    });
    for (const node of initial) this.#insertSlot(node);
    this.#rebuild();
  }

  /** The placement mode. */
  get mode(): RingMode {
    return this.#mode;
  }

  /** Number of nodes. */
  get size(): number {
    return this.#byId.size;
  }

  /** Increments on every change to the ring: lets dependents notice changes cheaply. */
  get revision(): number {
    return this.#revision;
  }

  /** Sum of the nodes' weights. */
  get totalWeight(): number {
    if (this.#totalWeight === undefined) {
      let total = 0;
      for (const slot of this.#byId.values()) total += this.#slots[slot]?.node.weight ?? 0;
      this.#totalWeight = total;
    }
    return this.#totalWeight;
  }

  /** Number of points (virtual nodes) on the ring. */
  get pointCount(): number {
    return this.#points.length;
  }

  /** Name of the key hasher (`murmur3`, `md5` in the compatibility modes, …). */
  get hashName(): string {
    return this.#mode === 'keel' ? this.#hasher.name : 'md5';
  }

  /** Whether a node with this id is on the ring. */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** The node with this id, or `undefined`. */
  node(id: string): RingNode<T> | undefined {
    const slot = this.#byId.get(id);
    return slot === undefined ? undefined : this.#slots[slot]?.node;
  }

  /** The sorted positions of one node's points (a copy), or an empty array for an unknown id. */
  pointsOf(id: string): Uint32Array {
    const slot = this.#byId.get(id);
    if (slot === undefined) return new Uint32Array(0);
    const owners = this.#owners;
    return this.#points.filter((_, i) => owners[i] === slot);
  }

  /** Every node, in id order. */
  nodes(): RingNode<T>[] {
    return [...this.#byId.keys()].sort(compareIds).map((id) => this.node(id) as RingNode<T>);
  }

  /** The position of `key` on the ring: its 32-bit hash under this ring's scheme. */
  hashKey(key: Key): number {
    return this.#hashChecked(key) >>> 0;
  }

  /**
   * The node owning `key`: the owner of the first point at or after the key's hash, wrapping
   * around. `undefined` when the ring is empty.
   */
  get(key: Key): RingNode<T> | undefined {
    const points = this.#points;
    if (points.length === 0) {
      checkKey(OWNER, key);
      return undefined;
    }
    if (this.#cacheSize > 0 && typeof key === 'string') {
      const cached = this.#cache.get(key);
      if (cached !== undefined) return this.#slots[cached]?.node;
      const slot = this.#owners[this.#indexOf(this.#hashChecked(key))] as number;
      if (this.#cache.size >= this.#cacheSize) {
        // Evict the oldest entry (Map iterates in insertion order): FIFO, cheap and bounded.
        const oldest = this.#cache.keys().next();
        if (oldest.done !== true) this.#cache.delete(oldest.value);
      }
      this.#cache.set(key, slot);
      return this.#slots[slot]?.node;
    }
    const slot = this.#owners[this.#indexOf(this.#hashChecked(key))] as number;
    return this.#slots[slot]?.node;
  }

  /**
   * The node owning a position on the ring (an unsigned 32-bit hash, as from
   * {@link HashRing.hashKey}); `undefined` on an empty ring.
   */
  ownerOfHash(hash: number): RingNode<T> | undefined {
    if (!Number.isInteger(hash) || hash < 0 || hash > 0xffffffff) {
      throw new InvalidOptionError(
        OWNER,
        'hash',
        'an integer from 0 to 2^32 - 1',
        hash,
        'ownerOfHash(hash)',
      );
    }
    if (this.#points.length === 0) return undefined;
    return this.#slots[this.#owners[this.#indexOf(hash)] as number]?.node;
  }

  /**
   * Up to `n` distinct nodes for `key` in ring order, starting with `get(key)` — a replica set.
   * Returns `min(n, size)` nodes; `n` must be an integer >= 0.
   */
  getN(key: Key, n: number, options?: GetNOptions): RingNode<T>[] {
    checkCount(OWNER, n);
    const points = this.#points;
    const want = Math.min(n, this.size);
    const out: RingNode<T>[] = [];
    if (want === 0) {
      checkKey(OWNER, key);
      return out;
    }
    const start = this.#indexOf(this.#hashChecked(key));
    const stamp = this.#nextStamp();
    const seen = this.#seen;
    const owners = this.#owners;
    const total = points.length;
    if (options?.distinctZones === true) {
      const zones = new Set<string | undefined>();
      for (let step = 0; step < total && out.length < want; step++) {
        const slot = owners[(start + step) % total] as number;
        if (seen[slot] === stamp) continue;
        const node = this.#slots[slot]?.node as RingNode<T>;
        // Nodes without a zone count as each in a zone of their own.
        if (node.zone !== undefined && zones.has(node.zone)) continue;
        seen[slot] = stamp;
        zones.add(node.zone);
        out.push(node);
      }
    }
    for (let step = 0; step < total && out.length < want; step++) {
      const slot = owners[(start + step) % total] as number;
      if (seen[slot] === stamp) continue;
      seen[slot] = stamp;
      out.push(this.#slots[slot]?.node as RingNode<T>);
    }
    return out;
  }

  /**
   * Visits distinct nodes clockwise from `key`'s position, the owner first, until `visit`
   * returns `true` or every node was visited. Returns the node `visit` accepted, if any.
   * The building block of bounded-load assignment.
   */
  findFrom(key: Key, visit: (node: RingNode<T>) => boolean): RingNode<T> | undefined {
    if (typeof visit !== 'function') {
      throw new InvalidOptionError(
        OWNER,
        'visit',
        'a function (node) => boolean',
        visit,
        'findFrom',
      );
    }
    const total = this.#points.length;
    if (total === 0) {
      checkKey(OWNER, key);
      return undefined;
    }
    const start = this.#indexOf(this.#hashChecked(key));
    const stamp = this.#nextStamp();
    const seen = this.#seen;
    let visited = 0;
    for (let step = 0; step < total && visited < this.size; step++) {
      const slot = this.#owners[(start + step) % total] as number;
      if (seen[slot] === stamp) continue;
      seen[slot] = stamp;
      visited++;
      const node = this.#slots[slot]?.node as RingNode<T>;
      if (visit(node)) return node;
    }
    return undefined;
  }

  /**
   * Adds a node. In mode `keel` only its own points are hashed and merged in, and keys move
   * only to it. Throws {@link DuplicateNodeError} if the id is present.
   */
  add(spec: NodeSpec<T>): this {
    const node = resolveNode<T>(OWNER, spec, 'node');
    if (this.#byId.has(node.id)) throw new DuplicateNodeError(OWNER, node.id);
    this.#checkSize(node, 'node.weight', this.#points.length, this.totalWeight);
    const slot = this.#insertSlot(node);
    if (this.#mode === 'keel') this.#mergeNode(slot);
    else this.#rebuild();
    this.#changed();
    if (rebuiltChannel.active) this.#publish('add', node.id);
    return this;
  }

  /**
   * Removes the node with this id; only its keys move. Removing an id that is not on the ring
   * is a no-op that returns `false` (rings fed by discovery see the same removal twice).
   */
  remove(id: string): boolean {
    const slot = this.#byId.get(id);
    if (slot === undefined) return false;
    this.#byId.delete(id);
    this.#slots[slot] = undefined;
    this.#free.push(slot);
    if (this.#mode === 'keel') this.#dropSlot(slot);
    else this.#rebuild();
    this.#changed();
    if (rebuiltChannel.active) this.#publish('remove', id);
    return true;
  }

  /**
   * Changes a node's weight. In mode `keel` the node keeps its first points and gains or loses
   * points at the end, so keys move only to or from that node. Throws if the id is unknown.
   */
  setWeight(id: string, weight: number): this {
    const slot = this.#byId.get(id);
    const current = slot === undefined ? undefined : this.#slots[slot];
    if (slot === undefined || current === undefined) {
      throw new InvalidOptionError(
        OWNER,
        'id',
        'the id of a node on the ring',
        id,
        'setWeight(id, weight)',
      );
    }
    checkWeight(OWNER, id, weight);
    const node = resolveNode<T>(OWNER, { ...current.node, weight }, 'node');
    if (node.weight === current.node.weight) return this;
    this.#checkSize(
      node,
      'weight',
      this.#points.length - this.#pointsFor(current.node),
      this.totalWeight - current.node.weight,
    );
    current.node = node;
    incarnations.set(node, current.order);
    if (this.#mode === 'keel') {
      this.#dropSlot(slot);
      this.#mergeNode(slot);
    } else {
      this.#rebuild();
    }
    this.#changed();
    if (rebuiltChannel.active) this.#publish('set-weight', id);
    return this;
  }

  /** Exact shares of the hash space per node, from arc lengths, and balance figures. */
  stats(): RingStats {
    const owned = new Float64Array(this.#slots.length);
    const points = this.#points;
    const owners = this.#owners;
    const count = new Uint32Array(this.#slots.length);
    for (let i = 0; i < points.length; i++) {
      // Point i owns the hashes after the previous point, up to and including itself.
      const arc =
        i === 0
          ? (points[0] as number) + 1 + (TWO_32 - 1 - (points[points.length - 1] as number))
          : (points[i] as number) - (points[i - 1] as number);
      const slot = owners[i] as number;
      owned[slot] = (owned[slot] ?? 0) + arc;
      count[slot] = (count[slot] ?? 0) + 1;
    }
    const totalWeight = this.totalWeight;
    const nodes: NodeShare[] = this.nodes().map((node) => {
      const slot = this.#byId.get(node.id) as number;
      return {
        id: node.id,
        points: count[slot] ?? 0,
        share: (owned[slot] ?? 0) / TWO_32,
        ideal: node.weight / totalWeight,
      };
    });
    const ratios = nodes.map((n) => n.share / n.ideal);
    const mean = ratios.length === 0 ? 0 : ratios.reduce((a, b) => a + b, 0) / ratios.length;
    const variance =
      ratios.length === 0 ? 0 : ratios.reduce((a, b) => a + (b - mean) ** 2, 0) / ratios.length;
    return {
      nodes,
      points: points.length,
      stdDev: Math.sqrt(variance),
      maxOverIdeal: ratios.length === 0 ? 0 : Math.max(...ratios),
      minOverIdeal: ratios.length === 0 ? 0 : Math.min(...ratios),
    };
  }

  /**
   * The exact hash ranges whose owner differs between `before` and `after`, merged into
   * maximal ranges — what must migrate, and from which node to which. Both rings must hash
   * keys the same way (same mode and hash function).
   */
  static diff<T>(before: HashRing<T>, after: HashRing<T>): RingDiff {
    for (const [option, ring] of [
      ['before', before],
      ['after', after],
    ] as const) {
      if (!HashRing.#isRing(ring)) {
        throw new InvalidOptionError('HashRing.diff', option, 'a HashRing', ring);
      }
    }
    if (
      before.hashName !== after.hashName ||
      (before.#mode === 'keel') !== (after.#mode === 'keel')
    ) {
      throw new InvalidOptionError(
        'HashRing.diff',
        'after',
        `a ring hashing keys like the first one (${before.hashName})`,
        after,
        `it hashes with ${after.hashName}`,
      );
    }
    // Every boundary of either ring splits the hash space into elementary intervals
    // (prev, point]; within one, both rings have a single owner.
    const bounds = [...new Set([...before.#points, ...after.#points])].sort((a, b) => a - b);
    const moves: RangeMove[] = [];
    let moved = 0;
    const ownerAt = (ring: HashRing<T>, hash: number): string | undefined =>
      ring.#points.length === 0
        ? undefined
        : ring.#slots[ring.#owners[ring.#indexOf(hash)] as number]?.node.id;
    const push = (start: number, end: number): void => {
      if (end < start) return;
      const from = ownerAt(before, end);
      const to = ownerAt(after, end);
      if (from === to) return;
      moved += end - start + 1;
      const last = moves[moves.length - 1];
      if (last !== undefined && last.end === start - 1 && last.from === from && last.to === to) {
        moves[moves.length - 1] = { ...last, end };
      } else {
        moves.push({ start, end, from, to });
      }
    };
    if (bounds.length === 0) return { moves, movedFraction: 0 };
    let previous = -1;
    for (const bound of bounds) {
      push(previous + 1, bound);
      previous = bound;
    }
    push(previous + 1, TWO_32 - 1); // the wrap-around arc, owned by each ring's first point
    return { moves, movedFraction: moved / TWO_32 };
  }

  /**
   * A short hex digest of everything that decides where keys go: the mode, every point and its
   * owner's id, and each node's weight and zone. Processes compare it to check cheaply that they
   * route alike. Equal rings have equal fingerprints, and rings with equal fingerprints (but for
   * a 64-bit hash collision) give the same `get`, `getN` (with `distinctZones` too) and
   * bounded-load caps for every key. A node's `data` is not in it.
   */
  get fingerprint(): string {
    if (this.#fingerprint !== undefined) return this.#fingerprint;
    const idHash = new Map<number, number>();
    for (const [id, slot] of this.#byId) idHash.set(slot, murmur3Int(utf8(id)) >>> 0);
    const points = this.#points.length;
    const buffer = new Uint32Array(points * 2 + 1);
    buffer[0] = MODES.indexOf(this.#mode);
    for (let i = 0; i < points; i++) {
      buffer[1 + 2 * i] = this.#points[i] as number;
      buffer[2 + 2 * i] = idHash.get(this.#owners[i] as number) ?? 0;
    }
    // Then every node's id, weight and zone, in id order, as JSON text: the points alone miss
    // zones (they pick getN's replicas) and weights that round to the same point count (they
    // set bounded-load caps). JSON keeps a zone's lone surrogates apart (UTF-8 would merge them)
    // and writes each weight exactly.
    const nodes = utf8(JSON.stringify(this.nodes().map((n) => [n.id, n.weight, n.zone])));
    const bytes = new Uint8Array(buffer.byteLength + nodes.length);
    bytes.set(new Uint8Array(buffer.buffer));
    bytes.set(nodes, buffer.byteLength);
    const a = murmur3Int(bytes, 0x6b65656c) >>> 0;
    const b = murmur3Int(bytes, 0x72696e67) >>> 0;
    this.#fingerprint = a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
    return this.#fingerprint;
  }

  /** A JSON-safe snapshot: `HashRing.fromJSON(ring.toJSON())` maps every key identically. */
  toJSON(): RingSnapshot<T> {
    const ordered = [...this.#byId.values()]
      .map((slot) => this.#slots[slot] as Slot<T>)
      .sort((a, b) => a.order - b.order);
    return {
      format: 'keel.hashring',
      version: 1,
      mode: this.#mode,
      pointsPerWeight: this.#pointsPerWeight,
      hash: this.hashName,
      nodes: ordered.map(({ node }) => {
        const out: { id: string; weight: number; zone?: string; data?: T } = {
          id: node.id,
          weight: node.weight,
        };
        if (node.zone !== undefined) out.zone = node.zone;
        if (node.data !== undefined) out.data = node.data;
        return out;
      }),
      fingerprint: this.fingerprint,
    };
  }

  /**
   * Rebuilds a ring from {@link HashRing.toJSON} output (an object or its JSON text). A ring
   * made with a custom hash function needs it again in `options.hash`. Malformed snapshots,
   * and snapshots whose fingerprint does not match the rebuilt ring, throw
   * {@link InvalidSnapshotError}.
   */
  static fromJSON<T = unknown>(
    snapshot: unknown,
    options: Pick<HashRingOptions<T>, 'hash' | 'cacheSize'> = {},
  ): HashRing<T> {
    const owner = 'HashRing.fromJSON';
    const given: unknown = options;
    if (typeof given !== 'object' || given === null) {
      throw new InvalidOptionError(
        owner,
        'options',
        'an options object { hash?, cacheSize? }',
        given,
      );
    }
    let value = snapshot;
    if (typeof value === 'string') {
      try {
        value = JSON.parse(value) as unknown;
      } catch (error) {
        throw new InvalidSnapshotError(owner, '$', `not valid JSON (${(error as Error).message})`);
      }
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new InvalidSnapshotError(owner, '$', 'expected an object from HashRing#toJSON()');
    }
    const s = value as Record<string, unknown>;
    if (s.format !== 'keel.hashring')
      throw new InvalidSnapshotError(owner, 'format', 'expected "keel.hashring"');
    if (s.version !== 1)
      throw new InvalidSnapshotError(
        owner,
        'version',
        `unsupported version ${JSON.stringify(s.version)}`,
      );
    if (typeof s.mode !== 'string' || !(MODES as readonly string[]).includes(s.mode)) {
      throw new InvalidSnapshotError(owner, 'mode', `expected one of ${MODES.join(', ')}`);
    }
    const mode = s.mode as RingMode;
    if (
      typeof s.pointsPerWeight !== 'number' ||
      !Number.isInteger(s.pointsPerWeight) ||
      s.pointsPerWeight < 1
    ) {
      throw new InvalidSnapshotError(owner, 'pointsPerWeight', 'expected an integer >= 1');
    }
    if (typeof s.hash !== 'string')
      throw new InvalidSnapshotError(owner, 'hash', 'expected a hasher name');
    if (typeof s.fingerprint !== 'string' || !/^[0-9a-f]{16}$/.test(s.fingerprint)) {
      throw new InvalidSnapshotError(owner, 'fingerprint', 'expected 16 hex digits');
    }
    if (!Array.isArray(s.nodes))
      throw new InvalidSnapshotError(owner, 'nodes', 'expected an array');
    const hash = options.hash ?? (s.hash === 'murmur3' || mode !== 'keel' ? undefined : null);
    if (hash === null) {
      throw new InvalidSnapshotError(
        owner,
        'hash',
        `the ring used hash "${s.hash}": pass the same function as options.hash`,
      );
    }
    let ring: HashRing<T>;
    try {
      ring = new HashRing<T>({
        mode,
        ...(mode === 'keel' ? { pointsPerWeight: s.pointsPerWeight } : {}),
        ...(hash === undefined ? {} : { hash }),
        ...(options.cacheSize === undefined ? {} : { cacheSize: options.cacheSize }),
        nodes: s.nodes as NodeSpec<T>[],
      });
    } catch (error) {
      if (error instanceof InvalidOptionError || error instanceof DuplicateNodeError) {
        throw new InvalidSnapshotError(
          owner,
          error instanceof InvalidOptionError ? error.option : 'nodes',
          error.message,
        );
      }
      throw error;
    }
    if (ring.hashName !== s.hash) {
      throw new InvalidSnapshotError(
        owner,
        'hash',
        `snapshot says "${s.hash}" but the ring hashes with "${ring.hashName}"`,
      );
    }
    if (ring.fingerprint !== s.fingerprint) {
      throw new InvalidSnapshotError(
        owner,
        'fingerprint',
        `the rebuilt ring is ${ring.fingerprint}, the snapshot says ${s.fingerprint}`,
      );
    }
    return ring;
  }

  // -------------------------------------------------------------------------------------------

  /** Brand check: a HashRing of this copy of Keel (its private fields exist). */
  static #isRing(value: unknown): value is HashRing {
    return typeof value === 'object' && value !== null && #points in value;
  }

  /** The key's hash as a signed int32 (see murmur3's `finish` for why not unsigned). */
  #hashChecked(key: Key): number {
    const ketama = this.#mode !== 'keel';
    if (typeof key === 'string') {
      if (ketama) return (md5StringInto(key, this.#digest)[0] as number) | 0;
      return this.#defaultHash ? murmur3StringInt(key, 0) : this.#hasher.string(key) | 0;
    }
    checkKey(OWNER, key);
    if (ketama) return (md5Into(key, 0, key.length, this.#digest)[0] as number) | 0;
    return this.#defaultHash ? murmur3Int(key, 0, 0, key.length) : this.#hasher.bytes(key) | 0;
  }

  /** Index of the first point >= hash, wrapping to 0 past the last point. */
  #indexOf(signedHash: number): number {
    const hash = signedHash >>> 0;
    const points = this.#points;
    const bucket = hash >>> this.#shift;
    let i = this.#buckets[bucket] as number;
    const end = this.#buckets[bucket + 1] as number;
    while (i < end && (points[i] as number) < hash) i++;
    return i === points.length ? 0 : i;
  }

  /** Installs new point arrays and rebuilds the bucket index (about 2 points per bucket). */
  #install(points: Uint32Array, owners: Uint16Array): void {
    this.#points = points;
    this.#owners = owners;
    // 2 to 4 points per bucket on average: at most 2 bytes per point for the index.
    const bits = Math.min(24, Math.max(1, Math.floor(Math.log2(Math.max(2, points.length / 2)))));
    const count = 2 ** bits;
    const shift = 32 - bits;
    const buckets = new Uint32Array(count + 1);
    // buckets[b] = first j with points[j] >>> shift >= b, i.e. points[j] >= b << shift.
    let b = 0;
    for (let j = 0; j < points.length; j++) {
      const bucket = (points[j] as number) >>> shift;
      while (b <= bucket) buckets[b++] = j;
    }
    while (b <= count) buckets[b++] = points.length;
    this.#buckets = buckets;
    this.#shift = shift;
  }

  #nextStamp(): number {
    if (this.#seen.length < this.#slots.length)
      this.#seen = new Uint32Array(Math.max(8, this.#slots.length * 2));
    this.#stamp = (this.#stamp + 1) >>> 0;
    if (this.#stamp === 0) {
      this.#seen.fill(0);
      this.#stamp = 1;
    }
    return this.#stamp;
  }

  #insertSlot(node: RingNode<T>): number {
    const slot = this.#free.pop() ?? this.#slots.length;
    if (slot > MAX_SLOT) {
      throw new InvalidOptionError(
        OWNER,
        'nodes',
        `at most ${MAX_SLOT + 1} nodes`,
        this.#byId.size + 1,
        'too many nodes',
      );
    }
    const order = this.#nextOrder++;
    this.#slots[slot] = { node, order };
    incarnations.set(node, order);
    this.#byId.set(node.id, slot);
    return slot;
  }

  #publish(change: RingRebuiltMessage['change'], id: string): void {
    rebuiltChannel.publish({
      change,
      id,
      mode: this.#mode,
      nodes: this.#byId.size,
      points: this.#points.length,
      revision: this.#revision,
      time: wallTime(),
    });
  }

  #changed(): void {
    this.#revision++;
    this.#fingerprint = undefined;
    this.#totalWeight = undefined;
    if (this.#cache.size > 0) this.#cache.clear();
    if (this.#cacheSize > 0 && this.#cache === NO_CACHE) this.#cache = new Map();
  }

  /**
   * Checks that `node` fits beside the others — `points` points and `weight` total weight
   * already — and returns the new point total (mode keel). Throws an InvalidOptionError naming
   * `option` otherwise; called before anything changes.
   */
  #checkSize(node: RingNode<T>, option: string, points: number, weight: number): number {
    const hint = `node ${JSON.stringify(node.id)}`;
    if (this.#mode === 'keel') {
      const total = points + this.#pointsFor(node);
      if (total > MAX_RING_POINTS) {
        throw new InvalidOptionError(
          OWNER,
          option,
          `a weight that keeps the ring within MAX_RING_POINTS (${MAX_RING_POINTS}) points ` +
            `(pointsPerWeight ${this.#pointsPerWeight} × weight, summed over nodes)`,
          node.weight,
          `${hint}: the ring would have ${total} points`,
        );
      }
      return total;
    }
    if (node.weight < MIN_COMPAT_WEIGHT || weight + node.weight > MAX_COMPAT_TOTAL_WEIGHT) {
      throw new InvalidOptionError(
        OWNER,
        option,
        `in mode "${this.#mode}", a weight >= 2^-126 keeping the sum of weights <= ` +
          `${MAX_COMPAT_TOTAL_WEIGHT} (the C libraries hold weights in uint32 and share them in float32)`,
        node.weight,
        hint,
      );
    }
    return points;
  }

  /** Point count of a node in mode keel. */
  #pointsFor(node: RingNode<T>): number {
    return Math.max(1, Math.round(this.#pointsPerWeight * node.weight));
  }

  /** The points of one node in mode keel, sorted if asked. */
  #nodePoints(node: RingNode<T>, sorted: boolean): Uint32Array {
    const count = this.#pointsFor(node);
    const out = new Uint32Array(count);
    if (this.#hasher === murmur3Hasher) {
      // Same bytes as hashing the string `${id}-${i}`, without building 160 strings: the
      // UTF-8 prefix is encoded once and the decimal digits of i written after it.
      const prefix = utf8(`${node.id}-`);
      const buffer = new Uint8Array(prefix.length + 16);
      buffer.set(prefix);
      for (let i = 0; i < count; i++) {
        const length = prefix.length + writeDecimal(buffer, prefix.length, i);
        out[i] = murmur3Int(buffer, 0, 0, length) >>> 0;
      }
    } else {
      const prefix = `${node.id}-`;
      for (let i = 0; i < count; i++) out[i] = this.#hasher.string(prefix + String(i));
    }
    return sorted ? out.sort() : out;
  }

  /** Rebuilds every point from scratch (construction, and any change in compatibility modes). */
  #rebuild(): void {
    const live = [...this.#byId.values()].map(
      (slot) => [slot, this.#slots[slot] as Slot<T>] as const,
    );
    // Tie-break rank: node id order in mode keel, server (insertion) order in the C modes.
    if (this.#mode === 'keel') live.sort((a, b) => compareIds(a[1].node.id, b[1].node.id));
    else live.sort((a, b) => a[1].order - b[1].order);
    const perNode: Uint32Array[] = [];
    if (this.#mode === 'keel') {
      // Unsorted: the whole ring is sorted once below.
      for (const [, { node }] of live) perNode.push(this.#nodePoints(node, false));
    } else {
      const mode = this.#mode;
      const totalWeight = live.reduce((sum, [, { node }]) => sum + node.weight, 0);
      for (const [, { node }] of live) {
        const digests = digestsFor(mode, node.weight, totalWeight, live.length);
        const label = ketamaLabel(mode, node.id);
        const out = new Uint32Array(Math.max(0, digests) * 4);
        for (let i = 0; i < digests; i++) {
          md5StringInto(`${label}-${i}`, this.#digest);
          out.set(this.#digest, i * 4);
        }
        perNode.push(out);
      }
    }
    const total = perNode.reduce((sum, p) => sum + p.length, 0);
    // Points in rank order, then a stable radix sort: equal points keep rank order, which is
    // the documented tie-break (node id in mode keel, server order in the C modes).
    const keys = new Uint32Array(total);
    const slots = new Uint16Array(total);
    let k = 0;
    perNode.forEach((nodePoints, rank) => {
      const slot = (live[rank] as readonly [number, Slot<T>])[0];
      keys.set(nodePoints, k);
      slots.fill(slot, k, k + nodePoints.length);
      k += nodePoints.length;
    });
    const [points, owners] = sortPairs(keys, slots);
    this.#install(points, owners);
    this.#changed();
  }

  /** Merges one node's points into the ring (mode keel). */
  #mergeNode(slot: number): void {
    const entry = this.#slots[slot] as Slot<T>;
    const incoming = this.#nodePoints(entry.node, true);
    const id = entry.node.id;
    const oldPoints = this.#points;
    const oldOwners = this.#owners;
    const total = oldPoints.length + incoming.length;
    const points = new Uint32Array(total);
    const owners = new Uint16Array(total);
    let i = 0;
    let j = 0;
    for (let k = 0; k < total; k++) {
      let takeOld: boolean;
      if (i >= oldPoints.length) takeOld = false;
      else if (j >= incoming.length) takeOld = true;
      else {
        const a = oldPoints[i] as number;
        const b = incoming[j] as number;
        // Equal points: the smaller node id comes first, as in a full build.
        takeOld =
          a < b ||
          (a === b && compareIds(this.#slots[oldOwners[i] as number]?.node.id ?? '', id) < 0);
      }
      if (takeOld) {
        points[k] = oldPoints[i] as number;
        owners[k] = oldOwners[i] as number;
        i++;
      } else {
        points[k] = incoming[j] as number;
        owners[k] = slot;
        j++;
      }
    }
    this.#install(points, owners);
  }

  /** Removes every point owned by `slot` (mode keel). */
  #dropSlot(slot: number): void {
    const oldPoints = this.#points;
    const oldOwners = this.#owners;
    let keep = 0;
    for (let i = 0; i < oldOwners.length; i++) if (oldOwners[i] !== slot) keep++;
    const points = new Uint32Array(keep);
    const owners = new Uint16Array(keep);
    let k = 0;
    for (let i = 0; i < oldOwners.length; i++) {
      if (oldOwners[i] === slot) continue;
      points[k] = oldPoints[i] as number;
      owners[k] = oldOwners[i] as number;
      k++;
    }
    this.#install(points, owners);
  }
}
