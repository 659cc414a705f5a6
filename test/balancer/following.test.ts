/**
 * `LoadBalancer.following(watch, options)` (issue 16, item 2): a balancer that follows any
 * watch-shaped object — `keel/balancer` needs no code from `keel/discovery` — owns it, and
 * closes with it. The `keel/discovery` `ServiceWatch` side is in test/discovery and
 * test/lifecycle.
 */
import { describe, expect, it } from 'vitest';
import { isClosedError, type Subscription } from '../../src/core/index.js';
import { LoadBalancer, roundRobin, type FollowedWatch } from '../../src/balancer/index.js';
import { invalidOption, thrown } from '../support/helpers.js';

interface Item {
  readonly id: string;
  readonly status: 'up' | 'down';
  readonly weight: number;
}

interface ItemFilter {
  readonly status?: 'up' | 'down' | 'any';
}

/** A hand-made watch: a list, a settled event, close(). */
class ListWatch implements FollowedWatch<Item, ItemFilter> {
  readonly service = 'items';
  readonly ready = Promise.resolve();
  closed = false;
  items: Item[] = [];
  readonly filters: (ItemFilter | undefined)[] = [];
  readonly #listeners = new Set<() => void>();

  instances(filter?: ItemFilter): Item[] {
    this.filters.push(filter);
    const status = filter?.status ?? 'any';
    return this.items.filter((i) => status === 'any' || i.status === status);
  }

  onSettled(listener: () => void): Subscription {
    this.#listeners.add(listener);
    const dispose = (): void => {
      this.#listeners.delete(listener);
    };
    return { dispose, [Symbol.dispose]: dispose };
  }

  settle(items: Item[]): void {
    this.items = items;
    for (const listener of this.#listeners) listener();
  }

  get listeners(): number {
    return this.#listeners.size;
  }

  close(): void {
    this.closed = true;
  }
}

describe('LoadBalancer.following', () => {
  it('follows a watch-shaped object, up instances only by default, and keeps state across batches', () => {
    const watch = new ListWatch();
    watch.items = [
      { id: 'a', status: 'up', weight: 1 },
      { id: 'b', status: 'down', weight: 1 },
    ];
    const balancer = LoadBalancer.following(watch, { strategy: roundRobin() });
    expect(balancer.name).toBe('items');
    expect(watch.filters).toEqual([{ status: 'up' }]);
    expect(balancer.endpoints().map((e) => e.id)).toEqual(['a']);
    const lease = balancer.acquireOrThrow();
    // `data` is the watch's own object, typed as always present.
    const item: Item = lease.endpoint.data;
    expect(item).toBe(watch.items[0]);
    watch.settle([...watch.items, { id: 'c', status: 'up', weight: 3 }]);
    expect(balancer.endpoints().map((e) => [e.id, e.weight])).toEqual([
      ['a', 1],
      ['c', 3],
    ]);
    expect(balancer.stats('a')?.inFlight).toBe(1);
    lease.done({ ok: true });

    const all = LoadBalancer.following(watch, {
      strategy: roundRobin(),
      filter: { status: 'any' },
      name: 'all items',
    });
    expect(all.name).toBe('all items');
    expect(all.size).toBe(3);
    all.close();
    balancer.close();
  });

  it('owns the watch: close() closes it (once), a closed watch closes the balancer', () => {
    const watch = new ListWatch();
    const balancer = LoadBalancer.following(watch, { strategy: roundRobin() });
    expect(watch.listeners).toBe(1);
    balancer.close();
    balancer.close();
    expect(watch.closed).toBe(true);
    expect(watch.listeners).toBe(0);
    expect(balancer.closed).toBe(true);
    expect(isClosedError(thrown(() => balancer.pick()))).toBe(true);

    const other = new ListWatch();
    const follower = LoadBalancer.following(other, { strategy: roundRobin() });
    other.close();
    expect(follower.closed).toBe(true);
    expect(isClosedError(thrown(() => follower.acquire()))).toBe(true);
    follower.close();
  });

  it('rejects bad options with an InvalidOptionError and closes the watch it was given', () => {
    const cases: [unknown, string][] = [
      [undefined, 'options'],
      [{ strategy: roundRobin(), filter: 'up' }, 'filter'],
      [{ strategy: roundRobin(), filter: null }, 'filter'],
      [{}, 'strategy'],
      [{ strategy: roundRobin(), name: '' }, 'name'],
    ];
    for (const [options, option] of cases) {
      const watch = new ListWatch();
      const error = invalidOption(() => LoadBalancer.following(watch, options as never));
      expect(error.option).toBe(option);
      expect(watch.closed).toBe(true);
    }
  });
});
