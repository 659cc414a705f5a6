/**
 * The leak test (issue 16, item 3): each long-lived object is built against real Redis, used
 * the way that makes it open what it opens (subscriber connections, the change-log reader,
 * heartbeat, reaper, extension and retry timers, signal handlers, listeners on the caller's
 * clients), closed — and then nothing of it may remain: no pending timer created by Keel's
 * code (unref'd ones included), no extra socket in this process, no extra connection on any
 * server, no listener left on the process or the caller's clients. The caller's own clients
 * stay open; they are part of the baseline.
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { BreakerRegistry } from '../../src/breaker/index.js';
import { LoadBalancer, leastRequest } from '../../src/balancer/index.js';
import { RedisBackend, Registry } from '../../src/discovery/index.js';
import { MemoryLock, Redlock } from '../../src/lock/index.js';
import {
  IdempotencyKeys,
  MemorySagaBackend,
  SagaCoordinator,
  defineSaga,
} from '../../src/saga/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { KeelTimers, footprint, type Footprint } from './resources.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** How long close() may take to let go of everything (generous: a loaded 2-core machine). */
const SETTLE_MS = 5_000;

describeRedis('nothing is left behind after close()', () => {
  const redis = useRedis({ count: 3 });
  const ports = (): number[] => redis().nodes.map((n) => n.port);
  let timers: KeelTimers;
  let clients: Redis[];

  beforeEach(async () => {
    timers = new KeelTimers();
    clients = redis().clients({ maxRetriesPerRequest: 1 });
    await Promise.all(clients.map((c) => c.ping()));
  });

  afterEach(async () => {
    timers.stop();
    await Promise.all(clients.map((c) => c.quit()));
    await redis().flushAll();
  });

  /** Waits (bounded) until the footprint is back to `before` and no Keel timer is pending. */
  async function expectBackTo(before: Footprint): Promise<void> {
    await until(async () => {
      expect(timers.pending(), 'pending Keel timers').toEqual([]);
      expect(await footprint(ports(), clients)).toEqual(before);
    }, SETTLE_MS);
  }

  it('Redlock, its semaphores and locks', async () => {
    const before = await footprint(ports(), clients);
    const holder = new Redlock({ clients });
    const waiter = new Redlock({ clients, retryDelayMs: 5_000, retryJitterMs: 0 });
    const lock = await holder.acquire('leak:r');
    expect(lock.signal.aborted).toBe(false); // reading it arms the loss timer
    const waiting = waiter.acquire('leak:r');
    // The waiter subscribes to the release: one more connection on every server.
    await until(async () => {
      const now = await footprint(ports(), clients);
      now.servers.forEach((n, i) => expect(n).toBeGreaterThan(before.servers[i] as number));
    }, SETTLE_MS);
    await lock.release();
    await (await waiting).release();
    await holder.using('leak:u', { ttlMs: 200 }, () => sleep(250)); // one extension at least
    const semaphore = waiter.semaphore('leak:s', { permits: 2 });
    await semaphore.using(async (signal) => {
      expect(signal.aborted).toBe(false);
      await (await semaphore.acquire()).release();
    });
    const held = await holder.acquire('leak:h', { ttlMs: 60_000 });
    expect(held.signal.aborted).toBe(false);
    await held.release();
    await holder.close();
    await waiter.close();
    await waiter.close();
    await expectBackTo(before);
  });

  it('MemoryLock', async () => {
    const before = await footprint(ports(), clients);
    const locks = new MemoryLock({ retryDelayMs: 10_000 });
    const lock = await locks.acquire('leak:m');
    expect(lock.signal.aborted).toBe(false);
    const waiting = locks.acquire('leak:m').catch((e: unknown) => e);
    await locks.using('leak:other', { ttlMs: 100 }, () => sleep(120));
    await locks.close();
    await waiting;
    await lock.release();
    await expectBackTo(before);
  });

  it('Registry over a RedisBackend, with registrations, watches, balancers and signal handlers', async () => {
    const before = await footprint(ports(), clients);
    const client = clients[0] as Redis;
    const backend = new RedisBackend({ client });
    const registry = new Registry({ backend, reapIntervalMs: 50, ttlMs: 300 });
    registry.deregisterOnSignals();
    await registry.register({ service: 'orders', id: 'o-1', host: '10.0.0.1', port: 1 });
    const watch = registry.watch('orders');
    watch.onAdded(() => undefined);
    const changes = watch.changes();
    const next = changes.next();
    const balancer = LoadBalancer.following(registry.watch('orders'), { strategy: leastRequest() });
    await balancer.ready;
    await next;
    balancer.acquire()?.done({ ok: true, latencyMs: 1 });
    registry.discover('payments');
    await registry.ready('orders');
    await sleep(200); // heartbeats and reaps run
    // Closing the registry and the backend closes everything they made.
    await registry.close();
    await backend.close();
    await backend.close();
    await expectBackTo(before);
  });

  it('Registry with its own MemoryBackend', async () => {
    const before = await footprint(ports(), clients);
    const registry = new Registry({ reapIntervalMs: 50, ttlMs: 300 });
    await registry.register({ service: 'orders', host: '10.0.0.1', port: 1 });
    registry.watch('orders').onRemoved(() => undefined);
    await registry.ready('orders');
    await sleep(120);
    await registry.close();
    await expectBackTo(before);
  });

  it('BreakerRegistry and its breakers', async () => {
    const before = await footprint(ports(), clients);
    const breakers = new BreakerRegistry({ timeoutMs: 10_000 });
    const slow = breakers.breakerFor('slow').execute(() => sleep(20));
    await breakers.breakerFor('quick').execute(() => Promise.resolve(1));
    await slow;
    await breakers.close();
    await expectBackTo(before);
  });

  /** A saga whose steps sleep, fail once, time out, or hang until their signal aborts. */
  const leakySaga = (name: string) => {
    let failed = false;
    return defineSaga(name, [
      {
        name: 'slow',
        run: () => sleep(150), // past leaseMs / 3: the heartbeat renews the lease
        compensate: () => undefined,
      },
      {
        name: 'flaky',
        run: () => {
          if (!failed) {
            failed = true;
            throw new Error('once'); // a retry with backoff
          }
          return 1;
        },
        retry: { attempts: 2, initialDelayMs: 20 },
      },
      {
        name: 'timed',
        // The step timeout aborts it (and the step lets go of its own timer).
        run: (ctx, signal) =>
          ctx.input === 'timeout'
            ? new Promise((resolve) => {
                const t = setTimeout(resolve, 10_000);
                signal.addEventListener('abort', () => clearTimeout(t), { once: true });
              })
            : 0,
        timeoutMs: 100,
        retry: { attempts: 1 },
      },
      {
        name: 'hang',
        run: (_ctx, signal) =>
          new Promise((resolve) => {
            signal.addEventListener('abort', () => resolve(0), { once: true });
          }),
      },
    ]);
  };

  it('SagaCoordinator (recovery loop, heartbeats, step timeouts, backoff, a step hung at close) and IdempotencyKeys', async () => {
    const before = await footprint(ports(), clients);
    const client = clients[0] as Redis;
    const saga = leakySaga('leak');
    const sagas = new SagaCoordinator({
      redis: client,
      sagas: [saga],
      leaseMs: 300,
      recoveryIntervalMs: 20,
    });
    // Timed out (compensates), then one hung when close() comes.
    expect((await sagas.run(saga, 'timeout', 'timeout')).status).toBe('compensated');
    const hung = sagas.run(saga, 'hung', 'hang').catch((e: unknown) => e);
    await until(async () => {
      expect((await sagas.get(saga, 'hung'))?.step).toBe('hang');
    }, SETTLE_MS);
    const keys = new IdempotencyKeys({ redis: client, leaseMs: 300, maxPollMs: 20 });
    const first = keys.idempotent('leak:k', () => sleep(150).then(() => 1));
    const waiter = keys.idempotent('leak:k', () => 2);
    expect(await Promise.all([first, waiter])).toEqual([1, 1]);
    expect(await keys.compensate('leak:k', () => undefined)).toBe('undone');
    expect(await keys.compensate('leak:empty', () => undefined)).toBe('empty');
    await sleep(60); // recovery polls run
    await sagas.close();
    await sagas.close();
    expect(await hung).toMatchObject({ code: 'KEEL_SAGA_CLOSED' });
    await expectBackTo(before);
  });

  it('SagaCoordinator and IdempotencyKeys over a MemorySagaBackend', async () => {
    const before = await footprint(ports(), clients);
    const backend = new MemorySagaBackend();
    const saga = leakySaga('leak-memory');
    const sagas = new SagaCoordinator({
      redis: backend,
      sagas: [saga],
      leaseMs: 300,
      recoveryIntervalMs: 20,
    });
    expect((await sagas.run(saga, 'timeout', 'timeout')).status).toBe('compensated');
    const hung = sagas.run(saga, 'hung', 'hang').catch((e: unknown) => e);
    await until(async () => {
      expect((await sagas.get(saga, 'hung'))?.step).toBe('hang');
    }, SETTLE_MS);
    const { idempotent } = new IdempotencyKeys({ redis: backend, leaseMs: 300 });
    expect(await idempotent('k', () => sleep(150).then(() => 1))).toBe(1);
    await sagas.close();
    expect(await hung).toMatchObject({ code: 'KEEL_SAGA_CLOSED' });
    await expectBackTo(before);
  });
});
