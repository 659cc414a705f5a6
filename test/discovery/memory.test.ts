import { describe, expect, it } from 'vitest';
import { ManualClock, systemClock, type Clock } from '../../src/core/index.js';
import {
  MemoryBackend,
  Registry,
  isInvalidInstanceError,
  isRegistrationClosedError,
  isRegistryUnavailableError,
  isUnknownServiceError,
  type InvalidInstanceError,
  type Registration,
} from '../../src/discovery/index.js';
import { LoadBalancer, NoEndpointError, roundRobin } from '../../src/balancer/index.js';
import { invalidOption, thrown } from '../support/helpers.js';
import { liveHandles } from '../support/vitest.js';
import { WatchHistory } from './history.js';
import { registrySuite, type BackendFixture } from './shared-suite.js';

function memoryFixture(): BackendFixture {
  const clock = new ManualClock(1_000_000);
  const backend = new MemoryBackend({ clock });
  return {
    clock,
    backend: () => backend,
    advance: (ms) => clock.advanceAsync(ms),
    stepMs: 10,
    ttlMs: 1000,
    reapIntervalMs: 200,
    slackMs: 0,
    truth: (service) => Promise.resolve(backend.ids(service)),
    loseData: () => {
      backend.simulateDataLoss();
      return Promise.resolve();
    },
    plant: (service, id, raw) => {
      backend.putRaw(service, id, raw);
      return Promise.resolve();
    },
    cleanup: () => backend.close(),
  };
}

/**
 * With the feeds paused, registers `add` orders instances through `registry` and deregisters
 * the first `remove` of them — more changes than a log of 5 keeps — then resumes the feeds and
 * lets time pass the resync jitter, so every watcher finds a gap and resyncs.
 */
async function overflowLog(
  backend: MemoryBackend,
  clock: ManualClock,
  registry: Registry,
  add: number,
  remove: number,
): Promise<Registration[]> {
  backend.pauseFeeds();
  const registrations: Registration[] = [];
  for (let i = 0; i < add; i++)
    registrations.push(await registry.register({ service: 'orders', host: 'h', port: i }));
  for (let i = 0; i < remove; i++) await registrations[i]?.deregister();
  backend.resumeFeeds();
  await clock.advanceAsync(50);
  return registrations;
}

describe('discovery on the memory backend (ManualClock): shared suite', () => {
  registrySuite(() => Promise.resolve(memoryFixture()));
});

describe('discovery: memory-specific behaviour', () => {
  const setup = () => {
    const clock = new ManualClock(0);
    const backend = new MemoryBackend({ clock, maxLogLength: 5 });
    const make = (options = {}) =>
      new Registry({ backend, clock, reapIntervalMs: 100, resyncJitterMs: 10, ...options });
    return { clock, backend, make };
  };

  it('rejects invalid instance data with an error naming the field', async () => {
    const registry = new Registry();
    const cases: [object, string][] = [
      [{ service: 'orders', host: '127.0.0.1', port: 70000 }, 'port'],
      [{ service: 'or{ders}', host: 'h', port: 1 }, 'service'],
      [{ service: 'orders', host: '', port: 1 }, 'host'],
      [{ service: 'orders', host: 'h', port: 1, weight: 0 }, 'weight'],
      [{ service: 'orders', host: 'h', port: 1, status: 'sleeping' }, 'status'],
      [{ service: 'orders', host: 'h', port: 1, metadata: { a: 1 } }, 'metadata.a'],
      [{ service: 'orders', host: 'h', port: 1, colour: 'red' }, 'colour'],
    ];
    for (const [spec, field] of cases) {
      const error = await registry.register(spec as never).catch((e: unknown) => e);
      expect(isInvalidInstanceError(error), JSON.stringify(spec)).toBe(true);
      expect((error as InvalidInstanceError).field).toBe(field);
      expect((error as InvalidInstanceError).message).toContain(`"${field}"`);
    }
    const ok = await registry.register({ service: 'orders', host: 'h', port: 1 });
    expect(ok.instance).toMatchObject({ id: 'h:1', weight: 1, status: 'up', metadata: {} });
    const bad = await ok.update({ weight: -1 }).catch((e: unknown) => e);
    expect(isInvalidInstanceError(bad)).toBe(true);
    await registry.close();
    expect(ok.state).toBe('closed');
    const closed = await ok.setStatus('down').catch((e: unknown) => e);
    expect(isRegistrationClosedError(closed)).toBe(true);
  });

  it('validates its options', () => {
    expect(invalidOption(() => new Registry({ ttlMs: -1 })).option).toBe('ttlMs');
    expect(invalidOption(() => new Registry({ reapIntervalMs: Number.NaN })).option).toBe(
      'reapIntervalMs',
    );
    expect(invalidOption(() => new Registry({ ttlMS: 5 } as never)).message).toContain('ttlMs');
    expect(invalidOption(() => new Registry({ backend: {} as never })).option).toBe('backend');
    expect(invalidOption(() => new MemoryBackend({ maxLogLength: 0 })).option).toBe('maxLogLength');
    const registry = new Registry();
    expect(invalidOption(() => registry.discover('bad name')).option).toBe('service');
    expect(invalidOption(() => registry.discover('orders', { state: 'up' } as never)).option).toBe(
      'filter.state',
    );
  });

  // Issue 16: a balancer that follows a service names it when there is nothing to pick.
  it('a discovery balancer names its service in NoEndpointError', async () => {
    const registry = new Registry();
    const orders = LoadBalancer.following(registry.watch('orders'), { strategy: roundRobin() });
    await orders.ready;
    const error = thrown(() => orders.acquireOrThrow()) as NoEndpointError;
    expect(error).toBeInstanceOf(NoEndpointError);
    expect(error.service).toBe('orders');
    expect(error.reason).toBe('no-endpoints');
    expect(error.message).toContain('for "orders"');
    const named = LoadBalancer.following(registry.watch('orders'), {
      strategy: roundRobin(),
      name: 'orders (eu-west)',
    });
    expect(named.name).toBe('orders (eu-west)');
    orders.close();
    named.close();
    await registry.close();
  });

  // Issue 16: LoadBalancer.following checks the filter through the watch, at construction.
  it('a balancer following a watch rejects a bad filter and closes the watch', async () => {
    const registry = new Registry();
    const watch = registry.watch('orders');
    const filter = { stauts: 'up' } as never;
    const error = invalidOption(() =>
      LoadBalancer.following(watch, { strategy: roundRobin(), filter }),
    );
    expect(error.option).toBe('filter.stauts');
    expect(watch.closed).toBe(true);
    const status = { status: 'gone' } as never;
    expect(invalidOption(() => registry.watch('orders').instances(status)).option).toBe(
      'filter.status',
    );
    await registry.close();
  });

  it('strict mode rejects unknown services', async () => {
    const registry = new Registry({ services: ['orders', 'payments'], strict: true });
    expect(registry.discover('orders')).toEqual([]);
    let error: unknown;
    try {
      registry.discover('payment');
    } catch (e) {
      error = e;
    }
    expect(isUnknownServiceError(error)).toBe(true);
    expect((error as Error).message).toContain('payments');
    const registering = await registry
      .register({ service: 'invetory', host: 'h', port: 1 })
      .catch((e: unknown) => e);
    expect(isUnknownServiceError(registering)).toBe(true);
    await registry.close();
  });

  it('a data-loss grace that ends while the watcher is behind the store evicts nobody who re-registered', async () => {
    const { clock, backend, make } = setup();
    const a = make({ ttlMs: 1000 });
    const b = make({ dataLossGraceMs: 1500 });
    const registration = await a.register({ service: 'orders', host: 'h', port: 1 });
    const watch = b.watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    // The store loses its data; the watcher resyncs into the new epoch and keeps h:1 for its
    // grace. Then its log reads stall (a paused store, a slow read) while h:1 re-registers.
    backend.simulateDataLoss();
    await clock.advanceAsync(20);
    backend.pauseFeeds();
    for (let t = 0; t < 1400 && backend.ids('orders').length === 0; t += 50)
      await clock.advanceAsync(50);
    expect(backend.ids('orders')).toEqual(['h:1']);
    // The grace ends with the re-registration still unread: a fresh snapshot keeps h:1.
    for (let t = 0; t < 2000; t += 50) await clock.advanceAsync(50);
    expect(history.changes.filter((c) => c.type === 'removed')).toEqual([]);
    expect(watch.resyncs).toBeGreaterThanOrEqual(3); // the confirming snapshot
    backend.resumeFeeds();
    await clock.advanceAsync(50);
    history.expectConverged(backend.ids('orders'));
    // An instance that really did not come back is still removed when its grace ends.
    registration.abandon(); // stops heartbeating, leaves its record to expire
    backend.simulateDataLoss();
    for (let t = 0; t < 3000; t += 50) await clock.advanceAsync(50);
    history.expectConverged([]);
    await a.close();
    await b.close();
  });

  // Issue 13, found by the discovery chaos check 'discovery-eviction' (seed 1761071674): after
  // several empty restarts a watcher's data-loss grace evicted an instance that was alive and
  // heartbeating, because the grace kept counting from the first data loss.
  it('a second data loss restarts the grace: an instance that had re-registered is not evicted', async () => {
    const { clock, backend, make } = setup();
    const slow = make({ ttlMs: 3000 }); // heartbeats about every second
    const fast = make({ ttlMs: 300 }); // about every 100 ms
    const b = make({ dataLossGraceMs: 1500 });
    const registration = await slow.register({ service: 'orders', host: 'h', port: 1 });
    await fast.register({ service: 'orders', host: 'h', port: 2 });
    const watch = b.watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    backend.simulateDataLoss();
    await clock.advanceAsync(20); // the watcher resyncs into the new epoch and keeps both
    expect(watch.instances().map((i) => i.id)).toEqual(['h:1', 'h:2']);
    // Its reads stall, so it sees neither re-register; then the store loses its data again
    // (restarted empty twice in a row) before the first grace would have ended.
    backend.pauseFeeds();
    for (let t = 0; t < 1250 && backend.ids('orders').length < 2; t += 50)
      await clock.advanceAsync(50);
    expect(backend.ids('orders')).toEqual(['h:1', 'h:2']);
    backend.simulateDataLoss();
    backend.resumeFeeds();
    // h:2 is back at once; h:1 needs a heartbeat (about a second) to notice, and gets the
    // whole grace from the store's new start to do it.
    for (let t = 0; t < 1450; t += 50) await clock.advanceAsync(50);
    expect(backend.ids('orders')).toEqual(['h:1', 'h:2']);
    expect(history.changes.filter((c) => c.type === 'removed')).toEqual([]);
    history.expectConverged(['h:1', 'h:2']);
    // One that really does not come back is still removed once the grace ends.
    registration.abandon();
    backend.simulateDataLoss();
    for (let t = 0; t < 1400; t += 50) await clock.advanceAsync(50);
    expect(watch.instances().map((i) => i.id)).toEqual(['h:1', 'h:2']);
    for (let t = 0; t < 1000; t += 50) await clock.advanceAsync(50);
    history.expectConverged(['h:2']);
    expect(history.changes.at(-1)).toMatchObject({ type: 'removed', reason: 'lost' });
    await slow.close();
    await fast.close();
    await b.close();
  });

  it('the grace counts from when the store is reachable again: an outage during it evicts nobody', async () => {
    const { clock, backend, make } = setup();
    const a = make({ ttlMs: 3000 }); // heartbeats about every second
    const b = make({ dataLossGraceMs: 1500, retryMaxMs: 200 }); // resyncs soon after an outage
    await a.register({ service: 'orders', host: 'h', port: 1 });
    const watch = b.watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    // The store comes back empty and at once becomes unreachable again for longer than the
    // grace (a second restart): h:1 cannot re-register, and the view cannot read.
    backend.simulateDataLoss();
    await clock.advanceAsync(20);
    backend.simulateOutage('restarting');
    for (let t = 0; t < 2500; t += 50) await clock.advanceAsync(50);
    expect(watch.stale).toBe(true);
    expect(watch.instances().map((i) => i.id)).toEqual(['h:1']);
    backend.endOutage();
    // The store is back: h:1 re-registers at its next heartbeat, within a grace of the return.
    for (let t = 0; t < 1400; t += 50) await clock.advanceAsync(50);
    expect(backend.ids('orders')).toEqual(['h:1']);
    expect(history.changes.filter((c) => c.type === 'removed')).toEqual([]);
    expect(watch.stale).toBe(false);
    history.expectConverged(['h:1']);
    await a.close();
    await b.close();
  });

  it('simulateOutage makes every call fail with RegistryUnavailableError until endOutage', async () => {
    const { backend, make } = setup();
    const a = make();
    backend.simulateOutage('partitioned');
    const error = await a
      .register({ service: 'orders', host: 'h', port: 1 })
      .catch((e: unknown) => e);
    expect(isRegistryUnavailableError(error)).toBe(true);
    expect((error as Error).message).toContain('partitioned');
    backend.endOutage();
    const registration = await a.register({ service: 'orders', host: 'h', port: 1 });
    expect(backend.ids('orders')).toEqual(['h:1']);
    await registration.deregister();
    await a.close();
  });

  it('a slow watcher whose log entries were trimmed detects the gap and resyncs', async () => {
    const { clock, backend, make } = setup();
    const a = make();
    const b = make();
    const watch = b.watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    const registrations = await overflowLog(backend, clock, a, 20, 10);
    expect(watch.resyncs).toBe(2);
    expect(history.changes.some((c) => c.source === 'resync')).toBe(true);
    history.expectConverged(backend.ids('orders'));
    // And it keeps following the log afterwards.
    await registrations[10]?.deregister();
    await clock.advanceAsync(1);
    history.expectConverged(backend.ids('orders'));
    expect(history.changes.at(-1)).toMatchObject({ type: 'removed', source: 'log' });
    await a.close();
    await b.close();
  });

  it('onSettled: once per applied batch (first snapshot, log read, resync), after all its changes', async () => {
    const { clock, backend, make } = setup();
    const [a, b] = [make(), make()];
    await a.register({ service: 'orders', host: 'h', port: 100 });
    const watch = b.watch('orders');
    // Per settle: the changes delivered since the previous one, the view, and the store's truth.
    const batches: { changes: number; view: string[]; truth: string[] }[] = [];
    let delivered = 0;
    watch.onChange(() => {
      delivered++;
    });
    watch.onSettled(() => {
      const view = watch.instances().map((i) => i.id);
      batches.push({ changes: delivered, view, truth: backend.ids('orders').sort() });
      delivered = 0;
    });
    await watch.ready;
    expect(batches).toEqual([{ changes: 1, view: ['h:100'], truth: ['h:100'] }]); // first snapshot

    await a.register({ service: 'orders', host: 'h', port: 101 });
    await clock.advanceAsync(1);
    expect(batches.at(-1)).toEqual({
      changes: 1,
      view: ['h:100', 'h:101'],
      truth: ['h:100', 'h:101'],
    });

    // More changes than the log keeps while the feed is paused: the resync applies them as one
    // batch, settled once, after the last of its changes.
    const settledBefore = batches.length;
    const registrations = await overflowLog(backend, clock, a, 12, 4);
    expect(watch.resyncs).toBe(2);
    const resync = batches.slice(settledBefore);
    expect(resync).toHaveLength(1);
    expect(resync[0]?.changes).toBe(8);
    // Whenever it settled, the view was whole: equal to the store, nothing left undelivered.
    for (const batch of batches) expect(batch.view).toEqual(batch.truth);
    expect(delivered).toBe(0);

    // Not called on subscribing, nor for a batch that changes nothing for this service.
    let late = 0;
    const sub = watch.onSettled(() => {
      late++;
    });
    await a.register({ service: 'payments', host: 'h', port: 1 });
    await clock.advanceAsync(1);
    expect(late).toBe(0);
    // Unsubscribed listeners, and those of a closed watch, are not called again.
    sub.dispose();
    watch.close();
    await registrations[5]?.deregister();
    await clock.advanceAsync(1);
    expect(late).toBe(0);
    expect(batches.length).toBe(settledBefore + 1);
    await a.close();
    await b.close();
  });

  it('an interrupted feed (reconnect) resyncs and flags the view stale meanwhile', async () => {
    const { clock, backend, make } = setup();
    const a = make();
    const b = make();
    await a.register({ service: 'orders', host: 'h', port: 1 });
    const watch = b.watch('orders');
    await watch.ready;
    const stale: boolean[] = [];
    watch.onStaleChange((change) => stale.push(change.stale));
    backend.interruptFeeds();
    await clock.advanceAsync(0);
    expect(watch.stale).toBe(true);
    expect(b.discover('orders')).toHaveLength(1); // still served, flagged stale
    await clock.advanceAsync(50);
    expect(watch.stale).toBe(false);
    expect(stale).toEqual([true, false]);
    expect(watch.resyncs).toBe(2);
    await a.close();
    await b.close();
  });

  it('leaves no timers or handles behind after close', async () => {
    // unref()ed timers do not show in process.getActiveResourcesInfo(), so count them at the clock.
    const live = new Set<object>();
    const clock: Clock = {
      now: () => systemClock.now(),
      setTimer: (callback, delayMs) => {
        const token = {};
        live.add(token);
        const timer = systemClock.setTimer(() => {
          live.delete(token);
          callback();
        }, delayMs);
        const handle = {
          cancel: () => {
            live.delete(token);
            timer.cancel();
          },
          unref: () => {
            timer.unref();
            return handle;
          },
        };
        return handle;
      },
    };
    const before = liveHandles();
    const registry = new Registry({ reapIntervalMs: 50, clock });
    const r = await registry.register({ service: 'orders', host: 'h', port: 1 }, { ttlMs: 300 });
    const watch = registry.watch('orders');
    await watch.ready;
    expect(r.state).toBe('active');
    expect(live.size).toBeGreaterThanOrEqual(2); // heartbeat, reaper
    await registry.close();
    expect(r.state).toBe('closed');
    expect(live.size).toBe(0);
    expect(liveHandles()).toEqual(before);
  });
});
