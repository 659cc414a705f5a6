import type { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import {
  RedisBackend,
  Registry,
  type Registration,
  type RegistrationStateChange,
  type WatchChange,
} from '../../src/discovery/index.js';
import { DEREGISTER, HEARTBEAT, REAP, REGISTER, SNAPSHOT } from '../../src/discovery/scripts.js';
import { until } from '../support/helpers.js';
import { losingOneReply, type LosingClient } from '../support/resend.js';
import { describeRedis, useRedis } from '../support/vitest.js';

// ioredis sends again every command that was written but not answered when its connection
// drops (`autoResendUnfulfilledCommands`, on by default), so a discovery script may run twice
// on Redis for one call: the first copy ran, its reply was lost, and the second runs after its
// effects and gives the answer the caller sees. Here the scripts' connection drops right after
// one call was sent (see test/support/resend.ts); the change-log reader has a connection of its
// own and is not disturbed. A second registry on its own connection watches what others see.

const later = (ms: number): Promise<string> =>
  new Promise((resolve) => setTimeout(() => resolve('still waiting'), ms));

const spec = (id: string, port = 1) => ({ service: 'orders', id, host: '127.0.0.1', port });

describeRedis('discovery scripts sent twice (a connection dropped with the reply unread)', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
    await redis().flushAll();
  });

  /**
   * A registry whose scripts go through a client that loses the reply to the next call of
   * `sha` once armed, a watcher registry on a connection of its own, and the admin client.
   * Every script has run once (by hash) before, so the armed call is an `EVALSHA`.
   */
  const setUp = async (
    sha: string,
  ): Promise<{
    losing: LosingClient;
    backend: RedisBackend;
    registry: Registry;
    watcher: Registry;
    admin: Redis;
  }> => {
    const own = redis().client(0);
    const losing = losingOneReply(own, sha);
    const backend = new RedisBackend({ client: losing.client, blockMs: 500 });
    const registry = new Registry({ backend, reapIntervalMs: 0, operationTimeoutMs: 10_000 });
    const watcherClient = redis().client(0);
    const watcherBackend = new RedisBackend({ client: watcherClient, blockMs: 500 });
    const watcher = new Registry({ backend: watcherBackend, reapIntervalMs: 0 });
    const admin = redis().client(0);
    cleanups.push(async () => {
      await registry.close();
      await watcher.close();
      await backend.close();
      await watcherBackend.close();
      own.disconnect();
      watcherClient.disconnect();
      admin.disconnect();
    });
    // Warm up: every script cached, so each call below goes by hash.
    const warm = await registry.register(spec('warm-up'), { ttlMs: 60_000 });
    await warm.heartbeat();
    await registry.ready('orders');
    await backend.reap('orders');
    await warm.deregister();
    await backend.register('other', 'x', '{}', 't', 10);
    await new Promise((resolve) => setTimeout(resolve, 30));
    await backend.reap('other');
    for (const s of [REGISTER, HEARTBEAT, DEREGISTER, REAP, SNAPSHOT]) {
      expect(await admin.script('EXISTS', s.sha)).toEqual([1]);
    }
    return { losing, backend, registry, watcher, admin };
  };

  /** The watcher's changes of `orders` from now on, once its view is ready. */
  const follow = async (
    watcher: Registry,
  ): Promise<{ changes: WatchChange[]; resyncs: () => number; revision: () => number }> => {
    const watch = watcher.watch('orders');
    cleanups.push(() => {
      watch.close();
    });
    await watch.whenReady();
    const changes: WatchChange[] = [];
    watch.onChange((change) => changes.push(change));
    return { changes, resyncs: () => watch.resyncs, revision: () => watch.revision };
  };

  it('a registration whose script ran twice is registered once: one change for watchers, no resync', async () => {
    const { losing, registry, watcher, admin, backend } = await setUp(REGISTER.sha);
    const seen = await follow(watcher);
    const before = seen.revision();
    losing.arm();
    const outcome = await Promise.race([
      registry.register(spec('o1'), { ttlMs: 60_000 }),
      later(8_000),
    ]);
    expect(losing.dropped).toBe(1);
    expect(outcome).not.toBe('still waiting');
    const registration = outcome as Registration;
    expect(registration.state).toBe('active');
    await until(() => expect(seen.revision()).toBe(before + 1), 5_000);
    expect(seen.changes.map((c) => [c.type, c.instance.id])).toEqual([['added', 'o1']]);
    expect(seen.resyncs()).toBe(1);
    expect(await admin.hkeys(backend.keys('orders').records)).toEqual(['o1']);
    expect(await registration.deregister()).toBe(true);
  });

  it('a backend register whose script ran twice answers what its first copy did (created, updated), not unchanged', async () => {
    const { losing, backend } = await setUp(REGISTER.sha);
    losing.arm();
    expect(await backend.register('orders', 'o5', '{"x":1}', 'token-5', 60_000)).toBe('created');
    losing.arm();
    expect(await backend.register('orders', 'o5', '{"x":2}', 'token-5', 60_000)).toBe('updated');
    expect(losing.dropped).toBe(2);
    // The same write again (not a copy of the last) changes nothing.
    expect(await backend.register('orders', 'o5', '{"x":2}', 'token-5', 60_000)).toBe('unchanged');
    losing.arm();
    expect(await backend.register('orders', 'o5', '{"x":2}', 'token-5', 60_000)).toBe('unchanged');
    expect(losing.dropped).toBe(3);
  });

  it('an update whose script ran twice bumps the revision once: one updated change, no resync', async () => {
    const { losing, registry, watcher } = await setUp(REGISTER.sha);
    const registration = await registry.register(spec('o1'), { ttlMs: 60_000 });
    const seen = await follow(watcher);
    const before = seen.revision();
    losing.arm();
    await registration.setStatus('draining');
    expect(losing.dropped).toBe(1);
    expect(registration.instance.status).toBe('draining');
    await until(() => expect(seen.revision()).toBe(before + 1), 5_000);
    // Nothing else arrives: no second entry for the copy sent again.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(seen.revision()).toBe(before + 1);
    expect(seen.changes.map((c) => [c.type, c.instance.status])).toEqual([['updated', 'draining']]);
    expect(seen.resyncs()).toBe(1);
  });

  it('a heartbeat whose script ran twice keeps the registration active: not lost, not re-registered', async () => {
    const { losing, registry, watcher } = await setUp(HEARTBEAT.sha);
    const registration = await registry.register(spec('o1'), { ttlMs: 60_000 });
    const seen = await follow(watcher);
    const before = seen.revision();
    const states: RegistrationStateChange[] = [];
    registration.onStateChange((change) => states.push(change));
    losing.arm();
    await registration.heartbeat();
    expect(losing.dropped).toBe(1);
    expect(registration.state).toBe('active');
    expect(states).toEqual([]);
    expect(registry.stats().reregistrations).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(seen.revision()).toBe(before);
    expect(seen.changes).toEqual([]);
  });

  it('a deregistration whose script ran twice resolves true (it removed the instance), with one removal for watchers', async () => {
    const { losing, registry, watcher, admin, backend } = await setUp(DEREGISTER.sha);
    const registration = await registry.register(spec('o1'), { ttlMs: 60_000 });
    const seen = await follow(watcher);
    const before = seen.revision();
    losing.arm();
    expect(await registration.deregister()).toBe(true);
    expect(losing.dropped).toBe(1);
    expect(registration.state).toBe('closed');
    await until(() => expect(seen.revision()).toBe(before + 1), 5_000);
    expect(seen.changes.map((c) => [c.type, c.instance.id])).toEqual([['removed', 'o1']]);
    expect(seen.resyncs()).toBe(1);
    expect(await admin.hkeys(backend.keys('orders').records)).toEqual([]);
  });

  it('a backend deregister whose script ran twice answers true; one that finds nothing still answers false', async () => {
    const { losing, backend } = await setUp(DEREGISTER.sha);
    expect(await backend.register('orders', 'o2', '{"x":1}', 'token-2', 60_000)).toBe('created');
    losing.arm();
    expect(await backend.deregister('orders', 'o2', 'token-2')).toBe(true);
    expect(losing.dropped).toBe(1);
    // Once done, the same call again finds nothing (it is not a copy of the first).
    expect(await backend.deregister('orders', 'o2', 'token-2')).toBe(false);
    // Nothing that was not there is reported removed, lost reply or not.
    losing.arm();
    expect(await backend.deregister('orders', 'never', 'token-3')).toBe(false);
    expect(losing.dropped).toBe(2);
    // Another registration's instance is not removed by a token that does not own it.
    expect(await backend.register('orders', 'o3', '{"x":3}', 'token-3', 60_000)).toBe('created');
    losing.arm();
    expect(await backend.deregister('orders', 'o3', 'token-other')).toBe(false);
    expect(losing.dropped).toBe(3);
    expect((await backend.snapshot('orders')).records.map((r) => r.id)).toEqual(['o3']);
  });

  it("a deregistration's mark (what lets a copy sent again answer true) hides nothing: the id registers again, the old token's heartbeat finds it missing, a reap drops the mark unlogged", async () => {
    const { losing, backend, admin } = await setUp(DEREGISTER.sha);
    const keys = backend.keys('orders');
    const revision = async (): Promise<string | null> => admin.hget(keys.meta, 'rev');
    expect(await backend.register('orders', 'o4', '{"x":4}', 'token-4', 60_000)).toBe('created');
    losing.arm();
    expect(await backend.deregister('orders', 'o4', 'token-4')).toBe(true);
    expect(losing.dropped).toBe(1);
    expect(await backend.heartbeat('orders', 'o4', 'token-4', 60_000)).toBe('missing');
    // The marks expire (a minute on; this one's and the warm-up's): the reaper drops them, logs
    // nothing and counts nothing.
    expect((await admin.hgetall(keys.leases))['o4']).toMatch(/^deregistered /);
    await admin.zadd(keys.expiry, 1, 'o4', 1, 'warm-up');
    const before = Number(await revision());
    expect(await backend.reap('orders')).toBe(0);
    expect(Number(await revision())).toBe(before);
    expect(await admin.hkeys(keys.leases)).toEqual([]);
    expect(await admin.zcard(keys.expiry)).toBe(0);
    // And the id registers again at once, as new: one `r` entry.
    expect(await backend.register('orders', 'o4', '{"x":5}', 'token-5', 60_000)).toBe('created');
    expect(Number(await revision())).toBe(before + 1);
    const [last] = await admin.xrevrange(keys.log, '+', '-', 'COUNT', 1);
    expect(last?.[1].slice(0, 4)).toEqual(['t', 'r', 'i', 'o4']);
    losing.arm();
    expect(await backend.deregister('orders', 'o4', 'token-4')).toBe(false);
    expect(await backend.deregister('orders', 'o4', 'token-5')).toBe(true);
  });

  it('a reap whose script ran twice counts what it removed, with one expiry per instance for watchers', async () => {
    const { losing, registry, watcher, backend } = await setUp(REAP.sha);
    const gone = await registry.register(spec('o1'), { ttlMs: 50 });
    gone.abandon();
    const seen = await follow(watcher);
    const before = seen.revision();
    await new Promise((resolve) => setTimeout(resolve, 120));
    losing.arm();
    expect(await backend.reap('orders')).toBe(1);
    expect(losing.dropped).toBe(1);
    // A reap of its own (not a copy of that one) finds nothing left.
    expect(await backend.reap('orders')).toBe(0);
    await until(() => expect(seen.revision()).toBe(before + 1), 5_000);
    expect(seen.changes.map((c) => [c.type, c.instance.id])).toEqual([['removed', 'o1']]);
    expect(seen.resyncs()).toBe(1);
  });

  it('a snapshot whose script ran twice gives a ready view of what is stored', async () => {
    const { losing, registry } = await setUp(SNAPSHOT.sha);
    await registry.register({ ...spec('f1'), service: 'fresh' }, { ttlMs: 60_000 });
    losing.arm();
    await registry.ready('fresh');
    expect(losing.dropped).toBe(1);
    expect(registry.discover('fresh').map((i) => i.id)).toEqual(['f1']);
    expect(registry.watch('fresh').resyncs).toBe(1);
  });
});
