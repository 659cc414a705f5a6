/**
 * Records that vanish from the store with no change-log entry and no trace left for the reaper
 * (their record and lease deleted — by another program, an operator's `DEL`/`HDEL`, or eviction
 * under an `allkeys-*` policy — with or without their expiry entry): every view must still drop
 * the dead ones within a bounded time, and nobody alive may be removed. And the reader's probe
 * under a write pause (`CLIENT PAUSE … WRITE`): it only reads, so views must not go stale.
 */
import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  RedisBackend,
  Registry,
  type RedisBackendOptions,
  type Registration,
  type RegistryOptions,
  type StaleChange,
} from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { type WatchHistory, watchHistories } from './history.js';
import { faultBackendOptions, faultRegistryOptions } from './redis-fixture.js';

describeRedis('records that vanish without a trace (real Redis)', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];
  let serial = 0;

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    const admin = redis().client(0);
    await admin.call('CLIENT', 'UNPAUSE');
    await redis().flushAll();
    admin.disconnect();
  });

  /** The backend of each registry made by `registry()`. */
  const backends = new WeakMap<Registry, RedisBackend>();

  const registry = (
    options: RegistryOptions = {},
    backendOptions: Partial<RedisBackendOptions> = {},
  ): Registry => {
    const client = redis().client(0, { maxRetriesPerRequest: 1 });
    const backend = new RedisBackend({ client, ...faultBackendOptions, ...backendOptions });
    const r = new Registry({ backend, ...faultRegistryOptions, ...options });
    backends.set(r, backend);
    cleanups.push(async () => {
      await r.close();
      await backend.close();
      client.disconnect();
    });
    return r;
  };

  const admin = (): Redis => {
    const a = redis().client(0);
    cleanups.push(() => a.disconnect());
    return a;
  };
  const keysOf = (service: string) => new RedisBackend({ client: admin() }).keys(service);

  const registerAll = async (r: Registry, service: string, n: number): Promise<Registration[]> => {
    const out: Registration[] = [];
    for (let i = 1; i <= n; i++)
      out.push(await r.register({ service, id: `${service}-${i}`, host: '127.0.0.1', port: i }));
    return out;
  };

  /** Ids removed from a view, with the reason. */
  const removals = (v: WatchHistory): string[] =>
    v.changes.flatMap((c) => (c.type === 'removed' ? [`${c.instance.id} ${c.reason}`] : []));

  it('a dead instance whose record and lease were deleted (whole keys or its fields, with or without its expiry) leaves every view; nobody alive does', async () => {
    const options = { dataLossGraceMs: 1500 };
    const writer = registry(options);
    const watcher = registry(options);
    const a = admin();
    const deletions: Record<string, (service: string, dead: string) => Promise<unknown>> = {
      'records and leases keys': (s) => a.del(keysOf(s).records, keysOf(s).leases),
      'records, leases and expiry keys': (s) =>
        a.del(keysOf(s).records, keysOf(s).leases, keysOf(s).expiry),
      'its record and lease fields': (s, dead) =>
        a.multi().hdel(keysOf(s).records, dead).hdel(keysOf(s).leases, dead).exec(),
      'its record, lease and expiry entry': (s, dead) =>
        a
          .multi()
          .hdel(keysOf(s).records, dead)
          .hdel(keysOf(s).leases, dead)
          .zrem(keysOf(s).expiry, dead)
          .exec(),
    };
    const cases: { name: string; service: string; live: Registration[]; dead: string }[] = [];
    const views: WatchHistory[][] = [];
    for (const name of Object.keys(deletions)) {
      const service = `vanished-${++serial}`;
      const live = await registerAll(writer, service, 3);
      const dead = await writer.register({ service, id: `${service}-dead`, host: 'h', port: 9 });
      // Two watchers: one on the writer's own registry, one elsewhere.
      views.push([
        ...(await watchHistories(() => writer, service, 1, cleanups)),
        ...(await watchHistories(() => watcher, service, 1, cleanups)),
      ]);
      dead.abandon(); // its process stopped: no heartbeat, no deregistration
      cases.push({ name, service, live, dead: dead.id });
    }
    for (const c of cases) await deletions[c.name]?.(c.service, c.dead);

    await until(async () => {
      for (const [i, c] of cases.entries()) {
        const ids = c.live.map((r) => r.id).sort();
        expect((await a.hkeys(keysOf(c.service).records)).sort(), c.name).toEqual(ids);
        for (const v of views[i] ?? []) v.expectConverged(ids);
      }
    }, 10_000);
    for (const [i, c] of cases.entries()) {
      const alive = new Set(c.live.map((r) => r.id));
      for (const v of views[i] ?? []) {
        const removed = removals(v);
        expect(
          removed.filter((what) => alive.has(what.split(' ')[0] ?? '')),
          c.name,
        ).toEqual([]);
        // Its record vanished without a log entry: the store lost it, as in a data loss.
        expect(removed, c.name).toEqual([`${c.dead} lost`]);
      }
    }
  }, 30_000);

  it('records deleted, then found by a resync for another reason (a dropped connection) before the probe: the live ones are kept through the grace, a deregistration meanwhile still removes its instance', async () => {
    // Chaos seed 924706933: 22 live instances removed 38 ms after their records were deleted —
    // a resync already under way (not the probe's) found them missing and removed them as if the
    // log had said so.
    const options = { dataLossGraceMs: 5000 };
    const service = `vanished-resync-${++serial}`;
    const writer = registry(options);
    const watcher = registry(options);
    const live = await registerAll(writer, service, 3);
    const leaving = await writer.register({
      service,
      id: `${service}-leaving`,
      host: 'h',
      port: 9,
    });
    const views = [
      ...(await watchHistories(() => writer, service, 1, cleanups)),
      ...(await watchHistories(() => watcher, service, 1, cleanups)),
    ];
    const k = keysOf(service);
    const ids = live.map((r) => r.id).sort();
    // In one transaction: the live ones' records go, and every connection with them (the
    // readers' included), so each view resyncs on reconnecting, whatever its probe would find.
    await admin()
      .multi()
      .hdel(k.records, ...ids)
      .hdel(k.leases, ...ids)
      .call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
      .exec();
    // A deregistration the views may read from the log or find missing from their resync.
    await expect(leaving.deregister()).resolves.toBe(true);
    // The live ones re-register at their next heartbeat (ttl 1 s).
    await until(async () => {
      expect((await admin().hkeys(k.records)).sort()).toEqual(ids);
      for (const v of views) v.expectConverged(ids);
    }, 10_000);
    for (const v of views) {
      expect(removals(v)).toHaveLength(1);
      expect([`${leaving.id} deregistered`, `${leaving.id} resync`]).toContain(removals(v)[0]);
    }
  }, 30_000);

  it('a snapshot skips foreign log entries, and says nothing of removals once the log was trimmed past the reader or is not a stream', async () => {
    const service = `removed-since-${++serial}`;
    const r = registry();
    const [one] = await registerAll(r, service, 3);
    const backend = new RedisBackend({ client: admin() });
    const at = await backend.snapshot(service);
    const since = { epoch: at.epoch, revision: at.revision };
    const k = keysOf(service);
    const a = admin();
    // A foreign entry past every Keel id: Keel's next entries take ids the stream picks.
    await a.xadd(k.log, '*', 't', 'd', 'i', `${service}-2`, 'e', since.epoch, 'v', 'x');
    await one?.deregister();
    const after = await backend.snapshot(service, { since });
    expect(after.removedSince).toEqual([`${service}-1`]);
    await a.xtrim(k.log, 'MAXLEN', 0);
    expect((await backend.snapshot(service, { since })).removedSince).toBeUndefined();
    await a.del(k.log);
    await a.set(k.log, 'not a stream');
    const foreign = await backend.snapshot(service, { since });
    expect(foreign.removedSince).toBeUndefined();
    expect(foreign.records.map((x) => x.id).sort()).toEqual([`${service}-2`, `${service}-3`]);
  });

  // Its lease still holds the registration's token: the store still has the instance (views
  // show it, the reaper would expire it at its ttl). Deregistering it is what its owner asks for:
  // it succeeds, and is logged, so every view drops it at once as deregistered. (It answered
  // false and logged nothing: views dropped it only as lost data, after the probe's resync and
  // the data-loss grace.)
  it('a registration whose record was deleted (its lease kept) deregisters: true, and every view drops it as deregistered', async () => {
    const options = { dataLossGraceMs: 60_000 };
    const writer = registry(options);
    const watcher = registry(options);
    const a = admin();
    const service = `vanished-${++serial}`;
    const live = await registerAll(writer, service, 2);
    const gone = await writer.register({ service, id: `${service}-gone`, host: 'h', port: 9 });
    const views = [
      ...(await watchHistories(() => writer, service, 1, cleanups)),
      ...(await watchHistories(() => watcher, service, 1, cleanups)),
    ];
    await a.hdel(keysOf(service).records, gone.id);
    expect(await gone.deregister()).toBe(true);
    const ids = live.map((r) => r.id).sort();
    await until(() => {
      for (const v of views) v.expectConverged(ids);
    }, 10_000);
    expect(await a.hget(keysOf(service).leases, gone.id)).not.toBe(gone.id);
    for (const v of views) expect(removals(v)).toEqual([`${gone.id} deregistered`]);
    // Idempotent: a second call finds it closed.
    expect(await gone.deregister()).toBe(false);
  });

  it('records quarantined in the store (bad JSON, a 2 MB value, an empty id) count as stored: the probe does not resync over them again and again', async () => {
    const service = `quarantined-${++serial}`;
    const r = registry();
    await r.register({ service, id: `${service}-1`, host: 'h', port: 1 });
    const watch = r.watch(service);
    await watch.ready;
    const k = keysOf(service);
    await admin().hset(k.records, 'bad', '{not json', '', '{}', 'huge', 'x'.repeat(2_000_000));
    await until(() => {
      expect(r.stats().quarantined).toBe(3);
    }, 5000);
    // Counts the probes that find the store where the view is (another feed on the same
    // backend, read by the same reader: the view's probes are its probes).
    const backend = backends.get(r) as RedisBackend;
    let probes = 0;
    const feed = backend.follow(service, {
      entries: () => undefined,
      interrupted: () => undefined,
      healthy: () => undefined,
      foreign: () => undefined,
      probed: () => {
        probes++;
      },
    });
    cleanups.push(() => feed.close());
    const snapshot = await backend.snapshot(service);
    feed.seek(snapshot.epoch, snapshot.revision, snapshot.position);
    const after = watch.resyncs;
    const from = probes;
    // Several probes (one every blockMs, 300 ms): a view that did not count its quarantined
    // records would resync after every one.
    await until(() => {
      expect(probes - from).toBeGreaterThanOrEqual(5);
    }, 10_000);
    expect(watch.resyncs - after).toBeLessThanOrEqual(1);
    expect(watch.instances().map((i) => i.id)).toEqual([`${service}-1`]);
  });

  it('a short write pause (CLIENT PAUSE … WRITE) leaves views fresh: the reader’s probe only reads', async () => {
    const service = `paused-${++serial}`;
    // Reads get 2 s past their block before they count as lost; the pause is longer than that,
    // so a probe the pause held would time out within it and turn the view stale.
    const backendOptions = { readTimeoutMs: 2000 };
    const writer = registry({ ttlMs: 10_000 }, backendOptions);
    await registerAll(writer, service, 3);
    // The watching registry reaps too (every 150 ms): its reaps wait out the pause on its client.
    const watcher = registry({}, backendOptions);
    const watch = watcher.watch(service);
    await watch.ready;
    const stale: StaleChange[] = [];
    const subscription = watch.onStaleChange((change) => stale.push(change));
    cleanups.push(() => subscription.dispose());
    const a = admin();
    const before = watch.resyncs;
    await a.call('CLIENT', 'PAUSE', '3000', 'WRITE');
    // A write of the admin's own waits until the pause is over.
    const probe = redis().client(0);
    cleanups.push(() => probe.disconnect());
    await probe.set(`${service}:after-pause`, '1');
    // A probe the pause held would have timed out within it (2 s after a read at most 300 ms
    // into the pause): by now the view would have turned stale and resynced.
    expect(stale).toEqual([]);
    expect(watch.stale).toBe(false);
    expect(watch.resyncs).toBe(before);
    expect(watch.instances().map((i) => i.id)).toHaveLength(3);
  }, 20_000);
});
