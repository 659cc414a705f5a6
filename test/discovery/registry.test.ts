/**
 * Registry behaviour the issue names item by item, on the memory backend with fake time:
 * jittered heartbeats, single-flight jittered resyncs, a watch that reports failures and keeps
 * retrying with backoff (never ending silently), iterators that end when the registry closes,
 * and the opt-in SIGTERM/SIGINT helper (in-process here; the re-raised signal ending a real
 * process is covered in redis-signals.test.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/index.js';
import {
  MemoryBackend,
  Registry,
  isInvalidInstanceError,
  isRegistryUnavailableError,
  type ChangeFeed,
  type InvalidInstanceError,
  type DiscoveryBackend,
  type FeedListener,
  type WatchChange,
  type WatchError,
} from '../../src/discovery/index.js';
import { seededRandom, until } from '../support/helpers.js';
import { WatchHistory } from './history.js';

/**
 * A memory backend that records when each call happens (on the fake clock) and can be told to
 * fail snapshots or heartbeats, as a store that is down would.
 */
class RecordingBackend implements DiscoveryBackend {
  readonly kind = 'recording';
  readonly inner: MemoryBackend;
  readonly #clock: ManualClock;
  readonly snapshots: number[] = [];
  readonly heartbeats = new Map<string, number[]>();
  failSnapshots = false;

  constructor(clock: ManualClock) {
    this.#clock = clock;
    this.inner = new MemoryBackend({ clock });
  }

  register(...args: Parameters<DiscoveryBackend['register']>) {
    return this.inner.register(...args);
  }

  heartbeat(...args: Parameters<DiscoveryBackend['heartbeat']>) {
    const id = args[1];
    this.heartbeats.set(id, [...(this.heartbeats.get(id) ?? []), this.#clock.now()]);
    return this.inner.heartbeat(...args);
  }

  deregister(...args: Parameters<DiscoveryBackend['deregister']>) {
    return this.inner.deregister(...args);
  }

  snapshot(...args: Parameters<DiscoveryBackend['snapshot']>) {
    this.snapshots.push(this.#clock.now());
    if (this.failSnapshots) return Promise.reject(new Error('ECONNREFUSED (simulated)'));
    return this.inner.snapshot(...args);
  }

  reap(...args: Parameters<DiscoveryBackend['reap']>) {
    return this.inner.reap(...args);
  }

  follow(service: string, listener: FeedListener): ChangeFeed {
    return this.inner.follow(service, listener);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

const open: Registry[] = [];
afterEach(async () => {
  await Promise.all(open.map((r) => r.close()));
  open.length = 0;
});

function setup(seed = 1) {
  const clock = new ManualClock(0);
  const backend = new RecordingBackend(clock);
  const random = seededRandom(seed);
  const make = (options: ConstructorParameters<typeof Registry>[0] = {}) => {
    const r = new Registry({ backend, clock, random, reapIntervalMs: 0, ...options });
    open.push(r);
    return r;
  };
  return { clock, backend, make };
}

describe('discovery: heartbeats', () => {
  it('beat every ttl × fraction, jittered by ± heartbeatJitter, so a fleet started together spreads out', async () => {
    const { clock, backend, make } = setup(7);
    const registry = make({ ttlMs: 3000, heartbeatFraction: 1 / 3, heartbeatJitter: 0.2 });
    for (let i = 0; i < 20; i++)
      await registry.register({ service: 'orders', id: `o${i}`, host: 'h', port: i });
    for (let i = 0; i < 100; i++) await clock.advanceAsync(100);
    const firstBeats = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const beats = backend.heartbeats.get(`o${i}`) ?? [];
      expect(beats.length).toBeGreaterThanOrEqual(8); // 10 s at ~1 s per beat
      firstBeats.add(beats[0] as number);
      const gaps = beats.map((t, k) => t - (k === 0 ? 0 : (beats[k - 1] as number)));
      for (const gap of gaps) {
        expect(gap).toBeGreaterThanOrEqual(800);
        expect(gap).toBeLessThanOrEqual(1200);
      }
    }
    // Registered at the same instant, they do not beat in lockstep.
    expect(firstBeats.size).toBeGreaterThan(15);
    expect(Math.max(...firstBeats) - Math.min(...firstBeats)).toBeGreaterThan(200);
  });

  it('with no jitter they beat exactly every ttl × fraction (the jitter is what spreads them)', async () => {
    const { clock, backend, make } = setup();
    const registry = make({ ttlMs: 3000, heartbeatFraction: 1 / 3, heartbeatJitter: 0 });
    await registry.register({ service: 'orders', id: 'o', host: 'h', port: 1 });
    for (let i = 0; i < 35; i++) await clock.advanceAsync(100);
    expect(backend.heartbeats.get('o')).toEqual([1000, 2000, 3000]);
  });
});

describe('discovery: resyncs', () => {
  it('are single-flight: interruptions arriving together fold into one snapshot per view', async () => {
    const { clock, backend, make } = setup();
    const registry = make({ resyncJitterMs: 500 });
    const watch = registry.watch('orders');
    await clock.advanceAsync(0);
    expect(watch.resyncs).toBe(1);
    const before = backend.snapshots.length;
    for (let i = 0; i < 5; i++) {
      backend.inner.interruptFeeds();
      await clock.advanceAsync(10);
    }
    await clock.advanceAsync(600);
    expect(backend.snapshots.length - before).toBe(1);
    expect(watch.resyncs).toBe(2);
    expect(watch.stale).toBe(false);
  });

  it('are jittered: many clients interrupted at once spread their snapshots over resyncJitterMs', async () => {
    const { clock, backend, make } = setup(3);
    const watches = Array.from({ length: 50 }, () =>
      make({ resyncJitterMs: 1000 }).watch('orders'),
    );
    await clock.advanceAsync(0);
    for (const w of watches) expect(w.isReady).toBe(true);
    const before = backend.snapshots.length;
    backend.inner.interruptFeeds(); // a Redis restart, as every client sees it
    await clock.advanceAsync(1000);
    const times = backend.snapshots.slice(before);
    expect(times).toHaveLength(50);
    for (const t of times) expect(t).toBeLessThanOrEqual(1000);
    // Spread out, not a stampede: no 100 ms slot holds more than a fifth of them.
    const slots = new Map<number, number>();
    for (const t of times)
      slots.set(Math.floor(t / 100), (slots.get(Math.floor(t / 100)) ?? 0) + 1);
    expect(Math.max(...slots.values())).toBeLessThanOrEqual(10);
    for (const w of watches) expect(w.resyncs).toBe(2);
  });
});

describe('discovery: resync diffs', () => {
  it('emit exactly what changed: unchanged records nothing, changed ones updated, bad ones quarantined', async () => {
    const { clock, backend, make } = setup();
    const writer = make();
    const [r1, r2] = await Promise.all(
      [1, 2, 3].map((n) => writer.register({ service: 'orders', id: `o${n}`, host: 'h', port: n })),
    );
    const watch = make({ resyncJitterMs: 0 }).watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    const kept = watch.get('o2');
    backend.inner.pauseFeeds(); // the view misses what follows, then resyncs
    await r1?.setStatus('draining');
    await r2?.heartbeat(); // no change
    backend.inner.putRaw('orders', 'o3', '{"service":"orders","id":"o3","port":"x"}');
    backend.inner.interruptFeeds();
    await clock.advanceAsync(10);
    backend.inner.resumeFeeds();
    await clock.advanceAsync(10);
    expect(history.changes.map((c) => `${c.type} ${c.instance.id} ${c.source}`).sort()).toEqual([
      'removed o3 resync',
      'updated o1 resync',
    ]);
    expect(watch.get('o1')?.status).toBe('draining');
    expect(watch.get('o2')).toBe(kept); // the same object: unchanged records are left alone
    expect(watch.instances().map((i) => i.id)).toEqual(['o1', 'o2']);
    expect(history.problems).toEqual([]);
  });
});

describe('discovery: a watch never ends silently', () => {
  it('reports each failed snapshot as a typed error and retries with capped, growing backoff until it recovers', async () => {
    const { clock, backend, make } = setup(11);
    const writer = make();
    await writer.register({ service: 'orders', id: 'o1', host: 'h', port: 1 });
    const registry = make({ retryBaseMs: 100, retryMaxMs: 1600, resyncJitterMs: 0 });
    const watch = registry.watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    const errors: WatchError[] = [];
    watch.onError((e) => errors.push(e));
    const stale: boolean[] = [];
    watch.onStaleChange((c) => stale.push(c.stale));
    backend.failSnapshots = true;
    const before = backend.snapshots.length;
    backend.inner.interruptFeeds();
    for (let i = 0; i < 200; i++) await clock.advanceAsync(100); // 20 s of outage
    const attempts = backend.snapshots.slice(before);
    expect(attempts.length).toBeGreaterThan(8);
    expect(errors.length).toBe(attempts.length);
    for (const e of errors) expect(isRegistryUnavailableError(e.error)).toBe(true);
    // Full jitter under a doubling cap: never more than retryMaxMs (+ the 100 ms step) apart,
    // and the later waits are longer on average than the first ones.
    const gaps = attempts.slice(1).map((t, k) => t - (attempts[k] as number));
    for (const gap of gaps) expect(gap).toBeLessThanOrEqual(1700);
    const early = gaps.slice(0, 3).reduce((a, b) => a + b, 0) / 3;
    const late = gaps.slice(-5).reduce((a, b) => a + b, 0) / 5;
    expect(late).toBeGreaterThan(early);
    // Served stale meanwhile, with the last known instances.
    expect(watch.stale).toBe(true);
    expect(registry.discover('orders').map((i) => i.id)).toEqual(['o1']);
    backend.failSnapshots = false;
    await writer.register({ service: 'orders', id: 'o2', host: 'h', port: 2 });
    for (let i = 0; i < 20; i++) await clock.advanceAsync(100);
    expect(watch.stale).toBe(false);
    expect(stale).toEqual([true, false]);
    history.expectConverged(backend.inner.ids('orders'));
  });

  it('its iterators end (rather than hang) when the registry closes', async () => {
    const { clock, make } = setup();
    const writer = make();
    const registry = make();
    const watch = registry.watch('orders');
    await watch.ready;
    const seen: WatchChange[] = [];
    let finished = false;
    const consuming = (async () => {
      for await (const change of watch) seen.push(change);
      finished = true;
    })();
    await writer.register({ service: 'orders', id: 'o1', host: 'h', port: 1 });
    await clock.advanceAsync(0);
    expect(seen.map((c) => c.type)).toEqual(['added']);
    await registry.close();
    await consuming;
    expect(finished).toBe(true);
    expect(watch.closed).toBe(true);
    expect((await watch.changes().next()).done).toBe(true);
  });
});

describe('discovery: deregisterOnSignals', () => {
  it('adds one handler per signal (SIGTERM and SIGINT by default) and removes them on dispose', () => {
    const registry = new Registry();
    open.push(registry);
    const term = process.listenerCount('SIGTERM');
    const int = process.listenerCount('SIGINT');
    const subscription = registry.deregisterOnSignals();
    expect(process.listenerCount('SIGTERM')).toBe(term + 1);
    expect(process.listenerCount('SIGINT')).toBe(int + 1);
    subscription.dispose();
    subscription.dispose(); // twice is harmless
    expect(process.listenerCount('SIGTERM')).toBe(term);
    expect(process.listenerCount('SIGINT')).toBe(int);
  });

  it('on the signal: drains every registration (watchers see draining), waits drainMs, then deregisters and closes', async () => {
    const { clock, backend, make } = setup();
    const registry = make();
    const watcher = make();
    const a = await registry.register({ service: 'orders', id: 'a', host: 'h', port: 1 });
    const b = await registry.register({ service: 'orders', id: 'b', host: 'h', port: 2 });
    const watch = watcher.watch('orders');
    await watch.ready;
    const history = new WatchHistory(watch);
    const at: string[] = [];
    watch.onChange((c) => {
      at.push(
        `${clock.now()} ${c.type} ${c.instance.id} ${c.type === 'removed' ? c.reason : c.instance.status}`,
      );
    });
    // SIGUSR2 stands in for SIGTERM: emitting SIGTERM would reach the test runner's own handlers.
    registry.deregisterOnSignals({ signals: ['SIGUSR2'], drainMs: 5000, exit: false });
    expect(process.listenerCount('SIGUSR2')).toBe(1);
    process.emit('SIGUSR2', 'SIGUSR2');
    expect(process.listenerCount('SIGUSR2')).toBe(0); // one shot
    await clock.advanceAsync(0);
    expect(at).toEqual(['0 updated a draining', '0 updated b draining']);
    expect(registry.closed).toBe(false);
    await clock.advanceAsync(4999);
    expect(at).toHaveLength(2); // still draining: in-flight work finishes
    await clock.advanceAsync(1);
    await clock.advanceAsync(0);
    expect(at.slice(2).sort()).toEqual([
      '5000 removed a deregistered',
      '5000 removed b deregistered',
    ]);
    expect(registry.closed).toBe(true);
    expect(a.state).toBe('closed');
    expect(b.state).toBe('closed');
    history.expectConverged(backend.inner.ids('orders'));
    expect(backend.inner.ids('orders')).toEqual([]);
  });

  it('without drainMs deregisters at once', async () => {
    const { clock, backend, make } = setup();
    const registry = make();
    await registry.register({ service: 'orders', id: 'a', host: 'h', port: 1 });
    registry.deregisterOnSignals({ signals: ['SIGUSR2'], exit: false });
    process.emit('SIGUSR2', 'SIGUSR2');
    await clock.advanceAsync(0);
    expect(registry.closed).toBe(true);
    expect(backend.inner.ids('orders')).toEqual([]);
  });
});

// `update()` spread its patch over the instance and wrote the result: a patch with `id` or
// `service` (TypeScript's InstancePatch has neither, JavaScript callers and casts do) wrote a
// record under another id or service, owned by this registration's token, and left the
// registration's own record and heartbeats where they were — a second instance nobody
// deregisters. A patch that is not an object (null, a number, an array) was taken for an
// empty one.
describe('discovery: Registration.update() patches', () => {
  it('a patch that is not an object, or that sets id or service, is refused naming the field; nothing is written', async () => {
    const registry = new Registry();
    const registration = await registry.register({
      service: 'patch',
      id: 'p-1',
      host: 'h',
      port: 1,
    });
    const refusedWith = async (patch: unknown): Promise<string> => {
      const error = await registration.update(patch as never).catch((e: unknown) => e);
      expect(isInvalidInstanceError(error), String(error)).toBe(true);
      return (error as InvalidInstanceError).field;
    };
    expect(await refusedWith({ id: 'p-2' })).toBe('id');
    expect(await refusedWith({ service: 'elsewhere', port: 2 })).toBe('service');
    for (const patch of [null, 5, 'x', [], () => 1]) expect(await refusedWith(patch)).toBe('patch');
    // The same id and service are no change: accepted.
    await registration.update({ id: 'p-1', service: 'patch', port: 3 } as never);
    await until(() => {
      expect(registry.discover('patch').map((i) => [i.id, i.port])).toEqual([['p-1', 3]]);
    }, 5_000);
    const elsewhere = registry.watch('elsewhere');
    await elsewhere.ready;
    expect(elsewhere.instances()).toEqual([]);
    await registry.close();
  });
});
