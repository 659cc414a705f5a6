/**
 * A `set` or `delete` in another process racing a load in this one (real redis-server): the
 * lease token keeps the load's value out of Redis, and the other process's invalidation message
 * must keep it out of this process's L1 — whatever path the load took (no lease: a waiter that
 * gave up on another process's load, a Redis out of memory).
 */
import { expect, it } from 'vitest';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { heldLoad, useCaches } from '../support/cache.js';

/** A loader that returns `value` only when released, and says when it started. */
function gatedLoader<V>(value: V): {
  readonly loader: () => Promise<V>;
  readonly started: () => boolean;
  readonly release: () => void;
} {
  let started = false;
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  return {
    loader: async () => {
      started = true;
      await gate;
      return value;
    },
    started: () => started,
    release: () => release(),
  };
}

describeRedis('Cache: invalidations racing loads (real redis-server)', () => {
  const redis = useRedis();
  const { cacheOf } = useCaches(redis);

  it('a set in another process during a load without the lease (a waiter that gave up) is not overwritten in L1 by the load', async () => {
    const holder = cacheOf({ leaseTtlMs: 60_000 });
    const b = cacheOf({ maxWaitMs: 50, pollIntervalMs: 10 });
    const writer = cacheOf();
    await until(() => expect(b.listening).toBe(true), 10_000);
    // A copy in b's L1 that the writer's second set drops: once it is gone, b has handled the
    // message of the first set too (messages reach b in the order Redis published them).
    await writer.set('marker', 1);
    await expect(b.get('marker')).resolves.toBe(1);
    const held = await heldLoad(holder, 'k', 'from-holder');
    // b waits on the holder's lease, gives up after maxWaitMs and loads itself, without it.
    const gated = gatedLoader('old');
    const loading = b.getOrLoad('k', gated.loader);
    await until(() => expect(gated.started()).toBe(true), 10_000);
    await writer.set('k', 'new');
    await writer.set('marker', 2);
    await until(() => expect(b.peek('marker')).toBe(undefined), 10_000);
    gated.release();
    // Its callers asked before the set: they get what the loader read …
    await expect(loading).resolves.toBe('old');
    // … but b keeps nothing older than the set.
    await expect(b.getOrLoad('k', () => 'loaded again')).resolves.toBe('new');
    held.release();
    await held.loading;
  });
});
