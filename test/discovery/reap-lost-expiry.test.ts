/**
 * The expiry sorted set of a service deleted or evicted while a dead instance's record stays:
 * the reaper must give that record an expiry, however many deregistration marks (which sit in
 * the same sorted set for a minute) the service gathered meanwhile — with churn, the marks can
 * make up for the missing entries in a count of records against expiry entries.
 */
import { afterEach, expect, it } from 'vitest';
import { RedisBackend } from '../../src/discovery/index.js';
import { describeRedis, useRedis } from '../support/vitest.js';

describeRedis('reap after the expiry key was lost (real Redis)', () => {
  const redis = useRedis({ count: 1 });
  const cleanups: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await redis().flushAll();
  });

  const backendOf = (): RedisBackend => {
    const client = redis().client(0);
    const backend = new RedisBackend({ client });
    cleanups.push(() => client.disconnect());
    cleanups.push(() => backend.close());
    return backend;
  };

  it('a record without an expiry gets one at the next reap, though a deregistration mark makes the counts even', async () => {
    const backend = backendOf();
    const admin = redis().client(0);
    const service = 'lost-expiry';
    const k = backend.keys(service);
    for (const id of ['live', 'dead', 'gone']) {
      await backend.register(service, id, `{"id":"${id}"}`, `token-${id}`, 60_000);
    }
    await admin.del(k.expiry); // deleted or evicted: no record has an expiry now
    // Churn while the key is gone: one instance leaves (its mark is an expiry entry without a
    // record), another heartbeats (its entry is back). `dead` never heartbeats again.
    await expect(backend.deregister(service, 'gone', 'token-gone')).resolves.toBe(true);
    await expect(backend.heartbeat(service, 'live', 'token-live', 60_000)).resolves.toBe('ok');
    expect(await admin.hlen(k.records)).toBe(await admin.zcard(k.expiry));

    await backend.reap(service);

    // Without an expiry entry, `dead` would never be reaped: it must have one now.
    expect(await admin.zscore(k.expiry, 'dead')).not.toBeNull();
    admin.disconnect();
  });

  it('a deregistration mark whose expiry entry was lost is dropped in time, not kept for ever', async () => {
    const backend = backendOf();
    const admin = redis().client(0);
    const service = 'lost-mark';
    const k = backend.keys(service);
    await backend.register(service, 'live', '{"id":"live"}', 'token-live', 60_000);
    await backend.register(service, 'gone', '{"id":"gone"}', 'token-gone', 60_000);
    await expect(backend.deregister(service, 'gone', 'token-gone')).resolves.toBe(true);
    await admin.del(k.expiry); // the mark's entry goes with it: nothing would ever forget it
    await expect(backend.heartbeat(service, 'live', 'token-live', 60_000)).resolves.toBe('ok');

    await backend.reap(service);

    // The mark has an expiry again, so a later reap drops it (unlogged) with its lease.
    expect(await admin.zscore(k.expiry, 'gone')).not.toBeNull();
    expect(await admin.hget(k.leases, 'gone')).toMatch(/^deregistered /);
    admin.disconnect();
  });
});
