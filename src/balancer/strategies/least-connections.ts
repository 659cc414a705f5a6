/**
 * Least connections: the usable endpoint with the fewest calls in flight per unit of weight
 * (nginx's `least_conn`, weighted), ties broken at random so equal endpoints share the load.
 *
 * Like HAProxy's leastconn, which keeps servers in a tree keyed by load, endpoints are kept
 * ordered by load rather than scanned: one bucket per distinct load `inFlight / weight`, the
 * buckets' loads in a binary min-heap. A pick draws uniformly from the lowest bucket —
 * O(1) — and a call starting or ending moves one endpoint between buckets — O(log k) for k
 * distinct loads — through the balancer's `loadChanged` notice. Whenever the usable set or
 * the weights may have changed (the pick context's `version`), the buckets are rebuilt from
 * the endpoints (O(n)). When the lowest bucket holds no usable endpoint for this pick (every
 * one excluded), the pick falls back to the plain O(n) scan, which is also the reference the
 * property tests compare against.
 *
 * @packageDocumentation
 */
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';

/** Draws from the lowest bucket before an unusable (excluded) member makes the pick scan. */
const MAX_DRAWS = 8;

/** The endpoints with one load value, in no particular order (swap-remove). */
interface Bucket<T> {
  readonly load: number;
  readonly members: EndpointState<T>[];
  /** Whether its load is in the heap. An emptied bucket leaves the heap when it reaches the top. */
  queued: boolean;
}

/**
 * Emptied buckets are kept for reuse (a call ending and the next starting move endpoints back
 * and forth between the same few loads); past this many per endpoint, the next pick rebuilds.
 */
const BUCKETS_PER_ENDPOINT = 4;

/**
 * The O(n) scan: the usable endpoint with the lowest `inFlight / effectiveWeight`, uniformly at
 * random among ties (reservoir sampling in list order).
 */
export function scanLeastConnections<T>(
  states: readonly EndpointState<T>[],
  ctx: PickContext<T>,
): EndpointState<T> | undefined {
  let chosen: EndpointState<T> | undefined;
  let best = Infinity;
  let ties = 0;
  for (const state of states) {
    if (!ctx.usable(state)) continue;
    const load = state.inFlight / state.effectiveWeight;
    if (load < best || chosen === undefined) {
      best = load;
      chosen = state;
      ties = 1;
    } else if (load === best) {
      // Reservoir sampling over the tied minimum: each tied endpoint equally likely.
      ties++;
      if (ctx.randomIndex(ties) === 0) chosen = state;
    }
  }
  return chosen;
}

class LeastConnections<T> implements Strategy<T> {
  readonly name = 'least-connections';
  readonly loadAware = true;
  #states: readonly EndpointState<T>[] = [];
  /** Set by `reset`: the next pick rebuilds whatever the version. */
  #stale = true;
  #builtFor = -1;
  /**
   * Load → bucket. An emptied bucket keeps its heap entry until it reaches the top, and stays
   * in the map (out of the heap) after that, so the next endpoint at that load reuses it.
   */
  readonly #buckets = new Map<number, Bucket<T>>();
  /** Min-heap of the loads of the buckets in `#buckets`, one entry per bucket. */
  #heap: number[] = [];
  /** Per list position: the endpoint's bucket (undefined: not tracked) and slot in it. */
  #bucketOf: (Bucket<T> | undefined)[] = [];
  #slot = new Int32Array(0);

  reset(states: readonly EndpointState<T>[]): void {
    this.#states = states;
    this.#stale = true;
  }

  loadChanged(state: EndpointState<T>): void {
    if (this.#stale || this.#states[state.index] !== state) return;
    const from = this.#bucketOf[state.index];
    if (from === undefined) return; // not usable at the last rebuild: not tracked
    this.#detach(state, from);
    this.#attach(state);
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    if (
      this.#stale ||
      ctx.version !== this.#builtFor ||
      this.#buckets.size > BUCKETS_PER_ENDPOINT * this.#states.length + 64
    )
      this.#rebuild(ctx.version);
    const heap = this.#heap;
    let top: Bucket<T> | undefined;
    while (heap.length > 0) {
      const bucket = this.#buckets.get(heap[0] as number) as Bucket<T>;
      if (bucket.members.length > 0) {
        top = bucket;
        break;
      }
      // An emptied bucket reached the top: out of the heap, kept in the map for reuse.
      bucket.queued = false;
      this.#pop();
    }
    if (top !== undefined) {
      const members = top.members;
      for (let draw = 0; draw < MAX_DRAWS; draw++) {
        const state = members[ctx.randomIndex(members.length)] as EndpointState<T>;
        if (ctx.usable(state)) return state;
      }
    }
    // Nothing tracked, or the lowest bucket excluded for this pick: the exact scan.
    return scanLeastConnections(this.#states, ctx);
  }

  /** Buckets every endpoint available now (not ejected, or panic mode) by its load. O(n). */
  #rebuild(version: number): void {
    this.#stale = false;
    this.#builtFor = version;
    this.#buckets.clear();
    this.#heap = [];
    const states = this.#states;
    const n = states.length;
    if (this.#slot.length < n) this.#slot = new Int32Array(n);
    this.#bucketOf.length = n;
    for (let i = 0; i < n; i++) {
      const state = states[i] as EndpointState<T>;
      this.#bucketOf[i] = undefined;
      if (state.available) this.#attach(state);
    }
  }

  #attach(state: EndpointState<T>): void {
    const load = state.inFlight / state.effectiveWeight;
    let bucket = this.#buckets.get(load);
    if (bucket === undefined) {
      bucket = { load, members: [], queued: true };
      this.#buckets.set(load, bucket);
      this.#push(load);
    } else if (!bucket.queued) {
      bucket.queued = true;
      this.#push(load);
    }
    this.#slot[state.index] = bucket.members.length;
    bucket.members.push(state);
    this.#bucketOf[state.index] = bucket;
  }

  #detach(state: EndpointState<T>, bucket: Bucket<T>): void {
    const members = bucket.members;
    const slot = this.#slot[state.index] as number;
    const last = members.pop() as EndpointState<T>;
    if (last !== state) {
      members[slot] = last;
      this.#slot[last.index] = slot;
    }
    this.#bucketOf[state.index] = undefined;
  }

  #push(load: number): void {
    const heap = this.#heap;
    let i = heap.length;
    heap.push(load);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const above = heap[parent] as number;
      if (above <= load) break;
      heap[i] = above;
      i = parent;
    }
    heap[i] = load;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop() as number;
    const n = heap.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && (heap[right] as number) < (heap[left] as number) ? right : left;
      if ((heap[child] as number) >= last) break;
      heap[i] = heap[child] as number;
      i = child;
    }
    heap[i] = last;
  }
}

/**
 * Picks the usable endpoint with the lowest `inFlight / weight`, ties at random: O(1) per pick
 * and O(log k) per call started or ended (k distinct loads), instead of an O(n) scan. Needs
 * `acquire()` / `lease.done()` so in-flight counts are known.
 *
 * @example
 * ```ts
 * import { LoadBalancer, leastConnections } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({ strategy: leastConnections(), endpoints: [{ id: 'a' }, { id: 'b' }] });
 * const first = balancer.acquire();
 * const second = balancer.acquire(); // the other endpoint: the first has a call in flight
 * console.log(first?.endpoint.id !== second?.endpoint.id); // true
 * first?.done({ ok: true });
 * second?.done({ ok: true });
 * ```
 */
export function leastConnections<T = unknown>(): Strategy<T> {
  return new LeastConnections<T>();
}
