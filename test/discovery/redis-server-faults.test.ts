/**
 * Faults of a Redis server that is up and answering, but not as usual: out of memory under
 * `noeviction`, its script cache flushed, busy (`DEBUG SLEEP`) or pausing clients (`CLIENT
 * PAUSE … WRITE` / `ALL`), its ACL user losing write permission, and keys of the service
 * holding data of another type or deleted by someone else. Writes must fail whole (never
 * half-applied) with a typed error naming the Redis node, nobody alive may be evicted by the
 * registry itself, and every view must converge to the store once the fault is gone.
 */
import type { ChainableCommander, Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  RedisBackend,
  Registry,
  isRegistryUnavailableError,
  type Registration,
  type RegistryOptions,
} from '../../src/discovery/index.js';
import { until } from '../support/helpers.js';
import { REDIS_HOST } from '../support/redis.js';
import { describeRedis, useRedis } from '../support/vitest.js';
import { type WatchHistory, watchHistories } from './history.js';
import { faultBackendOptions, faultRegistryOptions } from './redis-fixture.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describeRedis('discovery on a Redis server that answers, but not as usual', () => {
  // DEBUG SLEEP needs the debug command (off by default since Redis 7), for local clients only.
  const redis = useRedis({ count: 1, args: ['--enable-debug-command', 'local'] });
  const cleanups: (() => Promise<void> | void)[] = [];
  let serial = 0;

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    const admin = redis().client(0);
    await admin.call('CONFIG', 'SET', 'maxmemory', '0');
    await admin.call('CLIENT', 'UNPAUSE');
    await redis().flushAll();
    admin.disconnect();
  });

  const store = (): string => `redis at ${REDIS_HOST}:${redis().port(0)}`;

  const registry = (options: RegistryOptions = {}, client?: Redis): Registry => {
    const backend = new RedisBackend({
      client: client ?? redis().client(0, { maxRetriesPerRequest: 1 }),
      ...faultBackendOptions,
    });
    const r = new Registry({ backend, ...faultRegistryOptions, ...options });
    cleanups.push(async () => {
      await r.close();
      await backend.close();
    });
    return r;
  };

  const admin = (): Redis => redis().client(0);
  const keysOf = (service: string) => new RedisBackend({ client: admin() }).keys(service);
  const truth = async (service: string): Promise<string[]> =>
    (await admin().hkeys(keysOf(service).records)).sort();

  const registerAll = async (r: Registry, service: string, n: number): Promise<Registration[]> => {
    const out: Registration[] = [];
    for (let i = 1; i <= n; i++)
      out.push(await r.register({ service, id: `${service}-${i}`, host: '127.0.0.1', port: i }));
    return out;
  };

  /** Ids removed from a view, with the reason. */
  const removals = (v: WatchHistory): string[] =>
    v.changes.flatMap((c) => (c.type === 'removed' ? [`${c.instance.id} ${c.reason}`] : []));

  /**
   * The service's keys agree with each other: every record has a lease and an expiry, and the
   * log's last entry is the revision meta names. A script cut off half-way would leave one
   * without the other.
   */
  const expectWhole = async (service: string): Promise<void> => {
    const k = keysOf(service);
    const a = admin();
    const records = (await a.hkeys(k.records)).sort();
    const leased = (await a.hkeys(k.leases)).sort();
    const expiring = (await a.zrange(k.expiry, '0', '-1')).sort();
    for (const id of records) {
      expect(leased).toContain(id);
      expect(expiring).toContain(id);
    }
    const [rev, lid] = await a.hmget(k.meta, 'rev', 'lid');
    const last = (await a.xrevrange(k.log, '+', '-', 'COUNT', '1'))[0];
    expect(last?.[0]).toBe(lid);
    const fields = last?.[1] ?? [];
    expect(fields[fields.indexOf('v') + 1]).toBe(rev);
  };

  it('out of memory (noeviction): every write fails whole with a typed error naming the node, nobody is evicted, all converge once memory is freed', async () => {
    const service = `oom-${++serial}`;
    const writer = registry();
    const background: Error[] = [];
    writer.onError((e) => background.push(e.error));
    const live = await registerAll(writer, service, 3);
    const leaving = await writer.register({
      service,
      id: `${service}-leaving`,
      host: 'h',
      port: 9,
    });
    const views = await watchHistories(() => registry(), service, 2, cleanups);
    const heartbeatErrors: Error[] = [];
    for (const r of live) r.onError((e) => heartbeatErrors.push(e));
    await expectWhole(service);

    // Full: with noeviction, Redis refuses every command that may grow memory.
    await admin().call('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    await admin().call('CONFIG', 'SET', 'maxmemory', '1');
    const refused = await Promise.all([
      writer
        .register({ service, id: `${service}-late`, host: 'h', port: 4 })
        .catch((e: unknown) => e),
      live[0]?.setStatus('draining').catch((e: unknown) => e),
      leaving.deregister().catch((e: unknown) => e),
      writer.reap().catch((e: unknown) => e),
    ]);
    for (const error of refused) {
      expect(isRegistryUnavailableError(error), String(error)).toBe(true);
      expect(error).toMatchObject({ store: store() });
      expect((error as Error).message).toContain('OOM');
    }
    // Past the ttl: heartbeats and the reapers' calls fail in the background, all named.
    await until(() => {
      expect(heartbeatErrors.length).toBeGreaterThanOrEqual(live.length);
      expect(background.some((e) => /reap/.test(e.message))).toBe(true);
    }, 5000);
    await sleep(1000);
    for (const error of [...heartbeatErrors, ...background]) {
      expect(isRegistryUnavailableError(error), String(error)).toBe(true);
      expect(error).toMatchObject({ store: store() });
    }
    // Nothing was half-applied, nobody was removed while full, and the views saw no change.
    expect(await truth(service)).toEqual([...live.map((r) => r.id), leaving.id].sort());
    await expectWhole(service);
    for (const v of views) {
      expect(removals(v)).toEqual([]);
      expect(v.watch.get(live[0]?.id ?? '')?.status).toBe('up');
    }

    await admin().call('CONFIG', 'SET', 'maxmemory', '0');
    // The one whose deregistration failed expires; the live ones stay, heartbeating again.
    await until(async () => {
      expect(await truth(service)).toEqual(live.map((r) => r.id).sort());
    }, 8000);
    await until(() => {
      for (const v of views) v.expectConverged(live.map((r) => r.id));
    }, 5000);
    for (const v of views) expect(removals(v)).toEqual([`${leaving.id} expired`]);
    for (const r of live) expect(r.state).toBe('active');
    await expectWhole(service);
  });

  it('an ACL user that loses write permission: typed errors naming the node, no hang, no loss once it is back', async () => {
    const service = `acl-${++serial}`;
    await admin().call('ACL', 'SETUSER', 'keel-disc', 'on', '>secret', '~*', '&*', '+@all');
    cleanups.push(async () => {
      await admin().call('ACL', 'DELUSER', 'keel-disc');
    });
    const asUser = (): Redis =>
      redis().client(0, { username: 'keel-disc', password: 'secret', maxRetriesPerRequest: 1 });
    const writer = registry({}, asUser());
    const live = await registerAll(writer, service, 3);
    const views = await watchHistories(() => registry({}, asUser()), service, 2, cleanups);
    const heartbeatErrors: Error[] = [];
    for (const r of live) r.onError((e) => heartbeatErrors.push(e));

    await admin().call('ACL', 'SETUSER', 'keel-disc', '-@write');
    const refused = await Promise.all([
      writer
        .register({ service, id: `${service}-late`, host: 'h', port: 4 })
        .catch((e: unknown) => e),
      live[0]?.setWeight(7).catch((e: unknown) => e),
      writer.reap().catch((e: unknown) => e),
    ]);
    for (const error of refused) {
      expect(isRegistryUnavailableError(error), String(error)).toBe(true);
      expect(error).toMatchObject({ store: store() });
      // Redis 7.0 words a command refused inside a script as "ERR The user executing the
      // script can't run this command"; later versions say NOPERM.
      expect((error as Error).message).toMatch(/NOPERM|can't run this command/);
    }
    await until(() => {
      expect(heartbeatErrors.length).toBeGreaterThanOrEqual(live.length);
    }, 5000);
    for (const error of heartbeatErrors) expect(error).toMatchObject({ store: store() });
    await sleep(1000); // past the ttl
    for (const v of views) expect(removals(v)).toEqual([]);

    await admin().call('ACL', 'SETUSER', 'keel-disc', '+@all');
    await live[0]?.setWeight(7);
    await until(() => {
      for (const v of views) {
        v.expectConverged(live.map((r) => r.id));
        expect(v.watch.get(live[0]?.id ?? '')?.weight).toBe(7);
      }
    }, 5000);
    for (const v of views) expect(removals(v)).toEqual([]);
    for (const r of live) expect(r.state).toBe('active');
    expect(await truth(service)).toEqual(live.map((r) => r.id).sort());

    // Refused one command only (XADD): a write that cannot log its change fails whole, and
    // the change log it could not append to stays as it was.
    const k = keysOf(service);
    const log = await admin().xrange(k.log, '-', '+');
    await admin().call('ACL', 'SETUSER', 'keel-disc', '-xadd');
    const writes: (() => Promise<unknown> | undefined)[] = [
      () => writer.register({ service, id: `${service}-later`, host: 'h', port: 5 }),
      () => live[1]?.setStatus('draining'),
      () => live[2]?.deregister(),
    ];
    for (const write of writes) {
      const error = await Promise.resolve()
        .then(write)
        .catch((e: unknown) => e);
      expect(isRegistryUnavailableError(error), String(error)).toBe(true);
      expect(error).toMatchObject({ store: store() });
    }
    expect(await admin().xrange(k.log, '-', '+')).toEqual(log);
    expect(await truth(service)).toEqual(live.map((r) => r.id).sort());
    await expectWhole(service);
    await admin().call('ACL', 'SETUSER', 'keel-disc', '+@all');
  });

  it('a busy, pausing or script-flushed server (DEBUG SLEEP, CLIENT PAUSE WRITE / ALL, SCRIPT FLUSH) evicts nobody alive, and views converge', async () => {
    const service = `busy-${++serial}`;
    // ttl − longest heartbeat interval (2000 − 800) stays above the outage threshold (900), as
    // RedisBackendOptions.outageThresholdMs asks: a pause no longer than that needs no grace.
    const options = { ttlMs: 2000 };
    const writer = registry(options);
    const live = await registerAll(writer, service, 4);
    const dead = await writer.register({ service, id: `${service}-dead`, host: 'h', port: 9 });
    const views = await watchHistories(() => registry(options), service, 2, cleanups);
    dead.abandon();
    const a = admin();
    const faults: string[][] = [
      ['DEBUG', 'SLEEP', '0.5'],
      ['SCRIPT', 'FLUSH'],
      ['CLIENT', 'PAUSE', '700', 'WRITE'],
      ['SCRIPT', 'FLUSH', 'ASYNC'],
      ['CLIENT', 'PAUSE', '1500', 'WRITE'],
      ['DEBUG', 'SLEEP', '0.5'],
      ['CLIENT', 'PAUSE', '1500', 'ALL'],
      ['SCRIPT', 'FLUSH'],
    ];
    // A registration that timed out may still land once the server gets to it (its command
    // was sent): without heartbeats it then expires after its ttl, by right.
    const timedOut: string[] = [];
    let n = 0;
    for (const [command, ...args] of faults) {
      await a.call(command ?? '', ...args);
      // Writes go on meanwhile: an update and a registration per fault.
      await live[n % live.length]?.setMetadata({ n: String(n) }).catch(() => undefined);
      const id = `${service}-x${n}`;
      const extra = await writer
        .register({ service, id, host: 'h', port: 100 + n })
        .catch(() => undefined);
      if (extra === undefined) timedOut.push(id);
      else live.push(extra);
      n++;
      await sleep(command === 'CLIENT' ? Number(args[1]) + 200 : 200);
    }
    await until(async () => {
      expect(await truth(service)).toEqual(live.map((r) => r.id).sort());
    }, 8000);
    await until(async () => {
      const expected = await truth(service);
      for (const v of views) v.expectConverged(expected);
    }, 5000);
    for (const v of views) {
      const alive = new Set(live.map((r) => r.id));
      expect(removals(v).filter((what) => alive.has(what.split(' ')[0] ?? ''))).toEqual([]);
      // The dead instance left every view once: by its `expired` entry, or by the snapshot of
      // a view that resynced after a pause had timed its reads out (a loaded full run saw
      // `resync`), which no longer held it.
      const gone = removals(v).filter((what) => what.startsWith(`${dead.id} `));
      expect(gone).toHaveLength(1);
      expect(gone[0]).toMatch(/ (expired|resync)$/);
    }
    for (const r of live) expect(r.state).toBe('active');
  });

  it('a key of the service holding another type (someone else’s data) wedges nothing: writes go on, registrations stay, views converge', async () => {
    // Each planted in one transaction with the DEL: heartbeats going on meanwhile must not
    // recreate the key as Keel's own type in between.
    const plant: Record<string, (m: ChainableCommander, key: string) => unknown> = {
      string: (m, key) => m.set(key, 'x'),
      list: (m, key) => m.rpush(key, 'x'),
      set: (m, key) => m.sadd(key, 'x'),
      zset: (m, key) => m.zadd(key, 1, 'x'),
      hash: (m, key) => m.hset(key, 'x', 'y'),
      stream: (m, key) => m.xadd(key, '*', 'x', 'y'),
    };
    const own = { records: 'hash', leases: 'hash', expiry: 'zset', meta: 'hash', graced: 'set' };
    // One writer and one watching registry (one reader connection) over every case at once:
    // a broken service must not stall the others either.
    const writer = registry({ dataLossGraceMs: 1500 });
    const watcher = registry({ dataLossGraceMs: 1500 });
    const cases: { name: string; service: string; live: Registration[]; view: WatchHistory }[] = [];
    for (const [key, kind] of Object.entries(own)) {
      for (const type of Object.keys(plant)) {
        if (type === kind) continue;
        const service = `wrongtype-${++serial}`;
        const live = await registerAll(writer, service, 2);
        const [view] = await watchHistories(() => watcher, service, 1, cleanups);
        cases.push({ name: `${key} <- ${type}`, service, live, view: view as WatchHistory });
      }
    }
    // And a meta field of Keel's holding something else (every write reads \`seen\` first).
    const seen = `wrongtype-${++serial}`;
    const seenLive = await registerAll(writer, seen, 2);
    const [seenView] = await watchHistories(() => watcher, seen, 1, cleanups);
    for (const c of cases) {
      const [key, type] = c.name.split(' <- ') as [keyof typeof own, string];
      const name = keysOf(c.service)[key];
      const multi = admin().multi().del(name);
      plant[type]?.(multi, name);
      for (const [error] of (await multi.exec()) ?? []) expect(error).toBeNull();
    }
    await admin().hset(keysOf(seen).meta, 'seen', 'not a number');
    cases.push({
      name: 'meta.seen <- text',
      service: seen,
      live: seenLive,
      view: seenView as WatchHistory,
    });
    for (const c of cases) {
      const late = await writer
        .register({ service: c.service, id: `${c.service}-late`, host: 'h', port: 3 })
        .catch((e: unknown) => e);
      expect(late, `${c.name}: ${String(late)}`).not.toBeInstanceOf(Error);
      c.live.push(late as Registration);
    }
    await until(async () => {
      for (const c of cases) {
        expect(await truth(c.service), c.name).toEqual(c.live.map((r) => r.id).sort());
        for (const r of c.live) expect(r.state, c.name).toBe('active');
      }
    }, 8000);
    await until(async () => {
      for (const c of cases) {
        expect(c.view.watch.stale, c.name).toBe(false);
        c.view.expectConverged(await truth(c.service));
      }
    }, 8000);
    for (const c of cases) {
      expect(removals(c.view), c.name).toEqual([]);
      await expectWhole(c.service);
    }
  }, 60_000);

  it('a key deleted (or evicted) by someone else — records, leases or expiry — loses nobody alive, and a dead instance still goes', async () => {
    const writer = registry();
    const watcher = registry();
    const cases: { key: 'records' | 'leases' | 'expiry'; service: string; live: Registration[] }[] =
      [];
    const views: WatchHistory[] = [];
    for (const key of ['records', 'leases', 'expiry'] as const) {
      const service = `deleted-${key}-${++serial}`;
      const live = await registerAll(writer, service, 3);
      const dead = await writer.register({ service, id: `${service}-dead`, host: 'h', port: 9 });
      const [view] = await watchHistories(() => watcher, service, 1, cleanups);
      views.push(view as WatchHistory);
      dead.abandon(); // it stops heartbeating: it must leave the store and every view
      cases.push({ key, service, live });
    }
    for (const c of cases) await admin().del(keysOf(c.service)[c.key]);
    await until(async () => {
      for (const [i, c] of cases.entries()) {
        const ids = c.live.map((r) => r.id).sort();
        for (const r of c.live) expect(r.state, c.key).toBe('active');
        expect(await truth(c.service), c.key).toEqual(ids);
        views[i]?.expectConverged(ids);
      }
    }, 8000);
    for (const [i, c] of cases.entries()) {
      const alive = new Set(c.live.map((r) => r.id));
      const removed = removals(views[i] as WatchHistory);
      expect(
        removed.filter((what) => alive.has(what.split(' ')[0] ?? '')),
        c.key,
      ).toEqual([]);
      expect(removed, c.key).toEqual([`${c.service}-dead expired`]);
      await expectWhole(c.service);
    }
  });
});
