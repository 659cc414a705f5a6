/**
 * One way to shut down (issue 16, item 3): every long-lived object has an idempotent `close()`
 * (a second call resolves, never throws), works with `await using`, and after close every
 * method fails with a `ClosedError` naming the object and the method — rather than silently
 * re-opening connections, serving a stale list or returning `[]` forever.
 */
import { describe, expect, it } from 'vitest';
import { ClosedError, isClosedError, isKeelError } from '../../src/core/index.js';
import { BreakerRegistry } from '../../src/breaker/index.js';
import { LoadBalancer, leastRequest } from '../../src/balancer/index.js';
import {
  MemoryBackend,
  RedisBackend,
  Registry,
  isRegistrationClosedError,
  type FeedListener,
} from '../../src/discovery/index.js';
import { MemoryLock, Redlock } from '../../src/lock/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

/** What `fn` threw or rejected with. */
async function failure(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** Expects `fn` to fail with a ClosedError naming `object` and `operation`. */
async function expectClosed(fn: () => unknown, object: string, operation: string): Promise<void> {
  const error = await failure(fn);
  expect(isClosedError(error), `${operation}: ${String(error)}`).toBe(true);
  expect(error).toBeInstanceOf(ClosedError);
  expect(isKeelError(error, 'KEEL_CLOSED')).toBe(true);
  expect((error as ClosedError).object).toBe(object);
  expect((error as ClosedError).operation).toBe(operation);
  expect((error as ClosedError).message).toContain(object);
}

const noop = (): Promise<void> => Promise.resolve();
const listener: FeedListener = {
  entries: () => undefined,
  interrupted: () => undefined,
  healthy: () => undefined,
  foreign: () => undefined,
};

describe('close() once, close() again, then every method fails with ClosedError', () => {
  it('MemoryLock', async () => {
    const locks = new MemoryLock({ retryDelayMs: 5, retryJitterMs: 0 });
    const held = await locks.acquire('r');
    // A waiter in progress is not left behind: close() ends it with ClosedError too.
    const waiting = failure(() => locks.acquire('r', { retryCount: 1_000 }));
    await locks.close();
    await expect(locks.close()).resolves.toBeUndefined();
    await expectClosed(() => locks.acquire('r'), 'MemoryLock', 'acquire');
    await expectClosed(() => locks.using('r', noop), 'MemoryLock', 'using');
    const ended = await waiting;
    expect(isClosedError(ended), String(ended)).toBe(true);
    // A lock taken before close can still be released (its holder may be mid-shutdown).
    await expect(held.release()).resolves.toEqual({ released: true, expired: false });
  });

  it('MemoryLock with await using', async () => {
    let escaped: MemoryLock;
    {
      await using locks = new MemoryLock();
      escaped = locks;
      await locks.using('r', noop);
    }
    await expectClosed(() => escaped.acquire('r'), 'MemoryLock', 'acquire');
  });

  it('Registry (with its own MemoryBackend) and what it made', async () => {
    const registry = new Registry();
    const registration = await registry.register({ service: 'orders', host: 'h', port: 1 });
    const watch = registry.watch('orders');
    const balancer = LoadBalancer.following(registry.watch('orders'), { strategy: leastRequest() });
    await watch.ready;
    const backend = registry.backend;
    await registry.close();
    await expect(registry.close()).resolves.toBeUndefined();
    expect(registry.closed).toBe(true);
    const instance = { service: 'orders', host: 'h', port: 2 };
    await expectClosed(() => registry.register(instance), 'Registry', 'register');
    await expectClosed(() => registry.discover('orders'), 'Registry', 'discover');
    await expectClosed(() => registry.ready('orders'), 'Registry', 'ready');
    await expectClosed(() => registry.watch('orders'), 'Registry', 'watch');
    await expectClosed(() => registry.reap(), 'Registry', 'reap');
    await expectClosed(() => registry.deregisterOnSignals(), 'Registry', 'deregisterOnSignals');

    // The registry's close closed its registrations, watches and balancers.
    expect(registration.state).toBe('closed');
    await expect(registration.close()).resolves.toBeUndefined();
    expect(isRegistrationClosedError(await failure(() => registration.heartbeat()))).toBe(true);
    const w = 'ServiceWatch "orders"';
    await expectClosed(() => watch.instances(), w, 'instances');
    await expectClosed(() => watch.get('x'), w, 'get');
    await expectClosed(() => watch.onChange(() => undefined), w, 'onChange');
    await expectClosed(() => watch.onAdded(() => undefined), w, 'onAdded');
    await expectClosed(() => watch.whenReady(), w, 'whenReady');
    // A balancer cannot follow a closed watch.
    const following = () => LoadBalancer.following(watch, { strategy: leastRequest() });
    await expectClosed(following, w, 'instances');
    // Iterating a closed watch ends at once, as the iterators open at close did.
    expect((await watch.changes().next()).done).toBe(true);
    watch.close();
    const b = 'FollowingBalancer "orders"';
    await expectClosed(() => balancer.pick(), b, 'pick');
    await expectClosed(() => balancer.acquire(), b, 'acquire');
    await expectClosed(() => balancer.acquireOrThrow(), b, 'acquireOrThrow');
    await expectClosed(() => balancer.endpoints(), b, 'endpoints');
    balancer.close();

    // It owned its backend, so the backend is closed too.
    await expectClosed(() => backend.snapshot('orders'), 'MemoryBackend', 'snapshot');
  });

  it('ServiceWatch and FollowingBalancer closed on their own; the registry keeps working', async () => {
    await using registry = new Registry();
    const watch = registry.watch('orders');
    const balancer = LoadBalancer.following(registry.watch('orders'), { strategy: leastRequest() });
    watch.close();
    watch.close();
    balancer.close();
    balancer.close();
    await expectClosed(() => watch.instances(), 'ServiceWatch "orders"', 'instances');
    await expectClosed(() => balancer.pick(), 'FollowingBalancer "orders"', 'pick');
    expect(registry.discover('orders')).toEqual([]);
    {
      await using again = registry.watch('orders');
      expect(again.instances()).toEqual([]);
    }
  });

  it('Registration.close() deregisters, once', async () => {
    await using registry = new Registry();
    const registration = await registry.register({ service: 'orders', host: 'h', port: 1 });
    await registry.ready('orders');
    expect(registry.discover('orders')).toHaveLength(1);
    await registration.close();
    await registration.close();
    expect(registration.state).toBe('closed');
    expect(isRegistrationClosedError(await failure(() => registration.drain()))).toBe(true);
  });

  it('MemoryBackend (not owned by the registry: closed by its creator)', async () => {
    const backend = new MemoryBackend();
    const registry = new Registry({ backend });
    await registry.close();
    // The registry did not close a backend it was given.
    await expect(backend.snapshot('orders')).resolves.toMatchObject({ revision: 0 });
    await backend.close();
    await expect(backend.close()).resolves.toBeUndefined();
    const m = 'MemoryBackend';
    await expectClosed(() => backend.register('s', 'i', '{}', 't', 1000), m, 'register');
    await expectClosed(() => backend.heartbeat('s', 'i', 't', 1000), m, 'heartbeat');
    await expectClosed(() => backend.deregister('s', 'i', 't'), m, 'deregister');
    await expectClosed(() => backend.snapshot('s'), m, 'snapshot');
    await expectClosed(() => backend.reap('s'), m, 'reap');
    await expectClosed(() => backend.follow('s', listener), m, 'follow');
  });

  it('BreakerRegistry', async () => {
    const breakers = new BreakerRegistry();
    const payments = breakers.breakerFor('payments');
    await breakers.close();
    await expect(breakers.close()).resolves.toBeUndefined();
    await expectClosed(() => breakers.breakerFor('payments'), 'BreakerRegistry', 'breakerFor');
    await expectClosed(() => breakers.sweep(0), 'BreakerRegistry', 'sweep');
    expect(breakers.size).toBe(0);
    // A breaker handed out before keeps working: it owns no timer or connection.
    await expect(payments.execute(() => Promise.resolve(1))).resolves.toBe(1);
  });
});

describeRedis('close() on the Redis-backed objects', () => {
  const redis = useRedis({ count: 1 });

  it('Redlock and its semaphores', async () => {
    const clients = redis().clients({ maxRetriesPerRequest: 1 });
    const redlock = new Redlock({ clients });
    const semaphore = redlock.semaphore('pool', { permits: 2 });
    const other = redlock.semaphore('other', { permits: 2 });
    const held = await redlock.acquire('r');
    await redlock.close();
    await expect(redlock.close()).resolves.toBeUndefined();
    await expectClosed(() => redlock.acquire('r'), 'Redlock', 'acquire');
    await expectClosed(() => redlock.using('r', noop), 'Redlock', 'using');
    await expectClosed(() => redlock.semaphore('s', { permits: 1 }), 'Redlock', 'semaphore');
    // Semaphores close with the Redlock that made them…
    await expectClosed(() => semaphore.acquire(), 'Semaphore "pool"', 'acquire');
    await expectClosed(() => semaphore.using({}, noop), 'Semaphore "pool"', 'using');
    await expect(other.close()).resolves.toBeUndefined();
    // …and a lock taken before can still be released: the clients are the caller's, still open.
    await expect(held.release()).resolves.toEqual({ released: true, expired: false });
    await Promise.all(clients.map((c) => c.quit()));
  });

  it('a Semaphore closed on its own; the Redlock keeps working', async () => {
    const clients = redis().clients({ maxRetriesPerRequest: 1 });
    {
      await using redlock = new Redlock({ clients });
      const semaphore = redlock.semaphore('pool', { permits: 2 });
      await semaphore.close();
      await semaphore.close();
      await expectClosed(() => semaphore.acquire(), 'Semaphore "pool"', 'acquire');
      await redlock.using('r', noop);
    }
    await Promise.all(clients.map((c) => c.quit()));
  });

  it('RedisBackend', async () => {
    const client = redis().client(0, { maxRetriesPerRequest: 1 });
    const backend = new RedisBackend({ client });
    {
      await using registry = new Registry({ backend });
      await registry.register({ service: 'orders', host: 'h', port: 1 });
      await registry.ready('orders');
    }
    await backend.close();
    await expect(backend.close()).resolves.toBeUndefined();
    const m = 'RedisBackend';
    await expectClosed(() => backend.register('s', 'i', '{}', 't', 1000), m, 'register');
    await expectClosed(() => backend.heartbeat('s', 'i', 't', 1000), m, 'heartbeat');
    await expectClosed(() => backend.deregister('s', 'i', 't'), m, 'deregister');
    await expectClosed(() => backend.snapshot('s'), m, 'snapshot');
    await expectClosed(() => backend.reap('s'), m, 'reap');
    await expectClosed(() => backend.follow('s', listener), m, 'follow');
    // The client stays the caller's: still open.
    await expect(client.ping()).resolves.toBe('PONG');
    await client.quit();
  });
});
