/**
 * The behavioural suite every discovery backend must pass, written once and run against the
 * memory backend (with a ManualClock) and the Redis backend (real redis-server, real time).
 */
import { afterEach, beforeEach, expect, expectTypeOf, it } from 'vitest';
import { LoadBalancer, roundRobin } from '../../src/balancer/index.js';
import type { Clock } from '../../src/core/index.js';
import {
  Registry,
  type DiscoveryBackend,
  type Instance,
  type InstanceEndpointSpec,
  type QuarantinedRecord,
  type RegistryOptions,
  type WatchChange,
} from '../../src/discovery/index.js';
import { WatchHistory } from './history.js';

/** What the suite needs from a backend under test. */
export interface BackendFixture {
  /** Clock to give registries (a ManualClock for memory, the system clock for Redis). */
  readonly clock: Clock;
  /** A backend for one more "process" sharing the same store. */
  backend(): DiscoveryBackend;
  /** Lets `ms` pass, running timers (fake time: advance the clock; real time: sleep). */
  advance(ms: number): Promise<void>;
  /** Step for polling loops. */
  readonly stepMs: number;
  /** Ttl and reap interval the suite uses. */
  readonly ttlMs: number;
  readonly reapIntervalMs: number;
  /** Extra allowance on time bounds (network round trips for Redis; 0 for fake time). */
  readonly slackMs: number;
  /** Ids with a live record in the store. */
  truth(service: string): Promise<string[]>;
  /** The store loses every record, revision and log entry (restart without persistence). */
  loseData(): Promise<void>;
  /** Stores a raw, unchecked record for `service`/`id`. */
  plant(service: string, id: string, raw: string): Promise<void>;
  cleanup(): Promise<void>;
}

let serviceCounter = 0;

/** Polls `check` (which throws until satisfied), letting time pass between tries. */
export async function eventually(
  fixture: BackendFixture,
  check: () => void | Promise<void>,
  limitMs: number,
): Promise<number> {
  let waited = 0;
  for (;;) {
    try {
      await check();
      return waited;
    } catch (error) {
      if (waited >= limitMs) throw error;
      await fixture.advance(fixture.stepMs);
      waited += fixture.stepMs;
    }
  }
}

export function registrySuite(make: () => Promise<BackendFixture>): void {
  let f: BackendFixture;
  const registries: Registry[] = [];
  const histories: WatchHistory[] = [];

  beforeEach(async () => {
    f = await make();
  });

  afterEach(async () => {
    for (const history of histories) history.dispose();
    histories.length = 0;
    await Promise.all(registries.map((r) => r.close()));
    registries.length = 0;
    await f.cleanup();
  });

  const registry = (options: RegistryOptions = {}): Registry => {
    const r = new Registry({
      backend: f.backend(),
      clock: f.clock,
      ttlMs: f.ttlMs,
      reapIntervalMs: f.reapIntervalMs,
      resyncJitterMs: 20,
      retryBaseMs: 20,
      retryMaxMs: 200,
      ...options,
    });
    registries.push(r);
    return r;
  };
  const service = (): string => `svc-${process.pid}-${++serviceCounter}`;
  const instance = (svc: string, n: number, extra: object = {}) => ({
    service: svc,
    id: `${svc}-${n}`,
    host: '127.0.0.1',
    port: 9000 + n,
    ...extra,
  });
  const history = async (r: Registry, svc: string): Promise<WatchHistory> => {
    const watch = r.watch(svc);
    await watch.ready;
    const h = new WatchHistory(watch);
    histories.push(h);
    return h;
  };

  it('registers, discovers from the cache, and deregisters (also on asyncDispose)', async () => {
    const svc = service();
    const a = registry();
    const b = registry();
    const one = await a.register(instance(svc, 1, { zone: 'z1', metadata: { role: 'x' } }));
    await b.ready(svc);
    const watched = await history(b, svc);
    {
      await using two = await a.register(instance(svc, 2, { weight: 3 }));
      expect(two.state).toBe('active');
      await eventually(
        f,
        () => {
          expect(b.discover(svc).map((i) => i.id)).toEqual([`${svc}-1`, `${svc}-2`]);
        },
        2000,
      );
      const found = b.discover(svc, { zone: 'z1' });
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({ id: `${svc}-1`, port: 9001, status: 'up', weight: 1 });
      expect(found[0]?.metadata).toEqual({ role: 'x' });
      expect(b.discover(svc, { metadata: { role: 'x' } })).toHaveLength(1);
      expect(Object.isFrozen(found[0])).toBe(true);
    }
    // `two` was disposed by `await using`: deregistered.
    await eventually(
      f,
      () => {
        expect(b.discover(svc).map((i) => i.id)).toEqual([`${svc}-1`]);
      },
      2000,
    );
    await expect(one.deregister()).resolves.toBe(true);
    await expect(one.deregister()).resolves.toBe(false); // twice is harmless
    await eventually(
      f,
      () => {
        expect(b.discover(svc)).toEqual([]);
      },
      2000,
    );
    const removals = watched.changes.flatMap((c) => (c.type === 'removed' ? [c.reason] : []));
    expect(removals).toEqual(['deregistered', 'deregistered']);
    watched.expectConverged(await f.truth(svc));
  });

  it('a snapshot asked where a reader is says which records the log removed since (removedSince)', async () => {
    const svc = service();
    const backend = f.backend();
    const r = registry();
    const id = (n: number): string => `${svc}-${n}`;
    const one = await r.register(instance(svc, 1));
    const two = await r.register(instance(svc, 2));
    await r.register(instance(svc, 3));
    const at = await backend.snapshot(svc);
    const since = { epoch: at.epoch, revision: at.revision };
    await one.deregister(); // removed
    const four = await r.register(instance(svc, 4));
    await four.deregister(); // registered and removed since
    await two.deregister();
    await r.register(instance(svc, 2)); // removed, then back
    const now = await backend.snapshot(svc, { since });
    expect(now.records.map((x) => x.id).sort()).toEqual([id(2), id(3)]);
    expect([...(now.removedSince ?? ['not said'])].sort()).toEqual([id(1), id(4)]);
    // Nothing since; nothing to say: another epoch, or not asked.
    const here = { epoch: now.epoch, revision: now.revision };
    expect((await backend.snapshot(svc, { since: here })).removedSince).toEqual([]);
    const elsewhere = { epoch: '1', revision: since.revision };
    expect((await backend.snapshot(svc, { since: elsewhere })).removedSince).toBeUndefined();
    expect((await backend.snapshot(svc)).removedSince).toBeUndefined();
  });

  it('one backend follows several services at once, each from its change log, with no error', async () => {
    const services = [service(), service(), service()];
    const writer = registry();
    const reader = registry(); // one backend: every watch below shares it
    const watched = await Promise.all(services.map((svc) => history(reader, svc)));
    const errors: string[] = [];
    for (const h of watched)
      h.watch.onError((e) => errors.push(`${e.service}: ${e.error.message}`));
    await Promise.all(services.map((svc) => writer.register(instance(svc, 1))));
    await eventually(
      f,
      () => {
        for (const [i, h] of watched.entries()) expect(h.ids()).toEqual([`${services[i]}-1`]);
      },
      2000 + f.slackMs,
    );
    await Promise.all(services.map((svc) => writer.register(instance(svc, 2))));
    await eventually(
      f,
      () => {
        for (const h of watched) expect(h.ids()).toHaveLength(2);
      },
      2000 + f.slackMs,
    );
    expect(errors).toEqual([]);
    // Every change came from the log (no fall-back to full snapshots).
    for (const h of watched) expect(h.changes.map((c) => c.source)).toEqual(['log', 'log']);
    for (const [i, h] of watched.entries()) {
      expect(h.watch.stale).toBe(false);
      h.expectConverged(await f.truth(services[i] as string));
    }
  });

  it('heartbeats keep an instance alive well past its ttl', async () => {
    const svc = service();
    const a = registry();
    const b = registry();
    const registration = await a.register(instance(svc, 1));
    const watched = await history(b, svc);
    expect(watched.ids()).toEqual([`${svc}-1`]);
    const revision = watched.watch.revision;
    const until = 4 * f.ttlMs;
    for (let waited = 0; waited < until; waited += f.stepMs * 5) await f.advance(f.stepMs * 5);
    expect(registration.state).toBe('active');
    // Heartbeats move the expiry only: no log entry, no revision, no event.
    expect(watched.watch.revision).toBe(revision);
    expect(watched.changes).toEqual([]);
    expect(watched.changes.filter((c) => c.type === 'removed')).toEqual([]);
    expect(await f.truth(svc)).toEqual([`${svc}-1`]);
    watched.expectConverged([`${svc}-1`]);
  });

  it('an instance that stops heartbeating leaves every watcher within ttl + one reap interval', async () => {
    const svc = service();
    const a = registry();
    const watchers = await Promise.all([0, 1, 2].map(() => history(registry(), svc)));
    const survivor = await a.register(instance(svc, 1));
    const dying = await a.register(instance(svc, 2));
    await eventually(
      f,
      () => {
        for (const w of watchers) expect(w.ids()).toHaveLength(2);
      },
      2000,
    );
    const removedAt = new Map<WatchHistory, number>();
    for (const w of watchers)
      w.watch.onRemoved(() => {
        removedAt.set(w, f.clock.now());
      });
    const lastBeat = dying.lastHeartbeat;
    dying.abandon(); // the process "crashes": no more heartbeats, no deregistration
    const bound = f.ttlMs + 1.2 * f.reapIntervalMs + f.slackMs;
    await eventually(
      f,
      () => {
        expect(removedAt.size).toBe(3);
      },
      bound + 2000,
    );
    for (const at of removedAt.values())
      expect(at - lastBeat).toBeLessThanOrEqual(bound + f.stepMs);
    for (const w of watchers) {
      const removal = w.changes.find((c) => c.type === 'removed');
      expect(removal).toMatchObject({ reason: 'expired', source: 'log' });
      w.expectConverged([`${svc}-1`]);
    }
    expect(survivor.state).toBe('active');
  });

  it('reaping is idempotent: any number of clients may reap, each expiry is logged once', async () => {
    const svc = service();
    const a = registry({ reapIntervalMs: 0 });
    const reapers = [a, registry({ reapIntervalMs: 0 }), registry({ reapIntervalMs: 0 })];
    const watched = await history(registry({ reapIntervalMs: 0 }), svc);
    await a.register(instance(svc, 1));
    const dying = await a.register(instance(svc, 2));
    for (const r of reapers) await r.ready(svc);
    await eventually(
      f,
      () => {
        expect(watched.ids()).toHaveLength(2);
      },
      2000,
    );
    dying.abandon();
    await f.advance(f.ttlMs + f.slackMs + 50);
    const removed = await Promise.all(reapers.map((r) => r.reap()));
    expect(removed.reduce((x, y) => x + y, 0)).toBe(1);
    expect(await Promise.all(reapers.map((r) => r.reap()))).toEqual([0, 0, 0]);
    await eventually(
      f,
      () => {
        expect(watched.ids()).toEqual([`${svc}-1`]);
      },
      2000,
    );
    await f.advance(f.stepMs * 3);
    const removals = watched.changes.filter((c) => c.type === 'removed');
    expect(removals).toHaveLength(1);
    expect(removals[0]).toMatchObject({ reason: 'expired', source: 'log' });
    watched.expectConverged(await f.truth(svc));
  });

  it('status, weight and metadata changes reach watchers; draining instances leave discover()', async () => {
    const svc = service();
    const a = registry();
    const b = registry();
    const registration = await a.register(instance(svc, 1));
    await a.register(instance(svc, 2));
    const watched = await history(b, svc);
    const updates: WatchChange[] = [];
    watched.watch.onUpdated((change) => updates.push(change));
    await registration.setStatus('draining');
    await eventually(
      f,
      () => {
        expect(updates).toHaveLength(1);
      },
      2000,
    );
    expect(updates[0]).toMatchObject({
      type: 'updated',
      instance: { status: 'draining' },
      previous: { status: 'up' },
    });
    expect(b.discover(svc).map((i) => i.id)).toEqual([`${svc}-2`]);
    expect(b.discover(svc, { status: 'any' })).toHaveLength(2);
    await registration.setWeight(5);
    await registration.setMetadata({ build: '42' });
    await eventually(
      f,
      () => {
        expect(watched.watch.get(`${svc}-1`)).toMatchObject({
          weight: 5,
          metadata: { build: '42' },
          status: 'draining',
        });
      },
      2000,
    );
    // Writing the same data again is no change: no event, no revision.
    const revision = watched.watch.revision;
    await registration.setWeight(5);
    await f.advance(f.stepMs * 3);
    expect(watched.watch.revision).toBe(revision);
    watched.expectConverged(await f.truth(svc));
  });

  it('the balancer view follows the watch and keeps per-endpoint state across changes', async () => {
    const svc = service();
    const a = registry();
    const b = registry();
    const r1 = await a.register(instance(svc, 1));
    await a.register(instance(svc, 2));
    const watch = b.watch(svc);
    const balancer = LoadBalancer.following(watch, { strategy: roundRobin(), clock: f.clock });
    await balancer.ready;
    expect(balancer.endpoints().map((e) => e.id)).toEqual([`${svc}-1`, `${svc}-2`]);
    const lease = balancer.acquire({ exclude: new Set([`${svc}-2`]) });
    expect(lease?.endpoint.id).toBe(`${svc}-1`);
    // The instance is typed non-optional on endpoints and leases (and update() by hand must
    // carry it too), and it is the watch's instance.
    type B = typeof balancer;
    expectTypeOf<ReturnType<B['endpoints']>[number]['data']>().toEqualTypeOf<Instance>();
    expectTypeOf<NonNullable<ReturnType<B['pick']>>['data']>().toEqualTypeOf<Instance>();
    expectTypeOf<
      NonNullable<ReturnType<B['acquire']>>['endpoint']['data']
    >().toEqualTypeOf<Instance>();
    expectTypeOf<ReturnType<B['acquireOrThrow']>['endpoint']['data']>().toEqualTypeOf<Instance>();
    expectTypeOf<Parameters<B['update']>[0]>().toEqualTypeOf<Iterable<InstanceEndpointSpec>>();
    expectTypeOf<{ id: string }>().not.toExtend<InstanceEndpointSpec>();
    expect(lease?.endpoint.data.port).toBe(9001);
    for (const endpoint of balancer.endpoints()) {
      expect(endpoint.data).toBe(watch.get(endpoint.id));
    }
    const r3 = await a.register(instance(svc, 3));
    await eventually(
      f,
      () => {
        expect(balancer.size).toBe(3);
      },
      2000,
    );
    expect(balancer.stats(`${svc}-1`)?.inFlight).toBe(1); // state survived the update
    await r1.drain();
    await eventually(
      f,
      () => {
        expect(balancer.endpoints().map((e) => e.id)).toEqual([`${svc}-2`, `${svc}-3`]);
      },
      2000,
    );
    await r3.deregister();
    await eventually(
      f,
      () => {
        expect(balancer.endpoints().map((e) => e.id)).toEqual([`${svc}-2`]);
      },
      2000,
    );
    lease?.done({ ok: true });
    balancer.close();
    expect(watch.closed).toBe(true); // the balancer owns its watch
  });

  it('a watch offers typed events, an async iterator and ready', async () => {
    const svc = service();
    const a = registry();
    const b = registry();
    const watch = b.watch(svc);
    expect(watch.isReady).toBe(false);
    await watch.ready;
    expect(watch.isReady).toBe(true);
    expect(watch.instances()).toEqual([]);
    const iterator = watch.changes();
    const seen: string[] = [];
    const collecting = (async () => {
      for await (const change of { [Symbol.asyncIterator]: () => iterator }) {
        seen.push(`${change.type}:${change.instance.id}`);
        if (seen.length === 3) break;
      }
    })();
    const added: string[] = [];
    watch.onAdded(({ instance }) => added.push(instance.id));
    const r = await a.register(instance(svc, 1));
    await r.setStatus('down');
    await r.deregister();
    await eventually(
      f,
      () => {
        expect(seen).toEqual([`added:${svc}-1`, `updated:${svc}-1`, `removed:${svc}-1`]);
      },
      2000,
    );
    await collecting;
    expect(added).toEqual([`${svc}-1`]);
    watch.close();
    // A closed watch ends its iterators.
    const ended = await watch.changes().next();
    expect(ended.done).toBe(true);
  });

  it('re-registers by itself when the store loses its data, and watchers converge without evicting', async () => {
    const svc = service();
    const a = registry();
    const b = registry({ dataLossGraceMs: 20 * f.ttlMs });
    const r1 = await a.register(instance(svc, 1));
    const r2 = await a.register(instance(svc, 2));
    const watched = await history(b, svc);
    const states: string[] = [];
    r1.onStateChange((change) => states.push(change.to));
    await f.loseData();
    await eventually(
      f,
      async () => {
        expect(await f.truth(svc)).toEqual([`${svc}-1`, `${svc}-2`]);
        expect(r1.state).toBe('active');
        expect(r2.state).toBe('active');
      },
      4 * f.ttlMs,
    );
    expect(states).toEqual(['lost', 'active']);
    await eventually(
      f,
      () => {
        expect(watched.watch.resyncs).toBeGreaterThanOrEqual(2);
        expect(watched.watch.stale).toBe(false);
      },
      4 * f.ttlMs,
    );
    // Self-preservation: the watcher never dropped them while they were re-registering.
    expect(watched.changes.filter((c) => c.type === 'removed')).toEqual([]);
    watched.expectConverged(await f.truth(svc));
  });

  it('quarantines malformed records: skipped, reported, never a crash', async () => {
    const svc = service();
    const a = registry();
    await a.register(instance(svc, 1));
    await f.plant(svc, 'bad-json', '{"service":');
    await f.plant(
      svc,
      'bad-port',
      JSON.stringify({ ...instance(svc, 7), id: 'bad-port', port: -1 }),
    );
    const b = registry();
    const quarantined: QuarantinedRecord[] = [];
    b.onQuarantined((record) => quarantined.push(record));
    const watch = b.watch(svc);
    const own: QuarantinedRecord[] = [];
    watch.onQuarantined((record) => own.push(record));
    await watch.ready;
    await eventually(
      f,
      () => {
        expect(quarantined.map((q) => q.id).sort()).toEqual(['bad-json', 'bad-port']);
      },
      2000,
    );
    expect(quarantined.find((q) => q.id === 'bad-port')?.reason).toMatch(/port/);
    expect(own).toHaveLength(2);
    expect(b.discover(svc, { status: 'any' }).map((i) => i.id)).toEqual([`${svc}-1`]);
    watch.close();
  });
}
