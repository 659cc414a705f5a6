/**
 * Fault injection against real redis-server processes: paused and resumed, killed and restarted
 * empty, the change log trimmed under a slow reader, malformed data planted in Redis. After each
 * fault every watcher's history must be coherent (no duplicate or missing step) and its view
 * must converge to the store's true state.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  RedisBackend,
  Registry,
  isRegistryUnavailableError,
  type DiscoveryRedisClient,
  type QuarantinedRecord,
  type Registration,
  type RegistryOptions,
  type WatchError,
} from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { WatchHistory, watchHistories } from './history.js';
import { faultBackendOptions, faultRegistryOptions } from './redis-fixture.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('discovery on Redis under faults', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];
  let serial = 0;

  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
    if (redis().node(0).state === 'paused') redis().resume(0);
    if (redis().node(0).state === 'killed') await redis().restart(0);
    await redis().flushAll();
  });

  const backend = (client?: DiscoveryRedisClient, extra: object = {}): RedisBackend => {
    const b = new RedisBackend({
      client: client ?? redis().client(0, { maxRetriesPerRequest: 1 }),
      ...faultBackendOptions,
      ...extra,
    });
    cleanups.push(() => b.close());
    return b;
  };

  const registry = (options: RegistryOptions = {}): Registry => {
    const r = new Registry({
      backend: backend(),
      ...faultRegistryOptions,
      ...options,
    });
    cleanups.push(() => r.close());
    return r;
  };

  const watchers = (service: string, n: number, options: RegistryOptions = {}) =>
    watchHistories(() => registry(options), service, n, cleanups);

  const truth = async (service: string): Promise<string[]> => {
    const admin = redis().client(0);
    return (await admin.hkeys(new RedisBackend({ client: admin }).keys(service).records)).sort();
  };

  const registerAll = async (r: Registry, service: string, n: number): Promise<Registration[]> => {
    const out: Registration[] = [];
    for (let i = 1; i <= n; i++)
      out.push(await r.register({ service, id: `${service}-${i}`, host: '127.0.0.1', port: i }));
    return out;
  };

  it('Redis paused and resumed: views stay (flagged stale), nothing is mass-evicted, all converge', async () => {
    const service = `paused-${++serial}`;
    const writer = registry();
    const live = await registerAll(writer, service, 3);
    const dead = await writer.register({ service, id: `${service}-dead`, host: 'h', port: 9 });
    const views = await watchers(service, 2);
    const reader = registry();
    await reader.ready(service);
    dead.abandon(); // dies just before the outage: must still be reaped afterwards
    redis().pause(0);
    await until(() => {
      for (const v of views) expect(v.watch.stale).toBe(true);
    }, 3000);
    // Self-preservation: the last view is served, discover() does not throw.
    expect(reader.discover(service)).toHaveLength(4);
    for (const v of views) expect(v.ids()).toHaveLength(4);
    await sleep(1500); // well past the 1 s ttl
    redis().resume(0);
    await until(() => {
      for (const v of views) expect(v.watch.stale).toBe(false);
    }, 5000);
    // The live instances were never evicted: their heartbeats resumed within the grace period.
    await sleep(1200);
    for (const v of views) {
      const removed = v.changes.filter((c) => c.type === 'removed').map((c) => c.instance.id);
      expect(removed.filter((id) => id !== `${service}-dead`)).toEqual([]);
    }
    for (const r of live) expect(r.state).toBe('active');
    // The instance that died before the outage goes once its grace period is over.
    await until(async () => {
      expect(await truth(service)).toEqual(live.map((r) => r.id).sort());
    }, 6000);
    const expected = await truth(service);
    await until(() => {
      for (const v of views) v.expectConverged(expected);
    }, 3000);
  });

  it('while Redis is unreachable, calls fail with typed errors, views report them and keep retrying, discover() never throws', async () => {
    const service = `errors-${++serial}`;
    const writer = registry();
    const live = await registerAll(writer, service, 2);
    const reader = registry();
    const watch = reader.watch(service);
    await watch.ready;
    const errors: WatchError[] = [];
    watch.onError((e) => errors.push(e));
    const background: Error[] = [];
    writer.onError((e) => background.push(e.error));
    redis().pause(0);
    const failed = await writer
      .register({ service, id: `${service}-late`, host: 'h', port: 3 })
      .catch((e: unknown) => e);
    expect(isRegistryUnavailableError(failed)).toBe(true);
    await until(() => {
      expect(watch.stale).toBe(true);
      expect(errors.length).toBeGreaterThanOrEqual(2); // the lost read, then failed resyncs
      expect(background.length).toBeGreaterThanOrEqual(1); // heartbeats / reaps
    }, 4000);
    for (const e of errors) expect(isRegistryUnavailableError(e.error)).toBe(true);
    for (const e of background) expect(isRegistryUnavailableError(e)).toBe(true);
    expect(reader.discover(service).map((i) => i.id)).toEqual(live.map((r) => r.id));
    redis().resume(0);
    await until(async () => {
      expect(watch.stale).toBe(false);
      // The register that timed out may still have landed once Redis answered again (its
      // command was already sent); without heartbeats it then expires after its ttl.
      expect(await truth(service)).toEqual(live.map((r) => r.id).sort());
    }, 8000);
    await until(async () => {
      expect(watch.instances().map((i) => i.id)).toEqual(await truth(service));
    }, 3000);
    watch.close();
  });

  it('Redis killed and restarted empty: instances re-register, watchers converge without evicting', async () => {
    const service = `killed-${++serial}`;
    const writer = registry();
    const live = await registerAll(writer, service, 3);
    const views = await watchers(service, 2, { dataLossGraceMs: 4000 });
    const before = views.map((v) => v.watch.epoch);
    await redis().kill(0);
    await until(() => {
      for (const v of views) expect(v.watch.stale).toBe(true);
    }, 3000);
    for (const v of views) expect(v.ids()).toHaveLength(3); // last known view kept
    await sleep(300);
    await redis().restart(0); // comes back empty (no persistence)
    await until(async () => {
      expect(await truth(service)).toEqual(live.map((r) => r.id).sort());
      for (const r of live) expect(r.state).toBe('active');
    }, 8000);
    const expected = await truth(service);
    await until(() => {
      for (const [i, v] of views.entries()) {
        expect(v.watch.stale).toBe(false);
        expect(v.watch.epoch).not.toBe(before[i]);
        v.expectConverged(expected);
      }
    }, 8000);
    for (const v of views) expect(v.changes.filter((c) => c.type === 'removed')).toEqual([]);
    // And they keep following the new epoch's log. (A view that missed the re-registration
    // and the deregistration in a second fault keeps the instance until its data-loss grace
    // ends, so allow for that.)
    await live[0]?.deregister();
    await until(() => {
      for (const v of views) v.expectConverged(expected.slice(1));
    }, 6000);
  });

  it('a slow watcher whose log was trimmed detects the gap and resyncs from a snapshot', async () => {
    const service = `trimmed-${++serial}`;
    // The watcher's reads pass through a gate: while it is closed the watcher is "slow".
    let open: () => void = () => undefined;
    let gate: Promise<void> = Promise.resolve();
    const real = redis().client(0, { maxRetriesPerRequest: 1 });
    const duplicates: Redis[] = [];
    const gated: DiscoveryRedisClient = {
      evalsha: (...args) => real.evalsha(...args),
      eval: (...args) => real.eval(...args),
      call: (command, ...args) => real.call(command, ...args),
      disconnect: () => {
        real.disconnect();
      },
      on: (event, listener) => real.on(event, listener),
      duplicate: () => {
        const copy = real.duplicate();
        duplicates.push(copy);
        return {
          evalsha: (...args) => copy.evalsha(...args),
          eval: (...args) => copy.eval(...args),
          call: async (command, ...args) => {
            if (command === 'XREAD') await gate;
            return copy.call(command, ...args);
          },
          disconnect: () => {
            copy.disconnect();
          },
          on: (event, listener) => copy.on(event, listener),
          duplicate: () => {
            throw new Error('not used');
          },
        };
      },
    };
    cleanups.push(() => {
      for (const d of duplicates) d.disconnect();
    });
    const watcherRegistry = new Registry({
      backend: backend(gated, { readTimeoutMs: 5000 }),
      resyncJitterMs: 20,
      reapIntervalMs: 0,
    });
    cleanups.push(() => watcherRegistry.close());
    const watch = watcherRegistry.watch(service);
    await watch.ready;
    const history = new WatchHistory(watch);
    const stale: boolean[] = [];
    watch.onStaleChange((c) => stale.push(c.stale));
    const writer = new Registry({
      backend: backend(undefined, { maxLogLength: 10 }),
      reapIntervalMs: 0,
    });
    cleanups.push(() => writer.close());
    const first = await writer.register({ service, id: 'first', host: 'h', port: 1 });
    await until(() => {
      expect(history.ids()).toEqual(['first']);
    }, 2000);
    gate = new Promise((resolve) => (open = resolve));
    await sleep(700); // let the current read return (its block ends) and the next one queue at the gate
    const registrations: Registration[] = [];
    for (let i = 0; i < 150; i++)
      registrations.push(await writer.register({ service, id: `i${i}`, host: 'h', port: i }));
    for (const r of registrations.slice(0, 100)) await r.deregister();
    await first.setStatus('draining');
    const admin = redis().client(0);
    const log = new RedisBackend({ client: admin }).keys(service).log;
    const length = await admin.xlen(log);
    expect(length).toBeLessThan(300); // trimmed (MAXLEN ~ keeps whole macro nodes)
    const resyncsBefore = watch.resyncs;
    open();
    const expected = await truth(service);
    expect(expected).toHaveLength(51);
    await until(() => {
      history.expectConverged(expected);
    }, 5000);
    expect(watch.resyncs).toBe(resyncsBefore + 1);
    expect(history.changes.some((c) => c.source === 'resync')).toBe(true);
    expect(stale).toEqual([]); // a gap is not an outage
    expect(watch.get('first')?.status).toBe('draining');
  });

  it('malformed records and log entries planted in Redis are quarantined and reported, never trusted', async () => {
    const service = `planted-${++serial}`;
    const writer = registry();
    await registerAll(writer, service, 2);
    const admin = redis().client(0);
    const keys = new RedisBackend({ client: admin }).keys(service);
    await admin.hset(keys.records, 'garbage', '\u0000not json');
    await admin.hset(
      keys.records,
      'impostor',
      JSON.stringify({
        service: 'payments',
        id: 'impostor',
        host: 'h',
        port: 1,
        weight: 1,
        status: 'up',
        metadata: {},
      }),
    );
    const reader = registry();
    const reported: QuarantinedRecord[] = [];
    reader.onQuarantined((q) => reported.push(q));
    const [view] = await watchers(service, 1);
    const watch = view?.watch;
    watch?.onQuarantined((q) => reported.push(q));
    await reader.ready(service);
    await until(() => {
      expect(new Set(reported.map((q) => q.id))).toEqual(new Set(['garbage', 'impostor']));
    }, 2000);
    expect(reported.find((q) => q.id === 'impostor')?.reason).toContain('payments');
    expect(reader.discover(service).map((i) => i.id)).toEqual([`${service}-1`, `${service}-2`]);
    // A malformed log entry in sequence: quarantined, and the revision sequence carries on.
    const [epoch, rev] = (await admin.hmget(keys.meta, 'epoch', 'rev')) as [string, string];
    const next = Number(rev) + 1;
    await admin.hset(keys.meta, 'rev', next);
    await admin.hset(keys.records, 'broken', '{"service":');
    await admin.xadd(keys.log, `${epoch}-${next}`, 't', 'r', 'i', 'broken', 'd', '{"service":');
    await until(() => {
      expect(reported.some((q) => q.id === 'broken')).toBe(true);
    }, 3000);
    await writer.register({ service, id: `${service}-3`, host: '127.0.0.1', port: 3 });
    await until(() => {
      expect(view?.ids()).toEqual([`${service}-1`, `${service}-2`, `${service}-3`]);
    }, 3000);
    expect(view?.problems).toEqual([]);
    expect(watch?.resyncs).toBe(1); // followed in sequence throughout, no resync needed
  });
});
