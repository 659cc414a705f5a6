/**
 * Smooth weighted round-robin (SWRR), exactly as nginx picks peers: the nginx change "Upstream:
 * smooth weighted round-robin balancing" (Maxim Dounin, 2012), `ngx_http_upstream_get_peer` in
 * `src/http/ngx_http_upstream_round_robin.c`. On every pick each eligible endpoint's `current`
 * grows by its effective weight, the endpoint with the largest `current` wins (the first in list
 * order on a tie) and loses the sum of the effective weights. With integer weights w_i that gives
 * exactly w_i picks of each endpoint in every cycle of Σw picks, interleaved: weights
 * `{a: 5, b: 1, c: 1}` give `a a b a c a a`, not `a a a a a b c`.
 *
 * Two strategies live here and make the same picks:
 *
 * - {@link nginxSmoothWeightedRoundRobin}: the plain O(n) loop, the oracle for tests and
 *   benchmarks.
 * - {@link smoothWeightedRoundRobin}: the same sequence of picks and the same `current` values,
 *   with endpoints grouped into classes of equal effective weight, a lazy offset shared by each
 *   class and a sorted circular list per class: O(k) per pick for k distinct weights in the steady
 *   state, instead of O(n).
 *
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';

/**
 * The nginx loop over `states` in list order: `current += weight` for every usable endpoint, the
 * strictly greatest `current` wins (so the first one on a tie), the winner loses the total.
 * `current[i]` is nginx's `peer->current_weight` of `states[i]`. Shared by both strategies so
 * that the grouped one, when it falls back, performs the very same floating-point operations in
 * the very same order as the reference.
 */
function nginxPick<T>(
  states: readonly EndpointState<T>[],
  current: Float64Array,
  ctx: PickContext<T>,
): EndpointState<T> | undefined {
  let best = -1;
  let bestCurrent = 0;
  let total = 0;
  for (let i = 0; i < states.length; i++) {
    const state = states[i] as EndpointState<T>;
    if (!ctx.usable(state)) continue;
    const weight = ctx.weightOf(state);
    const value = (current[i] as number) + weight;
    current[i] = value;
    total += weight;
    if (best < 0 || value > bestCurrent) {
      best = i;
      bestCurrent = value;
    }
  }
  if (best < 0) return undefined;
  current[best] = bestCurrent - total;
  return states[best];
}

/**
 * The `current` values for a new list: an endpoint that stays (the same state object) keeps its
 * value from the old list, so an update does not restart the rotation; a new one starts at 0.
 * O(n) with a map, only on `reset`.
 */
function carryCurrent<T>(
  oldStates: readonly EndpointState<T>[],
  oldCurrent: Float64Array,
  states: readonly EndpointState<T>[],
): Float64Array {
  const byState = new Map<EndpointState<T>, number>();
  for (let i = 0; i < oldStates.length; i++)
    byState.set(oldStates[i] as EndpointState<T>, oldCurrent[i] as number);
  const current = new Float64Array(states.length);
  for (let i = 0; i < states.length; i++)
    current[i] = byState.get(states[i] as EndpointState<T>) ?? 0;
  return current;
}

/** Position of `state` in `states` (its `index` when that is current), or -1. */
function positionOf<T>(states: readonly EndpointState<T>[], state: EndpointState<T>): number {
  return states[state.index] === state ? state.index : states.indexOf(state);
}

class NginxSmoothWeightedRoundRobin<T> implements SmoothWeightedRoundRobinStrategy<T> {
  readonly name = 'swrr-reference';
  readonly loadAware = false;
  #states: readonly EndpointState<T>[] = [];
  /** Per position in `#states`: nginx's `current_weight`. */
  #current: Float64Array = new Float64Array(0);

  reset(states: readonly EndpointState<T>[]): void {
    // A copy: the loop's order is the list order of this call, whatever the caller does later.
    const next = states.slice();
    const current = carryCurrent(this.#states, this.#current, next);
    this.#states = next;
    this.#current = current;
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    return nginxPick(this.#states, this.#current, ctx);
  }

  flush(): void {
    // Always exact.
  }

  currentOf(state: EndpointState<T>): number | undefined {
    const position = positionOf(this.#states, state);
    return position < 0 ? undefined : this.#current[position];
  }
}

/**
 * The reference smooth weighted round-robin: nginx's O(n)-per-pick loop, kept as the oracle that
 * {@link smoothWeightedRoundRobin} is tested and benchmarked against. Endpoints that stay across
 * `reset` keep their `current`, so an update does not restart the rotation; new endpoints start
 * at 0.
 *
 * @internal
 */
export function nginxSmoothWeightedRoundRobin<T = unknown>(): SmoothWeightedRoundRobinStrategy<T> {
  return new NginxSmoothWeightedRoundRobin<T>();
}

/**
 * {@link smoothWeightedRoundRobin}'s strategy object: a {@link Strategy} plus `flush()` and
 * `currentOf()`, which tests use to compare it with nginx's loop value for value.
 */
export interface SmoothWeightedRoundRobinStrategy<T = unknown> extends Strategy<T> {
  /**
   * Writes the exact `current` of every endpoint into the strategy's per-endpoint array.
   * Between picks the grouped strategy keeps the `current` of the endpoints eligible since its
   * last rebuild as relative values and a shared offset; the array holds their value as of the
   * last flush. O(n); picks stay valid afterwards. `reset()` flushes by itself.
   *
   * @internal
   */
  flush(): void;
  /**
   * The exact `current` (nginx's `current_weight`) of an endpoint of the last `reset`'s list,
   * or `undefined` for one not in it. Flushes first, so O(n).
   *
   * @internal
   */
  currentOf(state: EndpointState<T>): number | undefined;
}

// Exactness budget (see `#rebuild`): every value either strategy computes must be a multiple of a
// power of two Q and below 2^53·Q in magnitude, so that every addition, subtraction and offset
// product is exact. The bound B on |current| is kept under about 2^49·Q (2·B ≤ 2^50·Q up to a
// rounding factor 1 + n·2^-53) and the class offsets tick·w_k under 2^50·Q (they are folded into
// the members before that), which leaves |relative value| < 2^51·Q and
// |relative value − total| < 2^52·Q: a factor 2 of slack everywhere.
const BUDGET_BITS = 50;
/** Largest grain used, so that 2^(grain + BUDGET_BITS) stays finite. */
const MAX_GRAIN = 1023 - BUDGET_BITS;

/** The bits of one double, read big-endian whatever the platform; reused, so reads allocate nothing. */
const bits = new DataView(new ArrayBuffer(8));

/**
 * The exponent e of the lowest set bit of a finite nonzero double x: x is an odd multiple of 2^e.
 * (IEEE-754 binary64: x = ±(2^52 + m)·2^(E − 1075) for a biased exponent E ≥ 1, or ±m·2^-1074
 * for subnormals, with m the 52-bit fraction.)
 */
function lowestBitExponent(x: number): number {
  bits.setFloat64(0, x);
  const hi = bits.getUint32(0);
  const lo = bits.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  const scale = biased === 0 ? -1074 : biased - 1075;
  if (lo !== 0) return scale + 31 - Math.clz32(lo & -lo);
  const top = (hi & 0xfffff) | (biased === 0 ? 0 : 0x100000);
  return scale + 32 + 31 - Math.clz32(top & -top);
}

class SmoothWeightedRoundRobin<T> implements SmoothWeightedRoundRobinStrategy<T> {
  readonly name = 'smooth-weighted-round-robin';
  readonly loadAware = false;

  /** The list of the last `reset`, in caller order; a position in it is the tie-breaker. */
  #states: EndpointState<T>[] = [];
  /**
   * Per position: nginx's `current_weight`, exact for endpoints not grouped at the last rebuild
   * and for all of them after a flush (grouped ones live in `#rel` and the class offsets).
   */
  #current: Float64Array = new Float64Array(0);
  /** Set by `reset` and by a fallback pick: the next pick rebuilds whatever the version. */
  #stale = true;
  /** `ctx.version` the classes were built for. */
  #builtVersion = 0;
  /**
   * Whether the classes below hold the truth: then the `current` of an eligible endpoint at
   * position p of class k is `#rel[p] + #tick·w_k`, and `#current[p]` may be out of date.
   * Otherwise every `#current[p]` is exact and picks run the nginx loop.
   */
  #grouped = false;

  /** Per position: `current` minus its class offset (meaningful for grouped positions). */
  #rel = new Float64Array(0);
  /** Per position: effective weight at the last rebuild, 0 when not eligible. */
  #weightAt = new Float64Array(0);
  /** Per position: its class, during a rebuild. */
  #classOf = new Int32Array(0);
  /**
   * Per class k, the positions of its members in `#ring[#start[k] … #start[k+1])`, a circular
   * list starting at slot `#head[k]`, sorted by relative value descending and then position
   * ascending: the head is the member nginx would pick first among them.
   */
  #ring = new Int32Array(0);
  #start = new Int32Array(1);
  #head = new Int32Array(0);
  /** Per class: its effective weight w_k. */
  #classWeight = new Float64Array(0);
  /** Per class: the head's relative value and position (copies, so a pick reads two arrays). */
  #leadValue = new Float64Array(0);
  #leadPos = new Int32Array(0);
  #classCount = 0;
  /**
   * Picks since the last fold. Every member of class k gained `#tick·w_k` that is not in its
   * relative value yet: one counter serves as the lazy offset of every class.
   */
  #tick = 0;
  /** Fold when `#tick` would pass this: keeps `#tick·w_k` ≤ 2^50·Q. */
  #foldTick = 0;
  /** Σ effective weights of the eligible endpoints: nginx's `total`. */
  #total = 0;
  /** Weight → class during a rebuild; kept to be cleared and reused. */
  readonly #classByWeight = new Map<number, number>();

  reset(states: readonly EndpointState<T>[]): void {
    // Write the grouped values back first: the endpoints that stay keep their `current`, so the
    // rotation carries on instead of restarting (the bug EndpointState exists to prevent).
    // Materializing changes no value, so a throw below leaves the strategy as it was.
    this.#materialize();
    const next = states.slice();
    const current = carryCurrent(this.#states, this.#current, next);
    this.#grouped = false;
    this.#stale = true;
    this.#states = next;
    this.#current = current;
    const n = states.length;
    if (this.#rel.length < n) {
      this.#rel = new Float64Array(n);
      this.#weightAt = new Float64Array(n);
      this.#classOf = new Int32Array(n);
      this.#ring = new Int32Array(n);
      this.#start = new Int32Array(n + 1);
      this.#head = new Int32Array(n);
      this.#classWeight = new Float64Array(n);
      this.#leadValue = new Float64Array(n);
      this.#leadPos = new Int32Array(n);
    }
  }

  flush(): void {
    this.#materialize();
  }

  currentOf(state: EndpointState<T>): number | undefined {
    const position = positionOf(this.#states, state);
    if (position < 0) return undefined;
    this.#materialize();
    return this.#current[position];
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    if (this.#stale || ctx.version !== this.#builtVersion) this.#rebuild(ctx);
    if (!this.#grouped) return nginxPick(this.#states, this.#current, ctx);
    const classes = this.#classCount;

    let tick = this.#tick + 1;
    if (tick > this.#foldTick) {
      this.#fold();
      tick = 1;
    }
    this.#tick = tick;
    // nginx's winner is the best class head under (current desc, position asc): within a class
    // every member has gained the same tick·w_k, so the order on relative values is the order on
    // `current`. The sums below are exact `current` values (see BUDGET_BITS).
    const leadValue = this.#leadValue;
    const leadPos = this.#leadPos;
    const classWeight = this.#classWeight;
    let bestClass = 0;
    let bestValue = (leadValue[0] as number) + tick * (classWeight[0] as number);
    for (let k = 1; k < classes; k++) {
      const value = (leadValue[k] as number) + tick * (classWeight[k] as number);
      if (
        value > bestValue ||
        (value === bestValue && (leadPos[k] as number) < (leadPos[bestClass] as number))
      ) {
        bestValue = value;
        bestClass = k;
      }
    }
    const bestPos = leadPos[bestClass] as number;

    const chosen = this.#states[bestPos] as EndpointState<T>;
    if (!ctx.usable(chosen)) {
      // Eligibility changed without a version bump (for example a per-pick exclusion). Take this
      // pick's additions back (exactly), write the exact values out and let the nginx loop make
      // this pick; the next pick rebuilds. So an unusable endpoint is never handed out.
      this.#tick = tick - 1;
      this.#materialize();
      this.#grouped = false;
      this.#stale = true;
      return nginxPick(this.#states, this.#current, ctx);
    }
    const rel = this.#rel;
    const dropped = (rel[bestPos] as number) - this.#total;
    rel[bestPos] = dropped;
    this.#requeue(bestClass, bestPos, dropped);
    return chosen;
  }

  /**
   * The head of class k (position `pos`) just lost the total W: rotate it to the back of the
   * circular list, then move it forward past every member it still precedes. In the steady state
   * it moves no further: if a class's values lie within W of each other, the head (the largest,
   * v₁) drops to v₁ − W, at or below every other member, and the new spread v₂ − (v₁ − W) is again
   * at most W; so it can precede only members tied with it at the minimum that have a larger
   * position. Each further step is charged to a pair of members more than W apart (or exactly W,
   * once per pair), and such gaps only narrow, so after a rebuild the extra work is bounded by
   * the initial spread of the class.
   */
  #requeue(k: number, pos: number, value: number): void {
    const ring = this.#ring;
    const rel = this.#rel;
    const base = this.#start[k] as number;
    const end = this.#start[k + 1] as number;
    let slot = this.#head[k] as number;
    let front = slot + 1;
    if (front === end) front = base;
    this.#head[k] = front;
    // `pos` is at `slot`, which is now the back of the list.
    while (slot !== front) {
      const prevSlot = slot === base ? end - 1 : slot - 1;
      const prev = ring[prevSlot] as number;
      const prevValue = rel[prev] as number;
      if (value < prevValue || (value === prevValue && pos > prev)) break;
      ring[slot] = prev;
      slot = prevSlot;
    }
    ring[slot] = pos;
    const lead = ring[front] as number;
    this.#leadPos[k] = lead;
    this.#leadValue[k] = rel[lead] as number;
  }

  /** Writes `rel + tick·w_k` (exact) into `#current` for every grouped endpoint. */
  #materialize(): void {
    if (!this.#grouped) return;
    const rel = this.#rel;
    const ring = this.#ring;
    const start = this.#start;
    const current = this.#current;
    for (let k = 0; k < this.#classCount; k++) {
      const offset = this.#tick * (this.#classWeight[k] as number);
      for (let h = start[k] as number, end = start[k + 1] as number; h < end; h++) {
        const p = ring[h] as number;
        current[p] = (rel[p] as number) + offset;
      }
    }
  }

  /**
   * Moves every class offset into its members and restarts the tick. Exact (the sums are
   * `current` values) and a common shift per class, so no order changes. Runs once per
   * 2^50·Q / max w_k picks, O(n) each time.
   */
  #fold(): void {
    const rel = this.#rel;
    const ring = this.#ring;
    const start = this.#start;
    for (let k = 0; k < this.#classCount; k++) {
      const offset = this.#tick * (this.#classWeight[k] as number);
      for (let h = start[k] as number, end = start[k + 1] as number; h < end; h++) {
        const p = ring[h] as number;
        rel[p] = (rel[p] as number) + offset;
      }
      this.#leadValue[k] = (this.#leadValue[k] as number) + offset;
    }
    this.#tick = 0;
  }

  /**
   * Re-reads eligibility and effective weights after a `reset` or a version change (O(n log n)
   * for the sort by `current` within each class), and decides whether grouped picks can be exact.
   *
   * Exactness. For a fixed eligible set with weights w_i, W = Σw_i, n eligible endpoints and
   * starting values c_i with A = Σ|c_i|, every nginx step keeps Σc constant (+W, then −W), and
   * the winner had at least the mean (Σc + W)/n before losing W; so no value ever drops below
   * −(A + W), and since they sum to at most A, none exceeds n·(A + W) even mid-step. Call that
   * bound B. If every weight and every `current` is a multiple of a power of two Q and
   * B ≤ 2^49·Q, every quantity either strategy forms (values, partial totals, offsets tick·w_k,
   * relative values) is a multiple of Q below 2^53·Q in magnitude, hence exactly representable:
   * IEEE-754 addition, subtraction and multiplication return it exactly. Both strategies then
   * compute with exact rationals, where regrouping additions changes nothing, so their values —
   * and so their comparisons, ties included — are identical. When the condition fails (weights
   * such as 0.1, whose sums round; huge magnitudes; non-finite or non-positive weights), the
   * strategy runs the nginx loop itself, operation for operation, until the next rebuild.
   */
  #rebuild(ctx: PickContext<T>): void {
    this.#materialize();
    this.#grouped = false;
    this.#stale = false;
    this.#builtVersion = ctx.version;
    this.#classCount = 0;
    this.#tick = 0;

    const states = this.#states;
    const n = states.length;
    const weightAt = this.#weightAt;
    const current = this.#current;
    let eligible = 0;
    let total = 0;
    let absSum = 0;
    let maxWeight = 0;
    let grain = MAX_GRAIN; // exponent of the largest power of two dividing every value
    for (let i = 0; i < n; i++) {
      const state = states[i] as EndpointState<T>;
      weightAt[i] = 0;
      if (!ctx.usable(state)) continue;
      const w = ctx.weightOf(state);
      const c = current[i] as number;
      if (!(w > 0 && w < Infinity && Number.isFinite(c))) return; // the nginx loop
      weightAt[i] = w;
      eligible++;
      total += w; // in list order, like nginx's running `total`
      absSum += Math.abs(c);
      if (w > maxWeight) maxWeight = w;
      const wGrain = lowestBitExponent(w);
      if (wGrain < grain) grain = wGrain;
      if (c !== 0) {
        const cGrain = lowestBitExponent(c);
        if (cGrain < grain) grain = cGrain;
      }
    }
    if (eligible === 0) {
      // The nginx loop returns undefined as well, and it also notices an endpoint that becomes
      // usable again without a version bump (an exclusion lifted); rebuild on the next pick.
      this.#stale = true;
      return;
    }

    // Every value is a multiple of Q = 2^grain. The budget asks B ≤ 2^49·Q, and B ≤ n·(A + W);
    // computed in floating point, `bound` is within a relative n·2^-53 of that expression, far
    // inside the factor 2 of margin in 2·bound ≤ 2^50·Q.
    const bound = eligible * (absSum + total);
    if (!(2 * bound <= 2 ** (grain + BUDGET_BITS))) return; // the nginx loop
    this.#total = total;
    // tick·w_k ≤ foldTick·maxWeight ≤ 2^50·Q; foldTick ≥ 1 because maxWeight ≤ B. Capped so the
    // tick itself stays an exact integer.
    this.#foldTick = Math.min(Math.floor(2 ** (grain + BUDGET_BITS) / maxWeight), 2 ** 52);

    // Classes by exact weight equality, numbered in order of first appearance.
    const byWeight = this.#classByWeight;
    byWeight.clear();
    const classOf = this.#classOf;
    const start = this.#start;
    const classWeight = this.#classWeight;
    let classes = 0;
    for (let i = 0; i < n; i++) {
      const w = weightAt[i] as number;
      if (w === 0) continue;
      let k = byWeight.get(w);
      if (k === undefined) {
        k = classes++;
        byWeight.set(w, k);
        classWeight[k] = w;
        start[k + 1] = 0;
      }
      classOf[i] = k;
      start[k + 1] = (start[k + 1] as number) + 1;
    }
    byWeight.clear();
    // Counts → segment starts; fill each segment with its positions, then sort it by
    // (current desc, position asc).
    start[0] = 0;
    for (let k = 0; k < classes; k++)
      start[k + 1] = (start[k + 1] as number) + (start[k] as number);
    const ring = this.#ring;
    const rel = this.#rel;
    const head = this.#head;
    for (let k = 0; k < classes; k++) head[k] = start[k] as number; // fill cursor for now
    for (let i = 0; i < n; i++) {
      if ((weightAt[i] as number) === 0) continue;
      const k = classOf[i] as number;
      const slot = head[k] as number;
      ring[slot] = i;
      head[k] = slot + 1;
      rel[i] = current[i] as number;
    }
    const byCurrent = (a: number, b: number): number =>
      (rel[b] as number) - (rel[a] as number) || a - b;
    for (let k = 0; k < classes; k++) {
      const base = start[k] as number;
      ring.subarray(base, start[k + 1]).sort(byCurrent);
      head[k] = base;
      const lead = ring[base] as number;
      this.#leadPos[k] = lead;
      this.#leadValue[k] = rel[lead] as number;
    }
    this.#classCount = classes;
    this.#grouped = true;
  }
}

/**
 * Smooth weighted round-robin, pick for pick identical to nginx (see the module notes): each
 * endpoint gets its share of picks spread evenly through every cycle, not in bursts.
 *
 * Cost. Endpoints of equal effective weight form a class; a pick compares the k class heads and
 * moves the winner to the back of its class: O(k) for k distinct weights, where nginx's loop is
 * O(n) (16 distinct weights among 1000 endpoints: k = 16, n = 1000). The winner may have to pass
 * members it still precedes — never in the steady state (a class whose values lie within one
 * total of each other stays so, and the winner lands behind all of them, ties aside), and after a
 * rebuild at most as often as the initial spread of the class allows — so a single pick is
 * O(k + class size) at worst. A version change or `reset` costs one O(n log n) rebuild on the
 * next pick. Weights whose sums would round (such as 0.1), and `current` values that picked up
 * such rounding, make the strategy run nginx's loop itself until a rebuild finds exact values
 * again. Grouping needs 2·n·(Σw + Σ|current|) ≤ 2^50·Q, Q the largest power of two dividing every
 * weight and `current`: for integers, n·(Σw + Σ|current|) ≤ 2^49; dyadic weights (k/2^j) work too.
 *
 * `current` lives in the strategy (not on the balancer's endpoint state) and survives `reset`
 * for endpoints that stay, so list updates do not restart the rotation; `currentOf()` reads it.
 *
 * Exactness assumes what {@link PickContext.version} promises: `usable` and `weightOf` answer
 * differently only after `version` changed. A winner that is no longer usable is still caught
 * (the pick is made by the loop instead), so an unusable endpoint is never returned.
 *
 * @example
 * ```ts
 * import { LoadBalancer, smoothWeightedRoundRobin } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({
 *   strategy: smoothWeightedRoundRobin(),
 *   endpoints: [{ id: 'a', weight: 5 }, { id: 'b' }, { id: 'c' }],
 * });
 * console.log(Array.from({ length: 7 }, () => balancer.pick()?.id).join(' ')); // a a b a c a a
 * ```
 */
export function smoothWeightedRoundRobin<T = unknown>(): SmoothWeightedRoundRobinStrategy<T> {
  return new SmoothWeightedRoundRobin<T>();
}
