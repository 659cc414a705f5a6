/**
 * Sticky picks by request key, on `keel/hashring`: the same key goes to the same endpoint
 * while it is usable, and when endpoints come and go only the keys that must move do. With
 * `boundedLoad` set, an endpoint whose in-flight calls exceed `c` times its fair share passes
 * the key on to the next endpoint clockwise (Mirrokni et al.'s bounded loads, the scheme
 * HAProxy and Vimeo use for sticky balancing).
 *
 * @packageDocumentation
 */
import {
  InvalidOptionError,
  isInvalidOptionError,
  numberOption,
  oneOfOption,
  resolveOptions,
} from '../../core/index.js';
import { HashRing, MaglevHash, type RingNode } from '../../hashring/index.js';
import type { EndpointState } from '../state.js';
import type { PickContext, Strategy } from '../strategy.js';

/** Options of {@link consistentHash}. */
export interface ConsistentHashOptions {
  /**
   * Lookup structure: a consistent-hash `ring` (least key movement on changes) or a `maglev`
   * table (faster lookups, better balance, a little more movement). @defaultValue 'ring'
   */
  readonly table?: 'ring' | 'maglev';
  /**
   * Load factor c > 1 for bounded loads on in-flight calls; unset means plain consistent
   * hashing. @defaultValue undefined
   */
  readonly boundedLoad?: number;
}

class ConsistentHash<T> implements Strategy<T> {
  readonly name = 'consistent-hash';
  readonly loadAware: boolean;
  readonly #table: 'ring' | 'maglev';
  readonly #c: number | undefined;
  #states: readonly EndpointState<T>[] = [];
  #ring = new HashRing<EndpointState<T>>();
  #maglev: MaglevHash<EndpointState<T>> | undefined;
  #ctx: PickContext<T> | undefined;
  #totalInFlight = 0;
  #totalWeight = 0;
  readonly #acceptUsable = (node: RingNode<EndpointState<T>>): boolean =>
    (this.#ctx as PickContext<T>).usable(node.data as EndpointState<T>);
  readonly #acceptBounded = (node: RingNode<EndpointState<T>>): boolean => {
    const ctx = this.#ctx as PickContext<T>;
    const state = node.data as EndpointState<T>;
    if (!ctx.usable(state)) return false;
    const cap = Math.ceil(
      ((this.#c as number) * (this.#totalInFlight + 1) * state.endpoint.weight) / this.#totalWeight,
    );
    return state.inFlight < cap;
  };

  constructor(table: 'ring' | 'maglev', c: number | undefined) {
    this.#table = table;
    this.#c = c;
    this.loadAware = c !== undefined;
  }

  reset(states: readonly EndpointState<T>[]): void {
    // Build everything first, then swap: when a table cannot be built (more endpoints or ring
    // points than it holds) the strategy keeps serving the old list, and the balancer keeps it.
    const nodes = states.map((state) => ({
      id: state.endpoint.id,
      weight: state.endpoint.weight,
      data: state,
    }));
    let ring: HashRing<EndpointState<T>>;
    let maglev: MaglevHash<EndpointState<T>> | undefined;
    try {
      ring = new HashRing({ nodes });
      maglev = this.#table === 'maglev' ? new MaglevHash({ nodes }) : undefined;
    } catch (error) {
      // The table's limit (nodes, ring points) is the caller's endpoint list: say so.
      if (!isInvalidOptionError(error)) throw error;
      throw new InvalidOptionError(
        'LoadBalancer',
        'endpoints',
        `a list the consistent-hash ${this.#table} can hold (${error.option}: ${error.expected})`,
        states.length === 1 ? '1 endpoint' : `${states.length} endpoints`,
        error.message,
      );
    }
    this.#states = states;
    this.#ring = ring;
    this.#maglev = maglev;
    this.#totalWeight = states.reduce((sum, state) => sum + state.endpoint.weight, 0);
  }

  pick(ctx: PickContext<T>): EndpointState<T> | undefined {
    const key = ctx.key;
    if (this.#states.length === 0) return undefined;
    // No key, nothing to stick to: any usable endpoint, from a random start.
    if (key === undefined) return this.#anyUsable(ctx);
    this.#ctx = ctx;
    if (this.#c !== undefined) {
      let total = 0;
      for (const state of this.#states) total += state.inFlight;
      this.#totalInFlight = total;
      const bounded = this.#ring.findFrom(key, this.#acceptBounded);
      // Every usable endpoint at its cap (only if loads moved under us): plain stickiness.
      return (bounded ?? this.#ring.findFrom(key, this.#acceptUsable))?.data;
    }
    if (this.#maglev !== undefined) {
      const owner = this.#maglev.get(key)?.data;
      if (owner !== undefined && ctx.usable(owner)) return owner;
    }
    return this.#ring.findFrom(key, this.#acceptUsable)?.data;
  }

  #anyUsable(ctx: PickContext<T>): EndpointState<T> | undefined {
    const states = this.#states;
    const n = states.length;
    const start = ctx.randomIndex(n);
    for (let i = 0; i < n; i++) {
      const state = states[(start + i) % n] as EndpointState<T>;
      if (ctx.usable(state)) return state;
    }
    return undefined;
  }
}

/**
 * Sticky picks by `pick({ key })`, on a consistent-hash ring or Maglev table, optionally with
 * bounded loads. Without a key it picks any usable endpoint. Slow start does not apply (the
 * point is that a key keeps its endpoint).
 *
 * @example
 * ```ts
 * import { LoadBalancer, consistentHash } from 'keel/balancer';
 *
 * const balancer = new LoadBalancer({
 *   strategy: consistentHash({ boundedLoad: 1.25 }),
 *   endpoints: [{ id: 'cart-1' }, { id: 'cart-2' }, { id: 'cart-3' }],
 * });
 * const lease = balancer.acquire({ key: 'cart:42' }); // the same endpoint for cart:42 each time
 * lease?.done({ ok: true });
 * ```
 */
export function consistentHash<T = unknown>(options: ConsistentHashOptions = {}): Strategy<T> {
  const resolved = resolveOptions('consistentHash', options, {
    table: oneOfOption(['ring', 'maglev'], { default: 'ring' }),
    boundedLoad: numberOption({ min: 1, minExclusive: true, max: 100, optional: true }),
  });
  return new ConsistentHash<T>(resolved.table, resolved.boundedLoad);
}
